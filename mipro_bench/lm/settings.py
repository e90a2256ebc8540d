"""Which LM a run talks to, chosen once and passed everywhere.

Which backend makes them is a plugin's choice (`mipro_bench.lm.backends`: the
`mipro_bench.lm_backends` entry points and the default rule); this module only
holds the settings every part of a run reads. The key itself is never stored
here, only the name of the variable holding it, so no record or log can leak it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from mipro_bench.errors import UserError

# The backend name a record carries (`record.lm.backend`): the built-ins say "sim",
# "openai", "local" or "compatible" (an --api-base server); a plugin says its own.
Backend = str
# What one LM call may generate, by what the call is for (the gateway tells them apart:
# `mipro_bench.lm.call_kind`): a classification answer (a DSPy program's fields), a forced
# tool call (the task app), an instruction proposal (DSPy's proposer, Synth's meta model),
# a reflection (an optimizer reading its own traces). A small real model otherwise rambles
# for thousands of tokens a call; a hosted one bills them.
CallKind = Literal["answer", "tool_call", "proposer", "reflection"]
CALL_KINDS: tuple[CallKind, ...] = ("answer", "tool_call", "proposer", "reflection")
DEFAULT_TOKEN_LIMITS: dict[str, int] = {"answer": 256, "tool_call": 256, "proposer": 512,
                                        "reflection": 1024}
# How clients reach the gateway: "http" (served by uvicorn on 127.0.0.1) or in-process
# ("respx": mounted behind a respx router, no socket; the `respx` backend's network).
Transport = str
DEFAULT_MODEL = "gpt-4.1-nano"
OPENAI_BASE_URL = "https://api.openai.com/v1"


class LMConfigError(UserError, ValueError):
    """An LM choice that cannot work (e.g. --lm openai without a key)."""


@dataclass(frozen=True)
class LMSettings:
    backend: Backend
    model: str
    base_url: str | None  # upstream OpenAI-compatible URL (None for sim; local is set at start)
    api_key_env: str | None = None  # name of the environment variable with the key
    temperature: float = 0.0
    max_tokens: int = 256
    timeout_s: float = 60.0
    max_retries: int = 4
    # The recording a replayed run answers from (no LM is called); None for live runs.
    replayed_from: str | None = None
    # Completion-token limit per call kind (sorted (kind, limit) pairs; see CALL_KINDS).
    token_limits: tuple[tuple[str, int], ...] = tuple(sorted(DEFAULT_TOKEN_LIMITS.items()))
    # User-given USD per million tokens (input, output) for a server the price table does
    # not cover; None: OpenAI's table for OpenAI's API, else unknown (null).
    prices_per_mtok: tuple[float, float] | None = None
    transport: Transport = "http"
    # Whether the answers are made up (None: the built-in rule, backend "sim"); the backend
    # plugin that resolved these settings says so.
    simulated: bool = None  # type: ignore[assignment]
    # The registered LM backend (`--lm` name) that resolved these settings: what starts
    # before the gateway and what answers behind it. "" : the built-in one for `backend`.
    plugin: str = ""

    def __post_init__(self) -> None:
        if self.simulated is None:
            object.__setattr__(self, "simulated", self.backend == "sim")
        if not self.plugin:
            builtin = {"compatible": "api-base"}.get(self.backend, self.backend)
            if self.backend == "sim" and self.transport == "respx":
                builtin = "respx"
            object.__setattr__(self, "plugin", builtin)

    def limit_for(self, kind: str) -> int:
        """The completion-token limit of a call of this kind."""
        limits = dict(self.token_limits)
        return limits.get(kind, limits.get("answer", self.max_tokens))

    @property
    def limits(self) -> dict[str, int]:
        return dict(self.token_limits)

    @property
    def label(self) -> str:
        """How the LM is named in tables: simulated and replayed runs say so in the name."""
        tags = [t for t, on in (("simulated", self.simulated),
                                (self.transport, self.transport != "http"),
                                ("replayed", self.replayed_from is not None)) if on]
        return f"{self.model} [{', '.join(tags)}]" if tags else self.model

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        if not self.api_key_env:
            return None
        return (env if env is not None else os.environ).get(self.api_key_env)

    def with_base_url(self, base_url: str) -> LMSettings:
        return replace(self, base_url=base_url)


def parse_token_limits(text: str) -> dict[str, int]:
    """`--max-tokens`: N (every kind) or KIND=N[,KIND=N...]; LMConfigError in one line."""
    text = (text or "").strip()
    kinds = ", ".join(CALL_KINDS)
    if not text:
        raise LMConfigError(f"--max-tokens needs N or KIND=N[,KIND=N] (kinds: {kinds})")

    def count(value: str, what: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise LMConfigError(f"--max-tokens: {what} must be a whole number >= 1 "
                                f"(got {value!r})")
        return n

    if "=" not in text:
        n = count(text, "the limit")
        return {kind: n for kind in CALL_KINDS}
    out: dict[str, int] = {}
    for part in text.split(","):
        kind, _, value = part.partition("=")
        kind = kind.strip().replace("-", "_")
        if kind not in CALL_KINDS:
            raise LMConfigError(f"--max-tokens: unknown call kind {kind!r} (kinds: {kinds})")
        out[kind] = count(value.strip(), kind)
    return out


def parse_price(text: str, flag: str) -> float:
    """A price in USD per million tokens: a finite number >= 0, else one line."""
    import math

    try:
        value = float(text)
    except (TypeError, ValueError):
        raise LMConfigError(f"{flag} must be a number of USD per million tokens "
                            f"(got {text!r})") from None
    if not math.isfinite(value) or value < 0:
        raise LMConfigError(f"{flag} must be >= 0 USD per million tokens (got {text!r})")
    return value


def load_dotenv(path: Path = Path(".env"), env: dict[str, str] | None = None) -> None:
    """Fill missing environment variables from a .env file (KEY=VALUE lines).

    MIPRO_BENCH_DOTENV=0 keeps it out of the process environment: the suite's own
    tests set it so that a developer's .env with real keys can never make a test call
    a real API.
    """
    if env is None and os.environ.get("MIPRO_BENCH_DOTENV") == "0":
        return
    target = env if env is not None else os.environ
    if not path.is_file():
        return
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.removeprefix("export ").strip()
        target.setdefault(key, value.strip().strip("'\""))


def token_limits_text(text: str) -> str:
    """--max-tokens: N or KIND=N,... checked now (the text itself is what is passed on)."""
    try:
        parse_token_limits(text)
    except LMConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--max-tokens: ")) from None
    return text
