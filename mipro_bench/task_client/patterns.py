"""Prompt patterns: finding the wildcards in a task app's messages and rendering a candidate.

Synth never sends a candidate prompt to the task app. The task app always
sends its baseline messages; the interceptor recognises them by the job's
`initial_prompt` patterns (literal text with `{wildcard}` holes), pulls the
wildcard values out (the query, the intent list) and renders the candidate's
patterns with the same values. A message that does not match its pattern is
an error, never a silent pass-through: a pass-through would score the
baseline under the candidate's name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

_WILDCARD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class PatternError(ValueError):
    """An initial_prompt that cannot be used, or messages that do not match it."""


@functools.lru_cache(maxsize=256)
def _pattern_regex(pattern: str, known: frozenset[str]) -> re.Pattern[str]:
    # Cached: every intercepted LM call extracts its wildcards with these, and escaping a
    # long instruction per call cost more than the match itself.
    parts: list[str] = []
    seen: set[str] = set()
    pos = 0
    for m in _WILDCARD.finditer(pattern):
        name = m.group(1)
        if name not in known:
            continue
        parts.append(re.escape(pattern[pos : m.start()]))
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
        seen.add(name)
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True)
class MessagePattern:
    role: str
    order: int
    pattern: str

    def wildcards(self, known: frozenset[str]) -> tuple[str, ...]:
        return tuple(m.group(1) for m in _WILDCARD.finditer(self.pattern) if m.group(1) in known)

    def regex(self, known: frozenset[str]) -> re.Pattern[str]:
        """Literal text escaped, each known `{name}` a lazy group (a repeat must match equal)."""
        return _pattern_regex(self.pattern, known)

    def render(self, values: Mapping[str, str], known: frozenset[str]) -> str:
        return _WILDCARD.sub(
            lambda m: values.get(m.group(1), m.group(0)) if m.group(1) in known else m.group(0),
            self.pattern,
        )


@dataclass(frozen=True)
class PromptPattern:
    """Synth's `initial_prompt` table: ordered message patterns plus wildcard names."""

    id: str
    name: str
    messages: tuple[MessagePattern, ...]
    wildcards: Mapping[str, str]  # name -> "REQUIRED" | "OPTIONAL"

    @classmethod
    def from_config(cls, data: Any) -> PromptPattern:
        if not isinstance(data, Mapping):
            raise PatternError("initial_prompt must be a table with messages and wildcards")
        raw_messages = data.get("messages")
        if not isinstance(raw_messages, Sequence) or isinstance(raw_messages, str | bytes):
            raise PatternError("initial_prompt.messages must be a list")
        if not raw_messages:
            raise PatternError("initial_prompt.messages is empty")
        messages: list[MessagePattern] = []
        for i, raw in enumerate(raw_messages):
            if not isinstance(raw, Mapping):
                raise PatternError(f"initial_prompt.messages[{i}] must be a table")
            role, pattern = raw.get("role"), raw.get("pattern", raw.get("content"))
            if not isinstance(role, str) or not role:
                raise PatternError(f"initial_prompt.messages[{i}].role must be a string")
            if not isinstance(pattern, str):
                raise PatternError(f"initial_prompt.messages[{i}].pattern must be a string")
            order = raw.get("order", i)
            if isinstance(order, bool) or not isinstance(order, int):
                raise PatternError(f"initial_prompt.messages[{i}].order must be an integer")
            messages.append(MessagePattern(role=role, order=order, pattern=pattern))
        wildcards = data.get("wildcards") or {}
        if not isinstance(wildcards, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in wildcards.items()
        ):
            raise PatternError("initial_prompt.wildcards must map names to REQUIRED/OPTIONAL")
        messages.sort(key=lambda m: m.order)
        if not any(m.role == "system" for m in messages):
            raise PatternError("initial_prompt needs a system message: it holds the instruction")
        return cls(
            id=str(data.get("id") or "initial_prompt"),
            name=str(data.get("name") or ""),
            messages=tuple(messages),
            wildcards=dict(wildcards),
        )

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self.wildcards)

    @property
    def instruction(self) -> str:
        """The system message's pattern: the text instruction-only MIPRO rewrites."""
        return next(m.pattern for m in self.messages if m.role == "system")

    def with_instruction(self, instruction: str) -> PromptPattern:
        messages = tuple(
            replace(m, pattern=instruction) if m.role == "system" else m for m in self.messages
        )
        return replace(self, messages=messages)

    def extract(self, messages: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """The wildcard values of `messages`, or PatternError saying which message differs."""
        if len(messages) != len(self.messages):
            raise PatternError(
                f"expected {len(self.messages)} messages matching initial_prompt "
                f"{self.id!r}, got {len(messages)}"
            )
        values: dict[str, str] = {}
        for i, (pattern, message) in enumerate(zip(self.messages, messages, strict=True)):
            role, content = message.get("role"), message.get("content")
            if role != pattern.role:
                raise PatternError(f"message {i}: role {role!r}, pattern expects {pattern.role!r}")
            if not isinstance(content, str):
                raise PatternError(f"message {i}: content must be text")
            match = pattern.regex(self.known).fullmatch(content)
            if match is None:
                raise PatternError(
                    f"message {i} ({role}) does not match initial_prompt {self.id!r}: the task "
                    "app's baseline messages and the job's initial_prompt must be the same text"
                )
            for name, value in match.groupdict().items():
                if name in values and values[name] != value:
                    raise PatternError(f"wildcard {name!r} has two different values")
                values[name] = value
        missing = [n for n, kind in self.wildcards.items()
                   if kind.upper() == "REQUIRED" and n not in values]
        if missing:
            raise PatternError(f"required wildcard(s) {', '.join(missing)} not found")
        return values

    def render(self, values: Mapping[str, str]) -> list[dict[str, str]]:
        return [
            {"role": m.role, "content": m.render(values, self.known)} for m in self.messages
        ]

    def substitute(
        self, baseline: PromptPattern, messages: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, str]]:
        """This (candidate) pattern rendered with the wildcards found in baseline messages."""
        return self.render(baseline.extract(messages))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "messages": [
                {"role": m.role, "order": m.order, "pattern": m.pattern} for m in self.messages
            ],
            "wildcards": dict(self.wildcards),
        }
