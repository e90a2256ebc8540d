"""LM backends: every `mipro_bench.lm_backends` entry point, chosen by name with `--lm`.

The core knows only an LM endpoint (the gateway); what stands behind it is a
plugin of one shape, registered as optimizers and executors are, so the
built-ins (`sim`, `respx`, `local`, `openai`, `api-base`) are listed in this
project's pyproject.toml exactly as a third party would list its own, and the
core never imports the offline doubles: it reaches the simulated LM and its
in-process network only through these entry points.

A backend says:
- its `name` (the `--lm` value);
- `settings(choice)`: the `LMSettings` it runs with (`LMConfigError` when it cannot
  work as asked, e.g. no key) — `settings.backend` is the name records carry;
- `describe(settings, choice)`: the one line printed at start ("LM: ...");
- `simulated`: whether its answers are made up (records and tables say "simulated");
- `start(settings, ...)`: what it starts before the gateway (llama.cpp's server, an
  in-process network, or nothing), yielding the settings to run with;
- `responder(settings, ...)`: what answers behind the gateway (a policy, or the
  forwarder to `settings.base_url`);
- `served_model(api_base, model)`: the model a run will really talk to, known before
  anything starts (so the matrix and the gate see it).
`LMBackend` is the base class with the defaults (start nothing, forward to the
upstream URL, the model as given); a plugin overrides what differs.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import TYPE_CHECKING, Any

from mipro_bench.lm.settings import DEFAULT_MODEL, DEFAULT_TOKEN_LIMITS, LMConfigError, LMSettings

if TYPE_CHECKING:
    from mipro_bench.lm.responders import Responder
    from mipro_bench.lm.retry import RetryPolicy
    from mipro_bench.serving import AppNetwork

ENTRY_POINT_GROUP = "mipro_bench.lm_backends"
# The default rule's pick when `--lm` is not given (README "Choosing the LM"): an
# `--api-base` means that server, an OPENAI_API_KEY means OpenAI, else the simulated LM.
DEFAULT_FOR_API_BASE = "api-base"
DEFAULT_FOR_KEY = "openai"
DEFAULT_OFFLINE = "sim"


class UnknownLMBackend(LMConfigError):
    """An `--lm` name no entry point registers (the message lists the registered ones)."""


class LMBackendError(LMConfigError, RuntimeError):
    """An entry point that does not name a usable LM backend."""


class LMBackendUnavailable(RuntimeError):
    """A backend cannot start or answer (e.g. its policy cannot be imported); the run
    stops with one line (`LMStartError`)."""


@dataclass(frozen=True)
class LMChoice:
    """What the command asked for, as every backend sees it."""

    model: str
    api_base: str | None
    env: Mapping[str, str]
    # Why this backend: "--lm NAME", or the default rule's reason when --lm was not given.
    why: str
    explicit: bool
    # The settings every backend passes on unchanged (temperature, token limits, prices...).
    common: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StartedLM:
    """What `start` yields: the settings to run with (e.g. pointed at a started server)
    and, for an in-process transport, the network the gateway is mounted on."""

    settings: LMSettings
    network: AppNetwork | None = None


class LMBackend:
    """The shape of an LM backend, with the defaults a forwarding backend needs."""

    name: str = ""
    simulated: bool = False

    def settings(self, choice: LMChoice) -> LMSettings:
        raise NotImplementedError

    def describe(self, settings: LMSettings, choice: LMChoice) -> str:
        return f"LM: {self.name} with {settings.model}"

    def served_model(self, api_base: str | None, model: str) -> str:
        return model

    @contextlib.contextmanager
    def start(self, settings: LMSettings, *, say: Callable[[str], None] | None = None,
              replaying: bool = False) -> Iterator[StartedLM]:
        yield StartedLM(settings)

    def preflight(self, settings: LMSettings) -> None:
        """Before any case: LMBackendUnavailable (one line) when the upstream cannot serve
        the run (mipro_bench.lm.preflight; nothing to check without an upstream URL)."""
        from mipro_bench.lm.preflight import PreflightFailed, check_endpoint

        try:
            check_endpoint(settings)
        except PreflightFailed as exc:
            raise LMBackendUnavailable(str(exc)) from None

    def responder(self, settings: LMSettings, *, seed: int = 0,
                  retry: RetryPolicy | None = None) -> Responder:
        from mipro_bench.lm.forwarder import ForwardResponder

        return ForwardResponder(settings, retry=retry)


def names() -> tuple[str, ...]:
    """The registered names, without importing any backend (the `--lm` choices)."""
    return tuple(sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}))


@functools.cache
def _load(name: str) -> LMBackend:
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise UnknownLMBackend(f"--lm must be one of the registered LM backends: "
                               f"{', '.join(names()) or 'none (pip install -e .)'} "
                               f"(got {name!r})")
    ep = found[0]
    try:
        backend = ep.load()
    except Exception as exc:
        raise LMBackendError(f"LM backend plugin {name!r} ({ep.value}) cannot be loaded: "
                             f"{type(exc).__name__}: {exc}") from None
    missing = [a for a in ("name", "simulated", "settings", "describe", "start", "responder",
                           "served_model") if not hasattr(backend, a)]
    if missing:
        raise LMBackendError(f"LM backend plugin {name!r} ({ep.value}) is not an LM backend "
                             f"(no {', '.join(missing)}; subclass mipro_bench.lm.backends."
                             "LMBackend)")
    if backend.name != name:
        raise LMBackendError(f"LM backend plugin {name!r} declares the name {backend.name!r}")
    return backend  # type: ignore[no-any-return]


def get_backend(name: str) -> LMBackend:
    """The backend registered under `name` (UnknownLMBackend, one line, when none is)."""
    return _load(name)


def default_name(api_base: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """The backend the default rule picks with no `--lm`, and why (for the one line)."""
    if api_base:
        return DEFAULT_FOR_API_BASE, "--api-base"
    if env.get("OPENAI_API_KEY"):
        return DEFAULT_FOR_KEY, "OPENAI_API_KEY"
    return DEFAULT_OFFLINE, "no OPENAI_API_KEY and no --api-base"


def served_model(lm: str | None, api_base: str | None, model: str) -> str:
    """The model a run will really talk to (e.g. the GGUF llama.cpp serves for `--lm local`
    with no server given); `model` when the backend does not say, or is unknown."""
    if lm is None or lm not in names():
        return model
    return get_backend(lm).served_model(api_base, model)


def resolve_lm_settings(
    *,
    lm: str | None = None,
    api_base: str | None = None,
    model: str = DEFAULT_MODEL,
    temperature: float = 0.0,
    max_tokens: int = 256,
    timeout_s: float = 60.0,
    env: Mapping[str, str] | None = None,
    token_limits: Mapping[str, int] | None = None,
    prices_per_mtok: tuple[float, float] | None = None,
) -> tuple[LMSettings, str]:
    """Resolve the LM choice (README "Choosing the LM": `--lm` wins; otherwise the default
    rule); returns the settings and the one line to print at start."""
    env = env if env is not None else os.environ
    limits = {**DEFAULT_TOKEN_LIMITS, **(token_limits or {})}
    backend = get_backend(lm) if lm is not None else None  # an unknown name: one line
    if not model.strip():
        # Caught here, before any data is read: an empty id otherwise surfaces deep in an
        # optimizer (DSPy's "openai/" has no model id, synth-ai's missing policy.model).
        raise LMConfigError(f"--model must name a model (got {model!r})")
    if api_base and not api_base.startswith(("http://", "https://")):
        # Otherwise every LM call fails mid-run (httpx: UnsupportedProtocol) behind a 502.
        raise LMConfigError(f"--api-base must be an http(s) URL, e.g. http://127.0.0.1:8000/v1 "
                            f"(got {api_base!r})")
    if backend is None:
        name, why = default_name(api_base, env)
        backend = get_backend(name)
    else:
        why = f"--lm {lm}"
    common = {"model": model, "temperature": temperature,
              "max_tokens": max_tokens, "timeout_s": timeout_s,
              "token_limits": tuple(sorted(limits.items())), "prices_per_mtok": prices_per_mtok}
    choice = LMChoice(model=model, api_base=api_base, env=env, why=why,
                      explicit=lm is not None, common=common)
    # The plugin that resolved the settings is the one that starts and answers for them.
    settings = replace(backend.settings(choice), plugin=backend.name)
    return settings, backend.describe(settings, choice)
