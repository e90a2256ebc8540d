"""Hostile input: a few thousand malformed requests, never a 500, and a healthy app after.

A seeded generator (reproducible: the failing request's index and seed are in
the assertion message) mixes random JSON, mutations of a valid rollout
(wrong types, huge and odd strings, NaN, deep nesting, missing fields),
broken bytes, odd content types, wrong or garbled keys, and random routes and
query strings. The app must answer each with a status below 500 and still
serve a valid rollout afterwards.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from synth_ai.sdk.localapi._impl.contracts import RolloutResponse

from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.retry import RetryPolicy
from task_app.server import TaskAppServer, serve_task_app
from tests.task_app_support import ENV_KEY, SIM_SETTINGS, rollout_body, tiny_splits

FUZZ_SEED = 20240601
N_REQUESTS = 3000
CONCURRENCY = 8


@dataclass
class Fuzzed:
    method: str
    path: str
    headers: dict[str, str | bytes] = field(default_factory=dict)
    params: list[tuple[str, str]] = field(default_factory=list)
    content: bytes | None = None


def _random_scalar(rng: random.Random) -> Any:
    return rng.choice([
        None, True, False, 0, -1, 1, 2**63, -(2**70), 10**400 // 10**350, 0.5, -0.0, 1e308,
        "", " ", "train", "val", "test", "trainval", "x" * rng.randint(1, 200),
        "\u0000\ud7ff\U0001f600", "http://127.0.0.1:1/v1", "ftp://x", "{}", "[]",
    ])


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.random()
    if depth > 3 or kind < 0.5:
        return _random_scalar(rng)
    if kind < 0.75:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["trace_correlation_id", "env", "policy", "seed", "config", "split", "inference_url",
            "model", "api_key", "x", ""]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


PATHS = [("env",), ("env", "seed"), ("env", "config"), ("env", "config", "split"), ("policy",),
         ("policy", "config"), ("policy", "config", "inference_url"),
         ("policy", "config", "model"), ("policy", "config", "api_key"),
         ("policy", "config", "temperature"), ("policy", "config", "max_tokens"),
         ("policy", "config", "max_completion_tokens"), ("trace_correlation_id",),
         ("policy", "output_mode"), ("safety",), ("safety", "max_time_s"),
         ("context_overrides",), ("on_done",)]


def _mutate(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(PATHS)
        target: Any = body
        for key in path[:-1]:
            if not isinstance(target, dict):
                break
            target = target.setdefault(key, {})
        if not isinstance(target, dict):
            continue
        action = rng.random()
        if action < 0.2:
            target.pop(path[-1], None)
        elif action < 0.35:
            target[path[-1]] = "y" * rng.choice([1000, 100_000, 1_500_000])
        elif action < 0.45:
            nested: Any = 0
            for _ in range(rng.choice([50, 500, 5000])):
                nested = [nested]
            target[path[-1]] = nested
        else:
            target[path[-1]] = _random_json(rng)
    return body


def _dumps(value: Any, rng: random.Random) -> bytes:
    try:
        text = json.dumps(value, allow_nan=True)
    except (ValueError, RecursionError):
        text = "[" * 10_000  # too deep for json.dumps itself: send a deep, broken document
    if rng.random() < 0.1:
        text = text.replace("0", "NaN", 1).replace("1", "Infinity", 1)
    return text.encode("utf-8", "surrogatepass")


def _headers(rng: random.Random) -> dict[str, str | bytes]:
    choice = rng.random()
    if choice < 0.7:
        auth: dict[str, str | bytes] = {"X-API-Key": ENV_KEY}
    elif choice < 0.75:
        auth = {"Authorization": f"Bearer {ENV_KEY}"}
    elif choice < 0.8:
        auth = {"X-API-Keys": f",, ,{ENV_KEY}"}
    else:
        auth = rng.choice([{}, {"X-API-Key": ""}, {"X-API-Key": "wrong"},
                           {"Authorization": "Bearer"}, {"Authorization": "Basic abc"},
                           {"X-API-Keys": ",,,"}, {"X-API-Key": ENV_KEY + "x"},
                           {"X-API-Key": "é".encode() * 50},
                           {"Authorization": "Bearer " + "k" * 8000}])
    content_type = rng.choice(["application/json"] * 6 + [
        "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
        "application/json; charset=latin-1", ""])
    headers = dict(auth)
    if content_type:
        headers["content-type"] = content_type
    return headers


def generate(rng: random.Random, inference_url: str,
             api_key: str | None = None) -> Iterator[Fuzzed]:
    valid = rollout_body(0, inference_url, api_key=api_key)
    for _ in range(N_REQUESTS):
        kind = rng.random()
        headers = _headers(rng)
        if kind < 0.45:
            body = _mutate(valid, rng)
            if rng.random() < 0.5:
                body["env"] = body.get("env") if isinstance(body.get("env"), dict) else {}
                body["env"]["seed"] = rng.choice([0, 23, 24, -1, 2**31, 10**25, 3.0, 3.5, "1"])
            yield Fuzzed("POST", "/rollout", headers, content=_dumps(body, rng))
        elif kind < 0.65:
            yield Fuzzed("POST", "/rollout", headers, content=_dumps(_random_json(rng), rng))
        elif kind < 0.75:
            raw = _dumps(valid, rng)
            cut = rng.randint(0, len(raw))
            garbage = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
            yield Fuzzed("POST", "/rollout", headers, content=raw[:cut] + garbage)
        elif kind < 0.9:
            params = [(rng.choice(["seed", "seeds", "split", "x"]),
                       str(rng.choice([0, 1, -5, 10**30, "abc", "", "val", "test", "é", 2.5,
                                       "1e3", "0x10", " 3"])))
                      for _ in range(rng.randint(0, 4))]
            yield Fuzzed("GET", "/task_info", headers, params=params)
        else:
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
            path = rng.choice(["/", "/health", "/info", "/done", "/rollout", "/task_info",
                               "/docs", "/openapi.json", "/debug/env", "/proxy/v1/chat/completions",
                               "/%2e%2e/etc/passwd", "/" + "a" * 3000, "/rollout/"])
            content = _dumps(_random_json(rng), rng) if method in ("POST", "PUT", "PATCH") else None
            yield Fuzzed(method, path, headers, content=content)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayHandle]:
    with start_gateway(SIM_SETTINGS) as handle:
        yield handle


@pytest.fixture(scope="module")
def app_server() -> Iterator[TaskAppServer]:
    retry = RetryPolicy(max_attempts=1)  # a fuzzed URL that points nowhere fails fast
    with serve_task_app(tiny_splits(), env_api_key=ENV_KEY, port=0, retry=retry,
                        lm_timeout_s=5.0) as server:
        yield server


async def test_no_hostile_request_gets_a_500(app_server: TaskAppServer,
                                             gateway: GatewayHandle) -> None:
    inference_url = gateway.endpoint.base_url("fuzz", "rollout")
    requests = list(generate(random.Random(FUZZ_SEED), inference_url, gateway.token))
    statuses: dict[int, int] = {}
    failures: list[str] = []
    queue: asyncio.Queue[tuple[int, Fuzzed]] = asyncio.Queue()
    for item in enumerate(requests):
        queue.put_nowait(item)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            index, req = queue.get_nowait()
            response = await client.request(req.method, req.path, headers=req.headers,
                                            params=req.params, content=req.content)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                failures.append(f"#{index} (seed {FUZZ_SEED}) {req.method} {req.path} "
                                f"-> {response.status_code}: {response.text[:300]}")
            elif req.method != "HEAD" and response.status_code >= 400:
                # every client error says what is wrong, as JSON
                assert "error" in response.json(), (index, response.text[:300])

    async with httpx.AsyncClient(base_url=app_server.url, timeout=60, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))

    assert not failures, "\n".join(failures[:10])
    assert sum(statuses.values()) == N_REQUESTS
    # the mix reached every kind of answer: successes, auth failures, validation, bad input
    for status in (200, 400, 404, 413, 422):
        assert statuses.get(status, 0) > 0, statuses

    # still healthy, and still scoring
    async with httpx.AsyncClient(base_url=app_server.url, headers=app_server.headers,
                                 timeout=30, trust_env=False) as client:
        assert (await client.get("/health")).status_code == 200
        response = await client.post("/rollout", json=rollout_body(3, inference_url,
                                                                   api_key=gateway.token))
        assert response.status_code == 200
        out = RolloutResponse.model_validate(response.json())
        assert out.success_status is not None and out.success_status.value == "success"
