"""The gateway's small parts: retry waits, knobs, prices, the usage ledger (no server)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from tenacity import RetryCallState, Retrying

from mipro_bench.lm.knobs import FaultInjector, Knobs, KnobsError
from mipro_bench.lm.pricing import canonical_model, cost_usd
from mipro_bench.lm.retry import (
    RetryableStatus,
    RetryPolicy,
    WaitRetryAfterOrBackoff,
    is_retryable,
    parse_retry_after,
)
from mipro_bench.lm.usage import UsageLedger, total, usage_from_json, usage_to_json
from mipro_bench.results import PhaseUsage

# -- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # ms is the more precise one
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after({"retry-after": header}, now=now.timestamp()) == pytest.approx(7.0)


def _state_after(exc: BaseException, attempt: int = 1) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_wait_uses_retry_after_capped_by_policy() -> None:
    policy = RetryPolicy(max_attempts=3, max_retry_after_s=5.0)
    wait = WaitRetryAfterOrBackoff(policy)
    assert wait(_state_after(RetryableStatus(429, 1.5))) == 1.5
    assert wait(_state_after(RetryableStatus(429, 120.0))) == 5.0


def test_wait_backs_off_exponentially_without_retry_after() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=10.0, jitter_s=0.0)
    wait = WaitRetryAfterOrBackoff(policy)
    waits = [wait(_state_after(RetryableStatus(500, None), attempt=n)) for n in (1, 2, 3, 4)]
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_wait_jitter_stays_within_bound() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=10.0, jitter_s=0.05)
    wait = WaitRetryAfterOrBackoff(policy)
    waits = [wait(_state_after(RetryableStatus(503, None))) for _ in range(50)]
    assert all(0.1 <= w <= 0.15 for w in waits)
    assert len(set(waits)) > 1


def test_retry_policy_bounds() -> None:
    assert RetryPolicy.from_max_retries(4).max_attempts == 5
    assert RetryPolicy.from_max_retries(0).max_attempts == 1
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_what_is_retryable() -> None:
    import httpx

    assert is_retryable(RetryableStatus(429, None))
    assert is_retryable(httpx.ConnectError("refused"))
    assert is_retryable(httpx.ReadTimeout("slow"))
    assert not is_retryable(httpx.UnsupportedProtocol("ftp://"))
    assert not is_retryable(ValueError("bad"))


# -- knobs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_status": 404}, "error_status"),
        ({"latency_s": -1}, "latency_s"),
        ({"fail_next": -2}, "fail_next"),
        ({"malformed_rate": "x"}, "malformed_rate"),
        ({"retry_after_s": "soon"}, "retry_after_s"),
        ({"no_such_knob": 1}, "unknown knob"),
    ],
)
def test_bad_knobs_are_rejected_with_the_name(changes: dict, message: str) -> None:
    with pytest.raises(KnobsError, match=message):
        Knobs().updated(changes)


def test_error_rate_is_seeded_and_about_right() -> None:
    def draws(seed: int) -> list[int | None]:
        injector = FaultInjector(Knobs(error_rate=0.3, error_status=500, error_seed=seed))
        return [injector.draw_error() for _ in range(2000)]

    first, again, other = draws(1), draws(1), draws(2)
    assert first == again
    assert first != other
    share = sum(d == 500 for d in first) / len(first)
    assert 0.25 < share < 0.35
    assert set(first) == {None, 500}


def test_fail_next_fails_exactly_that_many_calls() -> None:
    injector = FaultInjector(Knobs(fail_next=3, error_status=429))
    assert [injector.draw_error() for _ in range(5)] == [429, 429, 429, None, None]
    assert injector.knobs.fail_next == 0


# -- prices ---------------------------------------------------------------------------------


def test_known_prices_per_million_tokens() -> None:
    assert cost_usd("gpt-4.1-nano", 1_000_000, 1_000_000) == pytest.approx(0.50)
    assert cost_usd("gpt-4.1-mini", 1_000_000, 0) == pytest.approx(0.40)
    assert cost_usd("gpt-4o-mini", 0, 1_000_000) == pytest.approx(0.60)
    assert cost_usd("gpt-4.1", 1000, 500) == pytest.approx((1000 * 2 + 500 * 8) / 1e6)


def test_dated_and_prefixed_names_are_priced_and_unknown_ones_are_not() -> None:
    assert canonical_model("openai/gpt-4.1-nano-2025-04-14") == "gpt-4.1-nano"
    assert cost_usd("gpt-4.1-nano-2025-04-14", 100, 0) == pytest.approx(100 * 0.10 / 1e6)
    assert cost_usd("llama-3-8b", 100, 100) is None
    assert cost_usd(None, 100, 100) is None
    assert cost_usd("gpt-4.1-nano-fast", 100, 100) is None  # not a snapshot date suffix


# -- usage ledger ---------------------------------------------------------------------------


def test_ledger_counts_per_optimizer_and_phase() -> None:
    ledger = UsageLedger()
    ledger.record_call("dspy", "optimize", input_tokens=10, output_tokens=2, cost_usd=None)
    ledger.record_call("dspy", "optimize", input_tokens=5, output_tokens=1, cost_usd=None)
    ledger.record_call("synth", "test_eval", input_tokens=7, output_tokens=3, cost_usd=0.5)
    ledger.record_error("dspy", "optimize")
    snap = ledger.snapshot()
    assert snap["dspy"]["optimize"] == PhaseUsage(2, 15, 3, None, 1)
    assert snap["synth"]["test_eval"] == PhaseUsage(1, 7, 3, 0.5, 0)
    assert set(ledger.snapshot("synth")) == {"synth"}
    assert total(snap) == PhaseUsage(3, 22, 6, 0.5, 1)
    ledger.reset("dspy")
    assert set(ledger.snapshot()) == {"synth"}
    ledger.reset()
    assert ledger.snapshot() == {}


def test_ledger_json_round_trip_keeps_null_cost() -> None:
    ledger = UsageLedger()
    ledger.record_call("a", "b", input_tokens=1, output_tokens=2, cost_usd=None)
    ledger.record_call("a", "c", input_tokens=1, output_tokens=2, cost_usd=0.25)
    data = usage_to_json(ledger.snapshot())
    assert data["a"]["b"]["cost_usd"] is None
    assert usage_from_json(data) == ledger.snapshot()


def test_ledger_is_thread_safe() -> None:
    ledger = UsageLedger()

    def work() -> None:
        for _ in range(2000):
            ledger.record_call("o", "p", input_tokens=3, output_tokens=1, cost_usd=None)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.snapshot()["o"]["p"] == PhaseUsage(16000, 48000, 16000, None, 0)


def test_ledger_costs_do_not_depend_on_the_order_calls_finish_in() -> None:
    """Concurrent calls finish in any order; a float running sum would then differ in its
    last digits between two runs of the same deterministic session."""
    import random

    costs = [c * 1e-6 for c in (0.1, 0.2, 0.3, 1.7, 2.9, 0.07, 13.1, 0.011)] * 25
    orders = []
    for seed in range(8):
        order = costs[:]
        random.Random(seed).shuffle(order)
        orders.append(order)
    assert len({sum(order) for order in orders}) > 1  # the hazard: plain float sums differ
    totals = set()
    for order in orders:
        ledger = UsageLedger()
        for cost in order:
            ledger.record_call("o", "p", input_tokens=1, output_tokens=1, cost_usd=cost,
                               cost_usd_estimate=cost / 3)
        usage = ledger.snapshot()["o"]["p"]
        totals.add((usage.cost_usd, usage.cost_usd_estimate))
    assert len(totals) == 1
    (cost, estimate), = totals
    assert cost == pytest.approx(sum(costs), rel=1e-9)
    assert estimate == pytest.approx(sum(costs) / 3, rel=1e-9)
