"""Mapping a model's answer to one of the 77 intents: the one rule every scorer uses.

Order of rules (first hit wins), documented in the README:
1. exact match;
2. case-, space-, hyphen- and underscore-insensitive match;
3. the answer names exactly one intent inside a sentence: an intent is named where
   its tokens stand alone as a whole token run, not where they are part of a longer
   intent's name (Banking77 has three such pairs: exchange_rate inside
   card_payment_wrong_exchange_rate and wrong_exchange_rate_for_cash_withdrawal,
   card_not_working inside virtual_card_not_working), so "exchange_rate, not
   card_payment_wrong_exchange_rate" names two intents and is unparsed;
4. closest intent by difflib ratio on the normalized text, if the ratio is >= 0.8.
Anything else is unparsed (None) and scored wrong.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

CLOSE_MATCH_CUTOFF = 0.8

Step = Literal["exact", "normalised", "sentence", "fuzzy", "none"]


@dataclass(frozen=True)
class LabelMatch:
    """Which intent an answer maps to, and which step of the rule decided it.

    `named` lists the intents step 3 found standing alone in the answer: one when it
    matched, two or more when the answer was refused for naming several (step "none").
    """

    label: str | None
    step: Step
    named: tuple[str, ...] = ()


def contained_pairs(labels: Sequence[str]) -> list[tuple[str, str]]:
    """(shorter, longer) intents whose tokens are a run inside the longer's name: the pairs
    step 3 must tell apart (three in Banking77's 77)."""
    runs = _tokens_by_label(tuple(labels))
    return sorted((a, b) for a, ra in runs for b, rb in runs
                  if a != b and len(ra) < len(rb) and _occurrences(rb, ra))


def normalize(text: str) -> str:
    return re.sub(r"[\s_\-]+", "_", text.strip().strip("\"'`.,;:!").lower()).strip("_")


@lru_cache(maxsize=64)
def _index(labels: tuple[str, ...]) -> dict[str, str]:
    return {normalize(name): name for name in labels}


def _tokens(text: str) -> tuple[str, ...]:
    """Lower-case word tokens; punctuation is a separator (names and answers alike, so
    Banking77's "reverted_card_payment?" is named by "reverted card payment")."""
    return tuple(t for t in normalize(re.sub(r"[^A-Za-z0-9_ -]", " ", text)).split("_") if t)


@lru_cache(maxsize=64)
def _tokens_by_label(labels: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(label, its tokens), longest name first."""
    pairs = [(name, _tokens(name)) for name in labels]
    return tuple(sorted(pairs, key=lambda pair: -len(pair[1])))


def _occurrences(tokens: tuple[str, ...], run: tuple[str, ...]) -> list[tuple[int, int]]:
    k = len(run)
    return [(i, i + k) for i in range(len(tokens) - k + 1) if tokens[i:i + k] == run]


def named_intents(answer: str, labels: Sequence[str]) -> tuple[str, ...]:
    """The intents an answer names as standalone token runs (step 3's evidence).

    An occurrence inside the span of a longer intent's occurrence does not count: that
    is the longer intent being named, not both.
    """
    tokens = _tokens(answer)
    found: list[tuple[str, tuple[int, int]]] = []
    for name, run in _tokens_by_label(tuple(labels)):
        if run:
            found += [(name, span) for span in _occurrences(tokens, run)]

    def inside_longer(name: str, span: tuple[int, int]) -> bool:
        return any(other != name and o[0] <= span[0] and span[1] <= o[1]
                   and o[1] - o[0] > span[1] - span[0] for other, o in found)

    named = {name for name, span in found if not inside_longer(name, span)}
    return tuple(sorted(named))


def match_label(answer: str | None, labels: Sequence[str]) -> LabelMatch:
    """The intent the answer names, with the step of the rule that decided it."""
    if answer is None:
        return LabelMatch(None, "none")
    labels_t = tuple(labels)
    text = answer.strip()
    if not text:
        return LabelMatch(None, "none")
    if text in labels_t:
        return LabelMatch(text, "exact")
    index = _index(labels_t)
    key = normalize(text)
    if key in index:
        return LabelMatch(index[key], "normalised")
    named = named_intents(text, labels_t)
    if len(named) == 1:
        return LabelMatch(named[0], "sentence", named)
    if named:  # names two or more intents: refuse rather than pick one
        return LabelMatch(None, "none", named)
    close = difflib.get_close_matches(key, list(index), n=1, cutoff=CLOSE_MATCH_CUTOFF)
    return LabelMatch(index[close[0]], "fuzzy") if close else LabelMatch(None, "none")


def map_to_label(answer: str | None, labels: Sequence[str]) -> str | None:
    """Return the canonical intent the answer names, or None when it names none."""
    return match_label(answer, labels).label


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
