"""OpenAI chat.completion response dicts, DSPy field rendering and token estimates.

Token usage is an estimate, deterministic and documented: one token per 4
characters (rounded up, OpenAI's rule of thumb for English), plus 4 tokens of
overhead per message and the tools' JSON counted the same way; completion
tokens count the content and tool-call names and arguments of every choice.
Real models differ; these numbers are labelled simulated by the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mipro_bench.offline.sim.request import ChatRequest

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


@dataclass(frozen=True)
class Choice:
    """One generated answer: text content, or a tool call (name, JSON arguments).

    `extra_calls` are further (name, JSON arguments) calls in the same message, as an
    agent batches related reads or a write plus finish in one turn (ids: the first
    call's id with a `_<k>` suffix)."""

    content: str | None = None
    tool_name: str | None = None
    tool_arguments: str | None = None
    tool_call_id: str = ""
    extra_calls: tuple[tuple[str, str], ...] = ()

    def calls(self) -> list[tuple[str, str, str]]:
        """Every tool call as (id, name, JSON arguments); empty for a text answer."""
        if self.tool_name is None:
            return []
        first = (self.tool_call_id, self.tool_name, self.tool_arguments or "{}")
        extra = [(f"{self.tool_call_id}_{k}", name, args)
                 for k, (name, args) in enumerate(self.extra_calls, start=1)]
        return [first, *extra]


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def prompt_tokens(request: ChatRequest) -> int:
    total = sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in request.messages)
    total += sum(
        estimate_tokens(c.name) + estimate_tokens(c.arguments)
        for m in request.messages
        for c in m.tool_calls
    )
    total += -(-request.tools_chars // CHARS_PER_TOKEN)
    return total


def completion_tokens(choice: Choice) -> int:
    if choice.tool_name is not None:
        calls = choice.calls()
        return sum(estimate_tokens(name) + estimate_tokens(args) for _, name, args in calls)
    return estimate_tokens(choice.content or "")


def chat_completion(
    request: ChatRequest, choices: Sequence[Choice], *, response_id: str
) -> dict[str, Any]:
    """The response dict: fixed key order and created=0, so equal inputs give equal bytes."""
    rendered = []
    for index, choice in enumerate(choices):
        if choice.tool_name is not None:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call_id, "type": "function",
                     "function": {"name": name, "arguments": arguments}}
                    for call_id, name, arguments in choice.calls()
                ],
            }
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": choice.content or ""}
            finish = "stop"
        rendered.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
        )
    p_tokens = prompt_tokens(request)
    c_tokens = sum(completion_tokens(c) for c in choices)
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": 0,
        "model": request.model,
        "choices": rendered,
        "usage": {
            "prompt_tokens": p_tokens,
            "completion_tokens": c_tokens,
            "total_tokens": p_tokens + c_tokens,
        },
    }


def dspy_chat_fields(values: dict[str, str]) -> str:
    """DSPy ChatAdapter's answer format: every field block, then the completed marker."""
    blocks = [f"[[ ## {name} ## ]]\n{value}" for name, value in values.items()]
    return "\n\n".join([*blocks, "[[ ## completed ## ]]"])


def dspy_json_fields(values: dict[str, Any]) -> str:
    """DSPy JSONAdapter's answer format: one JSON object with the output fields."""
    return json.dumps(values, ensure_ascii=False, indent=2)


def typed_value(type_text: str, text: str) -> Any:
    """A placeholder of the field's declared type, so DSPy's typed parse accepts it."""
    kind = type_text.strip().lower()
    if kind in ("int", "integer"):
        return 1
    if kind in ("float", "number"):
        return 0.5
    if kind == "bool":
        return True
    if kind.startswith(("list", "tuple", "set")):
        return [text]
    if kind.startswith("dict"):
        return {}
    return text


def as_chat_text(value: Any) -> str:
    """A typed value as ChatAdapter field text (JSON for containers, Python for bools)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    return json.dumps(value, ensure_ascii=False)
