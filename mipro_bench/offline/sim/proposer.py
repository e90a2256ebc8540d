"""The simulated LM as a prompt engineer: dataset observations and new instructions.

A real meta model reads labelled examples and writes an instruction that
names the cues of each intent. The simulated one does the same mechanically:
for each intent seen in the prompt's examples it collects the most telling
content words of its queries (frequent for the intent, rare across intents),
then writes the current task statement followed by hint lines
`<intent>: kw1, kw2, ...` for a seeded subset of those intents (hints already
present in the prompt, e.g. in a dataset summary or the current instruction,
join the pool). The seeded coverage (30-100 % of the intents seen, or none in
one proposal out of five) and keyword count (4-10) make candidates differ in
quality: some clearly better than the baseline, some about equal. The
classifier (classifier.py/hints.py) reads exactly these hint lines back, so
better proposals really score better. Half the proposals (a separate seeded draw)
also add a sentence pinning the answer format, which answer_form.py reads back:
the candidates then differ in format discipline as well as in cues.

Examples come from examples.py (Query/Intent lines, DSPy Example reprs).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from mipro_bench.offline.sim.answer_form import pins_format
from mipro_bench.offline.sim.text import LABEL_TOKEN, content_words, label_key, stem

DEFAULT_TASK = "Classify the customer's query into exactly one of the available intents."
HINTS_HEADER = "Intent hints (intent: words that signal it):"
LEADS = (
    "",
    "Read the query carefully and choose the single intent that fits it best.",
    "Match the customer's words to the intent whose cues they share.",
    "Think about what the customer actually wants before choosing.",
)
NO_HINT_PROBABILITY = 0.2  # share of proposals that only rephrase (about baseline quality)
# Share of proposals that also pin the answer format (what a prompt writer adds after seeing
# drifted answers; answer_form.py reads it back). Drawn apart from the hints, so pins and
# hints come in every combination and the search has something to choose.
FORMAT_RULE_PROBABILITY = 0.7
FORMAT_RULES = (
    "Respond with only the intent name, spelled exactly as listed.",
    "Answer with just the intent label, copied verbatim from the list; no other text.",
    "Output only the exact intent name: no explanation, no second intent.",
)
MAX_KEYWORDS = 10

_HINT_LINE = re.compile(r"^[ \t>*•-]*(" + LABEL_TOKEN.pattern + r")[ \t]*:[ \t]*(\S.*)$")
_SECTION = re.compile(
    r"^\s*(?:labell?ed examples|examples|example|query|tip|propose|task demos)\b",
    re.IGNORECASE,
)


def hint_lines_in(text: str) -> dict[str, list[str]]:
    """Existing `label: kw, kw` lines (from a summary or a previous instruction)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = _HINT_LINE.match(line)
        if match:
            words = [w.strip() for w in re.split(r"[,;]", match.group(2)) if w.strip()]
            words = [w for w in words if content_words(w)]
            if words:
                found.setdefault(match.group(1), []).extend(words)
    return found


