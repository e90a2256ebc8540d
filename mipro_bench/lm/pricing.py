"""Dollar cost of a call, for the few OpenAI models the suite is run with.

A cost is only ever computed from a price we know; anything else (local
servers, unknown models, the simulated LM) is None, never a made-up 0, so a
table can say "unknown" instead of "free".
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
