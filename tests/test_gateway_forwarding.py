"""The forwarding gateway: real key injected upstream only, retries bounded, 502 at the end.

The upstream is a second, simulated gateway (the real app, served on another
port, whose token is the configured "real" key) wrapped to record the
Authorization headers it receives; a few cases
need an upstream that behaves like OpenAI on errors (echoing the key in a 401,
pricing a dated model name): that one is a small stand-in app defined here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.gateway_app import Gateway, build_app
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.lm.settings import LMSettings
from mipro_bench.offline.sim_responder import SimResponder
from mipro_bench.results import PhaseUsage
from mipro_bench.serving import RunningServer, serve_in_thread

# A fake key, assembled at run time so secret scanners do not flag this file.
SECRET = "sk-" + "test-SECRET-4f9d0c2e7a1b8e6d5c3b"
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05,
                         jitter_s=0.01)
HTTP = httpx.Client(timeout=30.0)


def body(model: str = "gpt-4.1-nano") -> dict[str, Any]:
    return {"model": model, "messages": [
        {"role": "system", "content": "Classify into: card_arrival, exchange_rate."},
        {"role": "user", "content": "When does my card arrive?"}]}


class HeaderRecorder:
    """ASGI wrapper remembering each request's Authorization header (test instrumentation)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.authorizations: list[str | None] = []

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            headers = dict(scope["headers"])
            value = headers.get(b"authorization")
            self.authorizations.append(value.decode() if value else None)
        await self.app(scope, receive, send)


class Upstream:
    def __init__(self, gateway: Gateway, server: RunningServer, recorder: HeaderRecorder):
        self.gateway = gateway
        self.server = server
        self.recorder = recorder

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/s/upstream/forwarded/v1"

    def usage(self) -> PhaseUsage:
        return self.gateway.ledger.snapshot().get("upstream", {}).get("forwarded", PhaseUsage())


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    gateway = Gateway(SimResponder(model="gpt-4.1-nano"), model="gpt-4.1-nano", token=SECRET)
    recorder = HeaderRecorder(build_app(gateway))
    with serve_in_thread(recorder, name="upstream",
                         health_headers={"authorization": f"Bearer {SECRET}"}) as server:
        yield Upstream(gateway, server, recorder)


def forward_settings(base_url: str) -> LMSettings:
    return LMSettings(backend="compatible", model="gpt-4.1-nano", base_url=base_url,
                      api_key_env="OPENAI_API_KEY", max_retries=2)


@pytest.fixture
def front(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayHandle]:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with start_gateway(forward_settings(upstream.base_url), retry=FAST_RETRY,
                       testing=True) as handle:
        yield handle


def post(front: GatewayHandle, payload: Any, phase: str = "optimize") -> httpx.Response:
    return HTTP.post(front.endpoint.base_url("opt", phase) + "/chat/completions", json=payload,
                     headers=front.auth_headers)


def test_forwards_with_the_real_key_and_counts(front: GatewayHandle,
                                               upstream: Upstream) -> None:
    response = post(front, body())
    assert response.status_code == 200
    data = response.json()
    assert data["choices"]
    assert upstream.recorder.authorizations == [f"Bearer {SECRET}"]
    # The answer came from a simulated upstream: still labelled, still unpriced.
    assert data["system_fingerprint"] == "mipro-bench-simulated"
    assert front.usage() == {"opt": {"optimize": PhaseUsage(
        1, data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"], None, 0)}}
    health = HTTP.get(front.url + "/health", headers=front.auth_headers).json()
    assert health["simulated"] is False
    assert health["backend"] == "compatible"


def test_upstream_429_is_retried_honouring_retry_after(front: GatewayHandle,
                                                       upstream: Upstream) -> None:
    upstream.gateway.set_knobs({"fail_next": 2, "error_status": 429, "retry_after_s": 0.2})
    started = time.perf_counter()
    response = post(front, body())
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert elapsed >= 0.4  # two waits of the upstream's Retry-After, not the 10 ms backoff
    assert upstream.usage() == PhaseUsage(calls=1, input_tokens=upstream.usage().input_tokens,
                                          output_tokens=upstream.usage().output_tokens,
                                          errors=2)
    assert front.usage()["opt"]["optimize"].calls == 1
    assert front.usage()["opt"]["optimize"].errors == 0


def test_upstream_500_stops_after_the_bound_with_502(front: GatewayHandle,
                                                     upstream: Upstream) -> None:
    upstream.gateway.set_knobs({"error_rate": 1.0, "error_status": 500})
    response = post(front, body())
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_error"
    assert "HTTP 500 on all 3 attempts" in error["message"]
    assert upstream.usage().errors == FAST_RETRY.max_attempts
    assert front.usage()["opt"]["optimize"] == PhaseUsage(errors=1)


def test_unreachable_upstream_is_a_502(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    from mipro_bench.serving import find_free_port

    dead = f"http://127.0.0.1:{find_free_port()}/v1"
    with start_gateway(forward_settings(dead), retry=FAST_RETRY) as handle:
        response = post(handle, body())
    assert response.status_code == 502
    assert "unreachable after 3 attempts" in response.json()["error"]["message"]


def test_bad_request_is_refused_before_forwarding(front: GatewayHandle,
                                                  upstream: Upstream) -> None:
    response = HTTP.post(front.endpoint.base_url("opt", "p") + "/chat/completions",
                         content=b"{nope", headers=front.auth_headers)
    assert response.status_code == 400
    assert upstream.recorder.authorizations == []


# -- an OpenAI-like upstream: key echoed on errors, dated model names, prices ------------------


def openai_like_app() -> Starlette:
    """Stand-in for api.openai.com's error and pricing behaviour (not a model)."""

    async def completions(request: Request) -> JSONResponse:
        payload = await request.json()
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        model = payload.get("model")
        if model == "reject-key":
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {key}.",
                                           "type": "invalid_request_error"}}, 401)
        if model == "echo-400":
            return JSONResponse({"error": {"message": f"bad model for key {key}",
                                           "type": "invalid_request_error"}}, 400)
        return JSONResponse({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
            "model": f"{model}-2025-04-14",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "card_arrival"}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
        })

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                             Route("/health", health)])


