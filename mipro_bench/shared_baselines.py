"""The session's baseline evaluations, scored once and reused by every later case.

The baseline prompt is the same for every optimizer, so each executor scores it
once per panel, model and format (the runner builds the key), and every later
case of the session reuses those results instead of paying for the same LM
calls again; its record says under which scope the calls were counted
(`details.shared_baseline`). A memo, not a server: it lives beside the
session's servers (`SessionServers.baselines`) because both last one session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from mipro_bench.results import ItemResult, PhaseUsage


@dataclass(frozen=True)
class SharedEvaluation:
    """A baseline evaluation the session ran once: its items, and where its LM calls were
    counted (the gateway scope and phase of the case that ran it, and that phase's usage)."""

    items: tuple[ItemResult, ...]
    scope: str
    phase: str
    usage: PhaseUsage | None
    key: str


class SharedBaselines:
    """Evaluations by key; safe to ask for from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._evaluations: dict[str, SharedEvaluation] = {}
        self._key_locks: dict[str, threading.Lock] = {}

    def get_or_compute(self, key: str, compute: Callable[[], SharedEvaluation],
                       ) -> tuple[SharedEvaluation, bool]:
        """The evaluation cached under `key`, or `compute()`'s (cached only when it
        succeeds); True when it was reused. Concurrent asks for one key wait for the first."""
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._evaluations:
                return self._evaluations[key], True
            done = compute()
            self._evaluations[key] = done
            return done, False
