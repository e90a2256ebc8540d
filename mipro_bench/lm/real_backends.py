"""The LM backends that answer with a real model: `openai`, `api-base` and `local`.

Each is an `mipro_bench.lm_backends` entry point like any third party's; all
three forward every call to an OpenAI-compatible server (the base class's
responder), and differ only in where that server is, which key it gets, and
(for `local`) that llama-cpp-python's server is started first when no
`--api-base` is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from mipro_bench.lm.backends import LMBackend, LMBackendUnavailable, LMChoice, StartedLM
from mipro_bench.lm.settings import OPENAI_BASE_URL, LMConfigError, LMSettings


class ApiBaseBackend(LMBackend):
    """Any OpenAI-compatible server at `--api-base` (vLLM, llama.cpp, Ollama, a proxy)."""

    name = "api-base"

    def settings(self, choice: LMChoice) -> LMSettings:
        if not choice.api_base:
            raise LMConfigError("--lm api-base needs --api-base URL (an OpenAI-compatible "
                                "server, e.g. http://127.0.0.1:8000/v1)")
        key_env = "OPENAI_API_KEY" if choice.env.get("OPENAI_API_KEY") else None
        return LMSettings(backend="compatible", base_url=choice.api_base.rstrip("/"),
                          api_key_env=key_env, **choice.common)

    def describe(self, settings: LMSettings, choice: LMChoice) -> str:
        return f"LM: OpenAI-compatible server at {settings.base_url} with model {settings.model}"


class OpenAIBackend(LMBackend):
    """OpenAI's API with OPENAI_API_KEY (with `--api-base`: that server, as `api-base`)."""

    name = "openai"

    def settings(self, choice: LMChoice) -> LMSettings:
        if choice.api_base:
            return API_BASE.settings(choice)
        if not choice.env.get("OPENAI_API_KEY"):
            raise LMConfigError("--lm openai needs OPENAI_API_KEY (environment or .env)")
        return LMSettings(backend="openai", base_url=OPENAI_BASE_URL,
                          api_key_env="OPENAI_API_KEY", **choice.common)

    def describe(self, settings: LMSettings, choice: LMChoice) -> str:
        if settings.backend == "compatible":
            return API_BASE.describe(settings, choice)
        return f"LM: OpenAI {settings.model} (real calls, real cost)"


class LocalLlamaBackend(LMBackend):
    """A local llama.cpp server: the one at `--api-base`, or llama-cpp-python's, started
    for the run (extra `local`) with the default GGUF."""

    name = "local"

    def settings(self, choice: LMChoice) -> LMSettings:
        return LMSettings(backend="local", base_url=choice.api_base, **choice.common)

    def describe(self, settings: LMSettings, choice: LMChoice) -> str:
        at = f" at {choice.api_base}" if choice.api_base else ""
        return f"LM: local llama.cpp server{at} with {settings.model}"

    def served_model(self, api_base: str | None, model: str) -> str:
        if api_base:
            return model
        from mipro_bench.lm.local_llama import (
            LocalLLMError,
            resolve_model_path,
            served_model_name,
        )

        try:
            return served_model_name(resolve_model_path(None))
        except LocalLLMError:
            return model  # starting the server will say what is missing

    @contextlib.contextmanager
    def start(self, settings: LMSettings, *, say: Callable[[str], None] | None = None,
              replaying: bool = False) -> Iterator[StartedLM]:
        if settings.base_url or replaying:
            yield StartedLM(settings)
            return
        from mipro_bench.lm.local_llama import LocalLLMError, start_local_llama

        with contextlib.ExitStack() as stack:
            try:
                server = stack.enter_context(start_local_llama())
            except LocalLLMError as exc:
                raise LMBackendUnavailable(str(exc)) from None
            settings = server.settings(settings)
            if say is not None:
                say(f"local model: llama.cpp serving {settings.model} at {settings.base_url}")
            yield StartedLM(settings)


API_BASE = ApiBaseBackend()
OPENAI = OpenAIBackend()
LOCAL = LocalLlamaBackend()
