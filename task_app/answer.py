"""Reading a chat-completion response: the model's answer, its usage.

The task app asks for a forced `banking77_classify` tool call, but not every
OpenAI-compatible server honours tools (llama.cpp without a grammar, some
proxies), and an answer in plain text is still an answer: it then goes
through the same `map_to_label` rule as the tool argument. Nothing here
raises on a malformed response; an unreadable one is simply "no answer".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mipro_bench.labels import intent_from_tool_arguments
from mipro_bench.prompt import TOOL_NAME

AnswerSource = Literal["tool_call", "text", "none"]


@dataclass(frozen=True)
class Answer:
    raw: str | None  # the tool's `intent` argument, or the text content
    source: AnswerSource
    finish_reason: str | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def _first_message(response: Any) -> tuple[dict[str, Any], str | None]:
    if not isinstance(response, dict):
        return {}, None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return {}, None
    choice = choices[0]
    message = choice.get("message")
    finish = choice.get("finish_reason")
    return (message if isinstance(message, dict) else {}), (
        finish if isinstance(finish, str) else None
    )


def extract_answer(response: Any) -> Answer:
    """The classify tool's intent if the model called it, else the message text."""
    message, finish = _first_message(response)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        functions = [
            c["function"] for c in calls
            if isinstance(c, dict) and isinstance(c.get("function"), dict)
        ]
        # Our tool first; any other single function call is still read (its intent argument).
        ordered = [f for f in functions if f.get("name") == TOOL_NAME] + [
            f for f in functions if f.get("name") != TOOL_NAME
        ]
        for function in ordered:
            intent = intent_from_tool_arguments(function.get("arguments"))
            if intent is not None and intent.strip():
                return Answer(raw=intent, source="tool_call", finish_reason=finish)
    content = message.get("content")
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        content = "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(
                p.get("text"), str)
        )
    if isinstance(content, str) and content.strip():
        return Answer(raw=content, source="text", finish_reason=finish)
    return Answer(raw=None, source="none", finish_reason=finish)


def extract_usage(response: Any) -> Usage:
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return Usage()

    def count(name: str) -> int | None:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return Usage(count("prompt_tokens"), count("completion_tokens"), count("total_tokens"))
