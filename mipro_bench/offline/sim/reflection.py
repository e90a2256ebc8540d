"""The simulated LM as a reflective prompt editor: GEPA-style "examples with feedback" prompts.

A reflection prompt shows the current instruction, a few task inputs with the
assistant's answers and feedback on each, and asks for a new instruction. It
never says "propose", so it is recognised by its own shape, in two spellings:
- DSPy's `ProposeInstruction` signature (dspy 3.4.1 GEPA's built-in proposer,
  through any DSPy adapter): input fields `current_instruction` and
  `examples_with_feedback` (a JSON list of {"Inputs", "Generated Outputs",
  "Feedback"}), output field `new_instruction`; generally, an output field
  naming "instruction" with an input field naming "feedback";
- the `gepa` package's plain template: the instruction in the first ``` block,
  then "# Example N" sections with "## Inputs" / "## Generated Outputs" /
  "## Feedback" headings, then "write a new instruction"; answered inside a
  ``` block, which is what gepa's `output_extractor` takes.

What a careful editor does with it, mechanically: keep the current instruction
(its task statement and every hint line it has), read from each example's
feedback the intent it should have named (only what the feedback says, e.g.
"the expected intent is card_arrival"; an answer the feedback calls correct
counts for its own intent), and add or extend the `intent: kw, kw` hint lines
(the proposer's format, which the classifier reads back) with the most telling
words of those examples' queries. A seeded draw only picks how many words a
hint gains (3-6), so the edit is deterministic per request. Feedback that
names no intent adds nothing: the instruction comes back unchanged.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mipro_bench.offline.sim.answer_form import pins_format
from mipro_bench.offline.sim.dspy_shape import DSPyPrompt
from mipro_bench.offline.sim.proposer import (
    DEFAULT_TASK,
    FORMAT_RULES,
    HINTS_HEADER,
    hint_lines_in,
    keywords_by_label,
    task_statement,
)
from mipro_bench.offline.sim.reading import LABEL_FIELDS, QUERY_FIELDS
from mipro_bench.offline.sim.text import LABEL_TOKEN, label_key, stem

MAX_HINT_WORDS = 16  # per intent, across reflections: the hint line stays readable
MIN_NEW_WORDS, MAX_NEW_WORDS = 3, 6

_NEW_INSTRUCTION = re.compile(r"\bwrite\s+(?:a\s+)?new\s+instructions?\b", re.IGNORECASE)
_FEEDBACK = re.compile(r"\bfeedback\b", re.IGNORECASE)
# Feedback that says the answer's form, not its intent, was the problem.
_FORMAT_TROUBLE = re.compile(r"named no intent|several intents|instead of one|not one of",
                             re.IGNORECASE)
_FENCE = re.compile(r"```[^\n]*\n(.*?)\n?```", re.DOTALL)
_EXAMPLE_HEAD = re.compile(r"^# Example \d+\s*$", re.MULTILINE)
_SECTION_HEAD = re.compile(r"^## (.+?)\s*$", re.MULTILINE)
_FIELD_HEAD = re.compile(r"^### (.+?)\s*$", re.MULTILINE)
_QUOTE = "[`'\"*]*"
# "the expected intent is X", "correct label: X", "should have been X", "gold: X"
_EXPECTED = re.compile(
    r"\b(?:(?:expected|correct|right|gold|true|target)\s+(?:intent|label|answer|class|category)"
    r"|should\s+(?:have\s+been|be)|gold|expected)\s*(?:is|was|would\s+be|[:=])?\s*" + _QUOTE
    + r"(" + LABEL_TOKEN.pattern + r")",
    re.IGNORECASE,
)
_JUDGED_RIGHT = re.compile(r"^\W*(?:correct|right|yes)\b", re.IGNORECASE)


@dataclass(frozen=True)
class FeedbackExample:
    query: str
    answer: str  # the assistant's generated label field (or its whole output)
    feedback: str


@dataclass(frozen=True)
class Reflection:
    current: str
    examples: tuple[FeedbackExample, ...]


def dspy_reflection(dspy: DSPyPrompt) -> Reflection | None:
    """The DSPy (`ProposeInstruction`-shaped) reflection request, or None."""
    if not any("instruction" in s.name.lower() for s in dspy.signature.outputs):
        return None
    feedback_field = next(
        (s.name for s in dspy.signature.inputs if "feedback" in s.name.lower()), None
    )
    if feedback_field is None:
        return None
    current_field = next(
        (s.name for s in dspy.signature.inputs if "instruction" in s.name.lower()), None
    )
    current = dspy.inputs.get(current_field, "") if current_field else ""
    raw = dspy.inputs.get(feedback_field, "")
    return Reflection(current.strip() or DEFAULT_TASK, _examples_from(raw))


def text_reflection(text: str) -> Reflection | None:
    """The gepa-template reflection request (plain text, instruction in ``` fences), or None."""
    if not (_NEW_INSTRUCTION.search(text) and _FEEDBACK.search(text) and "```" in text):
        return None
    fenced = _FENCE.search(text)
    current = fenced.group(1).strip() if fenced else ""
    return Reflection(current or DEFAULT_TASK, tuple(_markdown_examples(text)))


def fenced(instruction: str) -> str:
    """The answer in the shape gepa's output extractor reads: the text in one ``` block."""
    return f"```\n{instruction}\n```"


def expected_label(example: FeedbackExample) -> str | None:
    """The intent the feedback says the answer should have named; None when it says none."""
    match = _EXPECTED.search(example.feedback)
    if match:
        return match.group(1)
    if _JUDGED_RIGHT.match(example.feedback):
        answer = LABEL_TOKEN.search(example.answer)
        if answer:
            return answer.group()
    return None


def reflect_instruction(reflection: Reflection, seed: int) -> str:
    """The current instruction with hint lines added or extended from the feedback shown."""
    pairs = [
        (ex.query, label)
        for ex in reflection.examples
        if ex.query and (label := expected_label(ex)) is not None
    ]
    current = reflection.current
    statement = task_statement(current)
    # A reflective editor told that answers named no intent (prose, two intents) pins the
    # answer format: a real one reads "the answer named no intent of the list" as a format
    # problem, not as a missing hint.
    pin = (any(_FORMAT_TROUBLE.search(ex.feedback) for ex in reflection.examples)
           and not pins_format(current))
    if pin:
        statement = f"{statement}\n{random.Random(f'format-text:{seed}').choice(FORMAT_RULES)}"
    if not pairs and not pin:
        return current
    rng = random.Random(seed)
    hints: dict[str, list[str]] = {}  # label as written -> words, in the instruction's order
    keys: dict[str, str] = {}
    for label, words in hint_lines_in(current).items():
        keys.setdefault(label_key(label), label)
        hints.setdefault(keys[label_key(label)], []).extend(words)
    for label, words in keywords_by_label(pairs).items():
        name = keys.setdefault(label_key(label), label)
        merged = hints.setdefault(name, [])
        have = {stem(w) for w in merged}
        fresh = [w for w in words if stem(w) not in have]
        take = rng.randint(MIN_NEW_WORDS, MAX_NEW_WORDS)
        merged.extend(fresh[:take])
        del merged[MAX_HINT_WORDS:]
    lines = [f"{label}: {', '.join(words)}" for label, words in hints.items() if words]
    if not lines:
        return statement if pin else current
    return f"{statement}\n\n{HINTS_HEADER}\n" + "\n".join(lines)


# --- reading the examples -------------------------------------------------------------------


def _examples_from(raw: str) -> tuple[FeedbackExample, ...]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return tuple(_markdown_examples(raw))
    if not isinstance(data, list):
        return ()
    return tuple(ex for item in data if (ex := _example_of(item)) is not None)


def _example_of(item: Any) -> FeedbackExample | None:
    if not isinstance(item, Mapping):
        return None
    got = {str(k).lower(): v for k, v in item.items()}
    inputs = got.get("inputs")
    outputs = got.get("generated outputs", got.get("outputs"))
    feedback = got.get("feedback")
    if not isinstance(feedback, str):
        return None
    return FeedbackExample(_pick(inputs, QUERY_FIELDS), _pick(outputs, LABEL_FIELDS), feedback)


def _pick(value: Any, names: Sequence[str]) -> str:
    """The named field of an inputs/outputs mapping (else its first text value), or the text."""
    if isinstance(value, str):
        return value.strip()
    if not isinstance(value, Mapping):
        return ""
    lowered = {str(k).lower(): v for k, v in value.items()}
    for name in names:
        if isinstance(lowered.get(name), str):
            return lowered[name].strip()
    return next((v.strip() for v in lowered.values() if isinstance(v, str)), "")


def _markdown_examples(text: str) -> list[FeedbackExample]:
    """gepa's rendering: "# Example N", "## <key>" per record key, "### <field>" per field."""
    heads = list(_EXAMPLE_HEAD.finditer(text))
    found = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        if i + 1 == len(heads):  # the last one ends at the fence that closes the examples
            close = text.rfind("\n```")
            end = close if close > head.end() else end
        sections = _headed(text[head.end() : end], _SECTION_HEAD)
        record = {k: _headed(v, _FIELD_HEAD) or v.strip() for k, v in sections.items()}
        example = _example_of(record)
        if example is not None:
            found.append(example)
    return found


def _headed(text: str, head: re.Pattern[str]) -> dict[str, Any]:
    marks = list(head.finditer(text))
    out: dict[str, Any] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[mark.group(1)] = text[mark.end() : end].strip()
    return out