@pytest.fixture
def openai_front(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayHandle]:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    # backend "openai": OpenAI's price table applies to OpenAI's own API only (a compatible
    # server with an OpenAI-looking model name is unpriced: tests/test_real_model_paths.py)
    settings = dataclasses.replace(forward_settings(""), backend="openai")
    with serve_in_thread(openai_like_app(), name="openai-like") as server, start_gateway(
        settings.with_base_url(server.url + "/v1"), retry=FAST_RETRY
    ) as handle:
        yield handle


def test_known_models_are_priced(openai_front: GatewayHandle) -> None:
    assert post(openai_front, body("gpt-4.1-nano")).status_code == 200
    assert post(openai_front, body("gpt-4o-mini"), phase="test_eval").status_code == 200
    assert post(openai_front, body("my-local-model"), phase="other").status_code == 200
    usage = openai_front.usage()["opt"]
    assert usage["optimize"].cost_usd == pytest.approx((1000 * 0.10 + 500 * 0.40) / 1e6)
    assert usage["test_eval"].cost_usd == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
    assert usage["other"].cost_usd is None
    assert usage["other"].calls == 1


def test_the_key_never_comes_back(openai_front: GatewayHandle, front: GatewayHandle,
                                  upstream: Upstream, caplog: pytest.LogCaptureFixture,
                                  capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    rejected = post(openai_front, body("reject-key"))
    assert rejected.status_code == 502
    assert "rejected the configured API key" in rejected.json()["error"]["message"]
    echoed = post(openai_front, body("echo-400"))
    assert echoed.status_code == 400  # the client's mistake: relayed, not retried
    assert "[redacted]" in echoed.json()["error"]["message"]
    texts += [rejected.text, echoed.text, str(rejected.headers), str(echoed.headers)]
    texts.append(post(openai_front, body()).text)
    texts.append(post(front, body()).text)
    upstream.gateway.set_knobs({"error_rate": 1.0, "error_status": 503})
    texts.append(post(front, body()).text)
    for gw in (openai_front, front):
        for path in ("/usage", "/health", "/v1/models", "/admin/knobs"):
            texts.append(HTTP.get(gw.url + path, headers=gw.auth_headers).text)
        texts.append(repr(gw.usage()))
        texts.append(repr(gw.settings))
    out, err = capfd.readouterr()
    texts += [out, err, caplog.text]
    assert caplog.text  # the failures were logged, so the check below means something
    leaked = [t for t in texts if SECRET in t or SECRET[-12:] in t]
    assert leaked == []


def test_forwarding_without_base_url_is_refused() -> None:
    settings = LMSettings(backend="openai", model="gpt-4.1-nano", base_url=None)
    with pytest.raises(ValueError, match="base_url"), start_gateway(settings):
        pass


def test_knob_only_for_sim_is_refused_when_forwarding(front: GatewayHandle) -> None:
    response = HTTP.post(front.url + "/admin/knobs", json={"malformed_rate": 0.5},
                         headers=front.auth_headers)
    assert response.status_code == 400
    assert "simulated" in response.json()["error"]["message"]
    knobs = HTTP.get(front.url + "/admin/knobs", headers=front.auth_headers)
    assert json.loads(knobs.text)["malformed_rate"] == 0.0
