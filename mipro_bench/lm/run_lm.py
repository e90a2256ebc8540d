"""The run's LM, started the same way by every entry point: one line, one gateway.

`pytest benchmarks/`, `run_comparison.py` and the two seed CLIs all resolve the
LM with the same rule, start what the LM backend plugin starts first (llama.cpp's
server for `--lm local`, so its served model's name is what the record and the
gate see; the in-process network for `--lm respx`), start the one gateway, and
print the same one-line LM choice. No backend is named here: each is an
`mipro_bench.lm_backends` entry point (`mipro_bench.lm.backends`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from mipro_bench.errors import UserError
from mipro_bench.lm.backends import (
    LMBackendUnavailable,
    get_backend,
    resolve_lm_settings,
    served_model,
)
from mipro_bench.lm.gateway import GatewayHandle, ServerStartError, start_gateway
from mipro_bench.lm.settings import (
    LMConfigError,
    LMSettings,
    load_dotenv,
    parse_price,
    parse_token_limits,
)


class LMStartError(UserError, RuntimeError):
    """The LM or its gateway could not start (one line)."""


def served_local_model(lm: str | None, api_base: str | None, model: str) -> str:
    """The model a run will really talk to: what the backend says it serves (with `--lm
    local` and no server given, the name the started llama.cpp server answers to), not the
    --model default; otherwise `model`. Known before anything starts, so the matrix and the
    gate see it."""
    return served_model(lm, api_base, model)


def resolve(lm: str | None, api_base: str | None, model: str, *,
            max_tokens: str | None = None, price_in: str | float | None = None,
            price_out: str | float | None = None) -> tuple[LMSettings, str]:
    """The LM settings and their one-line description (a key in ./.env counts as set).

    `max_tokens` is the `--max-tokens` text (N or KIND=N,...), `price_in`/`price_out` the
    `--price-in`/`--price-out` texts (USD per million tokens, both or neither): each bad
    value is one line (LMConfigError, exit 2)."""
    load_dotenv()
    limits = parse_token_limits(max_tokens) if max_tokens is not None else None
    prices = None
    if price_in is not None or price_out is not None:
        if price_in is None or price_out is None:
            raise LMConfigError("give both --price-in and --price-out (USD per million "
                                "input and output tokens), or neither")
        prices = (parse_price(str(price_in), "--price-in"),
                  parse_price(str(price_out), "--price-out"))
    settings, line = resolve_lm_settings(lm=lm, api_base=api_base,
                                         model=served_local_model(lm, api_base, model),
                                         token_limits=limits, prices_per_mtok=prices)
    if prices is not None:
        line += f"; priced at ${prices[0]:g}/${prices[1]:g} per 1M input/output tokens (given)"
    return settings, line


@contextlib.contextmanager
def run_lm(settings: LMSettings, say: Callable[[str], None] | None = None,
           **gateway_kwargs: Any) -> Iterator[GatewayHandle]:
    """Start what the settings' backend starts (llama.cpp for local, an in-process network
    for respx; nothing of an LM for a replay) and the gateway in front of it;
    `gateway_kwargs` are the journal/replay arguments (`JournalPlan.gateway_kwargs`)."""
    with contextlib.ExitStack() as stack:
        try:
            replaying = gateway_kwargs.get("replay_mode") == "replay" and gateway_kwargs.get(
                "replay") is not None
            backend = get_backend(settings.plugin)
            started = stack.enter_context(backend.start(settings, say=say, replaying=replaying))
            if not replaying:  # fail fast: a broken LM is one line before any case starts
                backend.preflight(started.settings)
            if started.network is not None:
                gateway_kwargs = {**gateway_kwargs, "network": started.network}
            handle = stack.enter_context(start_gateway(started.settings, **gateway_kwargs))
        except (ServerStartError, LMBackendUnavailable) as exc:
            raise LMStartError(f"the LM could not start: {exc}") from None
        yield handle
