"""The one answer->intent rule every scorer shares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mipro_bench.labels import (
    LabelMatch,
    contained_pairs,
    intent_from_tool_arguments,
    map_to_label,
    match_label,
)

LABELS = ("card_arrival", "card_linking", "top_up_failed", "top_up_reverted",
          "Refund_not_showing_up", "pin_blocked")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("card_arrival", "card_arrival"),
        ("Card Arrival", "card_arrival"),
        ("  card-arrival. ", "card_arrival"),
        ("refund_not_showing_up", "Refund_not_showing_up"),
        ("The intent is pin_blocked.", "pin_blocked"),
        ("card_arival", "card_arrival"),  # one typo: closest match above the cutoff
        ("top_up", None),  # ambiguous between two intents: not a guess
        ("something else entirely", None),
        ("", None),
        (None, None),
        ("card_arrival or card_linking", None),  # names two: refuse rather than pick
    ],
)
def test_map_to_label(answer: str | None, expected: str | None) -> None:
    assert map_to_label(answer, LABELS) == expected


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"intent": "pin_blocked"}', "pin_blocked"),
        ({"intent": "card_arrival"}, "card_arrival"),
        ('{"intent": "card_arrival"', "card_arrival"),  # truncated JSON
        ({"label": "x"}, None),
        (None, None),
    ],
)
def test_intent_from_tool_arguments(arguments, expected) -> None:
    assert intent_from_tool_arguments(arguments) == expected


# --- step 3 on token boundaries, and which step matched --------------------------------------
# Every Banking77 intent whose name is a token run inside another intent's name.
CONTAINED = [
    ("card_not_working", "virtual_card_not_working"),
    ("exchange_rate", "card_payment_wrong_exchange_rate"),
    ("exchange_rate", "wrong_exchange_rate_for_cash_withdrawal"),
]


def test_banking77_has_exactly_these_contained_pairs(real_data_dir: Path) -> None:
    names = json.loads((real_data_dir / "categories.json").read_text(encoding="utf-8"))
    assert len(names) == 77
    assert contained_pairs(names) == CONTAINED


@pytest.fixture(scope="module")
def banking77_names() -> tuple[str, ...]:
    # The pairs plus neighbours, so the test needs no data directory.
    return ("card_not_working", "virtual_card_not_working", "exchange_rate",
            "card_payment_wrong_exchange_rate", "wrong_exchange_rate_for_cash_withdrawal",
            "exchange_charge", "reverted_card_payment?", "card_arrival")


@pytest.mark.parametrize(("short", "long"), CONTAINED)
def test_naming_both_of_a_contained_pair_is_unparsed(short: str, long: str,
                                                     banking77_names: tuple[str, ...]) -> None:
    for answer in (f"It is {short}. Not {long}.", f"Not {long}, it is {short}.",
                   f"{long.replace('_', ' ')} or {short.replace('_', ' ')}"):
        got = match_label(answer, banking77_names)
        assert got == LabelMatch(None, "none", tuple(sorted((short, long)))), answer


@pytest.mark.parametrize(("short", "long"), CONTAINED)
def test_naming_one_of_a_contained_pair_maps_to_it(short: str, long: str,
                                                   banking77_names: tuple[str, ...]) -> None:
    assert match_label(f"The intent is {long}.", banking77_names) == LabelMatch(
        long, "sentence", (long,))
    assert match_label(f"The intent is {short}.", banking77_names) == LabelMatch(
        short, "sentence", (short,))
    # The same intent named twice is still one intent.
    assert map_to_label(f"{long}; yes, {long}", banking77_names) == long


@pytest.mark.parametrize(("answer", "step", "label"), [
    ("card_arrival", "exact", "card_arrival"),
    ("Card Arrival", "normalised", "card_arrival"),
    ("The intent is pin_blocked.", "sentence", "pin_blocked"),
    ("card_arival", "fuzzy", "card_arrival"),
    ("something else entirely", "none", None),
    (None, "none", None),
    ("   ", "none", None),
])
def test_match_label_says_which_step_decided(answer: str | None, step: str,
                                             label: str | None) -> None:
    got = match_label(answer, LABELS)
    assert (got.label, got.step) == (label, step)
    assert map_to_label(answer, LABELS) == label  # the thin wrapper agrees


def test_a_name_with_punctuation_is_found_in_a_sentence(banking77_names: tuple[str, ...]) -> None:
    assert match_label("I think it is reverted card payment.", banking77_names) == LabelMatch(
        "reverted_card_payment?", "sentence", ("reverted_card_payment?",))
