"""Validating an OpenAI chat-completions request body into a small typed view.

The gateway answers 400 when this raises `SimRequestError`, so every message
names the offending field in one line. Only what the simulated LM uses is
read; unknown keys (max_tokens, stop, user, rollout ids...) are accepted and
ignored, as a real server would.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from mipro_bench.lm.fingerprint import is_spelled_out_default

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_N = 16
DEFAULT_TEMPERATURE = 1.0  # OpenAI's default when the request leaves it out


class SimRequestError(ValueError):
    """The body is not a valid chat-completions request (the gateway answers 400)."""


@dataclass(frozen=True)
class ToolCall:
    """One native tool call an assistant message carries (arguments as sent: a JSON string)."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    """One chat message. Agent loops (Synth's ReAct proposer) replay their history, so an
    assistant message keeps its tool calls and a tool message the id it answers."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""


@dataclass(frozen=True)
class ChatRequest:
    """What the policy reads from a request; `key` is a canonical digest source of the body."""

    messages: tuple[Message, ...]
    tools: tuple[dict[str, Any], ...]
    tool_choice: Any
    temperature: float
    n: int
    json_mode: bool
    json_fields: tuple[str, ...]
    model: str
    key: bytes
    tools_chars: int  # length of the tools' JSON, for the token estimate

    def texts(self, *roles: str) -> list[str]:
        return [m.content for m in self.messages if m.role in roles]

    def last_user(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""

    def system_text(self) -> str:
        return "\n\n".join(self.texts("system", "developer"))

    def forced_tool(self) -> dict[str, Any] | None:
        """The tool to call: the one tool_choice names, else the first (unless "none")."""
        if not self.tools or self.tool_choice == "none":
            return None
        wanted = None
        if isinstance(self.tool_choice, dict):
            function = self.tool_choice.get("function")
            wanted = function.get("name") if isinstance(function, dict) else None
        for tool in self.tools:
            if wanted is None or tool["function"]["name"] == wanted:
                return tool
        return self.tools[0]


def parse_request(body: Any) -> ChatRequest:
    """Check the body's shape and types; raise SimRequestError with a one-line reason."""
    if not isinstance(body, dict):
        raise SimRequestError(f"request body must be a JSON object, got {type(body).__name__}")
    messages = _messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and not isinstance(tool_choice, str | dict):
        raise SimRequestError("'tool_choice' must be a string or an object")
    temperature = _temperature(body.get("temperature"))
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise SimRequestError(f"'n' must be an integer between 1 and {MAX_N}, got {n!r}")
    json_mode, json_fields = _response_format(body.get("response_format"))
    model = body.get("model") or "sim"
    if not isinstance(model, str):
        raise SimRequestError("'model' must be a string")
    try:
        # A default spelled out (`n: 1`) is the same call as one left out: same answer.
        rest = {k: v for k, v in body.items()
                if k != "tools" and not is_spelled_out_default(k, v)}
        tools_json = json.dumps(tools, sort_keys=True, ensure_ascii=False) if tools else ""
        key = (json.dumps(rest, sort_keys=True, ensure_ascii=False) + tools_json).encode()
    except (TypeError, ValueError) as exc:  # circular or exotic objects from a Python caller
        raise SimRequestError(f"request body is not JSON-serializable ({exc})") from None
    return ChatRequest(
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        temperature=temperature,
        n=n,
        json_mode=json_mode,
        json_fields=json_fields,
        model=model,
        key=key,
        tools_chars=len(tools_json),
    )


def _messages(value: Any) -> tuple[Message, ...]:
    if value is None:
        raise SimRequestError("'messages' is required")
    if not isinstance(value, list) or not value:
        raise SimRequestError("'messages' must be a non-empty list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise SimRequestError(f"messages[{i}] must be an object")
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a list role is unhashable
            raise SimRequestError(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}, got {role!r}"
            )
        out.append(
            Message(
                role=role,
                content=_content(item.get("content"), i, item),
                tool_calls=_tool_calls(item.get("tool_calls")) if role == "assistant" else (),
                tool_call_id=_text_field(item.get("tool_call_id")),
                name=_text_field(item.get("name")),
            )
        )
    return tuple(out)


def _tool_calls(value: Any) -> tuple[ToolCall, ...]:
    """An assistant message's tool calls; malformed entries are skipped, not refused: a
    replayed history is the caller's record, and a model answers whatever it is shown."""
    if not isinstance(value, list):
        return ()
    calls = []
    for item in value:
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            try:
                arguments = json.dumps(arguments if arguments is not None else {})
            except (TypeError, ValueError):
                arguments = "{}"
        calls.append(ToolCall(_text_field(item.get("id")), function["name"], arguments))
    return tuple(calls)


def _text_field(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _content(value: Any, i: int, item: dict[str, Any]) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        if item.get("role") in ("assistant", "tool", "function"):
            return ""  # assistant turns that only carry tool_calls
        raise SimRequestError(f"messages[{i}].content is required for role {item['role']!r}")
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict):
                raise SimRequestError(f"messages[{i}].content[{j}] must be an object")
            text = part.get("text")
            if part.get("type") == "text" and not isinstance(text, str):
                raise SimRequestError(f"messages[{i}].content[{j}].text must be a string")
            if isinstance(text, str):
                parts.append(text)
        return "\n".join(parts)
    raise SimRequestError(f"messages[{i}].content must be a string or a list of parts")


def _tools(value: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SimRequestError("'tools' must be a list")
    if not value:
        return ()
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise SimRequestError(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}"
            )
        params = function.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise SimRequestError(f"tools[{i}].function.parameters must be an object")
    return tuple(value)


def _temperature(value: Any) -> float:
    if value is None:
        return DEFAULT_TEMPERATURE
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise SimRequestError(f"'temperature' must be a number, got {value!r}")
    if not 0 <= value <= 2:
        raise SimRequestError(f"'temperature' must be between 0 and 2, got {value!r}")
    return float(value)


def _response_format(value: Any) -> tuple[bool, tuple[str, ...]]:
    if value is None:
        return False, ()
    if not isinstance(value, dict):
        raise SimRequestError("'response_format' must be an object")
    kind = value.get("type")
    if kind in (None, "text"):
        return False, ()
    if kind == "json_object":
        return True, ()
    if kind == "json_schema":
        wrapper = value.get("json_schema") or {}
        if not isinstance(wrapper, dict):
            raise SimRequestError("'response_format.json_schema' must be an object")
        schema = wrapper.get("schema") or {}
        props = schema.get("properties") if isinstance(schema, dict) else None
        return True, tuple(props) if isinstance(props, dict) else ()
    raise SimRequestError(
        f"'response_format.type' must be text, json_object or json_schema, got {kind!r}"
    )
