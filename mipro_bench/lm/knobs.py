"""Fault and latency knobs of the gateway, for tests and benchmarks.

A real LM is slow and sometimes says 429 or 500; code that talks to it
(retries, rollouts scored as failures, timeouts) is only tested if the
offline stand-in can do the same on demand. The knobs are a frozen value,
set at start or replaced through `POST /admin/knobs`; the injector applies
them with its own seeded RNG so a given seed fails the same share of calls.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from mipro_bench.errors import UserError

ERROR_STATUSES = (429, 500, 502, 503)


class KnobsError(UserError, ValueError):
    """A knob value that makes no sense (answered 400 over HTTP)."""


@dataclass(frozen=True)
class Knobs:
    latency_s: float = 0.0  # added to every chat call (async sleep, never blocks the server)
    latency_per_output_token_s: float = 0.0  # plus this per completion token
    error_rate: float = 0.0  # share of chat calls answered with error_status instead
    error_status: int = 429
    retry_after_s: float | None = 1.0  # Retry-After sent with an injected 429 (None: omitted)
    error_seed: int = 0
    fail_next: int = 0  # the next N chat calls fail, whatever error_rate says (deterministic)
    malformed_rate: float = 0.0  # handed to the simulated LM policy

    def __post_init__(self) -> None:
        for name in ("latency_s", "latency_per_output_token_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or value > 600:
                raise KnobsError(f"{name} must be a number of seconds in [0, 600] (got {value!r})")
        for name in ("error_rate", "malformed_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise KnobsError(f"{name} must be a number in [0, 1] (got {value!r})")
        if self.error_status not in ERROR_STATUSES or isinstance(self.error_status, bool):
            raise KnobsError(f"error_status must be one of {ERROR_STATUSES} "
                             f"(got {self.error_status!r})")
        if self.retry_after_s is not None and (
            not isinstance(self.retry_after_s, int | float) or not 0 <= self.retry_after_s <= 600
        ):
            raise KnobsError(f"retry_after_s must be null or seconds in [0, 600] "
                             f"(got {self.retry_after_s!r})")
        for name in ("error_seed", "fail_next"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise KnobsError(f"{name} must be a non-negative integer (got {value!r})")

    def updated(self, changes: dict[str, Any]) -> Knobs:
        """A copy with `changes` applied; unknown names are an error, not silently ignored."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise KnobsError(f"unknown knob(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Decides, per chat call, whether to answer with an injected error."""

    def __init__(self, knobs: Knobs | None = None) -> None:
        self._lock = threading.Lock()
        self._knobs = knobs or Knobs()
        self._rng = random.Random(self._knobs.error_seed)

    @property
    def knobs(self) -> Knobs:
        return self._knobs

    def set(self, knobs: Knobs) -> None:
        with self._lock:
            reseed = (knobs.error_seed, knobs.error_rate) != (
                self._knobs.error_seed, self._knobs.error_rate)
            self._knobs = knobs
            if reseed:
                self._rng = random.Random(knobs.error_seed)

    def update(self, changes: dict[str, Any]) -> Knobs:
        knobs = self._knobs.updated(changes)
        self.set(knobs)
        return knobs

    def draw_error(self) -> int | None:
        """The status to fail this call with, or None to answer it normally."""
        with self._lock:
            k = self._knobs
            if k.fail_next > 0:
                self._knobs = replace(k, fail_next=k.fail_next - 1)
                return k.error_status
            if k.error_rate > 0 and self._rng.random() < k.error_rate:
                return k.error_status
            return None
