"""The gateway's journal: every chat call of a scope, appended to a file as it completes.

Why a journal: a long run killed at call 4,000 (Ctrl-C, OOM, `kill -9`, a CI
timeout) should not pay for those calls again. Each completed call is one
JSON line in `<journal_dir>/<scope>.journal.jsonl`, written and flushed to the
OS before the client gets its answer, so a killed process loses only the
calls still in flight (no fsync: that protects against power loss, not a
killed process, and would cost a disk round trip per call).

A line holds what replay needs and nothing else: the request's fingerprint
and occurrence, its canonical semantic fields (to explain a mismatch), the
phase, HTTP status, response body, usage, server-side latency and whether it
was live or replayed. No headers, no key, no token: the writer also redacts
any secret it was given should one ever appear in a body. A process killed
mid-write leaves a torn last line; readers skip it and report how many.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

JOURNAL_SUFFIX = ".journal.jsonl"
REDACTED = "[redacted]"
Source = Literal["live", "replayed"]


@dataclass(frozen=True)
class JournalEntry:
    """One answered chat call, as journaled (and as stored in a recording)."""

    scope: str
    phase: str
    fingerprint: str
    occurrence: int  # how many earlier calls of this scope had the same fingerprint
    status: int
    response: dict[str, Any]
    request: dict[str, Any] = field(default_factory=dict)  # canonical semantic fields
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    source: Source = "live"
    at: float = 0.0  # unix time the call completed

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scope, self.fingerprint, self.occurrence

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "phase": self.phase, "fp": self.fingerprint,
                "occ": self.occurrence, "status": self.status, "source": self.source,
                "latency_s": round(self.latency_s, 6), "at": round(self.at, 3),
                "usage": {"input_tokens": self.input_tokens,
                          "output_tokens": self.output_tokens, "cost_usd": self.cost_usd},
                "request": self.request, "response": self.response}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JournalEntry:
        """Raises KeyError/TypeError/ValueError on a line that is not an entry."""
        usage = data.get("usage") or {}
        cost = usage.get("cost_usd")
        source = data.get("source", "live")
        if source not in ("live", "replayed"):
            raise ValueError(f"unknown source {source!r}")
        response, request = data["response"], data.get("request") or {}
        if not isinstance(response, dict) or not isinstance(request, dict):
            raise TypeError("response and request must be objects")
        return cls(scope=str(data["scope"]), phase=str(data["phase"]),
                   fingerprint=str(data["fp"]), occurrence=int(data["occ"]),
                   status=int(data["status"]), response=response, request=request,
                   input_tokens=int(usage.get("input_tokens") or 0),
                   output_tokens=int(usage.get("output_tokens") or 0),
                   cost_usd=None if cost is None else float(cost),
                   latency_s=float(data.get("latency_s") or 0.0), source=source,
                   at=float(data.get("at") or 0.0))


def journal_path(journal_dir: Path, scope: str) -> Path:
    # Scope names are already restricted by the gateway to [A-Za-z0-9_.:=+@-], not
    # starting with '.', so a scope is always one plain file name inside journal_dir.
    return journal_dir / f"{scope}{JOURNAL_SUFFIX}"


class JournalWriter:
    """Appends entries to per-scope files; one lock, one open file per scope, thread-safe."""

    def __init__(self, journal_dir: Path, *, secrets: Iterable[str] = ()) -> None:
        self.dir = Path(journal_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._secrets = tuple(s for s in secrets if s)
        self._files: dict[str, IO[bytes]] = {}
        self._lock = threading.Lock()
        self.lines = 0
        self.bytes = 0

    def _file(self, scope: str) -> IO[bytes]:
        handle = self._files.get(scope)
        if handle is None:
            path = journal_path(self.dir, scope)
            handle = path.open("ab")
            if handle.tell() > 0 and not _ends_with_newline(path):
                # A torn line from a killed run: end it, so our first line stays whole.
                handle.write(b"\n")
            self._files[scope] = handle
        return handle

    def write(self, entry: JournalEntry) -> None:
        text = json.dumps(entry.to_json(), separators=(",", ":"))
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        data = text.encode() + b"\n"
        with self._lock:
            handle = self._file(entry.scope)
            handle.write(data)
            handle.flush()
            self.lines += 1
            self.bytes += len(data)

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


@dataclass(frozen=True)
class JournalRead:
    """What reading journals found: the whole entries, and how many lines were torn."""

    entries: tuple[JournalEntry, ...]
    torn_lines: int = 0
    files: int = 0


def parse_lines(lines: Iterable[bytes]) -> tuple[list[JournalEntry], int]:
    """Entries of JSON lines, and the count of lines that are not whole entries (torn)."""
    entries: list[JournalEntry] = []
    torn = 0
    for raw in lines:
        if not raw.strip():
            continue
        try:
            entries.append(JournalEntry.from_json(json.loads(raw)))
        except (ValueError, KeyError, TypeError, AttributeError):
            torn += 1  # a partial write (killed mid-line): skipped, reported
    return entries, torn


def read_journal(path: Path) -> JournalRead:
    with Path(path).open("rb") as f:
        entries, torn = parse_lines(f)
    return JournalRead(tuple(entries), torn, 1)


def read_journal_dir(journal_dir: Path) -> JournalRead:
    """Every `*.journal.jsonl` of a directory (none yet: an empty read, not an error)."""
    entries: list[JournalEntry] = []
    torn = files = 0
    directory = Path(journal_dir)
    if directory.is_dir():
        for path in sorted(directory.glob(f"*{JOURNAL_SUFFIX}")):
            read = read_journal(path)
            entries.extend(read.entries)
            torn += read.torn_lines
            files += 1
    return JournalRead(tuple(entries), torn, files)
