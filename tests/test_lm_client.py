"""The task app's chat client against the running gateway: retries, Retry-After, LMCallError.

Attempts are counted on the server side (the gateway's per-scope error and
call counters), so a retry the client only claims to make does not pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mipro_bench.lm import client as client_module
from mipro_bench.lm.client import ChatClient, LMCallError, SyncChatClient, chat, chat_sync
from mipro_bench.lm.gateway import GatewayHandle
from mipro_bench.lm.retry import RetryPolicy, WaitRetryAfterOrBackoff
from mipro_bench.results import PhaseUsage
from mipro_bench.serving import find_free_port

POLICY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, jitter_s=0.01)
BODY: dict[str, Any] = {
    "model": "gpt-4.1-nano",
    "messages": [{"role": "system", "content": "Pick one intent: card_arrival, exchange_rate."},
                 {"role": "user", "content": "what is the exchange rate today"}],
}


@pytest.fixture(autouse=True)
def clean(gw: GatewayHandle) -> Iterator[None]:
    gw.set_knobs(error_rate=0.0, fail_next=0, latency_s=0.0, retry_after_s=1.0)
    gw.reset_usage()
    yield


def base(gw: GatewayHandle, phase: str = "p") -> str:
    return gw.endpoint.base_url("client", phase)


def server_side(gw: GatewayHandle, phase: str = "p") -> PhaseUsage:
    return gw.usage().get("client", {}).get(phase, PhaseUsage())


async def test_success_returns_the_completion(gw: GatewayHandle) -> None:
    async with ChatClient(retry=POLICY) as client:
        data = await client.chat(base(gw), gw.endpoint.api_key, BODY)
    assert data["object"] == "chat.completion"
    assert server_side(gw).calls == 1


async def test_full_chat_url_is_accepted_too(gw: GatewayHandle) -> None:
    async with ChatClient(retry=POLICY) as client:
        await client.chat(base(gw) + "/chat/completions", gw.token, BODY)
        await client.chat(base(gw) + "/", gw.token, BODY)
    assert server_side(gw).calls == 2


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_errors_are_retried_until_success(gw: GatewayHandle,
                                                          status: int) -> None:
    gw.set_knobs(fail_next=2, error_status=status, retry_after_s=0.01)
    async with ChatClient(retry=POLICY) as client:
        data = await client.chat(base(gw), gw.token, BODY)
    assert data["choices"]
    assert server_side(gw) == PhaseUsage(calls=1, input_tokens=data["usage"]["prompt_tokens"],
                                         output_tokens=data["usage"]["completion_tokens"],
                                         errors=2)


async def test_retries_stop_at_the_bound_with_a_typed_error(gw: GatewayHandle) -> None:
    gw.set_knobs(error_rate=1.0, error_status=500)
    async with ChatClient(retry=POLICY) as client:
        with pytest.raises(LMCallError) as info:
            await client.chat(base(gw), gw.token, BODY)
    assert info.value.status == 500
    assert info.value.attempts == POLICY.max_attempts
    assert "on all 4 attempts" in str(info.value)
    assert server_side(gw) == PhaseUsage(errors=POLICY.max_attempts)


async def test_retry_after_is_honoured(gw: GatewayHandle, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    # The waits the retry policy chose, in order (not wall time: a loaded machine stretches
    # any sleep, so an upper bound on elapsed time fails for the wrong reason).
    waits: list[float] = []
    choose = WaitRetryAfterOrBackoff.__call__

    def recording(self: WaitRetryAfterOrBackoff, state: Any) -> float:
        waits.append(choose(self, state))
        return waits[-1]

    monkeypatch.setattr(WaitRetryAfterOrBackoff, "__call__", recording)
    gw.set_knobs(fail_next=1, error_status=429, retry_after_s=0.5)
    async with ChatClient(retry=POLICY) as client:
        started = time.perf_counter()
        await client.chat(base(gw), gw.token, BODY)
        with_header = time.perf_counter() - started
        gw.set_knobs(fail_next=1, error_status=429, retry_after_s=None)
        await client.chat(base(gw), gw.token, BODY)
    assert with_header >= 0.5  # a lower bound: the sleep guarantees it
    assert len(waits) == 2
    assert waits[0] == 0.5  # the server's Retry-After
    # then the policy's own first backoff: initial 10 ms plus up to 10 ms jitter
    assert POLICY.initial_backoff_s <= waits[1] <= POLICY.initial_backoff_s + POLICY.jitter_s
    assert server_side(gw).errors == 2


async def test_client_errors_are_not_retried(gw: GatewayHandle) -> None:
    async with ChatClient(retry=POLICY) as client:
        with pytest.raises(LMCallError) as info:
            await client.chat(base(gw), gw.token, {"messages": []})
    assert info.value.status == 400
    assert info.value.attempts == 1
    assert "messages" in str(info.value)
    assert server_side(gw) == PhaseUsage(errors=1)


async def test_connection_refused_is_retried_then_typed() -> None:
    dead = f"http://127.0.0.1:{find_free_port()}/v1"
    async with ChatClient(retry=POLICY) as client:
        with pytest.raises(LMCallError) as info:
            await client.chat(dead, None, BODY)
    assert info.value.status is None
    assert info.value.attempts == POLICY.max_attempts
    assert "ConnectError" in str(info.value)


async def test_timeouts_are_bounded(gw: GatewayHandle) -> None:
    gw.set_knobs(latency_s=1.0)
    policy = RetryPolicy(max_attempts=2, initial_backoff_s=0.01, jitter_s=0.0)
    async with ChatClient(timeout_s=0.2, retry=policy) as client:
        with pytest.raises(LMCallError) as info:
            await client.chat(base(gw), gw.token, BODY)
    # Without the timeout both calls would have been answered after 1 s: a typed timeout
    # after exactly the policy's attempts is the proof, no wall-clock limit needed.
    assert info.value.status is None
    assert info.value.attempts == 2
    assert "Timeout" in str(info.value)


async def test_one_client_serves_concurrent_calls(gw: GatewayHandle) -> None:
    async with ChatClient(retry=POLICY) as client:
        results = await asyncio.gather(*[client.chat(base(gw), gw.token, BODY) for _ in range(20)])
    assert len(results) == 20
    assert server_side(gw).calls == 20


async def test_module_level_chat_shares_one_client_per_loop(gw: GatewayHandle) -> None:
    await chat(base(gw), gw.token, BODY)
    await chat(base(gw), gw.token, BODY)
    loop = asyncio.get_running_loop()
    assert loop in client_module._shared
    assert server_side(gw).calls == 2


def test_sync_client_retries_and_raises(gw: GatewayHandle) -> None:
    gw.set_knobs(fail_next=1, error_status=503)
    with SyncChatClient(retry=POLICY) as client:
        assert client.chat(base(gw), gw.token, BODY)["choices"]
        gw.set_knobs(error_rate=1.0, error_status=429, retry_after_s=0.01)
        with pytest.raises(LMCallError) as info:
            client.chat(base(gw), gw.token, BODY)
    assert info.value.status == 429
    assert info.value.attempts == POLICY.max_attempts
    assert server_side(gw) == PhaseUsage(
        calls=1, input_tokens=server_side(gw).input_tokens,
        output_tokens=server_side(gw).output_tokens, errors=1 + POLICY.max_attempts)


def test_chat_sync_helper(gw: GatewayHandle) -> None:
    assert chat_sync(base(gw), gw.endpoint.api_key, BODY)["choices"]
    assert server_side(gw).calls == 1
