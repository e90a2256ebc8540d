"""What makes two chat requests "the same call": a canonical form, its hash, and its diff.

Replay answers a request with the recorded answer to the same request, so
"same" must ignore what does not change the answer (streaming flags, user
ids, client timeouts, key order, `0` vs `0.0`, a field sent as null vs left
out) and keep everything that does. When a strict replay finds no match,
`differences` says in a few words what changed against the nearest recorded
request (e.g. "messages[1].content differs"), which is what the user needs
to tell a deliberate change from an accident.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Request fields that can change an answer (OpenAI chat-completions names); anything else
# (stream, user, metadata, store, timeouts...) is left out of the fingerprint.
SEMANTIC_FIELDS = (
    "model", "messages", "tools", "tool_choice", "functions", "function_call",
    "parallel_tool_calls", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "response_format", "n", "stop", "seed", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "reasoning_effort", "modalities",
)


def _normal(value: Any) -> Any:
    """Equal meaning -> equal value: integral floats become ints, null members drop out."""
    kind = type(value)
    if kind is str:  # most leaves (prompt text): the fast path first
        return value
    if kind is dict:
        return {k: _normal(v) for k, v in value.items() if v is not None}
    if kind is list:
        return [_normal(v) for v in value]
    if kind is float:
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, tuple):
        return [_normal(v) for v in value]
    return value


# Defaults some clients spell out and others leave out (DSPy's litellm engine sends `n: 1`,
# its lm15 engine does not): the same call either way, so neither the fingerprint nor the
# simulated LM's seed may tell them apart.
SPELLED_OUT_DEFAULTS: dict[str, Any] = {"n": 1}


def is_spelled_out_default(name: str, value: Any) -> bool:
    default = SPELLED_OUT_DEFAULTS.get(name)
    return default is not None and type(value) is type(default) and value == default


def canonical_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The semantically relevant part of a chat-completions body, normalized."""
    return {name: _normal(body[name]) for name in SEMANTIC_FIELDS
            if body.get(name) is not None and not is_spelled_out_default(name, body[name])}


def fingerprint(canonical: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical request's canonical JSON."""
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def request_fingerprint(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(fingerprint, canonical request) of a chat-completions body."""
    canonical = canonical_request(body)
    return fingerprint(canonical), canonical


def _diff(path: str, old: Any, new: Any, out: list[str], limit: int) -> None:
    if len(out) >= limit or old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=lambda k: (k not in old, k)):
            sub = f"{path}.{key}" if path else key
            if key not in new:
                out.append(f"{sub} is missing (recorded request has it)")
            elif key not in old:
                out.append(f"{sub} is new (recorded request has none)")
            else:
                _diff(sub, old[key], new[key], out, limit)
            if len(out) >= limit:
                return
        return
    if isinstance(old, list) and isinstance(new, list):
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            _diff(f"{path}[{i}]", a, b, out, limit)
        if len(old) != len(new) and len(out) < limit:
            out.append(f"{path} has {len(new)} items (recorded {len(old)})")
        return
    if isinstance(old, str) and isinstance(new, str):
        out.append(f"{path} differs")  # prompt text: never quoted (it can be long)
    else:
        out.append(f"{path} differs (recorded {_short(old)}, now {_short(new)})")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any],
                limit: int = 3) -> list[str]:
    """At most `limit` short phrases saying where `current` departs from `recorded`."""
    out: list[str] = []
    _diff("", dict(recorded), dict(current), out, limit)
    return out
