"""Words for the simulated LM: tokenizing, stopwords, a small stemmer, label-like names.

The simulated LM only "understands" text through these content terms, so the
rules are deliberately simple and fixed: a query scores a label when they
share stemmed content words. "arrived", "arrival" and "arrive" must meet, and
"my", "the", "please" must not count, or the baseline would be noise.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Label-like names: snake_case with at least one underscore. Banking77 has
# `Refund_not_showing_up` (capital R) and `reverted_card_payment?` (trailing "?").
LABEL_TOKEN = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\??")

_WORD = re.compile(r"[a-z0-9]+")
_NOT = re.compile(r"n't\b|n’t\b")

_STOPWORD_TEXT = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by ca can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just let me more most my myself no nor of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with wo would you your yours yourself
    yourselves im ive id ill youre dont cant wont isnt didnt doesnt hasnt havent
    also still yet already please help hi hello thanks thank get got one two us ok okay
    s t d ll m re ve
    intent intents query queries label labels category categories customer customers keyword
    keywords hint hints word words example examples typical mention mentions mentioned
    like want wanted need needs know tell say says said way make made use used using see seen
    think something anything much many now today ago able possible really even well sure going
    happen happened since ever soon guys hey anyone someone thing things look looks looking
    give sort kind lot lots yes sir madam
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# "not" stays a content word: half of Banking77's label names hinge on it
# (card_not_working, Refund_not_showing_up, transfer_not_received_by_recipient).

_IRREGULAR = {
    "paid": "pay",
    "sent": "send",
    "stolen": "steal",
    "stole": "steal",
    "took": "take",
    "taken": "take",
    "came": "come",
    "went": "go",
    "gone": "go",
    "bought": "buy",
    "gotten": "get",
    "withdrew": "withdraw",
    "withdrawn": "withdraw",
    "cannot": "not",
    "forgot": "forget",
    "forgotten": "forget",
    "lost": "lose",
    "topup": "top",
}

# Suffixes stripped: the first that leaves a long enough stem with a vowel wins.
_SUFFIXES = (
    ("ications", "i", 3),
    ("ication", "i", 3),
    ("ations", "", 4),
    ("ation", "", 4),
    ("ating", "", 4),
    ("ated", "", 4),
    ("ates", "", 4),
    ("ate", "", 4),
    ("ments", "", 3),
    ("ment", "", 3),
    ("ingly", "", 3),
    ("ing", "", 3),
    ("edly", "", 3),
    ("ed", "", 3),
    ("ies", "i", 2),
    ("sses", "ss", 2),
    ("ness", "", 3),
    ("als", "", 4),
    ("al", "", 4),
    ("ly", "", 3),
    ("es", "e", 3),
    ("s", "", 3),
)
_VOWEL = re.compile(r"[aeiouy]")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix stemmer (Porter-like step 1 plus a few derivations); lower-case in."""
    word = _IRREGULAR.get(word, word)
    if len(word) <= 3 or word.isdigit():
        return word
    base = word
    if not word.endswith(("ss", "us", "is")):
        for suffix, repl, min_stem in _SUFFIXES:
            if word.endswith(suffix):
                candidate = word[: -len(suffix)]
                if len(candidate) >= min_stem and _VOWEL.search(candidate):
                    base = candidate + repl
                    break
    # Undouble a final consonant ("topping" -> "top", "cancelled" -> "cancel").
    if len(base) > 3 and base[-1] == base[-2] and base[-1] not in "aeiousz":
        base = base[:-1]
    if len(base) > 3 and base.endswith("e"):
        base = base[:-1]
    if len(base) > 3 and base.endswith("y"):
        base = base[:-1] + "i"
    return base.replace("iz", "is")  # recognize / recognise


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words, with "n't" read as "not"; underscores split words."""
    return _WORD.findall(_NOT.sub(" not", text.lower()))


def content_words(text: str) -> list[str]:
    """Words that carry meaning (stopwords and one-letter words dropped), unstemmed."""
    return [w for w in words(text) if len(w) > 1 and w not in STOPWORDS]


def terms(text: str) -> list[str]:
    """Stemmed content terms, in order, with repeats: the unit the classifier counts."""
    return [stem(w) for w in content_words(text)]


def label_key(name: str) -> str:
    """Case- and punctuation-insensitive key of a label name, for matching mentions."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
