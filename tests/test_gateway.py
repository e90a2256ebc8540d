"""The LM gateway with the simulated policy: routes, accounting per scope, knobs, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.knobs import Knobs
from mipro_bench.lm.responders import SIMULATED_FINGERPRINT
from mipro_bench.lm.settings import LMSettings
from mipro_bench.lm.usage import UNSCOPED
from mipro_bench.prompt import build_messages, classify_tool, tool_choice
from mipro_bench.results import PhaseUsage

# One pooled client for the module: a new httpx client per call costs ~40 ms (SSL context).
HTTP = httpx.Client(timeout=30.0)

LABELS = ["card_arrival", "card_linking", "exchange_rate", "lost_or_stolen_card"]
PINNED = ("Classify the banking query. "
          "Respond with only the intent name, spelled exactly as listed.")


def chat_body(query: str = "when will my new card arrive?") -> dict[str, Any]:
    return {
        "model": "gpt-4.1-nano",
        "messages": build_messages("Classify the banking query.", query, LABELS),
        "tools": [classify_tool(LABELS)],
        "tool_choice": tool_choice(),
        "temperature": 0.0,
    }


@pytest.fixture
def sim_settings() -> LMSettings:
    settings, _ = resolve_lm_settings(env={})
    return settings


@pytest.fixture
def gw(sim_settings: LMSettings) -> Iterator[GatewayHandle]:
    with start_gateway(sim_settings, testing=True) as handle:
        yield handle


def chat_url(gw: GatewayHandle, optimizer: str, phase: str) -> str:
    return gw.endpoint.base_url(optimizer, phase) + "/chat/completions"


def test_health_and_models_say_simulated(gw: GatewayHandle) -> None:
    health = HTTP.get(gw.url + "/health", headers=gw.auth_headers).json()
    assert health == {"status": "ok", "simulated": True, "backend": "sim",
                      "model": "gpt-4.1-nano"}
    for url in (gw.url + "/v1/models", gw.endpoint.base_url("dspy", "optimize") + "/models"):
        models = HTTP.get(url, headers=gw.auth_headers).json()
        assert models["data"][0]["id"] == "gpt-4.1-nano"
        assert models["data"][0]["owned_by"] == SIMULATED_FINGERPRINT


def test_answer_is_labelled_simulated_and_counted_under_its_scope(gw: GatewayHandle) -> None:
    # The instruction pins the format: unpinned, the simulated LM may drift from the label
    # set (here it names two intents), which is the drift tests' subject, not this one's.
    body = chat_body()
    body["messages"] = build_messages(PINNED, "when will my new card arrive?", LABELS)
    response = HTTP.post(chat_url(gw, "dspy-s0", "baseline_eval"), headers=gw.auth_headers,
                         json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["system_fingerprint"] == SIMULATED_FINGERPRINT
    assert response.headers["x-mipro-bench-simulated"] == "true"
    args = json.loads(data["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert args["intent"] == "card_arrival"  # a label, spelled as listed, and the right one
    usage = gw.usage()
    assert usage == {"dspy-s0": {"baseline_eval": PhaseUsage(
        calls=1,
        input_tokens=data["usage"]["prompt_tokens"],
        output_tokens=data["usage"]["completion_tokens"],
        cost_usd=None,  # a simulated call is never priced
        errors=0,
    )}}


def test_unscoped_route_is_counted_apart(gw: GatewayHandle) -> None:
    assert HTTP.post(gw.url + "/v1/chat/completions", headers=gw.auth_headers,
                     json=chat_body()).status_code == 200
    assert gw.usage()[UNSCOPED][UNSCOPED].calls == 1


async def test_every_client_is_counted_per_phase(gw: GatewayHandle) -> None:
    """httpx (sync+async), openai, requests and aiohttp: the counts are what each sent."""
    import aiohttp
    import openai
    import requests

    sent: dict[str, list[dict[str, Any]]] = {}

    def keep(phase: str, data: dict[str, Any]) -> None:
        sent.setdefault(phase, []).append(data["usage"])

    with httpx.Client(headers=gw.auth_headers) as client:
        for i in range(3):
            keep("httpx", client.post(chat_url(gw, "c", "httpx"),
                                      json=chat_body(f"card {i}")).json())
    async with httpx.AsyncClient(headers=gw.auth_headers) as aclient:
        replies = await asyncio.gather(*[
            aclient.post(chat_url(gw, "c", "httpx_async"), json=chat_body(f"rate {i}"))
            for i in range(5)])
        for r in replies:
            keep("httpx_async", r.json())
    oai = openai.OpenAI(base_url=gw.endpoint.base_url("c", "openai"),
                        api_key=gw.endpoint.api_key, max_retries=0)
    for i in range(2):
        completion = await asyncio.to_thread(oai.chat.completions.create,
                                             **chat_body(f"stolen {i}"))
        keep("openai", completion.model_dump())
    with requests.Session() as session:
        session.headers.update(gw.auth_headers)
        for i in range(4):
            keep("requests", (await asyncio.to_thread(
                session.post, chat_url(gw, "c", "requests"), json=chat_body(f"link {i}"))).json())
    async with aiohttp.ClientSession(headers=gw.auth_headers) as session:
        for i in range(2):
            async with session.post(chat_url(gw, "c", "aiohttp"),
                                    json=chat_body(f"arrive {i}")) as resp:
                keep("aiohttp", await resp.json())

    usage = gw.usage("c")["c"]
    assert set(usage) == set(sent)
    for phase, usages in sent.items():
        assert usage[phase] == PhaseUsage(
            calls=len(usages),
            input_tokens=sum(u["prompt_tokens"] for u in usages),
            output_tokens=sum(u["completion_tokens"] for u in usages),
            cost_usd=None,
            errors=0,
        ), phase


def test_usage_over_http_matches_the_handle_and_resets(gw: GatewayHandle) -> None:
    for optimizer, phase in [("a", "optimize"), ("a", "test_eval"), ("b", "optimize")]:
        HTTP.post(chat_url(gw, optimizer, phase), headers=gw.auth_headers, json=chat_body())
    raw = HTTP.get(gw.url + "/usage", headers=gw.auth_headers).json()
    assert set(raw) == {"a", "b"}
    assert set(raw["a"]["optimize"]) == {"calls", "input_tokens", "output_tokens", "cost_usd",
                                         "errors", "lm_seconds", "lm_busy_seconds",
                                         "replayed_calls", "cost_usd_estimate", "truncated"}
    assert raw["a"]["optimize"]["lm_seconds"] > 0  # server-side time of that one call
    assert raw["a"]["optimize"]["cost_usd"] is None
    assert gw.endpoint.usage() == gw.usage()
    assert gw.endpoint.usage("a") == gw.usage("a")
    assert set(gw.endpoint.usage("a")) == {"a"}
    assert HTTP.post(gw.url + "/usage/reset", headers=gw.auth_headers,
                     params={"optimizer": "a"}).status_code == 200
    assert set(gw.usage()) == {"b"}
    gw.reset_usage()
    assert gw.endpoint.usage() == {}


def test_same_request_same_answer(gw: GatewayHandle) -> None:
    first = HTTP.post(chat_url(gw, "x", "y"), headers=gw.auth_headers, json=chat_body()).json()
    second = HTTP.post(chat_url(gw, "x", "y"), headers=gw.auth_headers, json=chat_body()).json()
    assert first == second


# -- knobs ----------------------------------------------------------------------------------


def test_injected_429_carries_retry_after_and_counts_as_error(gw: GatewayHandle) -> None:
    gw.set_knobs(fail_next=1, error_status=429, retry_after_s=2.5)
    response = HTTP.post(chat_url(gw, "k", "optimize"), headers=gw.auth_headers, json=chat_body())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2.5"
    assert response.headers["retry-after-ms"] == "2500"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert HTTP.post(chat_url(gw, "k", "optimize"), headers=gw.auth_headers,
                     json=chat_body()).status_code == 200
    assert gw.usage("k")["k"]["optimize"].errors == 1
    assert gw.usage("k")["k"]["optimize"].calls == 1


def test_injected_500_has_no_retry_after(gw: GatewayHandle) -> None:
    gw.set_knobs(error_rate=1.0, error_status=500)
    response = HTTP.post(chat_url(gw, "k", "p"), headers=gw.auth_headers, json=chat_body())
    assert response.status_code == 500
    assert "retry-after" not in response.headers
    assert response.json()["error"]["type"] == "server_error"


def test_error_rate_share_is_seeded(gw: GatewayHandle) -> None:
    def statuses() -> list[int]:
        gw.set_knobs(error_rate=0.0)
        gw.set_knobs(error_rate=0.5, error_status=503, error_seed=7)
        with httpx.Client(headers=gw.auth_headers) as client:
            return [client.post(chat_url(gw, "r", "p"), json=chat_body()).status_code
                    for _ in range(40)]

    first, second = statuses(), statuses()
    assert first == second
    assert set(first) == {200, 503}
    usage = gw.usage("r")["r"]["p"]
    assert usage.errors == 2 * first.count(503)
    assert usage.calls == 2 * first.count(200)


def test_latency_knobs_add_time(gw: GatewayHandle) -> None:
    # Lower bounds only: the added sleep guarantees them, a loaded machine cannot break them.
    url = chat_url(gw, "l", "p")
    gw.set_knobs(latency_s=0.3)
    started = time.perf_counter()
    assert HTTP.post(url, headers=gw.auth_headers, json=chat_body()).status_code == 200
    slow = time.perf_counter() - started
    gw.set_knobs(latency_s=0.0, latency_per_output_token_s=0.02)
    started = time.perf_counter()
    tokens = HTTP.post(url, headers=gw.auth_headers,
                       json=chat_body()).json()["usage"]["completion_tokens"]
    per_token = time.perf_counter() - started
    assert slow >= 0.3
    assert tokens > 0
    assert per_token >= 0.02 * tokens


def test_knobs_over_http(gw: GatewayHandle) -> None:
    answer = HTTP.post(gw.url + "/admin/knobs", headers=gw.auth_headers,
                       json={"error_rate": 0.25, "latency_s": 0.01})
    assert answer.status_code == 200
    assert answer.json()["error_rate"] == 0.25
    assert gw.knobs == Knobs(error_rate=0.25, latency_s=0.01)
    assert HTTP.get(gw.url + "/admin/knobs", headers=gw.auth_headers).json()["latency_s"] == 0.01
    bad = HTTP.post(gw.url + "/admin/knobs", headers=gw.auth_headers, json={"error_rate": 2})
    assert bad.status_code == 400
    assert "error_rate" in bad.json()["error"]["message"]
    assert HTTP.post(gw.url + "/admin/knobs", headers=gw.auth_headers,
                     json={"nope": 1}).status_code == 400
    assert HTTP.post(gw.url + "/admin/knobs", headers=gw.auth_headers,
                     content=b"{").status_code == 400
    assert HTTP.post(gw.url + "/admin/knobs", headers=gw.auth_headers, json=[1]).status_code == 400
    assert gw.knobs.error_rate == 0.25  # a rejected change changes nothing


def test_malformed_rate_reaches_the_policy(gw: GatewayHandle) -> None:
    good = HTTP.post(chat_url(gw, "m", "p"), headers=gw.auth_headers, json=chat_body()).json()
    gw.set_knobs(malformed_rate=1.0)
    bad = HTTP.post(chat_url(gw, "m", "p"), headers=gw.auth_headers, json=chat_body()).json()
    assert bad["choices"][0]["message"] != good["choices"][0]["message"]
    assert bad["system_fingerprint"] == SIMULATED_FINGERPRINT


def test_knobs_given_at_start(sim_settings: LMSettings) -> None:
    with start_gateway(sim_settings, knobs=Knobs(fail_next=2, error_status=502)) as handle:
        codes = [HTTP.post(chat_url(handle, "s", "p"), headers=handle.auth_headers,
                           json=chat_body()).status_code
                 for _ in range(3)]
    assert codes == [502, 502, 200]


# -- bad input: 4xx with a JSON error, never a 500 --------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "messages"),
        (b'{"messages": []}', "messages"),
        (b'{"messages": ["hi"]}', "messages"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}', "stream"),
    ],
)
def test_bad_requests_get_400_with_a_message(gw: GatewayHandle, content: bytes,
                                             fragment: str) -> None:
    response = HTTP.post(chat_url(gw, "bad", "p"), content=content,
                         headers={**gw.auth_headers, "content-type": "application/json"})
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]
    assert gw.usage("bad")["bad"]["p"] == PhaseUsage(errors=1)


def test_policy_rejections_are_4xx(gw: GatewayHandle) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "n": "three"}
    response = HTTP.post(chat_url(gw, "bad", "p"), headers=gw.auth_headers, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert "simulated LM" in response.json()["error"]["message"]


def test_bad_scope_and_unknown_routes(gw: GatewayHandle) -> None:
    bad_scope = HTTP.post(gw.url + "/s/%20oops/p/v1/chat/completions", headers=gw.auth_headers,
                          json=chat_body())
    assert bad_scope.status_code == 400
    assert "optimizer" in bad_scope.json()["error"]["message"]
    missing = HTTP.get(gw.url + "/v1/nothing", headers=gw.auth_headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    wrong_method = HTTP.get(chat_url(gw, "a", "b"), headers=gw.auth_headers)
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()


def test_oversized_body_is_413(gw: GatewayHandle) -> None:
    response = HTTP.post(chat_url(gw, "big", "p"), content=b" " * (8 * 1024 * 1024 + 1),
                         headers={**gw.auth_headers, "content-type": "application/json"})
    assert response.status_code == 413


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", "x"])},
        optional={"content": _json_values},
    ),
    min_size=1, max_size=3,
)
_bodies = st.fixed_dictionaries(
    {"messages": _messages},
    optional={"model": _json_values, "tools": _json_values, "tool_choice": _json_values,
              "temperature": _json_values, "n": _json_values, "max_tokens": _json_values,
              "response_format": _json_values},
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_fuzzed_bodies_never_get_a_5xx(gw: GatewayHandle, body: dict[str, Any]) -> None:
    response = HTTP.post(chat_url(gw, "fuzz", "p"), headers=gw.auth_headers, json=body)
    assert response.status_code < 500, (body, response.text)
    assert "error" in response.json() or "choices" in response.json()


def test_listener_is_tcp_so_asyncio_disables_nagle() -> None:
    """asyncio sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP; a
    proto-0 listener put Nagle + delayed ACK (~40 ms) on every gateway call."""
    import socket

    from mipro_bench.serving import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
