"""The simulated LM answers real DSPy 3.4.1 adapter prompts in a form DSPy parses.

Every prompt here is produced by DSPy itself (`Adapter.format` on real
signatures and modules) and every answer is read back with DSPy's own
`Adapter.parse`, so a change in DSPy's rendering shows up as a failure here.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from mipro_bench.offline.sim import SimulatedLM
from mipro_bench.prompt import BASELINE_INSTRUCTION
from tests.sim_support import LABELS


class Classify(dspy.Signature):
    query: str = dspy.InputField()
    intent: Literal[LABELS] = dspy.OutputField()  # type: ignore[valid-type]


Classify = Classify.with_instructions(BASELINE_INSTRUCTION)

DEMOS = [
    dspy.Example(query="the plastic has not come in the parcel", intent="card_arrival"),
    dspy.Example(
        query="I typed the code wrong three times",
        intent="pin_blocked",
        reasoning="Three wrong codes lock the PIN.",
    ),
]


def signature_of(module: dspy.Module) -> type[dspy.Signature]:
    return module.predict.signature if hasattr(module, "predict") else module.signature


def ask(
    adapter: dspy.Adapter,
    signature: type[dspy.Signature],
    inputs: dict[str, Any],
    demos: list | None = None,
    **body: Any,
) -> tuple[str, dict[str, Any]]:
    messages = adapter.format(signature, demos or [], inputs)
    request = {"model": "gpt-4.1-nano", "messages": messages, "temperature": 0.0, **body}
    # Format drift off: these tests are about fields and evidence (drift: test_sim_policy_drift).
    lm = SimulatedLM(format_drift=False)
    content = lm.complete(request)["choices"][0]["message"]["content"]
    return content, adapter.parse(signature, content)


@pytest.mark.parametrize("module", [dspy.Predict(Classify), dspy.ChainOfThought(Classify)])
def test_chat_adapter_answers_every_output_field(module: dspy.Module) -> None:
    signature = signature_of(module)
    content, parsed = ask(dspy.ChatAdapter(), signature, {"query": "my card was stolen"})
    assert content.rstrip().endswith("[[ ## completed ## ]]")
    assert set(parsed) == set(signature.output_fields)
    assert parsed["intent"] == "lost_or_stolen_card"
    if "reasoning" in parsed:
        assert "lost_or_stolen_card" in parsed["reasoning"]
        assert "stolen" in parsed["reasoning"]


@pytest.mark.parametrize("module", [dspy.Predict(Classify), dspy.ChainOfThought(Classify)])
def test_demo_turns_are_evidence(module: dspy.Module) -> None:
    signature = signature_of(module)
    query = {"query": "wrong code typed"}
    _, without = ask(dspy.ChatAdapter(), signature, query)
    _, with_demos = ask(dspy.ChatAdapter(), signature, query, DEMOS)
    assert without["intent"] != "pin_blocked"
    assert with_demos["intent"] == "pin_blocked"


def test_the_instruction_text_is_evidence() -> None:
    hinted = Classify.with_instructions(
        BASELINE_INSTRUCTION + "\npin_blocked: typed, wrong, code, attempts"
    )
    _, plain = ask(dspy.ChatAdapter(), Classify, {"query": "wrong code typed"})
    _, better = ask(dspy.ChatAdapter(), hinted, {"query": "wrong code typed"})
    assert plain["intent"] != "pin_blocked"
    assert better["intent"] == "pin_blocked"


@pytest.mark.parametrize("module", [dspy.Predict(Classify), dspy.ChainOfThought(Classify)])
@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "Out",
                "schema": {
                    "type": "object",
                    "properties": {"reasoning": {"type": "string"}, "intent": {"type": "string"}},
                },
            },
        },
    ],
)
def test_json_adapter_fallback_gets_a_json_object(module: dspy.Module, response_format) -> None:
    signature = signature_of(module)
    content, parsed = ask(
        dspy.JSONAdapter(),
        signature,
        {"query": "what is the exchange rate"},
        DEMOS,
        response_format=response_format,
    )
    data = json.loads(content)
    assert parsed["intent"] == "exchange_rate"
    assert set(signature.output_fields) <= set(data)


def test_json_adapter_prompt_is_answered_in_json_even_without_response_format() -> None:
    content, parsed = ask(dspy.JSONAdapter(), Classify, {"query": "top up failed"})
    assert json.loads(content) == {"intent": "top_up_failed"}
    assert parsed == {"intent": "top_up_failed"}


def test_a_str_intent_field_with_labels_in_its_description_is_classified() -> None:
    class Loose(dspy.Signature):
        """Classify the query."""

        text: str = dspy.InputField()
        label: str = dspy.OutputField(desc="one of: " + ", ".join(LABELS))

    _, parsed = ask(dspy.ChatAdapter(), Loose, {"text": "exchange rate for euros"})
    assert parsed["label"] == "exchange_rate"


def test_typed_output_fields_parse() -> None:
    class Typed(dspy.Signature):
        """Answer about the query."""

        query: str = dspy.InputField()
        confidence: float = dspy.OutputField()
        count: int = dspy.OutputField()
        urgent: bool = dspy.OutputField()
        keywords: list[str] = dspy.OutputField()
        note: str = dspy.OutputField()

    for adapter in (dspy.ChatAdapter(), dspy.JSONAdapter()):
        _, parsed = ask(adapter, Typed, {"query": "anything"})
        assert isinstance(parsed["confidence"], float)
        assert isinstance(parsed["count"], int)
        assert isinstance(parsed["urgent"], bool)
        assert isinstance(parsed["keywords"], list)
        assert isinstance(parsed["note"], str) and parsed["note"]


def test_chat_adapter_answers_are_deterministic_bytes() -> None:
    messages = dspy.ChatAdapter().format(signature_of(dspy.ChainOfThought(Classify)), DEMOS, {
        "query": "card not here"
    })
    body = {"model": "m", "messages": messages, "temperature": 0.0}
    assert json.dumps(SimulatedLM().complete(body)) == json.dumps(SimulatedLM().complete(body))


def test_malformed_answers_break_the_chat_adapter_parse() -> None:
    messages = dspy.ChatAdapter().format(Classify, [], {"query": "card not here"})
    content = SimulatedLM(malformed_rate=1.0).complete({"messages": messages})["choices"][0][
        "message"
    ]["content"]
    with pytest.raises(AdapterParseError):
        dspy.ChatAdapter().parse(Classify, content)
