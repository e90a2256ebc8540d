"""The simulated LM policy: request shapes, determinism, prompt-only evidence, faults.

Pure unit tests: no data files, no HTTP. Requests are built with the suite's
own prompt module (the task app's exact messages) or written out by hand.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mipro_bench.labels import intent_from_tool_arguments, map_to_label
from mipro_bench.offline.sim import SimRequestError, SimulatedLM
from mipro_bench.offline.sim import policy as policy_module
from mipro_bench.prompt import (
    BASELINE_INSTRUCTION,
    TOOL_NAME,
    build_messages,
    classify_tool,
    tool_choice,
)
from tests.sim_support import LABELS

SIM_DIR = Path(policy_module.__file__).resolve().parent


def task_app_body(query: str, instruction: str = BASELINE_INSTRUCTION, **extra) -> dict:
    body = {
        "model": "gpt-4.1-nano",
        "messages": build_messages(instruction, query, LABELS),
        "tools": [classify_tool(LABELS)],
        "tool_choice": tool_choice(),
        "temperature": 0.0,
    }
    body.update(extra)
    return body


def tool_intent(response: dict, index: int = 0) -> str | None:
    call = response["choices"][index]["message"]["tool_calls"][0]
    assert call["function"]["name"] == TOOL_NAME
    return intent_from_tool_arguments(call["function"]["arguments"])


def evidence_lm(**kwargs) -> SimulatedLM:
    """The policy with format drift off: these tests are about which label it picks (the
    drift is answer_form.py's and tests/test_sim_policy_drift.py's)."""
    return SimulatedLM(format_drift=False, **kwargs)


def classify(query: str, instruction: str = BASELINE_INSTRUCTION, lm: SimulatedLM | None = None):
    return tool_intent((lm or evidence_lm()).complete(task_app_body(query, instruction)))


# --- the task app's call -------------------------------------------------------------------


def test_task_app_call_is_answered_with_the_forced_tool_call() -> None:
    response = SimulatedLM().complete(task_app_body("My PIN is blocked, what now?"))
    assert response["object"] == "chat.completion"
    assert response["created"] == 0
    assert response["model"] == "gpt-4.1-nano"
    assert response["id"].startswith("chatcmpl-sim-")
    (choice,) = response["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"]
    assert json.loads(call["function"]["arguments"]) == {"intent": "pin_blocked"}


def test_label_spelling_is_kept_exactly_as_the_prompt_gives_it() -> None:
    assert classify("My refund is not showing up") == "Refund_not_showing_up"
    assert classify("The card payment was reverted") == "reverted_card_payment?"


def test_without_tools_the_answer_is_the_label_as_plain_text() -> None:
    body = task_app_body("What is the exchange rate today?")
    del body["tools"], body["tool_choice"]
    response = SimulatedLM().complete(body)
    choice = response["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == "exchange_rate"
    assert map_to_label(choice["message"]["content"], LABELS) == "exchange_rate"


def test_a_label_list_in_the_user_message_alone_is_enough() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": "Possible labels: greeting, farewell, complaint\n\n"
                "Text: goodbye and farewell my friend",
            }
        ],
        "temperature": 0,
    }
    assert evidence_lm().complete(body)["choices"][0]["message"]["content"] == "farewell"


def test_demo_lines_in_a_tool_less_prompt_are_not_mistaken_for_the_label_list() -> None:
    demo = "Query: my wallet was taken\nIntent: lost_or_stolen_card"
    instruction = f"{BASELINE_INSTRUCTION}\n\n{demo}"
    body = task_app_body("the euro exchange rate", instruction)
    del body["tools"], body["tool_choice"]
    assert SimulatedLM().complete(body)["choices"][0]["message"]["content"] == "exchange_rate"


def test_a_tool_choice_without_a_function_object_calls_the_first_tool() -> None:
    # Lenient as before for a missing name, but a non-object "function" was a 500.
    body = task_app_body("top up failed again", tool_choice={"type": "function", "function": 5})
    message = SimulatedLM().complete(body)["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == classify_tool(LABELS)["function"]["name"]


def test_tool_choice_none_answers_in_text() -> None:
    body = task_app_body("top up failed again", tool_choice="none")
    message = evidence_lm().complete(body)["choices"][0]["message"]
    assert "tool_calls" not in message
    assert message["content"] == "top_up_failed"


# --- determinism and temperature ------------------------------------------------------------


def test_same_request_gives_identical_bytes_across_instances_and_key_order() -> None:
    body = task_app_body("I lost my card on the train")
    first = json.dumps(SimulatedLM(seed=3).complete(body))
    shuffled = dict(reversed(list(copy.deepcopy(body).items())))
    second = json.dumps(SimulatedLM(seed=3).complete(shuffled))
    assert first == second


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.3])
def test_repeating_a_request_repeats_the_answer_at_any_temperature(temperature: float) -> None:
    lm = SimulatedLM(seed=1)
    bodies = [task_app_body(f"card problem number {i}", temperature=temperature) for i in range(20)]
    first = [json.dumps(lm.complete(b)) for b in bodies]
    again = [json.dumps(lm.complete(copy.deepcopy(b))) for b in bodies]
    assert first == again


def test_temperature_zero_answers_do_not_depend_on_the_seed() -> None:
    queries = ["my card never arrived", "exchange rate please", "refund missing", "pin locked"]
    for query in queries:
        a = tool_intent(SimulatedLM(seed=0).complete(task_app_body(query)))
        b = tool_intent(SimulatedLM(seed=99).complete(task_app_body(query)))
        assert a == b


def test_positive_temperature_varies_with_temperature_and_seed() -> None:
    queries = [f"card question {i} about money" for i in range(40)]

    def answers(seed: int, temperature: float) -> list[str | None]:
        lm = evidence_lm(seed=seed)
        bodies = [task_app_body(q, temperature=temperature) for q in queries]
        return [tool_intent(lm.complete(b)) for b in bodies]

    cold = answers(0, 0.0)
    assert len(set(cold)) <= 2  # the same weak evidence everywhere: one or two labels
    assert answers(0, 1.0) != cold
    assert answers(0, 1.0) != answers(0, 1.2)
    assert answers(0, 1.0) != answers(1, 1.0)
    assert set(answers(0, 1.5)) <= set(LABELS)


def test_n_choices_are_identical_at_temperature_zero_and_valid_otherwise() -> None:
    lm = evidence_lm()
    cold = lm.complete(task_app_body("where is my card", n=3))
    assert [c["index"] for c in cold["choices"]] == [0, 1, 2]
    assert len({tool_intent(cold, i) for i in range(3)}) == 1
    warm = lm.complete(task_app_body("where is my card", n=5, temperature=1.5))
    assert all(tool_intent(warm, i) in LABELS for i in range(5))
    ids = {c["message"]["tool_calls"][0]["id"] for c in warm["choices"]}
    assert len(ids) == 5


# --- evidence comes only from the prompt ----------------------------------------------------


def test_label_name_words_are_the_baseline_evidence() -> None:
    assert classify("Is my card arrival delayed?") == "card_arrival"
    assert classify("My card was stolen yesterday") == "lost_or_stolen_card"
    assert classify("Why did my top up fail? It says failed") == "top_up_failed"


def test_a_hint_in_the_instruction_changes_the_answer() -> None:
    query = "I typed the code wrong three times at the shop"
    hinted = BASELINE_INSTRUCTION + "\npin_blocked: typed, code, wrong, attempts"
    assert classify(query) != "pin_blocked"
    assert classify(query, hinted) == "pin_blocked"


def test_a_sentence_hint_works_as_well_as_a_keyword_line() -> None:
    query = "I typed the code wrong three times at the shop"
    sentence = BASELINE_INSTRUCTION + " Use pin_blocked when someone typed a wrong code."
    assert classify(query, sentence) == "pin_blocked"


def test_a_label_list_line_adds_no_hint_words() -> None:
    # Words before the first label of a list line, or between `;`-separated names, belong
    # to no label: only `label: words` style assigns words inside a multi-label line.
    query = "typed the code wrong"
    listed = BASELINE_INSTRUCTION + "\nTyped code wrong: exchange_rate; pin_blocked; top_up_failed"
    assert classify(query, listed) == classify(query)
    styled = BASELINE_INSTRUCTION + "\nexchange_rate: rates; pin_blocked: typed, code, wrong"
    assert classify(query, styled) == "pin_blocked"


def test_demonstrations_in_the_prompt_change_the_answer() -> None:
    query = "the parcel with my plastic still is not here"
    demos = (
        BASELINE_INSTRUCTION
        + "\n\nExamples:\nQuery: my plastic has not come in the parcel yet\nIntent: card_arrival\n"
        + "\nQuery: I typed the code wrong three times\nIntent: pin_blocked\n"
    )
    assert classify(query) != "card_arrival"
    assert classify(query, demos) == "card_arrival"
    assert classify("typed the code wrong", demos) == "pin_blocked"


def test_ties_go_to_the_earlier_label_in_the_prompt() -> None:
    query = "hello there"  # no evidence at all
    body = task_app_body(query)
    assert tool_intent(SimulatedLM().complete(body)) == LABELS[0]
    reordered = list(reversed(LABELS))
    body["messages"] = build_messages(BASELINE_INSTRUCTION, query, reordered)
    body["tools"] = [classify_tool(reordered)]
    assert tool_intent(SimulatedLM().complete(body)) == reordered[0]


def test_a_label_missing_from_the_prompt_is_never_answered() -> None:
    subset = ("exchange_rate", "pin_blocked")
    body = task_app_body("my card never arrived")
    body["messages"] = build_messages(BASELINE_INSTRUCTION, "my card never arrived", subset)
    body["tools"] = [classify_tool(subset)]
    assert tool_intent(SimulatedLM().complete(body)) in subset


def test_the_policy_package_reads_no_data() -> None:
    """Statically: no module of the package imports the data layer or opens files."""
    banned_modules = {"mipro_bench.data", "csv", "pathlib", "datasets", "fixtures"}
    for path in sorted(SIM_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {node.module or ""}
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                pytest.fail(f"{path.name} calls open()")
            else:
                continue
            assert not names & banned_modules, f"{path.name} imports {names & banned_modules}"


def test_answering_loads_no_data_module_at_runtime() -> None:
    code = (
        "import sys, json\n"
        "from mipro_bench.offline.sim import SimulatedLM\n"
        "body = {'messages': [{'role': 'user', 'content': 'Labels: a_b, c_d\\nQuery: c d'}]}\n"
        "SimulatedLM().complete(body)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mipro_bench'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    assert "mipro_bench.data" not in loaded
    assert all(m.startswith(("mipro_bench.lm", "mipro_bench.offline.sim"))
               or m in ("mipro_bench", "mipro_bench.offline") for m in loaded)


# --- other shapes ---------------------------------------------------------------------------


def test_an_unrecognised_request_gets_a_short_generic_answer() -> None:
    body = {"messages": [{"role": "user", "content": "Hello! How are you?"}]}
    choice = SimulatedLM().complete(body)["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert 0 < len(choice["message"]["content"]) < 300


def test_a_tool_without_enum_still_gets_a_well_formed_call() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"topic": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["topic", "limit"],
            },
        },
    }
    body = {"messages": [{"role": "user", "content": "Find something"}], "tools": [tool]}
    call = SimulatedLM().complete(body)["choices"][0]["message"]["tool_calls"][0]
    args = json.loads(call["function"]["arguments"])
    assert call["function"]["name"] == "lookup"
    assert isinstance(args["topic"], str) and args["limit"] == 1


def test_a_tool_with_odd_properties_gets_an_empty_argument_object() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"properties": []}}}
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [tool]}
    call = SimulatedLM().complete(body)["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {}


def test_content_parts_and_assistant_tool_turns_are_accepted() -> None:
    body = task_app_body("pin blocked")
    body["messages"][1]["content"] = [{"type": "text", "text": body["messages"][1]["content"]}]
    body["messages"].insert(1, {"role": "assistant", "content": None, "tool_calls": []})
    assert tool_intent(SimulatedLM().complete(body)) == "pin_blocked"


# --- usage ----------------------------------------------------------------------------------


def test_usage_is_the_documented_character_estimate() -> None:
    body = {
        "messages": [{"role": "system", "content": "x" * 10}, {"role": "user", "content": "hi"}]
    }
    response = SimulatedLM().complete(body)
    usage = response["usage"]
    assert usage["prompt_tokens"] == (math.ceil(10 / 4) + 4) + (math.ceil(2 / 4) + 4)
    content = response["choices"][0]["message"]["content"]
    assert usage["completion_tokens"] == math.ceil(len(content) / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_usage_counts_tools_and_grows_with_the_prompt() -> None:
    lm = SimulatedLM()
    short = lm.complete(task_app_body("pin"))["usage"]
    long = lm.complete(task_app_body("pin " * 200))["usage"]
    no_tools = task_app_body("pin")
    del no_tools["tools"], no_tools["tool_choice"]
    bare = lm.complete(no_tools)["usage"]
    assert long["prompt_tokens"] > short["prompt_tokens"] + 150
    assert short["prompt_tokens"] > bare["prompt_tokens"]
    assert short["completion_tokens"] > 0


# --- faults ---------------------------------------------------------------------------------


def _is_garbage(response: dict) -> bool:
    message = response["choices"][0]["message"]
    if message.get("tool_calls"):
        return False
    content = message["content"] or ""
    return "[[ ##" not in content and not content.strip().startswith("{")


def test_malformed_rate_one_always_answers_garbage_and_zero_never() -> None:
    bodies = [task_app_body(f"pin blocked {i}") for i in range(30)]
    assert all(_is_garbage(SimulatedLM(malformed_rate=1.0).complete(b)) for b in bodies)
    assert not any(_is_garbage(SimulatedLM(malformed_rate=0.0).complete(b)) for b in bodies)


def test_malformed_rate_is_a_seeded_share_of_requests() -> None:
    bodies = [task_app_body(f"pin blocked {i}") for i in range(400)]
    lm = SimulatedLM(seed=5, malformed_rate=0.25)
    hits = [_is_garbage(lm.complete(b)) for b in bodies]
    assert 0.17 < sum(hits) / len(hits) < 0.33
    again = [_is_garbage(SimulatedLM(seed=5, malformed_rate=0.25).complete(b)) for b in bodies]
    assert hits == again
    other = [_is_garbage(SimulatedLM(seed=6, malformed_rate=0.25).complete(b)) for b in bodies]
    assert hits != other


# --- bad input ------------------------------------------------------------------------------


GOOD_MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ([], "JSON object"),
        ({}, "'messages' is required"),
        ({"messages": []}, "non-empty list"),
        ({"messages": "hi"}, "non-empty list"),
        ({"messages": ["hi"]}, "messages[0] must be an object"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user"}]}, "messages[0].content is required"),
        ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
        ({"messages": GOOD_MESSAGES, "temperature": "hot"}, "'temperature' must be a number"),
        ({"messages": GOOD_MESSAGES, "temperature": 3}, "between 0 and 2"),
        ({"messages": GOOD_MESSAGES, "n": 0}, "'n' must be an integer"),
        ({"messages": GOOD_MESSAGES, "n": True}, "'n' must be an integer"),
        ({"messages": GOOD_MESSAGES, "tools": {}}, "'tools' must be a list"),
        ({"messages": GOOD_MESSAGES, "tools": [{"type": "function"}]}, "tools[0]"),
        ({"messages": GOOD_MESSAGES, "tool_choice": 3}, "'tool_choice'"),
        ({"messages": GOOD_MESSAGES, "response_format": "json"}, "'response_format'"),
        ({"messages": GOOD_MESSAGES, "response_format": {"type": "xml"}}, "response_format.type"),
        ({"messages": GOOD_MESSAGES,
          "response_format": {"type": "json_schema", "json_schema": 5}},
         "response_format.json_schema"),
        ({"messages": GOOD_MESSAGES, "model": 7}, "'model' must be a string"),
        ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role"),
    ],
)
def test_invalid_requests_raise_a_one_line_sim_request_error(body: object, needle: str) -> None:
    with pytest.raises(SimRequestError) as info:
        SimulatedLM().complete(body)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_the_error_type_is_exported_where_the_gateway_looks_for_it() -> None:
    assert policy_module.SimRequestError is SimRequestError
    assert policy_module.SimulatedLM is SimulatedLM


@pytest.mark.parametrize(
    "kwargs", [{"malformed_rate": 1.5}, {"malformed_rate": -0.1}, {"seed": "x"}, {"seed": 1.5}]
)
def test_constructor_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SimulatedLM(**kwargs)
