"""The one answer->intent rule every scorer shares."""

from __future__ import annotations

import pytest

from mipro_bench.labels import intent_from_tool_arguments, map_to_label

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
