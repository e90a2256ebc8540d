"""The task app over real HTTP (uvicorn), against the gateway's simulated LM.

Every rollout's reward is checked against a direct classification of the same
query through the same LM (same messages, same tool, same `map_to_label`), and
every request and answer is parsed with synth-ai's own RolloutRequest /
RolloutResponse models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from synth_ai.sdk.localapi._impl.contracts import RolloutRequest, RolloutResponse

from mipro_bench.data import Splits
from mipro_bench.labels import intent_from_tool_arguments, map_to_label
from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.prompt import (
    BASELINE_INSTRUCTION,
    build_messages,
    classify_tool,
    format_intents,
    initial_prompt,
    tool_choice,
)
from mipro_bench.serving import serve_in_thread
from task_app.server import TaskAppServer, serve_task_app
from tests.task_app_support import ENV_KEY, SIM_SETTINGS, Relay, rollout_body, tiny_splits

FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.02, jitter_s=0)


@pytest.fixture(scope="module")
def panel() -> Splits:
    return tiny_splits()


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayHandle]:
    with start_gateway(SIM_SETTINGS) as handle:
        yield handle


@pytest.fixture(scope="module")
def app_server(panel: Splits) -> Iterator[TaskAppServer]:
    with serve_task_app(panel, env_api_key=ENV_KEY, port=0, retry=FAST_RETRY,
                        lm_timeout_s=5.0) as server:
        yield server


@pytest.fixture
def client(app_server: TaskAppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app_server.url, headers=app_server.headers, timeout=30,
                      trust_env=False) as c:
        yield c


def _post_rollout(client: httpx.Client, body: dict[str, Any]) -> RolloutResponse:
    RolloutRequest.model_validate(body)  # what we send is a valid SDK request
    response = client.post("/rollout", json=body)
    assert response.status_code == 200, response.text
    return RolloutResponse.model_validate(response.json())


def _direct_prediction(gateway: GatewayHandle, query: str, labels: tuple[str, ...]) -> str | None:
    """The same classification, asked of the same LM without the task app."""
    body = {"model": SIM_SETTINGS.model,
            "messages": build_messages(BASELINE_INSTRUCTION, query, labels),
            "tools": [classify_tool(labels)], "tool_choice": tool_choice(),
            "temperature": 0.0, "max_tokens": 256}
    url = gateway.endpoint.base_url("direct", "check") + "/chat/completions"
    data = httpx.post(url, json=body, headers=gateway.auth_headers, timeout=30,
                      trust_env=False).json()
    call = data["choices"][0]["message"]["tool_calls"][0]["function"]
    return map_to_label(intent_from_tool_arguments(call["arguments"]), labels)


# -- rewards on a known panel ---------------------------------------------------------------


def test_rewards_match_direct_classification_on_every_split(
        client: httpx.Client, gateway: GatewayHandle, panel: Splits) -> None:
    url = gateway.endpoint.base_url("task_app_test", "rollout")
    rewards = []
    for split in ("train", "val", "test"):
        for seed, example in enumerate(panel.by_name(split).examples):
            out = _post_rollout(client, rollout_body(seed, url, split=split,
                                                     api_key=gateway.endpoint.api_key,
                                                     trace_id=f"{split}-{seed}"))
            details = out.reward_info.details
            expected_prediction = _direct_prediction(gateway, example.text, panel.labels)
            assert details["prediction"] == expected_prediction, example
            assert details["expected"] == example.label
            assert details["example_id"] == example.id and details["query"] == example.text
            assert out.reward_info.outcome_reward == float(expected_prediction == example.label)
            assert out.trace_correlation_id == f"{split}-{seed}"
            assert out.success_status is not None and out.success_status.value == "success"
            assert out.inference_url == url
            assert details["usage"]["prompt_tokens"] > 0 and details["latency_ms"] >= 0
            rewards.append(out.reward_info.outcome_reward)
    assert len(rewards) == 54
    # the simulated LM gets some right and some wrong: both rewards occur on this panel
    assert 0.0 in rewards and 1.0 in rewards
    # every rollout was counted by the gateway under the scope it was sent to
    assert gateway.usage("task_app_test")["task_app_test"]["rollout"].calls == 54


def test_default_split_is_train(client: httpx.Client, gateway: GatewayHandle,
                                panel: Splits) -> None:
    url = gateway.endpoint.base_url("task_app_test", "rollout")
    out = _post_rollout(client, rollout_body(5, url, split=None, api_key=gateway.token))
    assert out.reward_info.details["split"] == "train"
    assert out.reward_info.details["example_id"] == panel.train[5].id


def test_trace_carries_the_messages_and_answer(client: httpx.Client,
                                               gateway: GatewayHandle, panel: Splits) -> None:
    url = gateway.endpoint.base_url("task_app_test", "rollout")
    out = _post_rollout(client, rollout_body(2, url, split="val", trace_id="tr-9",
                                             api_key=gateway.token))
    assert out.trace is not None
    event = out.trace["event_history"][0]
    assert event["llm_request"]["messages"] == build_messages(
        BASELINE_INSTRUCTION, panel.val[2].text, panel.labels)
    assert event["llm_response"]["message"]["tool_calls"]
    assert out.trace["metadata"]["trace_correlation_id"] == "tr-9"


# -- what an interceptor sees --------------------------------------------------------------


def test_interceptor_sees_the_initial_prompt_patterns_filled(
        client: httpx.Client, gateway: GatewayHandle, panel: Splits) -> None:
    relay = Relay(gateway.endpoint.base_url("relay", "rollout"), upstream_key=gateway.token)
    with serve_in_thread(relay.app(), health_path=None, name="relay") as running:
        url = f"{running.url}/v1/trial-1/cid-7?cid=cid-7"  # Synth's interceptor URL shape
        seeds = range(len(panel.test))
        for seed in seeds:
            out = _post_rollout(client, rollout_body(seed, url, split="test", api_key="ik"))
            assert out.success_status is not None and out.success_status.value == "success"
    assert len(relay.calls) == len(seeds)
    prompt = initial_prompt(panel.labels)
    for seed, call in zip(seeds, relay.calls, strict=True):
        assert call.path == "/v1/trial-1/cid-7/chat/completions"
        assert call.query == "cid=cid-7"
        assert call.headers["authorization"] == "Bearer ik"
        sent = call.json()
        filled = [
            {"role": m["role"], "content": m["pattern"]
                .replace("{available_intents}", format_intents(panel.labels))
                .replace("{query}", panel.test[seed].text)}
            for m in sorted(prompt["messages"], key=lambda m: m["order"])
        ]
        # byte for byte, as serialized by the task app
        assert json.dumps(sent["messages"]).encode() == json.dumps(filled).encode()
        assert sent["tools"] == [classify_tool(panel.labels)]
        assert sent["tool_choice"] == tool_choice()
        assert sent["model"] == "gpt-4.1-nano"


def test_plain_text_answers_are_parsed(client: httpx.Client, gateway: GatewayHandle,
                                       panel: Splits) -> None:
    """A server that ignores tools answers in text; the text goes through map_to_label."""
    relay = Relay(gateway.endpoint.base_url("relay", "text"), strip_tools=True,
                  upstream_key=gateway.token)
    direct_url = gateway.endpoint.base_url("direct", "text") + "/chat/completions"
    with serve_in_thread(relay.app(), health_path=None, name="text relay") as running:
        for seed, example in enumerate(panel.train.examples[:12]):
            out = _post_rollout(client, rollout_body(seed, running.url + "/v1"))
            details = out.reward_info.details
            assert details["answer_source"] == "text"
            text_body = {"model": "gpt-4.1-nano",
                         "messages": build_messages(BASELINE_INSTRUCTION, example.text,
                                                    panel.labels),
                         "temperature": 0.0, "max_tokens": 256}
            text = httpx.post(direct_url, json=text_body, headers=gateway.auth_headers,
                              trust_env=False).json()[
                "choices"][0]["message"]["content"]
            assert details["raw_answer"] == text
            assert details["prediction"] == map_to_label(text, panel.labels)
            assert out.reward_info.outcome_reward == float(details["prediction"] == example.label)


# -- LM failures ---------------------------------------------------------------------------


def test_lm_failure_scores_zero_and_records_the_error(client: httpx.Client,
                                                      gateway: GatewayHandle) -> None:
    url = gateway.endpoint.base_url("task_app_test", "faults")
    gateway.set_knobs(error_rate=1.0, error_status=500)
    try:
        out = _post_rollout(client, rollout_body(0, url, api_key=gateway.token))
    finally:
        gateway.set_knobs(error_rate=0.0, error_status=429)
    assert out.reward_info.outcome_reward == 0.0
    assert out.success_status is not None and out.success_status.value == "failure"
    error = out.reward_info.details["error"]
    assert error["type"] == "lm_call_failed"
    assert error["status"] == 500 and error["attempts"] == FAST_RETRY.max_attempts
    assert "500" in (out.status_detail or "")
    assert out.reward_info.details["prediction"] is None
    # the app keeps serving, and the next rollout succeeds
    again = _post_rollout(client, rollout_body(0, url, api_key=gateway.token))
    assert again.success_status is not None and again.success_status.value == "success"


def test_retryable_errors_are_retried(client: httpx.Client, gateway: GatewayHandle) -> None:
    url = gateway.endpoint.base_url("task_app_test", "retry")
    gateway.set_knobs(fail_next=1, error_status=503)
    out = _post_rollout(client, rollout_body(1, url, api_key=gateway.token))
    assert out.success_status is not None and out.success_status.value == "success"
    assert gateway.usage("task_app_test")["task_app_test"]["retry"].errors == 1


def test_unreachable_lm_is_a_network_error(client: httpx.Client) -> None:
    from mipro_bench.serving import find_free_port

    dead = f"http://127.0.0.1:{find_free_port()}/v1"
    out = _post_rollout(client, rollout_body(0, dead))
    assert out.reward_info.outcome_reward == 0.0
    assert out.success_status is not None and out.success_status.value == "network_error"
    assert out.reward_info.details["error"]["status"] is None


# -- contract routes and errors over HTTP --------------------------------------------------


def test_contract_routes(client: httpx.Client, app_server: TaskAppServer, panel: Splits) -> None:
    assert httpx.get(app_server.url + "/", trust_env=False).json() == {
        "status": "ok", "service": "banking77"}
    health = client.get("/health").json()
    assert health["healthy"] is True and health["auth"]["expected_prefix"] == ENV_KEY[:6] + "..."
    info = client.get("/info").json()
    assert info["service"]["task"]["id"] == "banking77"
    assert info["dataset"]["sizes"]["test"] == 18
    taskset = client.get("/task_info").json()["taskset"]
    assert taskset["initial_prompt"] == initial_prompt(panel.labels)
    one = client.get("/task_info", params={"seed": 3, "split": "val"}).json()
    assert one["task_metadata"]["example_id"] == panel.val[3].id
    assert one["task_metadata"]["expected_intent"] == panel.val[3].label
    many = client.get("/task_info", params=[("seed", 0), ("seed", 1)]).json()
    assert [m["task_metadata"]["seed"] for m in many] == [0, 1]
    test_item = client.get("/task_info", params={"seed": 0, "split": "test"}).json()
    assert "expected_intent" not in test_item["task_metadata"]  # held-out labels stay hidden
    assert client.post("/done").json()["ok"] is True


@pytest.mark.parametrize("headers", [
    {}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-API-Keys": "a,b"},
])
def test_wrong_key_is_400_with_a_reason(app_server: TaskAppServer,
                                        headers: dict[str, str]) -> None:
    for method, path in (("GET", "/health"), ("GET", "/info"), ("POST", "/rollout"),
                         ("GET", "/task_info"), ("POST", "/done")):
        response = httpx.request(method, app_server.url + path, headers=headers,
                                 trust_env=False)
        assert response.status_code == 400, (method, path)
        assert response.json()["error"]["code"] == "unauthorised"


@pytest.mark.parametrize("headers", [
    {"X-API-Key": ENV_KEY}, {"Authorization": f"Bearer {ENV_KEY}"},
    {"X-API-Keys": f"other,{ENV_KEY}"},
])
def test_each_contract_header_is_accepted(app_server: TaskAppServer,
                                          headers: dict[str, str]) -> None:
    assert httpx.get(app_server.url + "/health", headers=headers,
                     trust_env=False).status_code == 200


@pytest.mark.parametrize(("body", "status", "code", "says"), [
    ({"env": {"seed": 0}, "policy": {"config": {}}}, 422, "invalid_request",
     "trace_correlation_id"),
    ({"trace_correlation_id": "t", "env": {"seed": "x"}, "policy": {}}, 422, "invalid_request",
     "env.seed"),
    ({"trace_correlation_id": "t", "env": {"seed": -1}, "policy": {"config": {
        "inference_url": "http://127.0.0.1:9/v1", "model": "m"}}}, 400, "seed_out_of_range",
     "0 <= seed < 24"),
    ({"trace_correlation_id": "t", "env": {"seed": 24}, "policy": {"config": {}}}, 400,
     "seed_out_of_range", "seed 24"),
    ({"trace_correlation_id": "t", "env": {"seed": 0, "config": {"split": "dev"}},
      "policy": {"config": {}}}, 400, "unknown_split", "dev"),
    ({"trace_correlation_id": "t", "env": {"seed": 0, "config": {"split": 3}},
      "policy": {"config": {}}}, 400, "unknown_split", "string"),
    ({"trace_correlation_id": "t", "env": {}, "policy": {"config": {}}}, 400, "missing_seed",
     "env.seed"),
    ({"trace_correlation_id": "t", "env": {"seed": 0}, "policy": {"config": {}}}, 400,
     "invalid_policy", "inference_url"),
])
def test_bad_rollouts_are_4xx_saying_what_is_wrong(client: httpx.Client, body: dict, status: int,
                                                   code: str, says: str) -> None:
    response = client.post("/rollout", json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"]["code"] == code
    assert says in payload["error"]["message"]
    assert payload["detail"] == payload["error"]["message"]


def test_malformed_json_and_bad_task_info(client: httpx.Client) -> None:
    response = client.post("/rollout", content=b'{"trace_correlation_id": ',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["error"]["message"]
    assert client.get("/task_info", params={"seed": "abc"}).status_code == 422
    bad = client.get("/task_info", params={"seed": 99})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "seed_out_of_range"
    bad = client.get("/task_info", params={"seed": 0, "split": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_split"
    assert client.get("/no-such-route").status_code == 404


def test_oversized_body_is_413(client: httpx.Client) -> None:
    body = b'{"trace_correlation_id": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    response = client.post("/rollout", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_oversized_chunked_body_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 100_000

    response = client.post("/rollout", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


# -- concurrency: rollouts are async end to end ---------------------------------------------


async def test_concurrent_rollouts_overlap(app_server: TaskAppServer,
                                           gateway: GatewayHandle) -> None:
    url = gateway.endpoint.base_url("task_app_test", "concurrent")
    gateway.set_knobs(latency_s=0.3)
    try:
        async with httpx.AsyncClient(base_url=app_server.url, headers=app_server.headers,
                                     timeout=60, trust_env=False) as ac:
            responses = await asyncio.gather(*(
                ac.post("/rollout", json=rollout_body(seed, url, trace_id=f"c{seed}",
                                                      api_key=gateway.token))
                for seed in range(16)))
    finally:
        gateway.set_knobs(latency_s=0.0)
    outs = [RolloutResponse.model_validate(r.json()) for r in responses]
    assert [o.trace_correlation_id for o in outs] == [f"c{s}" for s in range(16)]
    latencies = [o.reward_info.details["latency_ms"] / 1000 for o in outs]
    assert min(latencies) >= 0.3
    # The gateway's own clocks: the calls' summed time against the time at least one was
    # in flight. Serialized calls give a ratio of 1 however slow the machine is; 16
    # overlapping 0.3 s calls give far more. No wall-clock bound on the test itself.
    usage = gateway.usage("task_app_test")["task_app_test"]["concurrent"]
    assert usage.calls == 16
    assert usage.lm_seconds >= 4 * usage.lm_busy_seconds, (usage.lm_seconds,
                                                           usage.lm_busy_seconds)
