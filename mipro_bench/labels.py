"""Mapping a model's answer to one of the 77 intents: the one rule every scorer uses.

Order of rules (first hit wins), documented in the README:
1. exact match;
2. case-, space-, hyphen- and underscore-insensitive match;
3. the answer contains exactly one intent name (normalized) as a whole token run;
4. closest intent by difflib ratio on the normalized text, if the ratio is >= 0.8.
Anything else is unparsed (None) and scored wrong.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from functools import lru_cache

CLOSE_MATCH_CUTOFF = 0.8


def normalize(text: str) -> str:
    return re.sub(r"[\s_\-]+", "_", text.strip().strip("\"'`.,;:!").lower()).strip("_")


@lru_cache(maxsize=64)
def _index(labels: tuple[str, ...]) -> dict[str, str]:
    return {normalize(name): name for name in labels}


def map_to_label(answer: str | None, labels: Sequence[str]) -> str | None:
    """Return the canonical intent the answer names, or None when it names none."""
    if answer is None:
        return None
    labels_t = tuple(labels)
    text = answer.strip()
    if not text:
        return None
    if text in labels_t:
        return text
    index = _index(labels_t)
    key = normalize(text)
    if key in index:
        return index[key]
    words = normalize(re.sub(r"[^A-Za-z0-9_ -]", " ", text))
    padded = f"_{words}_"
    contained = [name for norm, name in index.items() if f"_{norm}_" in padded]
    # Named inside a sentence: accept only when every hit is part of one longest name
    # ("top_up_failed" also contains no other intent), never when two intents are named.
    if contained:
        longest = max(contained, key=len)
        inside = normalize(longest)
        return longest if all(normalize(o) in inside for o in contained) else None
    close = difflib.get_close_matches(key, list(index), n=1, cutoff=CLOSE_MATCH_CUTOFF)
    return index[close[0]] if close else None


def intent_from_tool_arguments(arguments: str | dict | None) -> str | None:
    """The `intent` argument of a banking77_classify tool call (JSON string or dict)."""
    if arguments is None:
        return None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            match = re.search(r'"intent"\s*:\s*"([^"]*)"', arguments)
            return match.group(1) if match else arguments
    if isinstance(arguments, dict):
        value = arguments.get("intent")
        return value if isinstance(value, str) else None
    return None
