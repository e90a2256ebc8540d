"""Finding the label set, the query, the instruction and the demos in a prompt.

Sources, in order of trust (the first that yields labels wins):
1. the forced tool's parameter `enum` (the task app's `banking77_classify`);
2. a DSPy output field typed `Literal[...]`;
3. a header line "Available intents:" (or labels/categories/classes) followed
   by one name a line, or the names on the header's own line, comma-separated;
4. any snake_case token in the system and final user text (tool names and DSPy
   field names excluded), in order of first appearance.
The query is the DSPy input field (query/text/question/... else the first), else
the last "Customer query:" / "Query:" / "Text:" line of the final user message,
else that whole message. Demos are DSPy demo turns and "Query: ... / Intent: ..."
line pairs anywhere in the prompt (examples.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mipro_bench.offline.sim.dspy_shape import DSPyPrompt, FieldSpec
from mipro_bench.offline.sim.examples import labelled_examples
from mipro_bench.offline.sim.request import ChatRequest
from mipro_bench.offline.sim.text import LABEL_TOKEN, label_key

QUERY_FIELDS = ("query", "text", "question", "utterance", "input", "message", "sentence")
LABEL_FIELDS = ("intent", "label", "category", "class", "intent_label", "answer")

# "Available intents:" / "Labels:" (plural, or singular with a qualifier: a demo's
# "Intent: card_arrival" line is not a label list).
_LIST_HEADER = re.compile(
    r"^\s*(?:(?:available|possible|valid|allowed|candidate)\s+(?:intents?|labels?|categories|"
    r"category|classes|class)|intents|labels|categories|classes)\s*:\s*(.*)$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_NAME = re.compile(r"^[A-Za-z][\w?]*$")
_QUERY_LINE = re.compile(
    r"^[ \t>*-]*(?:customer[ \t]+)?(?:query|question|text|utterance|message|input)[ \t]*:[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class ClassificationView:
    labels: tuple[str, ...]
    query: str
    hint_text: str
    demos: tuple[tuple[str, str], ...]
    instruction: str = ""  # what the prompt's author wrote (format cues are read here only)


def label_field(dspy: DSPyPrompt) -> FieldSpec | None:
    """The output field that holds the class: a Literal field, else one named like a label."""
    outputs = dspy.signature.outputs
    for spec in outputs:
        if spec.options:
            return spec
    for spec in outputs:
        if spec.name.lower() in LABEL_FIELDS:
            return spec
    return None


def query_field(dspy: DSPyPrompt) -> str | None:
    names = [spec.name for spec in dspy.signature.inputs] or list(dspy.inputs)
    for wanted in QUERY_FIELDS:
        for name in names:
            if name.lower() == wanted:
                return name
    return names[0] if names else None


def read_classification(request: ChatRequest, dspy: DSPyPrompt | None) -> ClassificationView:
    """Everything the classifier needs; `labels` is empty when the prompt names none."""
    excluded = {t["function"]["name"].lower() for t in request.tools}
    if dspy is not None:
        excluded |= {s.name.lower() for s in (*dspy.signature.inputs, *dspy.signature.outputs)}
    labels = _tool_labels(request)
    field = label_field(dspy) if dspy is not None else None
    if not labels and field is not None:
        labels = field.options
    if not labels:
        labels = _listed_labels(request.texts("system", "developer", "user"))
    if not labels:
        labels = _token_labels([request.system_text(), request.last_user()], excluded)
    if dspy is not None:
        qname = query_field(dspy)
        query = dspy.inputs.get(qname, "") if qname else ""
        hint_text = request.system_text()
        instruction = dspy.signature.instruction
        demos = [
            (d_in.get(qname, ""), d_out.get(field.name, ""))
            for d_in, d_out in dspy.demos
            if qname and field is not None
        ]
    else:
        query = _plain_query(request.last_user())
        hint_text = request.system_text() or _without_query(request.last_user())
        instruction = hint_text
        demos = []
    for message in request.messages:
        demos.extend(labelled_examples(message.content))
    clean = tuple((q.strip(), _strip_value(lbl)) for q, lbl in demos if q.strip() and lbl.strip())
    return ClassificationView(tuple(labels), query, hint_text, clean, instruction)


def _strip_value(value: str) -> str:
    return value.strip().strip("\"'`*").rstrip(".,;").strip()


def string_enum(spec: object) -> tuple[str, ...]:
    """A JSON-schema property's `enum` when it is a non-empty list of strings, else ()."""
    enum = spec.get("enum") if isinstance(spec, dict) else None
    if isinstance(enum, list) and enum and set(map(type, enum)) == {str}:
        return tuple(enum)
    return ()


def _tool_labels(request: ChatRequest) -> tuple[str, ...]:
    tool = request.forced_tool()
    if tool is None:
        return ()
    props = (tool["function"].get("parameters") or {}).get("properties")
    for spec in props.values() if isinstance(props, dict) else ():
        enum = string_enum(spec)
        if enum:
            return enum
    return ()


def _listed_labels(texts: Sequence[str]) -> tuple[str, ...]:
    for text in texts:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            header = _LIST_HEADER.match(line)
            if not header:
                continue
            inline = [_strip_value(v) for v in re.split(r"[,;]", header.group(1))]
            names = [v for v in inline if _NAME.match(v)] or _bulleted_names(lines[i + 1 :])
            if names:
                return tuple(dict.fromkeys(names))
    return ()


def _bulleted_names(lines: Sequence[str]) -> list[str]:
    """The names listed one per line under a header (blank lines before the first allowed)."""
    names: list[str] = []
    for item in lines:
        value = _strip_value(_BULLET.sub("", item))
        if not value:
            if names:
                break
            continue
        if not _NAME.match(value):
            break
        names.append(value)
    return names


def _token_labels(texts: Sequence[str], excluded: set[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for text in texts:
        for match in LABEL_TOKEN.finditer(text):
            name = match.group()
            key = label_key(name)
            if name.lower() not in excluded and key not in seen:
                seen[key] = name
    return tuple(seen.values())


def _plain_query(content: str) -> str:
    start = _last_query_line(content)
    if start is None:
        return content.strip()
    rest = _QUERY_LINE.sub("", content[start:], count=1)
    return rest.split("\n\n", 1)[0].strip()


def _without_query(content: str) -> str:
    start = _last_query_line(content)
    return content[:start] if start is not None else ""


def _last_query_line(content: str) -> int | None:
    """Offset of the last "...query:"-style line (scanned from the end: it is near it)."""
    end = len(content)
    while end > 0:
        start = content.rfind("\n", 0, end - 1) + 1
        line = content[start:end]
        if ":" in line and _QUERY_LINE.match(line):
            return start
        end = start - 1 if start > 0 else 0
    return None
