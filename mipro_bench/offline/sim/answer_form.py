"""How the simulated LM spells its answer: format drift, as small real models do it.

The classifier picks a label; a small model does not always *write* it as listed.
Unless the prompt pins the format, part of its answers drift from the label set:
- prose that paraphrases the intent without naming it ("The customer is asking
  about cards arrivals."): the suite's label rule cannot parse it, scored wrong;
- two intents when the model is torn between the best and the second-best label
  (their scores within AMBIGUITY of each other): "card_arrival or
  card_delivery_estimate", refused by the rule (it names two intents);
- the label re-cased, as Title Case words ("Card Arrival") or as an upper-case
  constant ("CARD_ARRIVAL"), half each: the rule's case- and separator-insensitive
  step parses both (a case-sensitive rule would lose the constants outright and keep
  most Title Case only through its fuzzy step).
What pins the format, all read from the request only:
- the instruction saying so (`pins_format`: "respond with only the intent name,
  spelled exactly as listed", "verbatim", "no other text", ...; a tool schema's or
  a field description's "spelled exactly" does not count: small models follow the
  instruction, not the schema): prose drops to PINNED_PROSE_FACTOR of its rate,
  Title Case and two-intent answers stop;
- demonstrations in the prompt (DSPy demo turns, "Query:/Intent:" lines): each
  shows the answer format for every intent, so each halves every drift rate
  (DEMO_FACTOR), whichever intents they show.
Which items drift is a fixed draw per query text (not per prompt), with nested
thresholds: a stricter prompt only removes drift, never moves it to other items.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from mipro_bench.offline.sim.classifier import Decision

PROSE_RATE = 0.25  # unparseable paraphrase, unpinned and without demos
CASE_RATE = 0.20  # Title Case words or UPPER_CASE, parseable
AMBIGUITY = 0.95  # runner-up score >= AMBIGUITY * best score: a torn model names both
PINNED_PROSE_FACTOR = 0.4
DEMO_FACTOR = 0.5

_PIN_PATTERNS = (
    r"\b(?:answer|respond|reply|output|return|give|write|print)\w*\b[^.\n]{0,60}?"
    r"\b(?:only|exact|exactly|verbatim|nothing but|just|solely)\b[^.\n]{0,60}?"
    r"\b(?:intent|label|name|category|class)",
    r"\b(?:spelled|spelt|written|copied|reproduced)\s+(?:exactly|verbatim|character for character)",
    r"\bexact(?:ly)?\s+as\s+(?:listed|written|given|shown|spelled|it appears)",
    r"\bverbatim\b",
    r"\bno\s+(?:other|extra|additional|surrounding)\s+(?:text|words|explanation|prose|commentary)",
    r"\b(?:only|just)\s+the\s+(?:exact\s+)?(?:intent|label)(?:\s+name)?\b",
)
_PIN = re.compile("|".join(f"(?:{p})" for p in _PIN_PATTERNS), re.IGNORECASE)

# Word variants for paraphrases: every word of the label changes form, so no label's
# token run survives (the rule then finds no intent named in the sentence).
_VARIANTS = {
    "top": "topping", "up": "up", "not": "not", "or": "or", "and": "and", "by": "via",
    "my": "my", "to": "to", "for": "for", "of": "of", "via": "through", "atm": "cash machine",
    "pin": "PIN number", "apple": "Apple", "google": "Google", "visa": "Visa cards",
    "mastercard": "Mastercards", "fiat": "fiat-money", "showing": "shown", "working": "functioning",
    "received": "arriving", "recognised": "recognized", "charged": "charges",
    "after": "following", "wrong": "incorrect", "limit": "limits", "limits": "limit",
    "verify": "verification of", "identity": "ID", "change": "changing",
}


def pins_format(instruction: str) -> bool:
    """Whether the instruction tells the model to answer with the label name only."""
    return _pins(instruction)


@lru_cache(maxsize=512)
def _pins(instruction: str) -> bool:
    return bool(_PIN.search(instruction))


def answer_text(decision: Decision, query: str, *, pinned: bool, demos: int) -> str:
    """The label as this model writes it for this query, under this prompt's discipline."""
    damp = DEMO_FACTOR ** max(demos, 0)
    prose = PROSE_RATE * (PINNED_PROSE_FACTOR if pinned else 1.0) * damp
    case = 0.0 if pinned else CASE_RATE * damp
    u_form, u_torn = _draws(query)
    if u_form < prose:
        return paraphrase(decision.label)
    torn = (
        not pinned
        and decision.runner_up is not None
        and decision.score > 0
        and decision.runner_score >= AMBIGUITY * decision.score
        and u_torn < damp
    )
    if torn:
        return f"{decision.label} or {decision.runner_up}"
    if u_form < prose + case / 2:
        return title_case(decision.label)
    if u_form < prose + case:
        return decision.label.upper()
    return decision.label


def label_words(label: str) -> list[str]:
    return [w for w in re.split(r"[^A-Za-z0-9]+", label.lower()) if w]


def title_case(label: str) -> str:
    """ "card_arrival" -> "Card Arrival" (parseable by the rule's normalised step)."""
    return " ".join(w.capitalize() for w in label_words(label))


def paraphrase(label: str) -> str:
    """A sentence about the intent that names no label (every word changes form)."""
    words = [_variant(w) for w in label_words(label)]
    return f"The customer is asking about {' '.join(words)}."


def _variant(word: str) -> str:
    if word in _VARIANTS:
        return _VARIANTS[word]
    if word.endswith("s") and len(word) > 3:
        return word[:-1]
    return word + "s"


@lru_cache(maxsize=8192)
def _draws(query: str) -> tuple[float, float]:
    digest = hashlib.sha256(("sim-form:" + " ".join(query.lower().split())).encode()).digest()
    scale = float(1 << 64)
    return (
        int.from_bytes(digest[:8], "big") / scale,
        int.from_bytes(digest[8:16], "big") / scale,
    )
