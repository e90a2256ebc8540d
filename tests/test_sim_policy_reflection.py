"""The simulated LM as GEPA's reflection model: "examples with feedback" -> a new instruction.

Both spellings are rendered by the real code that sends them: DSPy 3.4.1's
`ProposeInstruction` signature through its adapters (GEPA's built-in
`InstructionProposer`, which also runs end to end against a real gateway),
and the `gepa` package's plain template (`InstructionProposalSignature`),
whose answer is read back with gepa's own `output_extractor`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import dspy
import pytest
from dspy.teleprompt.gepa.instruction_proposal import InstructionProposer, ProposeInstruction
from gepa.strategies.instruction_proposal import InstructionProposalSignature

from mipro_bench.labels import intent_from_tool_arguments
from mipro_bench.offline.sim import SimulatedLM
from mipro_bench.offline.sim.reflection import FeedbackExample, expected_label
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, classify_tool, tool_choice

LABELS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked",
          "Refund_not_showing_up")
HINT_LINE = re.compile(r"^([A-Za-z][\w?]*(?:_\w+)+\??): (.+)$", re.MULTILINE)
REFUND_QUERY = "a store refunded me but the money is missing"
EXAMPLES = [
    {"Inputs": {"query": "my parcel with the plastic has not come"},
     "Generated Outputs": {"intent": "card_arrival"},
     "Feedback": "Correct: the answer names the expected intent card_arrival."},
    {"Inputs": {"query": REFUND_QUERY},
     "Generated Outputs": {"intent": "card_arrival"},
     "Feedback": "Wrong: the expected intent is Refund_not_showing_up, but the answer named "
                 "card_arrival."},
    {"Inputs": {"query": "someone pickpocketed my wallet on the bus"},
     "Generated Outputs": {"intent": "no idea"},
     "Feedback": "Wrong: the expected intent is lost_or_stolen_card, but the answer named no "
                 "intent."},
]


def hints(text: str) -> dict[str, str]:
    return dict(HINT_LINE.findall(text))


def complete(messages: list[dict[str, Any]], **extra: Any) -> str:
    body = {"model": "gpt-4.1-nano", "messages": messages, "temperature": 0.0, **extra}
    return SimulatedLM().complete(body)["choices"][0]["message"]["content"]


def reflect_dspy(current: str, examples: list[dict[str, Any]],
                 adapter: dspy.Adapter | None = None) -> str:
    """One reflection call exactly as dspy GEPA's built-in proposer renders it."""
    adapter = adapter or dspy.JSONAdapter()
    inputs = {"current_instruction": current, "examples_with_feedback": examples}
    messages = adapter.format(ProposeInstruction, [], inputs)
    extra = {}
    if isinstance(adapter, dspy.JSONAdapter):  # what GEPA sends for gpt-4.1-nano
        extra["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "DSPyProgramOutputs", "strict": True, "schema": {
                "type": "object", "properties": {"new_instruction": {"type": "string"}},
                "required": ["new_instruction"], "additionalProperties": False}}}
    return adapter.parse(ProposeInstruction, complete(messages, **extra))["new_instruction"]


def reflect_text(current: str, examples: list[dict[str, Any]]) -> tuple[str, str]:
    """One reflection call with the gepa package's own template; (raw answer, extracted)."""
    prompt = InstructionProposalSignature.prompt_renderer(
        {"current_instruction_doc": current, "dataset_with_feedback": examples})
    raw = complete([{"role": "user", "content": prompt}])
    return raw, InstructionProposalSignature.output_extractor(raw)["new_instruction"]


def classify(instruction: str, query: str) -> str | None:
    body = {"model": "gpt-4.1-nano", "temperature": 0.0,
            "messages": build_messages(instruction, query, LABELS),
            "tools": [classify_tool(LABELS)], "tool_choice": tool_choice()}
    message = SimulatedLM().complete(body)["choices"][0]["message"]
    return intent_from_tool_arguments(message["tool_calls"][0]["function"]["arguments"])


@pytest.mark.parametrize("adapter", [dspy.JSONAdapter(), dspy.ChatAdapter()],
                         ids=["json", "chat"])
def test_dspy_reflection_keeps_the_instruction_and_adds_hints_from_the_feedback(
        adapter: dspy.Adapter) -> None:
    new = reflect_dspy(BASELINE_INSTRUCTION, EXAMPLES, adapter)
    assert new.startswith(BASELINE_INSTRUCTION)
    found = hints(new)
    # The intents the feedback says were expected (not the wrong answer card_arrival got).
    assert set(found) == {"card_arrival", "Refund_not_showing_up", "lost_or_stolen_card"}
    assert "refunded" in found["Refund_not_showing_up"]
    assert "pickpocketed" in found["lost_or_stolen_card"]
    assert "refunded" not in found["card_arrival"]


def test_plain_gepa_template_is_answered_inside_a_fence() -> None:
    raw, new = reflect_text(BASELINE_INSTRUCTION, EXAMPLES)
    assert raw.startswith("```\n") and raw.rstrip().endswith("```")
    assert new.startswith(BASELINE_INSTRUCTION)
    assert set(hints(new)) == {"card_arrival", "Refund_not_showing_up", "lost_or_stolen_card"}


