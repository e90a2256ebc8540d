"""How much the LM gateway costs per call, and how many calls a second it serves.

Run with numbers: `pytest benchmarks/perf --benchmark-enable -s`. In the
default run (`--benchmark-disable`) each test still runs once on a small
sample as a plain test: it checks that every call succeeded and was counted,
and prints the measured table; it never asserts a wall-clock limit (two
shared cores make timings too noisy to gate on).

Measured side by side, sequential calls unless said otherwise:
- the policy alone (`SimulatedLM.complete`, no HTTP),
- the same body through the simulated gateway (httpx, one pooled connection),
- through a forwarding gateway whose upstream is the simulated gateway (two hops),
and the gateway's requests/s with an async client at concurrency 1, 4 and 16.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.settings import LMSettings
from mipro_bench.offline.sim.policy import SimulatedLM
from mipro_bench.prompt import build_messages, classify_tool, tool_choice

# 77 invented label names: the real prompt's size without reading the real data.
LABELS = [f"intent_{i:02d}_{w}" for i, w in enumerate(["card", "rate", "top_up", "refund",
                                                       "transfer", "pin", "atm"] * 11)]
BODY: dict[str, Any] = {
    "model": "gpt-4.1-nano",
    "messages": build_messages("Classify the customer's banking query.",
                               "my card top up failed twice today", LABELS),
    "tools": [classify_tool(LABELS)],
    "tool_choice": tool_choice(),
    "temperature": 0.0,
}
CONCURRENCY = (1, 4, 16)


def sample_size(benchmark: Any, enabled: int, disabled: int) -> int:
    return disabled if getattr(benchmark, "disabled", True) else enabled


def timings_us(fn: Callable[[], Any], n: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1e6)
    return out


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.fixture(scope="module")
def sim_settings() -> LMSettings:
    settings, _ = resolve_lm_settings(env={})
    return settings


@pytest.fixture(scope="module")
def gw(sim_settings: LMSettings) -> Iterator[GatewayHandle]:
    with start_gateway(sim_settings) as handle:
        yield handle


@pytest.fixture(scope="module")
def forwarding_gw(gw: GatewayHandle) -> Iterator[GatewayHandle]:
    # The upstream is another gateway: its token is the "real" key the forwarder sends.
    settings = LMSettings(backend="compatible", model="gpt-4.1-nano",
                          base_url=gw.endpoint.base_url("upstream", "perf"),
                          api_key_env="MIPRO_BENCH_PERF_UPSTREAM_KEY")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIPRO_BENCH_PERF_UPSTREAM_KEY", gw.token)
        with start_gateway(settings) as handle:
            yield handle


def test_policy_alone(benchmark: Any) -> None:
    policy = SimulatedLM()
    result = benchmark(policy.complete, BODY)
    assert result["choices"][0]["message"]["tool_calls"]


def test_gateway_call(benchmark: Any, gw: GatewayHandle) -> None:
    url = gw.endpoint.base_url("perf", "bench") + "/chat/completions"
    with httpx.Client(headers=gw.auth_headers) as client:
        response = benchmark(client.post, url, json=BODY)
    assert response.status_code == 200


def test_overhead_side_by_side(benchmark: Any, gw: GatewayHandle,
                               forwarding_gw: GatewayHandle,
                               capsys: pytest.CaptureFixture[str]) -> None:
    n = sample_size(benchmark, enabled=1000, disabled=60)
    policy = SimulatedLM()
    gw.reset_usage()
    sim_url = gw.endpoint.base_url("perf", "overhead") + "/chat/completions"
    fwd_url = forwarding_gw.endpoint.base_url("perf", "overhead") + "/chat/completions"
    statuses: list[int] = []

    def measure() -> dict[str, list[float]]:
        with httpx.Client() as client:
            return {
                "policy alone (no HTTP)": timings_us(lambda: policy.complete(BODY), n),
                "sim gateway, httpx": timings_us(
                    lambda: statuses.append(client.post(
                        sim_url, json=BODY, headers=gw.auth_headers).status_code), n),
                "forwarding gw -> sim gw": timings_us(
                    lambda: statuses.append(client.post(
                        fwd_url, json=BODY, headers=forwarding_gw.auth_headers).status_code), n),
            }

    # One round: the interesting numbers are the per-call percentiles inside it.
    rows = benchmark.pedantic(measure, rounds=1, iterations=1)
    assert set(statuses) == {200}
    sent = n + 10  # incl. the warm-ups
    assert gw.usage("perf")["perf"]["overhead"].calls == sent
    assert gw.usage("upstream")["upstream"]["perf"].calls == sent  # the forwarded ones
    assert forwarding_gw.usage("perf")["perf"]["overhead"].calls == sent

    direct, via_gateway, via_forward = rows.values()
    base50 = statistics.median(direct)
    lines = [f"\nLM gateway per-call latency, sequential, n={n} (simulated LM)",
             f"{'path':<26}{'p50 us':>10}{'p95 us':>10}{'x policy':>10}"]
    for name, values in rows.items():
        lines.append(f"{name:<26}{statistics.median(values):>10.0f}{p(values, 0.95):>10.0f}"
                     f"{statistics.median(values) / base50:>10.1f}")
    overhead = statistics.median(via_gateway) - base50
    hop = statistics.median(via_forward) - statistics.median(via_gateway)
    lines.append(f"gateway overhead per call (p50 gateway - p50 policy): {overhead:.0f} us "
                 f"(target < 2000 us); forwarding hop adds {hop:.0f} us")
    benchmark.extra_info.update({"p50_policy_us": base50,
                                 "p50_gateway_us": statistics.median(via_gateway),
                                 "p50_forward_us": statistics.median(via_forward),
                                 "overhead_us": overhead})
    with capsys.disabled():
        print("\n".join(lines))


async def _throughput(url: str, concurrency: int, total: int,
                      headers: dict[str, str]) -> tuple[float, list[int]]:
    statuses: list[int] = []
    queue = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60.0) as client:

        async def worker() -> None:
            for _ in queue:
                statuses.append((await client.post(url, json=BODY)).status_code)

        await asyncio.gather(*[client.post(url, json=BODY) for _ in range(concurrency)])
        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    return total / elapsed, statuses


def test_throughput_by_concurrency(benchmark: Any, gw: GatewayHandle,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    total = sample_size(benchmark, enabled=1500, disabled=64)
    url = gw.endpoint.base_url("perf", "throughput") + "/chat/completions"
    gw.reset_usage()
    rates: dict[int, float] = {}

    def measure() -> None:
        for concurrency in CONCURRENCY:
            rate, statuses = asyncio.run(_throughput(url, concurrency, total, gw.auth_headers))
            assert statuses == [200] * total
            rates[concurrency] = rate

    benchmark.pedantic(measure, rounds=1, iterations=1)
    assert gw.usage("perf")["perf"]["throughput"].calls == len(CONCURRENCY) * total + sum(
        CONCURRENCY)  # plus one warm-up call per connection
    lines = [f"\nsim gateway throughput, httpx.AsyncClient, {total} calls per level",
             f"{'concurrency':<14}{'req/s':>10}{'x c=1':>8}"]
    for concurrency, rate in rates.items():
        lines.append(f"{concurrency:<14}{rate:>10.0f}{rate / rates[1]:>8.2f}")
    benchmark.extra_info.update({f"req_per_s_c{c}": r for c, r in rates.items()})
    with capsys.disabled():
        print("\n".join(lines))
