"""The simulated LM's format drift (answer_form.py): what it writes, and what pins it.

Unit tests on the policy, plus one over Banking77's 77 real names (BANKING77_DIR), since
the drifted forms must be what the suite's rule really cannot, or really can, parse.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mipro_bench.labels import intent_from_tool_arguments, match_label
from mipro_bench.offline.sim import SimulatedLM
from mipro_bench.offline.sim.answer_form import paraphrase, pins_format, title_case
from mipro_bench.offline.sim.proposer import FORMAT_RULES, propose_instruction
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, classify_tool, tool_choice
from tests.sim_support import LABELS

# "arrival rate" ties card_arrival and exchange_rate exactly (equal rarity, equal bags).
QUERIES = [f"question {i} about my card payment and the top up" for i in range(40)] + [
    f"arrival rate question {i}" for i in range(20)] + [
    "my card has not arrived", "the exchange rate was wrong", "pin is blocked",
    "refund is not showing up", "top up failed", "i lost my card", "payment was reverted",
]


def written(instruction: str, query: str, **kw) -> str | None:
    body = {
        "messages": build_messages(instruction, query, LABELS),
        "tools": [classify_tool(LABELS)],
        "tool_choice": tool_choice(),
        "temperature": 0.0,
    }
    response = SimulatedLM(**kw).complete(body)
    args = response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    return intent_from_tool_arguments(args)


def test_the_drifted_forms_are_what_the_rule_cannot_or_can_parse(real_data_dir: Path) -> None:
    labels = tuple(json.loads((real_data_dir / "categories.json").read_text()))
    assert len(labels) == 77
    for label in labels:
        assert match_label(paraphrase(label), labels).label is None, paraphrase(label)
        assert match_label(title_case(label), labels).label == label
    refused = match_label("card_arrival or card_delivery_estimate", labels)
    assert refused.label is None and len(refused.named) == 2


def test_unpinned_answers_drift_and_a_pinned_instruction_stops_most_of_it() -> None:
    plain = [written(BASELINE_INSTRUCTION, q) for q in QUERIES]
    pinned = [written(f"{BASELINE_INSTRUCTION}\n{FORMAT_RULES[0]}", q) for q in QUERIES]
    off_list = [a for a in plain if a not in LABELS]
    assert len(off_list) >= len(QUERIES) // 4
    assert any(" or " in a for a in off_list)  # torn between two intents
    assert any(a.startswith("The customer") for a in off_list)  # prose
    assert any(a in {title_case(label) for label in LABELS} for a in off_list)  # Title Case
    pinned_off = [a for a in pinned if a not in LABELS]
    assert len(pinned_off) < len(off_list) / 3
    assert all(a.startswith("The customer") for a in pinned_off)  # only prose is left
    # Nested thresholds: pinning never makes an exactly written answer drift.
    for a, b in zip(plain, pinned, strict=True):
        if a in LABELS:
            assert b == a


def test_demos_teach_the_format_whatever_their_intents() -> None:
    demos = "\n\nExamples:\nQuery: my wallet was taken\nIntent: lost_or_stolen_card\n"
    plain = [written(BASELINE_INSTRUCTION, q) for q in QUERIES]
    shown = [written(BASELINE_INSTRUCTION + demos, q) for q in QUERIES]
    more = demos + "\nQuery: what is the euro rate\nIntent: exchange_rate\n"
    shown2 = [written(BASELINE_INSTRUCTION + more, q) for q in QUERIES]
    counts = [sum(a not in LABELS for a in xs) for xs in (plain, shown, shown2)]
    assert counts[0] > counts[1] > counts[2]


def test_the_schema_and_field_descriptions_do_not_pin_the_format() -> None:
    # The tool's "spelled exactly" and the baseline's "exactly one of" are not the rule.
    assert not pins_format(BASELINE_INSTRUCTION)
    assert not pins_format(classify_tool(LABELS)["function"]["description"])
    for rule in FORMAT_RULES:
        assert pins_format(rule)
    assert pins_format("Reply with only the label, nothing else.")
    assert pins_format("Give the intent name verbatim.")


def test_drift_depends_on_the_query_not_on_the_seed_or_the_call() -> None:
    for q in QUERIES[:10]:
        assert written(BASELINE_INSTRUCTION, q, seed=0) == written(BASELINE_INSTRUCTION, q, seed=7)


def test_format_drift_off_writes_the_label_exactly() -> None:
    assert all(written(BASELINE_INSTRUCTION, q, format_drift=False) in LABELS for q in QUERIES)


@pytest.mark.parametrize("seed", range(40))
def test_proposals_pin_the_format_in_most_but_not_all_seeds(seed: int) -> None:
    text = propose_instruction(BASELINE_INSTRUCTION, [("my card never came", "card_arrival")],
                               [], seed)
    assert text.startswith(BASELINE_INSTRUCTION)


def test_proposals_pin_the_format_in_about_the_configured_share() -> None:
    pairs = [("my card never came", "card_arrival")]
    share = sum(pins_format(propose_instruction(BASELINE_INSTRUCTION, pairs, [], s))
                for s in range(200)) / 200
    assert 0.55 <= share <= 0.85
