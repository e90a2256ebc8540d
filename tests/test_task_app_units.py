"""The task app's parts without a server: panel lookup, policy, answers, auth, prompt bytes."""

from __future__ import annotations

import json

import pytest

from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, format_intents, initial_prompt
from task_app.answer import extract_answer, extract_usage
from task_app.auth import key_matches, presented_keys
from task_app.dataset import TaskDataset, TaskInputError
from task_app.policy import PolicyDefaults, parse_policy
from tests.task_app_support import tiny_splits


@pytest.fixture(scope="module")
def dataset() -> TaskDataset:
    return TaskDataset(tiny_splits())


# -- the panel ----------------------------------------------------------------------------


def test_seed_addresses_the_callers_splits(dataset: TaskDataset) -> None:
    splits = dataset.splits
    assert dataset.example("train", 0) == splits.train[0]
    assert dataset.example("val", 11) == splits.val[11]
    assert dataset.example("test", 17) == splits.test[17]
    # trainval: train first, then val, in one seed space
    assert dataset.example("trainval", 23) == splits.train[23]
    assert dataset.example("trainval", 24) == splits.val[0]
    assert dataset.size("trainval") == 36


@pytest.mark.parametrize(
    ("split", "seed", "code"),
    [
        ("train", -1, "seed_out_of_range"),
        ("train", 24, "seed_out_of_range"),
        ("val", 12, "seed_out_of_range"),
        ("train", 10**30, "seed_out_of_range"),
        ("train", True, "invalid_seed"),
        ("train", "3", "invalid_seed"),
        ("dev", 0, "unknown_split"),
        ("TRAIN", 0, "unknown_split"),
    ],
)
def test_bad_split_or_seed_says_what_is_wrong(dataset: TaskDataset, split: str, seed: object,
                                              code: str) -> None:
    with pytest.raises(TaskInputError) as info:
        dataset.example(split, seed)
    assert info.value.code == code
    assert len(info.value.message) < 200  # a 10**30 seed does not bloat the message


def test_describe_lists_sizes_and_digests(dataset: TaskDataset) -> None:
    described = dataset.describe()
    assert described["sizes"] == {"train": 24, "val": 12, "test": 18, "trainval": 36}
    assert described["digests"] == dataset.splits.digests()
    assert described["num_labels"] == 6


# -- the baseline messages are the initial_prompt patterns, byte for byte ------------------


@pytest.mark.parametrize("query", [
    "Where is my card?",
    'A query with "quotes", {braces} and {query} inside',
    "ünïcödé – and a\nnewline",
])
def test_baseline_messages_are_the_filled_initial_prompt(dataset: TaskDataset,
                                                         query: str) -> None:
    labels = dataset.labels
    prompt = initial_prompt(labels)
    wildcards = {"available_intents": format_intents(labels), "query": query}
    filled = []
    for message in sorted(prompt["messages"], key=lambda m: m["order"]):
        content = message["pattern"]
        for name in ("available_intents", "query"):  # the query last: it may contain braces
            content = content.replace("{" + name + "}", wildcards[name])
        filled.append({"role": message["role"], "content": content})
    sent = build_messages(BASELINE_INSTRUCTION, query, labels)
    assert json.dumps(sent, ensure_ascii=False).encode() == json.dumps(
        filled, ensure_ascii=False).encode()
    assert set(prompt["wildcards"]) == {"query", "available_intents"}


# -- policy.config -------------------------------------------------------------------------


def test_policy_keeps_interceptor_query_string() -> None:
    policy = parse_policy(
        {"inference_url": "http://127.0.0.1:9/v1/trial-7/cid-3?cid=cid-3", "model": "m"},
        PolicyDefaults())
    assert policy.chat_url == "http://127.0.0.1:9/v1/trial-7/cid-3/chat/completions?cid=cid-3"
    assert policy.inference_url == "http://127.0.0.1:9/v1/trial-7/cid-3?cid=cid-3"


@pytest.mark.parametrize(("url", "chat_url"), [
    ("http://h:1/s/dspy/optimize/v1", "http://h:1/s/dspy/optimize/v1/chat/completions"),
    ("http://h:1/v1/", "http://h:1/v1/chat/completions"),
    ("http://h:1/v1/chat/completions", "http://h:1/v1/chat/completions"),
    ("http://h:1", "http://h:1/v1/chat/completions"),  # the SDK's rule adds /v1
])
def test_chat_url_follows_the_sdk_rule(url: str, chat_url: str) -> None:
    assert parse_policy({"inference_url": url, "model": "m"}, PolicyDefaults()).chat_url == chat_url