def keywords_by_label(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """For each label, its queries' content words, most telling first (one form per stem).

    A word ranks by how many of the label's queries use it times its rarity
    across the labels seen (IDF), so "card" or "not", common to many intents,
    come after "arrive" or "track" — what a careful prompt writer would name.
    """
    counts: dict[str, Counter[str]] = {}
    surface: dict[str, dict[str, str]] = {}
    for query, label in pairs:
        bag = counts.setdefault(label, Counter())
        forms = surface.setdefault(label, {})
        for word in dict.fromkeys(content_words(query)):
            if len(word) < 3 or word.isdigit():
                continue
            s = stem(word)
            bag[s] += 1
            forms.setdefault(s, word)
    df: Counter[str] = Counter()
    for bag in counts.values():
        df.update(bag.keys())
    n_labels = len(counts)
    out: dict[str, list[str]] = {}
    for label, bag in counts.items():
        ranked = sorted(bag, key=lambda s: -bag[s] * math.log(1.0 + n_labels / df[s]))
        if ranked:
            out[label] = [surface[label][s] for s in ranked]
    return out


def hint_pool(pairs: Iterable[tuple[str, str]], texts: Iterable[str]) -> dict[str, list[str]]:
    """Keywords per label from examples, then from hint lines already in the prompt."""
    pool = keywords_by_label(pairs)
    for text in texts:
        for label, words in hint_lines_in(text).items():
            merged = pool.setdefault(label, [])
            have = {stem(w) for w in merged}
            for word in words:
                if stem(word) not in have:
                    merged.append(word)
                    have.add(stem(word))
    return pool


def task_statement(instruction: str) -> str:
    """The instruction without hint lines and hint headers: what the task itself says."""
    kept = [
        line
        for line in instruction.splitlines()
        if not _HINT_LINE.match(line) and line.strip() != HINTS_HEADER
    ]
    text = "\n".join(kept).strip()
    return text or DEFAULT_TASK


def propose_instruction(
    current: str, pairs: Sequence[tuple[str, str]], texts: Sequence[str], seed: int
) -> str:
    """A new instruction: the task statement plus hints for a seeded subset of intents."""
    rng = random.Random(seed)
    statement = task_statement(current)
    lead = rng.choice(LEADS)
    head = f"{statement}\n{lead}".strip() if lead and lead not in statement else statement
    # A separate stream, so adding the format rule left every earlier draw as it was.
    if random.Random(f"format:{seed}").random() < FORMAT_RULE_PROBABILITY and not pins_format(head):
        head = f"{head}\n{random.Random(f'format-text:{seed}').choice(FORMAT_RULES)}"
    pool = hint_pool(pairs, [current, *texts])
    if not pool or rng.random() < NO_HINT_PROBABILITY:
        return head
    labels = list(pool)
    coverage = rng.uniform(0.3, 1.0)
    chosen = sorted(rng.sample(range(len(labels)), max(1, round(coverage * len(labels)))))
    k = rng.randint(4, MAX_KEYWORDS)
    lines = [f"{labels[i]}: {', '.join(pool[labels[i]][:k])}" for i in chosen]
    return f"{head}\n\n{HINTS_HEADER}\n" + "\n".join(lines)


def observations(pairs: Sequence[tuple[str, str]], prior: str = "") -> str:
    """DSPy DatasetDescriptor's answer: general remarks plus typical words per intent."""
    pool = keywords_by_label(pairs)
    known = {label_key(k) for k in hint_lines_in(prior)}
    new = {label: words for label, words in pool.items() if label_key(label) not in known}
    if prior and not new:
        return "COMPLETE"
    lines = [] if prior else [
        "The samples are short customer-support messages to a bank, each labelled with one "
        f"fine-grained intent ({len(pool)} distinct intents in these samples).",
    ]
    if new:
        lines.append("Typical words per intent:")
        lines.extend(f"{label}: {', '.join(words[:MAX_KEYWORDS])}" for label, words in new.items())
    lines.append("Most queries are a single informal sentence.")
    return "\n".join(lines)


def summarize(observations_text: str) -> str:
    """DSPy ObservationSummarizer's answer: two sentences plus the merged intent cues."""
    pool = hint_pool([], [observations_text])
    head = (
        "The dataset holds short banking customer-support queries, each labelled with one of "
        "many fine-grained intents. The task is intent classification; the cues per intent are:"
    )
    if not pool:
        return head.replace("; the cues per intent are:", ".")
    return head + "\n" + "\n".join(f"{k}: {', '.join(v[:MAX_KEYWORDS])}" for k, v in pool.items())


def current_instruction(text: str) -> str:
    """The text after a "Current instruction:" header, up to the next section (Synth shape)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(
            r"^\s*(?:current|baseline|basic|existing|original)\s+instruction\s*:\s*(.*)$",
            line,
            re.IGNORECASE,
        )
        if not match:
            continue
        body = [match.group(1)] if match.group(1).strip() else []
        for item in lines[i + 1 :]:
            if _SECTION.match(item):
                break
            body.append(item)
        return "\n".join(body).strip()
    return ""
