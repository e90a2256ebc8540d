"""The gateway's per-run token: no route answers without it, nothing reaches the upstream."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.settings import LMSettings
from tests.lm_support import CountingUpstream, counting_upstream

HTTP = httpx.Client(timeout=30.0, trust_env=False)
BODY = {"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": "card arrival?"}]}
ROUTES = [("POST", "/v1/chat/completions"), ("POST", "/s/opt/optimize/v1/chat/completions"),
          ("GET", "/v1/models"), ("GET", "/s/opt/optimize/v1/models"), ("GET", "/health"),
          ("GET", "/usage"), ("POST", "/usage/reset"), ("GET", "/admin/knobs"),
          ("POST", "/admin/knobs"), ("GET", "/no/such/route")]


@pytest.fixture
def forwarding(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GatewayHandle,
                                                                   CountingUpstream]]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "x" * 40)  # built at run time, never a literal
    with counting_upstream() as (base_url, upstream):
        settings = LMSettings(backend="compatible", model="gpt-4.1-nano", base_url=base_url,
                              api_key_env="OPENAI_API_KEY", max_retries=0)
        with start_gateway(settings) as handle:
            yield handle, upstream


@pytest.mark.parametrize("headers", [
    {},
    {"authorization": "Bearer wrong-token-0123456789"},
    {"authorization": "Basic abc"},
    {"x-api-key": ""},
])
def test_no_route_answers_without_the_token_and_the_upstream_sees_nothing(
        forwarding: tuple[GatewayHandle, CountingUpstream], headers: dict[str, str]) -> None:
    handle, upstream = forwarding
    for method, path in ROUTES:
        response = HTTP.request(method, handle.url + path, headers=headers,
                                json=BODY if method == "POST" else None)
        assert response.status_code == 401, (method, path, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and "token" in error["message"]
    assert upstream.count == 0
    assert handle.usage() == {}  # refused before any accounting


def test_the_token_opens_the_routes_as_bearer_or_x_api_key(
        forwarding: tuple[GatewayHandle, CountingUpstream]) -> None:
    handle, upstream = forwarding
    url = handle.endpoint.base_url("opt", "optimize") + "/chat/completions"
    assert HTTP.post(url, json=BODY, headers=handle.auth_headers).status_code == 200
    assert HTTP.post(url, json=BODY, headers={"X-API-Key": handle.token}).status_code == 200
    assert upstream.count == 2
    # the upstream got the real key, never the gateway's token
    assert all(handle.token not in str(r["headers"]) for r in upstream.requests)
    assert handle.endpoint.usage()["opt"]["optimize"].calls == 2


def test_knob_changes_over_http_need_a_testing_gateway(
        forwarding: tuple[GatewayHandle, CountingUpstream]) -> None:
    handle, _ = forwarding
    refused = HTTP.post(handle.url + "/admin/knobs", json={"error_rate": 1.0},
                        headers=handle.auth_headers)
    assert refused.status_code == 403
    assert "testing=True" in refused.json()["error"]["message"]
    assert handle.knobs.error_rate == 0.0
    assert HTTP.get(handle.url + "/admin/knobs", headers=handle.auth_headers).status_code == 200
    settings, _ = resolve_lm_settings(env={})
    with start_gateway(settings, testing=True) as testing:
        accepted = HTTP.post(testing.url + "/admin/knobs", json={"error_rate": 0.5},
                             headers=testing.auth_headers)
        assert accepted.status_code == 200
        assert testing.knobs.error_rate == 0.5


def test_each_gateway_has_its_own_token_kept_out_of_reprs() -> None:
    settings, _ = resolve_lm_settings(env={})
    with start_gateway(settings) as one, start_gateway(settings) as two:
        assert one.token != two.token and len(one.token) >= 40
        assert one.endpoint.api_key == one.token
        assert one.token not in repr(one.endpoint)
        # one gateway's token does not open another
        other = HTTP.get(two.url + "/health", headers=one.auth_headers)
        assert other.status_code == 401
