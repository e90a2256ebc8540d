"""Reading DSPy adapter prompts (ChatAdapter and JSONAdapter, dspy 3.4.1).

DSPy renders a signature into a system message ("Your input fields are: ...
Your output fields are: ... In adhering to this structure, your objective is:
<instructions>"), then demo turns (user `[[ ## field ## ]]` blocks, assistant
`[[ ## field ## ]]` blocks or a JSON object), then the final user turn. A real
model answers "every output field, then [[ ## completed ## ]]"; to do that the
simulated LM needs the field names and types, the instruction, the demos and
the current inputs. The parse is cached per system text (it repeats across
every call of one program).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

from mipro_bench.offline.sim.request import ChatRequest

_FIELD_LINE = re.compile(r"^\d+\. `(\w+)` \((.*?)\):[ \t]?(.*)$")
_MARKER = re.compile(r"^\[\[ ## (\w+) ## \]\][ \t]*$", re.MULTILINE)
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")
_OBJECTIVE = "your objective is:"
_RESPOND = re.compile(r"\n\s*Respond with (?:the corresponding output fields|a JSON object)\b")


@dataclass(frozen=True)
class FieldSpec:
    """One signature field as DSPy described it: name, type text, description."""

    name: str
    type: str
    desc: str

    @property
    def options(self) -> tuple[str, ...]:
        """The allowed values of a Literal[...] field, else ()."""
        return literal_options(self.type)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]
    instruction: str
    json_outputs: bool  # JSONAdapter: the assistant answers one JSON object


@dataclass(frozen=True)
class DSPyPrompt:
    signature: Signature
    demos: tuple[tuple[dict[str, str], dict[str, str]], ...]  # (inputs, outputs) per demo
    inputs: dict[str, str]  # the final user turn's field values


@lru_cache(maxsize=256)
def literal_options(type_text: str) -> tuple[str, ...]:
    if not type_text.startswith("Literal["):
        return ()
    return tuple(a if a else b for a, b in _QUOTED.findall(type_text))


def read_dspy(request: ChatRequest) -> DSPyPrompt | None:
    """The DSPy view of a request, or None when it is not a DSPy adapter prompt."""
    system = request.system_text()
    if "Your output fields are:" not in system:
        return None
    signature = _signature(system)
    if signature is None:
        return None
    turns = [m for m in request.messages if m.role in ("user", "assistant")]
    demos = []
    pending: dict[str, str] | None = None
    for turn in turns[:-1]:
        if turn.role == "user":
            pending = fields_of(turn.content)
        elif pending is not None:
            demos.append((pending, _assistant_fields(turn.content, signature)))
            pending = None
    final = turns[-1].content if turns and turns[-1].role == "user" else ""
    return DSPyPrompt(signature=signature, demos=tuple(demos), inputs=fields_of(final))


@lru_cache(maxsize=256)
def _signature(system: str) -> Signature | None:
    try:
        head, rest = system.split("Your output fields are:", 1)
    except ValueError:
        return None
    inputs_text = head.split("Your input fields are:", 1)[-1]
    outputs_text = rest.split("All interactions will be structured", 1)[0]
    outputs = _fields(outputs_text)
    if not outputs:
        return None
    instruction = ""
    idx = system.find(_OBJECTIVE)
    if idx >= 0:
        lines = system[idx + len(_OBJECTIVE) :].splitlines()
        instruction = "\n".join(line[8:] if line.startswith(" " * 8) else line for line in lines)
        instruction = instruction.strip()
    return Signature(
        inputs=_fields(inputs_text),
        outputs=outputs,
        instruction=instruction,
        json_outputs="Outputs will be a JSON object" in system,
    )


def _fields(text: str) -> tuple[FieldSpec, ...]:
    fields: list[FieldSpec] = []
    for line in text.splitlines():
        match = _FIELD_LINE.match(line.strip())
        if match:
            fields.append(FieldSpec(match.group(1), match.group(2), match.group(3).strip()))
        elif fields and line.strip() and not line.strip().startswith("Constraints:"):
            last = fields[-1]
            fields[-1] = FieldSpec(last.name, last.type, f"{last.desc}\n{line.strip()}".strip())
    return tuple(fields)


def fields_of(content: str) -> dict[str, str]:
    """The `[[ ## name ## ]]` blocks of a message, without DSPy's trailing reminder."""
    marks = list(_MARKER.finditer(content))
    values: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(content)
        value = content[mark.end() : end]
        reminder = _RESPOND.search(value)
        if reminder:
            value = value[: reminder.start()]
        if mark.group(1) != "completed":
            values[mark.group(1)] = value.strip()
    return values


def _assistant_fields(content: str, signature: Signature) -> dict[str, str]:
    values = fields_of(content)
    if values or not signature.json_outputs:
        return values
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
