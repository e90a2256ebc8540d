"""Reading a rollout's `policy.config`: where to send the baseline messages, and how.

The candidate prompt never reaches the task app: it sends its baseline
messages to `inference_url`, which may be the LM itself or an interceptor
that swaps the instruction in. The URL becomes a chat-completions URL by the
SDK's own rule (`normalize_chat_completion_url`: append /chat/completions,
keep a query string such as ?cid=), so it reaches exactly what a Synth-built
task app would reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from synth_ai.sdk.localapi.helpers import normalize_chat_completion_url

from task_app.dataset import TaskInputError

MAX_URL_CHARS = 4096
MAX_MODEL_CHARS = 256
MAX_TOKENS_LIMIT = 32768


@dataclass(frozen=True)
class PolicyDefaults:
    """What a rollout uses when its policy.config leaves a field out (set by the CLI)."""

    inference_url: str | None = None
    model: str | None = None
    api_key: str | None = None  # only ever sent to the default inference_url
    temperature: float = 0.0
    max_tokens: int = 256


@dataclass(frozen=True)
class Policy:
    inference_url: str  # as given (echoed in the rollout response)
    chat_url: str
    model: str
    api_key: str | None
    temperature: float
    max_tokens: int
    max_tokens_field: str  # "max_tokens" or "max_completion_tokens", as the caller named it

    def request_body(self, messages: list[dict[str, str]], tools: list[dict[str, Any]],
                     tool_choice: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            "tools": tools,
            "tool_choice": tool_choice,
            "temperature": self.temperature,
            self.max_tokens_field: self.max_tokens,
        }


def _invalid(message: str) -> TaskInputError:
    return TaskInputError("invalid_policy", message)


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise _invalid("policy.config.inference_url must be a non-empty string "
                       "(an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1)")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise _invalid(f"policy.config.inference_url is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _invalid(f"policy.config.inference_url is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("policy.config.inference_url must be an http(s) URL with a host")
    return url


def _number(config: Mapping[str, Any], name: str, default: float, low: float, high: float
            ) -> float:
    value = config.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _invalid(f"policy.config.{name} must be a number in [{low:g}, {high:g}]")
    return float(value)


def _max_tokens(config: Mapping[str, Any], default: int) -> tuple[int, str]:
    for name in ("max_completion_tokens", "max_tokens"):
        value = config.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not (
                1 <= value <= MAX_TOKENS_LIMIT):
            raise _invalid(f"policy.config.{name} must be an integer in [1, {MAX_TOKENS_LIMIT}]")
        return value, name
    return default, "max_tokens"


def parse_policy(config: Mapping[str, Any], defaults: PolicyDefaults) -> Policy:
    """Validate policy.config (TaskInputError saying which field is wrong)."""
    raw_url = config.get("inference_url")
    if raw_url is None:
        raw_url = defaults.inference_url
        if raw_url is None:
            raise _invalid("policy.config.inference_url is required (this task app has no "
                           "default LM)")
        api_key = defaults.api_key
    else:
        # A default key belongs to the default URL: never send it to a URL the caller chose.
        api_key = None
    url = _check_url(raw_url)
    if "api_key" in config and config["api_key"] is not None:
        if not isinstance(config["api_key"], str):
            raise _invalid("policy.config.api_key must be a string")
        api_key = config["api_key"] or None

    model = config.get("model", defaults.model)
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS:
        raise _invalid(f"policy.config.model must be a non-empty string of at most "
                       f"{MAX_MODEL_CHARS} characters")
    max_tokens, field = _max_tokens(config, defaults.max_tokens)
    return Policy(
        inference_url=url,
        chat_url=normalize_chat_completion_url(url),
        model=model.strip(),
        api_key=api_key,
        temperature=_number(config, "temperature", defaults.temperature, 0.0, 2.0),
        max_tokens=max_tokens,
        max_tokens_field=field,
    )
