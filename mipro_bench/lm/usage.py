"""Thread-safe usage counters per (optimizer, phase), and their JSON form.

The gateway counts every chat call it answers here. It is read from other
threads (the test or runner holding the gateway handle) and over HTTP
(`GET /usage`, for other processes), so both directions of the JSON live
next to the counters: one shape, one parser.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mipro_bench.results import PhaseUsage

UsageMap = dict[str, dict[str, PhaseUsage]]

# Where calls to the unscoped /v1/... routes are counted.
UNSCOPED = "_unscoped"


@dataclass
class _Counter:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    errors: int = 0

    def frozen(self) -> PhaseUsage:
        return PhaseUsage(self.calls, self.input_tokens, self.output_tokens, self.cost_usd,
                          self.errors)


class UsageLedger:
    """calls = answered completions; errors = requests answered with an error status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, _Counter]] = {}

    def _counter(self, optimizer: str, phase: str) -> _Counter:
        return self._counts.setdefault(optimizer, {}).setdefault(phase, _Counter())

    def record_call(self, optimizer: str, phase: str, *, input_tokens: int, output_tokens: int,
                    cost_usd: float | None) -> None:
        with self._lock:
            c = self._counter(optimizer, phase)
            c.calls += 1
            c.input_tokens += input_tokens
            c.output_tokens += output_tokens
            if cost_usd is not None:
                c.cost_usd = (c.cost_usd or 0.0) + cost_usd

    def record_error(self, optimizer: str, phase: str) -> None:
        with self._lock:
            self._counter(optimizer, phase).errors += 1

    def snapshot(self, optimizer: str | None = None) -> UsageMap:
        with self._lock:
            return {
                opt: {phase: c.frozen() for phase, c in phases.items()}
                for opt, phases in self._counts.items()
                if optimizer is None or opt == optimizer
            }

    def reset(self, optimizer: str | None = None) -> None:
        with self._lock:
            if optimizer is None:
                self._counts.clear()
            else:
                self._counts.pop(optimizer, None)


def usage_to_json(usage: Mapping[str, Mapping[str, PhaseUsage]]) -> dict[str, Any]:
    return {
        opt: {
            phase: {
                "calls": u.calls,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cost_usd": u.cost_usd,
                "errors": u.errors,
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
            cost = u.get("cost_usd")
            out[opt][phase] = PhaseUsage(
                calls=int(u.get("calls", 0)),
                input_tokens=int(u.get("input_tokens", 0)),
                output_tokens=int(u.get("output_tokens", 0)),
                cost_usd=None if cost is None else float(cost),
                errors=int(u.get("errors", 0)),
            )
    return out


def total(usage: Mapping[str, Mapping[str, PhaseUsage]]) -> PhaseUsage:
    """Sum over every optimizer and phase."""
    acc = PhaseUsage()
    for phases in usage.values():
        for u in phases.values():
            acc = acc + u
    return acc
