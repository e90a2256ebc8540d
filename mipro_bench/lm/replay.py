"""Answering from a recording: which recorded call a request is, and why none is.

A request is identified by (scope, fingerprint, occurrence): the occurrence
is how many earlier requests of the scope had the same fingerprint, counted
when the request arrives. Identical requests therefore get their recorded
answers back in recorded order whatever the thread interleaving, and
different requests never depend on each other's order.

Two policies. `resume`: a recorded success is answered from the recording,
anything else (not recorded, recorded as an error, recording used up) goes
live and is journaled, so a killed run continues where it stopped. `replay`:
strict, nothing goes live; a request that is not in the recording is refused
with a message naming the scope, the phase, the request and what changed
against the nearest recorded one, never answered by a stand-in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mipro_bench.lm.fingerprint import differences
from mipro_bench.lm.journal import JournalEntry

ReplayMode = Literal["replay", "resume"]
REPLAY_MODES: tuple[ReplayMode, ...] = ("replay", "resume")
RERECORD_HINT = ("the recording is stale for this command: re-record it by running the same "
                 "command with --record PATH (--mipro-record for pytest) instead of --replay")


class Occurrences:
    """Per scope, how many times each fingerprint has been seen (thread-safe)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def next(self, scope: str, fingerprint: str) -> int:
        with self._lock:
            key = (scope, fingerprint)
            n = self._seen.get(key, 0)
            self._seen[key] = n + 1
            return n


def _better(new: JournalEntry, old: JournalEntry) -> bool:
    """Which of two entries for one key to keep: a success over an error (a resumed run
    re-tried that error live), else the first one (a replayed copy adds nothing)."""
    return new.ok and not old.ok


@dataclass(frozen=True)
class Miss:
    """Why a request has no recorded answer, as one line for the HTTP error."""

    message: str


class ReplayIndex:
    """Recorded entries by (scope, fingerprint, occurrence), plus what explains a miss."""

    def __init__(self, entries: Iterable[JournalEntry]) -> None:
        self._by_key: dict[tuple[str, str, int], JournalEntry] = {}
        for entry in entries:
            old = self._by_key.get(entry.key)
            if old is None or _better(entry, old):
                self._by_key[entry.key] = entry
        self._by_scope: dict[str, list[JournalEntry]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        for entry in self._by_key.values():
            self._by_scope.setdefault(entry.scope, []).append(entry)
            fp_key = (entry.scope, entry.fingerprint)
            self._counts[fp_key] = self._counts.get(fp_key, 0) + 1
        for scoped in self._by_scope.values():
            scoped.sort(key=lambda e: e.at)

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def scopes(self) -> list[str]:
        return sorted(self._by_scope)

    def entries(self) -> list[JournalEntry]:
        return list(self._by_key.values())

    def get(self, scope: str, fingerprint: str, occurrence: int) -> JournalEntry | None:
        return self._by_key.get((scope, fingerprint, occurrence))

    def explain_miss(self, scope: str, phase: str, fingerprint: str, occurrence: int,
                     request: dict[str, object]) -> Miss:
        """One line: where, which request, what changed (in a few words), how to re-record."""
        where = f"replay: scope {scope!r}, phase {phase!r}: request {fingerprint[:12]}"
        recorded = self._counts.get((scope, fingerprint), 0)
        if recorded:
            why = (f"was recorded {recorded} time(s) but this is call {occurrence + 1} of it "
                   "(the run sends it more often than the recorded one did)")
        elif scope not in self._by_scope:
            known = ", ".join(self.scopes[:5]) + (" ..." if len(self._by_scope) > 5 else "")
            why = (f"is not recorded: the recording has no scope {scope!r} "
                   f"(it has: {known or 'none'})")
        else:
            why = "has no recorded call with this fingerprint; " + self._nearest(scope, phase,
                                                                                 request)
        return Miss(f"{where} {why}; {RERECORD_HINT}")

    def _nearest(self, scope: str, phase: str, request: dict[str, object]) -> str:
        candidates = [e for e in self._by_scope[scope] if e.phase == phase and e.request]
        where = f"phase {phase!r}"
        if not candidates:
            candidates = [e for e in self._by_scope[scope] if e.request]
            where = f"scope {scope!r} (nothing recorded in phase {phase!r})"
        if not candidates:
            return "the recorded requests carry no request fields to compare"
        best: list[str] | None = None
        for entry in candidates:  # only on the failure path: a linear scan is fine
            diff = differences(entry.request, request, limit=4)
            if best is None or len(diff) < len(best):
                best = diff
                if len(best) <= 1:
                    break
        assert best is not None
        return f"nearest recorded request in {where} differs in: {'; '.join(best[:3])}"