@pytest.mark.parametrize("config", [
    {"model": "m"},  # no URL and no default
    {"inference_url": "ftp://h/v1", "model": "m"},
    {"inference_url": "http:///v1", "model": "m"},
    {"inference_url": 7, "model": "m"},
    {"inference_url": "http://h:99999/v1", "model": "m"},
    {"inference_url": "http://h/" + "x" * 5000, "model": "m"},
    {"inference_url": "http://h/v1", "model": ""},
    {"inference_url": "http://h/v1", "model": ["m"]},
    {"inference_url": "http://h/v1", "model": "m", "temperature": "hot"},
    {"inference_url": "http://h/v1", "model": "m", "temperature": 9},
    {"inference_url": "http://h/v1", "model": "m", "max_tokens": 0},
    {"inference_url": "http://h/v1", "model": "m", "max_completion_tokens": 1.5},
    {"inference_url": "http://h/v1", "model": "m", "api_key": 5},
])
def test_bad_policy_is_an_input_error(config: dict) -> None:
    with pytest.raises(TaskInputError) as info:
        parse_policy(config, PolicyDefaults())
    assert info.value.code == "invalid_policy"
    assert "policy.config." in info.value.message


def test_default_key_goes_only_to_the_default_url() -> None:
    defaults = PolicyDefaults(inference_url="http://gw/v1", model="m", api_key="secret")
    assert parse_policy({}, defaults).api_key == "secret"
    assert parse_policy({"inference_url": "http://elsewhere/v1"}, defaults).api_key is None
    assert parse_policy({"inference_url": "http://x/v1", "api_key": "k"}, defaults).api_key == "k"


def test_request_body_names_max_tokens_as_the_caller_did() -> None:
    policy = parse_policy({"inference_url": "http://h/v1", "model": "m",
                           "max_completion_tokens": 64, "temperature": 0.5}, PolicyDefaults())
    body = policy.request_body([], [], {})
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    assert body["temperature"] == 0.5


# -- reading answers -----------------------------------------------------------------------


def _response(message: dict, usage: object = None) -> dict:
    return {"choices": [{"message": message, "finish_reason": "stop"}], "usage": usage}


def test_tool_call_answer() -> None:
    answer = extract_answer(_response({"content": None, "tool_calls": [
        {"type": "function", "function": {"name": "banking77_classify",
                                          "arguments": '{"intent": "card_arrival"}'}}]}))
    assert (answer.raw, answer.source) == ("card_arrival", "tool_call")


def test_text_fallback_when_no_tool_call() -> None:
    answer = extract_answer(_response({"content": "The intent is card_arrival."}))
    assert (answer.raw, answer.source) == ("The intent is card_arrival.", "text")


def test_text_fallback_when_tool_arguments_are_empty() -> None:
    answer = extract_answer(_response({"content": "pin_blocked", "tool_calls": [
        {"function": {"name": "banking77_classify", "arguments": "{}"}}]}))
    assert (answer.raw, answer.source) == ("pin_blocked", "text")


def test_content_parts_are_text() -> None:
    answer = extract_answer(_response({"content": [{"type": "text", "text": "exchange_rate"}]}))
    assert answer.raw == "exchange_rate"


@pytest.mark.parametrize("response", [
    None, [], {}, {"choices": None}, {"choices": []}, {"choices": ["x"]},
    {"choices": [{"message": "x"}]}, {"choices": [{"message": {"tool_calls": "x"}}]},
    {"choices": [{"message": {"tool_calls": [None, {"function": None}], "content": 7}}]},
    {"choices": [{"message": {"content": "   "}}]},
])
def test_unreadable_responses_are_no_answer(response: object) -> None:
    assert extract_answer(response).source == "none"


def test_usage_ignores_non_integers() -> None:
    usage = extract_usage({"usage": {"prompt_tokens": 10, "completion_tokens": True,
                                     "total_tokens": "12"}})
    assert usage.to_dict() == {"prompt_tokens": 10, "completion_tokens": None,
                               "total_tokens": None}
    assert extract_usage({"usage": []}).to_dict()["prompt_tokens"] is None


# -- auth headers --------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "ok"), [
    ([(b"x-api-key", b"k1")], True),
    ([(b"X-API-Key", b" k1 ")], True),
    ([(b"x-api-keys", b"other, k1")], True),
    ([(b"authorization", b"Bearer k1")], True),
    ([(b"authorization", b"bearer k1")], True),
    ([(b"authorization", b"Basic k1")], False),
    ([(b"authorization", b"Bearer")], False),
    ([(b"x-api-key", b"k2")], False),
    ([(b"x-api-keys", b",,")], False),
    ([(b"x-api-key", b"\xff\xfe")], False),
    ([], False),
])
def test_contract_headers(headers: list[tuple[bytes, bytes]], ok: bool) -> None:
    assert key_matches("k1", presented_keys(headers)) is ok