def test_the_new_instruction_fixes_the_failure_it_was_shown() -> None:
    assert classify(BASELINE_INSTRUCTION, REFUND_QUERY) != "Refund_not_showing_up"
    new = reflect_dspy(BASELINE_INSTRUCTION, EXAMPLES)
    assert classify(new, REFUND_QUERY) == "Refund_not_showing_up"


def test_existing_hints_are_kept_and_extended_not_duplicated() -> None:
    first = reflect_dspy(BASELINE_INSTRUCTION, EXAMPLES[:2])
    more = [{"Inputs": {"query": "the store says it sent my refund days ago"},
             "Generated Outputs": {"intent": "card_arrival"},
             "Feedback": "Wrong: the expected intent is Refund_not_showing_up, but the answer "
                         "named card_arrival."},
            {"Inputs": {"query": "what is the euro to dollar rate"},
             "Generated Outputs": {"intent": "exchange_rate"},
             "Feedback": "Correct: the answer names the expected intent exchange_rate."}]
    second = reflect_dspy(first, more)
    assert second.startswith(BASELINE_INSTRUCTION)
    before, after = hints(first), hints(second)
    assert list(after)[: len(before)] == list(before)  # old lines first, in their order
    assert "exchange_rate" in after
    old = before["Refund_not_showing_up"].split(", ")
    new = after["Refund_not_showing_up"].split(", ")
    assert new[: len(old)] == old and len(new) > len(old) and len(set(new)) == len(new)
    assert second.count("Intent hints") == 1


def test_feedback_that_names_no_intent_changes_nothing() -> None:
    vague = [{"Inputs": {"query": REFUND_QUERY}, "Generated Outputs": {"intent": "card_arrival"},
              "Feedback": "This trajectory got a score of 0.0."}]
    assert reflect_dspy(BASELINE_INSTRUCTION, vague) == BASELINE_INSTRUCTION
    assert reflect_text(BASELINE_INSTRUCTION, vague)[1] == BASELINE_INSTRUCTION


@pytest.mark.parametrize(("feedback", "answer", "expected"), [
    ("Wrong: the expected intent is pin_blocked, but the answer named card_arrival.",
     "card_arrival", "pin_blocked"),
    ("The correct label is `exchange_rate`.", "card_arrival", "exchange_rate"),
    ("It should have been card_arrival.", "pin_blocked", "card_arrival"),
    ("Correct.", "pin_blocked", "pin_blocked"),
    ("Incorrect.", "pin_blocked", None),
    ("The answer card_arrival is wrong.", "card_arrival", None),
])
def test_the_expected_intent_is_read_only_from_what_the_feedback_says(
        feedback: str, answer: str, expected: str | None) -> None:
    assert expected_label(FeedbackExample("q", answer, feedback)) == expected


def test_same_request_same_answer() -> None:
    messages = dspy.JSONAdapter().format(
        ProposeInstruction, [], {"current_instruction": BASELINE_INSTRUCTION,
                                 "examples_with_feedback": EXAMPLES})
    assert complete(messages) == complete(messages)


def test_gepa_builtin_proposer_end_to_end_through_the_gateway() -> None:
    from mipro_bench.lm.dspy_lm import make_dspy_lm
    from tests.lm_support import recording_gateway

    with recording_gateway() as (gw, recorder):
        lm = make_dspy_lm(gw.endpoint, "reflection-test", "optimize")
        with dspy.context(lm=lm):
            out = InstructionProposer()(
                candidate={"self": BASELINE_INSTRUCTION},
                reflective_dataset={"self": EXAMPLES},
                components_to_update=["self"],
            )
        assert recorder.calls == 1
        sent = json.dumps(recorder.bodies[0])
    assert "examples_with_feedback" in sent
    assert out["self"].startswith(BASELINE_INSTRUCTION)
    assert "Refund_not_showing_up" in hints(out["self"])


FORMAT_FAILURE = [{
    "Inputs": {"query": "someone pickpocketed my wallet on the bus"},
    "Generated Outputs": {"intent": "The customer has lost a card."},
    "Feedback": "Wrong: the expected intent is lost_or_stolen_card, but the answer named no "
                "intent of the list (it said 'The customer has lost a card.')."}]


def test_feedback_about_the_answers_form_pins_the_format() -> None:
    """An answer that named no intent is a format problem: the new instruction pins the
    format (so the sim's drift stops), besides adding the hint for the expected intent."""
    from mipro_bench.offline.sim.answer_form import pins_format

    assert not pins_format(BASELINE_INSTRUCTION)
    new = reflect_dspy(BASELINE_INSTRUCTION, FORMAT_FAILURE)
    assert pins_format(new), new
    assert "lost_or_stolen_card" in hints(new)
    again = reflect_dspy(new, FORMAT_FAILURE)  # a pinned instruction is not pinned twice
    assert again.count("\n") == new.count("\n"), again


def test_wrong_intent_feedback_does_not_pin_the_format() -> None:
    from mipro_bench.offline.sim.answer_form import pins_format

    wrong_intent = [EXAMPLES[1]]  # named card_arrival instead of Refund_not_showing_up
    assert not pins_format(reflect_dspy(BASELINE_INSTRUCTION, wrong_intent))
