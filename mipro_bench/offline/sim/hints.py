"""Mining label hints from instruction text: which words a prompt ties to which label.

A sentence or line that names exactly one label gives that label its other
content words ("Use card_arrival for cards that have not arrived yet, tracking
delivery"). In a line naming several labels, a label owns the words after it
only in hint style, `label: words` (or `label - words`, `label = words`), up to
the next label; so lists such as DSPy's "one of: a; b; c", its
`Literal['a', 'b']` rendering or a task app's "Available intents:" block add
nothing beyond the names themselves.

Mentions are snake_case tokens (at least one underscore, optional trailing
"?"), matched to the prompt's labels case-insensitively; labels without an
underscore get no hints (all 77 Banking77 intents have one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mipro_bench.offline.sim.text import LABEL_TOKEN, label_key, terms

_SENTENCE_END = re.compile(r"(?<=[.!])\s+")
_HINT_SEPARATOR = re.compile(r"\s*[:=\-–>]")


def extract_hints(text: str, label_keys: Mapping[str, int]) -> dict[int, list[str]]:
    """Hint terms per label index (stemmed; repeats kept) for labels the text names."""
    hints: dict[int, list[str]] = {}
    for line in text.splitlines():
        if "_" not in line:  # no label-like token can occur: the common case, keep it cheap
            continue
        for segment in _SENTENCE_END.split(line):
            _segment_hints(segment, label_keys, hints)
    return hints


def _segment_hints(segment: str, label_keys: Mapping[str, int], out: dict[int, list[str]]) -> None:
    mentions = [
        (m, label_keys[label_key(m.group())])
        for m in LABEL_TOKEN.finditer(segment)
        if label_key(m.group()) in label_keys
    ]
    if not mentions:
        return
    if len({idx for _, idx in mentions}) == 1:
        rest = LABEL_TOKEN.sub(" ", segment)
        found = terms(rest)
        if found:
            out.setdefault(mentions[0][1], []).extend(found)
        return
    for i, (match, idx) in enumerate(mentions):
        end = mentions[i + 1][0].start() if i + 1 < len(mentions) else len(segment)
        tail = segment[match.end() : end]
        if not _HINT_SEPARATOR.match(tail):
            continue
        found = terms(LABEL_TOKEN.sub(" ", tail))
        if found:
            out.setdefault(idx, []).extend(found)
