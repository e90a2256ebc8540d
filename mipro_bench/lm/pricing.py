"""Dollar cost of a call, and what kind of number it is.

A cost is only ever computed from a price we know; anything else is None,
never a made-up 0, so a table can say "unknown" instead of "free":
- OpenAI's own API (`--lm openai`): the price table below, by the model answering;
- any other server (`--api-base`, `--lm local`): unknown unless the user gave
  prices (`--price-in/--price-out`, USD per million tokens), even when its model
  is *named* like OpenAI's (a llama.cpp alias "gpt-4.1-nano" costs nothing at OpenAI);
- the simulated LM: no real cost, but `estimate_usd` says what the same tokens would
  have cost on the named model (shown as an estimate, never as a cost).
"""

from __future__ import annotations

import re

# USD per 1M tokens (input, output), standard tier, from https://openai.com/api/pricing/
# as listed in 2025-06 (gpt-4.1 family launched 2025-04-14). Update with the date if changed.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4o-mini": (0.15, 0.60),
}

_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def canonical_model(model: str) -> str:
    """'openai/gpt-4.1-nano-2025-04-14' -> 'gpt-4.1-nano' (no provider prefix, no date)."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    return _DATED.sub("", name)


def price_of(model: str | None) -> tuple[float, float] | None:
    if not model:
        return None
    return PRICES_PER_MTOK.get(canonical_model(model))


def cost_usd(model: str | None, input_tokens: int, output_tokens: int) -> float | None:
    """Cost of one call, or None when the model has no known price."""
    price = price_of(model)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


def price_for(backend: str, model: str | None,
              given: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """The (input, output) USD/1M price a call of this backend is charged at: the user's when
    given, OpenAI's table only for OpenAI's own API, else None (unknown)."""
    if given is not None:
        return given
    if backend == "openai":
        return price_of(model)
    return None


def charge(price: tuple[float, float] | None, input_tokens: int,
           output_tokens: int) -> float | None:
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


def estimate_usd(model: str | None, input_tokens: int, output_tokens: int) -> float | None:
    """What these tokens would cost on the named OpenAI model (simulated runs): an estimate."""
    return cost_usd(model, input_tokens, output_tokens)


def pricing_note(backend: str, model: str | None,
                 given: tuple[float, float] | None = None) -> dict[str, object]:
    """What a record's costs are: `source` is "given" (the user's prices), "openai" (the
    table, OpenAI's API), "estimate" (simulated: cost_usd_estimate on the named model) or
    "unknown" (a server with no price: cost_usd is null)."""
    if given is not None:
        return {"source": "given", "usd_per_mtok": {"input": given[0], "output": given[1]}}
    price = price_of(model)
    if backend == "openai":
        return {"source": "openai" if price else "unknown",
                **({"usd_per_mtok": {"input": price[0], "output": price[1]}} if price else {})}
    if backend == "sim" and price is not None:
        return {"source": "estimate", "estimate_model": canonical_model(model or ""),
                "usd_per_mtok": {"input": price[0], "output": price[1]}}
    return {"source": "unknown"}
