"""The simulated LM as MIPRO's proposer: DSPy's proposer prompts and the Synth-style one.

DSPy's prompts are rendered from DSPy 3.4.1's own proposer signatures with
the inputs its GroundedProposer builds (Example reprs, `create_example_string`
task demos); the Synth-style prompt comes from the local backend's real
`proposal_messages` (tests/proposal_prompt.py). Answers are parsed back with the real parsers.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import dspy
import pytest
from dspy.propose.dataset_summary_generator import (
    DatasetDescriptor,
    DatasetDescriptorWithPriorObservations,
    ObservationSummarizer,
    order_input_keys_in_string,
)
from dspy.propose.grounded_proposer import (
    TIPS,
    DescribeModule,
    DescribeProgram,
    generate_instruction_class,
)
from dspy.propose.utils import create_example_string, strip_prefix

from mipro_bench.labels import intent_from_tool_arguments
from mipro_bench.offline.sim import SimulatedLM
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, classify_tool, tool_choice
from tests.proposal_prompt import LabelledExample, clean_instruction, proposal_messages

LABELS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked", "top_up_failed")
TRAIN = [
    ("my parcel with the plastic has not come", "card_arrival"),
    ("when will the courier bring my new plastic", "card_arrival"),
    ("someone pickpocketed my wallet", "lost_or_stolen_card"),
    ("my wallet was taken on the bus", "lost_or_stolen_card"),
    ("how much is one euro in dollars", "exchange_rate"),
    ("I typed the code wrong three times", "pin_blocked"),
]
HINT_LINE = re.compile(r"^([A-Za-z][\w?]*(?:_\w+)+\??): (.+)$", re.MULTILINE)


class Classify(dspy.Signature):
    query: str = dspy.InputField()
    intent: Literal[LABELS] = dspy.OutputField()  # type: ignore[valid-type]


Classify = Classify.with_instructions(BASELINE_INSTRUCTION)


def ask(signature: type[dspy.Signature], inputs: dict[str, Any], temperature: float = 1.0):
    messages = dspy.ChatAdapter().format(signature, [], inputs)
    body = {"model": "gpt-4.1-nano", "messages": messages, "temperature": temperature}
    content = SimulatedLM().complete(body)["choices"][0]["message"]["content"]
    return dspy.ChatAdapter().parse(signature, content)


def trainset(rows=TRAIN) -> list[dspy.Example]:
    return [dspy.Example(query=q, intent=i).with_inputs("query") for q, i in rows]


def hints(text: str) -> dict[str, str]:
    return dict(HINT_LINE.findall(text))


# --- dataset summary ------------------------------------------------------------------------


def test_dataset_descriptor_names_typical_words_per_intent() -> None:
    examples = order_input_keys_in_string(trainset().__repr__())
    parsed = ask(DatasetDescriptor, {"examples": examples})
    found = hints(parsed["observations"])
    assert set(found) == {i for _, i in TRAIN}
    assert "parcel" in found["card_arrival"] or "courier" in found["card_arrival"]
    assert "wallet" in found["lost_or_stolen_card"]


def test_prior_observations_get_only_new_intents_or_complete() -> None:
    examples = order_input_keys_in_string(trainset().__repr__())
    prior = "Typical words per intent:\ncard_arrival: parcel\nlost_or_stolen_card: wallet"
    parsed = ask(
        DatasetDescriptorWithPriorObservations, {"examples": examples, "prior_observations": prior}
    )
    assert set(hints(parsed["observations"])) == {"exchange_rate", "pin_blocked"}
    full = prior + "\nexchange_rate: euro\npin_blocked: code"
    done = ask(
        DatasetDescriptorWithPriorObservations, {"examples": examples, "prior_observations": full}
    )
    assert done["observations"].startswith("COMPLETE")


def test_summary_keeps_the_cues_per_intent() -> None:
    observations = ask(
        DatasetDescriptor, {"examples": order_input_keys_in_string(trainset().__repr__())}
    )["observations"]
    summary = ask(ObservationSummarizer, {"observations": observations})["summary"]
    assert set(hints(summary)) == set(hints(observations))


def test_program_and_module_descriptions_are_answered() -> None:
    program = ask(DescribeProgram, {"program_code": "Predict(query) -> intent",
                                    "program_example": "Query: x\nIntent: card_arrival"})
    module = ask(DescribeModule, {"program_code": "Predict(query) -> intent",
                                  "program_example": "Query: x\nIntent: card_arrival",
                                  "program_description": program["program_description"],
                                  "module": "Predict(query) -> intent"})
    assert program["program_description"].strip()
    assert module["module_description"].strip()


# --- GenerateSingleModuleInstruction ------------------------------------------------------


def task_demos(module: dspy.Module) -> str:
    """The task demos string exactly as GenerateModuleInstruction builds it."""
    predictor = module.predictors()[0]
    fields = predictor.signature.fields
    rows = []
    for query, intent in TRAIN[:3]:
        example = dspy.Example(query=query, intent=intent, reasoning="Because.", augmented=True)
        rows.append(create_example_string(fields, example))
    return "\n\n".join(rows) + "\n\n"


def proposer_inputs(module: dspy.Module, tip: str, summary: str = "") -> dict[str, str]:
    return {
        "dataset_description": summary or "Short banking queries.",
        "program_code": "Predict(query) -> intent",
        "program_description": "Classifies queries.",
        "module": "Predict(query) -> intent",
        "module_description": "The classifier.",
        "task_demos": task_demos(module),
        "previous_instructions": BASELINE_INSTRUCTION + " | Score: 40.0\n\n",
        "basic_instruction": BASELINE_INSTRUCTION,
        "tip": tip,
    }


@pytest.mark.parametrize("module", [dspy.Predict(Classify), dspy.ChainOfThought(Classify)])
@pytest.mark.parametrize("program_aware", [True, False])
def test_proposed_instruction_keeps_the_task_and_adds_hints(
    module: dspy.Module, program_aware: bool
) -> None:
    signature = generate_instruction_class(program_aware=program_aware).signature
    proposals = []
    for tip in TIPS.values():
        inputs = {k: v for k, v in proposer_inputs(module, tip).items() if k in signature.fields}
        proposals.append(ask(signature, inputs)["proposed_instruction"])
    seen_intents = {i for _, i in TRAIN[:3]}
    for text in proposals:
        assert text.startswith(BASELINE_INSTRUCTION)
        assert strip_prefix(text) == text  # MIPROv2's post-processing leaves it intact
        assert set(hints(text)) <= seen_intents
    assert any(hints(text) for text in proposals)
    assert len(set(proposals)) >= 3  # different tips, different candidates


def test_proposals_draw_on_the_dataset_summary() -> None:
    signature = generate_instruction_class().signature
    summary = "The cues per intent are:\nexchange_rate: euro, dollars\npin_blocked: typed, code"
    texts = [
        ask(signature, proposer_inputs(dspy.Predict(Classify), tip, summary), temperature=t)[
            "proposed_instruction"
        ]
        for tip in TIPS.values()
        for t in (0.7, 1.0)
    ]
    assert any("exchange_rate" in hints(text) for text in texts)


def test_proposals_vary_with_temperature_but_repeat_at_the_same_one() -> None:
    signature = generate_instruction_class().signature
    inputs = proposer_inputs(dspy.Predict(Classify), TIPS["description"])
    by_temperature = {t: ask(signature, inputs, t)["proposed_instruction"] for t in (0.5, 0.9, 1.3)}
    assert len(set(by_temperature.values())) >= 2
    assert ask(signature, inputs, 0.9)["proposed_instruction"] == by_temperature[0.9]


# --- the Synth-style proposer (local backend) -----------------------------------------------


def synth_proposal(instruction: str, temperature: float, rows=TRAIN) -> str:
    examples = [LabelledExample(query=q, intent=i) for q, i in rows]
    messages = proposal_messages(instruction, examples, "Keep it simple.", task="Classify.")
    body = {"model": "gpt-4.1-nano", "messages": messages, "temperature": temperature}
    return clean_instruction(SimulatedLM().complete(body)["choices"][0]["message"]["content"])


def classify(instruction: str, query: str) -> str | None:
    body = {
        "messages": build_messages(instruction, query, LABELS),
        "tools": [classify_tool(LABELS)],
        "tool_choice": tool_choice(),
        "temperature": 0.0,
    }
    call = SimulatedLM().complete(body)["choices"][0]["message"]["tool_calls"][0]
    return intent_from_tool_arguments(call["function"]["arguments"])


def test_synth_style_proposal_is_just_an_instruction_with_hints() -> None:
    texts = [synth_proposal(BASELINE_INSTRUCTION, t) for t in (0.6, 0.8, 1.0, 1.2, 1.4)]
    for text in texts:
        assert text.startswith(BASELINE_INSTRUCTION)
        assert "Current instruction" not in text and "Query:" not in text
        assert set(hints(text)) <= {i for _, i in TRAIN}
    assert len(set(texts)) >= 3
    assert any(len(hints(text)) >= 2 for text in texts)


def test_a_hinted_proposal_classifies_unseen_wordings_better() -> None:
    held_out = [
        ("the courier has not brought my parcel", "card_arrival"),
        ("a pickpocket took my wallet", "lost_or_stolen_card"),
        ("euro to dollars price", "exchange_rate"),
    ]
    full = max(
        (synth_proposal(BASELINE_INSTRUCTION, t) for t in (0.6, 0.8, 1.0, 1.2, 1.4)),
        key=lambda text: len(hints(text)),
    )

    def score(instruction: str) -> int:
        return sum(classify(instruction, q) == gold for q, gold in held_out)

    assert score(full) > score(BASELINE_INSTRUCTION)


def test_hints_already_in_the_current_instruction_are_carried_forward() -> None:
    current = BASELINE_INSTRUCTION + "\n\ntop_up_failed: declined, unsuccessful"
    texts = [synth_proposal(current, t, rows=TRAIN[:1]) for t in (0.6, 0.8, 1.0, 1.2, 1.4)]
    assert any("top_up_failed" in hints(text) for text in texts)
    assert all(text.startswith(BASELINE_INSTRUCTION) for text in texts)
