"""Labelled examples written into a prompt: the one reader of "Query: ... / Intent: ...".

Two spellings occur in the prompts the simulated LM must read:
- lines "Query: <text>" then "Intent: <label>" (the Synth-style proposer, a task
  app's few-shot instruction, DSPy's proposer task demos); other lines such as
  "Reasoning: ..." may sit between them, as in ChainOfThought demos. Accepted
  keys: query/question/text/utterance/input/customer query, and
  intent/label/category/class/answer, case-insensitive.
- DSPy `Example({'query': ..., 'intent': ...}) (input_keys=...)` reprs, which
  MIPROv2's dataset-summary prompts show.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from typing import Any

_QUERY_KEYS = ("query", "question", "text", "utterance", "input", "customer query")
_LABEL_KEYS = ("intent", "label", "category", "class", "answer")
_KEY_LINE = re.compile(r"^[ \t>*-]*([A-Za-z][A-Za-z ]{0,20}?)[ \t]*:[ \t]*(.*)$")
_EXAMPLE_REPR = re.compile(r"Example\((\{.*?\})\)\s*\(input_keys=", re.DOTALL)


def labelled_examples(text: str) -> list[tuple[str, str]]:
    """(query, label) pairs from "Query:/Intent:" lines and DSPy Example reprs, in order."""
    return list(_cached_examples(text))


@lru_cache(maxsize=1024)
def _cached_examples(text: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for line in text.splitlines():
        if ":" not in line:
            continue
        match = _KEY_LINE.match(line)
        if not match:
            continue
        key, value = match.group(1).strip().lower(), match.group(2).strip()
        if key in _QUERY_KEYS:
            pending = value or None
        elif key in _LABEL_KEYS and pending is not None:
            label = value.strip("\"'`*").rstrip(".,;").strip()
            if label:
                pairs.append((pending, label))
            pending = None
    if "Example(" in text:
        for blob in _EXAMPLE_REPR.findall(text):
            try:
                data = ast.literal_eval(blob)
            except (ValueError, SyntaxError):
                continue
            pair = pair_from_mapping(data) if isinstance(data, dict) else None
            if pair is not None:
                pairs.append(pair)
    return tuple(pairs)


def pair_from_mapping(data: dict[str, Any]) -> tuple[str, str] | None:
    """(query, label) from a record's fields (a DSPy Example, a JSON train row), if both
    are present: the same key names as the "Query:/Intent:" lines."""
    lowered = {str(k).lower(): v for k, v in data.items()}
    query = next((lowered[k] for k in _QUERY_KEYS if isinstance(lowered.get(k), str)), None)
    label = next((lowered[k] for k in _LABEL_KEYS if isinstance(lowered.get(k), str)), None)
    if query and query.strip() and label and label.strip():
        return query, label
    return None
