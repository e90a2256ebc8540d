"""Thread-safe usage counters per (optimizer, phase), and their JSON form.

The gateway counts every chat call it answers here. It is read from other
threads (the test or runner holding the gateway handle) and over HTTP
(`GET /usage`, for other processes), so both directions of the JSON live
next to the counters: one shape, one parser.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mipro_bench.results import PhaseUsage

UsageMap = dict[str, dict[str, PhaseUsage]]

# Where calls to the unscoped /v1/... routes are counted.
UNSCOPED = "_unscoped"


# Dollars are summed as whole attodollars (1e-18 USD, far below any price's precision):
# integer addition does not depend on the order concurrent calls finish in, so a rerun of
# a deterministic session repeats its costs to the last digit (float running sums differ
# in their last digits with the order).
_UNITS_PER_USD = 10**18


def _units(usd: float) -> int:
    return round(usd * _UNITS_PER_USD)


def _usd(units: int | None) -> float | None:
    return None if units is None else units / _UNITS_PER_USD


@dataclass
class _Counter:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_units: int | None = None
    errors: int = 0
    replayed_calls: int = 0
    estimate_units: int | None = None
    truncated: int = 0
    # Server-side time: the sum of every request's handling time, and the wall time with at
    # least one request of this (optimizer, phase) in flight (the union of their intervals).
    seconds: float = 0.0
    busy_seconds: float = 0.0
    in_flight: int = 0
    busy_since: float = 0.0

    def frozen(self, now: float) -> PhaseUsage:
        busy = self.busy_seconds + (now - self.busy_since if self.in_flight else 0.0)
        return PhaseUsage(self.calls, self.input_tokens, self.output_tokens,
                          _usd(self.cost_units), self.errors, lm_seconds=round(self.seconds, 6),
                          lm_busy_seconds=round(busy, 6), replayed_calls=self.replayed_calls,
                          cost_usd_estimate=_usd(self.estimate_units), truncated=self.truncated)


class UsageLedger:
    """calls = answered completions (live or replayed); replayed_calls = those of them
    answered from a recording; errors = requests answered with an error status.

    `started`/`finished` bracket each request so the ledger also knows how long the LM
    side took (see `PhaseUsage.lm_seconds`); a request that is never bracketed (direct
    `record_call` in tests) simply adds no time.
    """

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._counts: dict[str, dict[str, _Counter]] = {}
        self._retries: dict[str, dict[str, int]] = {}

    def _counter(self, optimizer: str, phase: str) -> _Counter:
        return self._counts.setdefault(optimizer, {}).setdefault(phase, _Counter())

    def record_call(self, optimizer: str, phase: str, *, input_tokens: int, output_tokens: int,
                    cost_usd: float | None, replayed: bool = False,
                    cost_usd_estimate: float | None = None, truncated: bool = False) -> None:
        with self._lock:
            c = self._counter(optimizer, phase)
            c.calls += 1
            c.truncated += int(truncated)
            if cost_usd_estimate is not None:
                c.estimate_units = (c.estimate_units or 0) + _units(cost_usd_estimate)
            c.replayed_calls += int(replayed)
            c.input_tokens += input_tokens
            c.output_tokens += output_tokens
            if cost_usd is not None:
                c.cost_units = (c.cost_units or 0) + _units(cost_usd)

    def record_retries(self, optimizer: str, phase: str, retries: int) -> None:
        """Upstream retries the gateway made for one call (its forwarder's backoff)."""
        if retries > 0:
            with self._lock:
                self._retries.setdefault(optimizer, {})
                self._retries[optimizer][phase] = self._retries[optimizer].get(phase, 0) + retries

    def retries(self, optimizer: str | None = None) -> dict[str, dict[str, int]]:
        """{optimizer: {phase: upstream retries}} so far. Kept beside, not in, the usage
        (records carry what was spent; retries are how the live run is going)."""
        with self._lock:
            return {opt: dict(phases) for opt, phases in self._retries.items()
                    if optimizer is None or opt == optimizer}

    def record_error(self, optimizer: str, phase: str) -> None:
        with self._lock:
            self._counter(optimizer, phase).errors += 1

    def started(self, optimizer: str, phase: str) -> float:
        """A request began; returns its start time for `finished`."""
        with self._lock:
            now = self._clock()
            c = self._counter(optimizer, phase)
            if c.in_flight == 0:
                c.busy_since = now
            c.in_flight += 1
            return now

    def elapsed_since(self, started_at: float) -> float:
        """Seconds since a `started` time, on the ledger's clock."""
        return self._clock() - started_at

    def finished(self, optimizer: str, phase: str, started_at: float) -> None:
        with self._lock:
            now = self._clock()
            c = self._counter(optimizer, phase)
            c.seconds += now - started_at
            c.in_flight = max(0, c.in_flight - 1)
            if c.in_flight == 0:
                c.busy_seconds += now - c.busy_since

    def snapshot(self, optimizer: str | None = None) -> UsageMap:
        with self._lock:
            now = self._clock()
            return {
                opt: {phase: c.frozen(now) for phase, c in phases.items()}
                for opt, phases in self._counts.items()
                if optimizer is None or opt == optimizer
            }

    def reset(self, optimizer: str | None = None) -> None:
        with self._lock:
            if optimizer is None:
                self._counts.clear()
                self._retries.clear()
            else:
                self._counts.pop(optimizer, None)
                self._retries.pop(optimizer, None)


def usage_to_json(usage: Mapping[str, Mapping[str, PhaseUsage]]) -> dict[str, Any]:
    return {
        opt: {
            phase: {
                "calls": u.calls,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cost_usd": u.cost_usd,
                "errors": u.errors,
                "lm_seconds": u.lm_seconds,
                "lm_busy_seconds": u.lm_busy_seconds,
                "replayed_calls": u.replayed_calls,
                "cost_usd_estimate": u.cost_usd_estimate,
                "truncated": u.truncated,
            }
            for phase, u in phases.items()
        }
        for opt, phases in usage.items()
    }


def usage_from_json(data: Mapping[str, Any]) -> UsageMap:
    """Parse `GET /usage`; unknown keys are ignored so a newer gateway stays readable."""
    out: UsageMap = {}
    for opt, phases in data.items():
        out[opt] = {}
        for phase, u in phases.items():
            cost, lm_s, busy_s = u.get("cost_usd"), u.get("lm_seconds"), u.get("lm_busy_seconds")
            out[opt][phase] = PhaseUsage(
                calls=int(u.get("calls", 0)),
                input_tokens=int(u.get("input_tokens", 0)),
                output_tokens=int(u.get("output_tokens", 0)),
                cost_usd=None if cost is None else float(cost),
                errors=int(u.get("errors", 0)),
                lm_seconds=None if lm_s is None else float(lm_s),
                lm_busy_seconds=None if busy_s is None else float(busy_s),
                replayed_calls=int(u.get("replayed_calls", 0)),
                cost_usd_estimate=None if u.get("cost_usd_estimate") is None
                else float(u["cost_usd_estimate"]),
                truncated=int(u.get("truncated", 0)),
            )
    return out


def total(usage: Mapping[str, Mapping[str, PhaseUsage]]) -> PhaseUsage:
    """Sum over every optimizer and phase."""
    acc = PhaseUsage()
    for phases in usage.values():
        for u in phases.values():
            acc = acc + u
    return acc
