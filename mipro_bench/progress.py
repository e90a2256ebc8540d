"""Live progress of a running case: LM calls done / planned per phase, errors, retries, ETA.

Nothing here instruments a client. The runner says which phase a case is in and
what each phase plans to spend (`CaseProgress.begin` / `.phase` / `.end`); a small
thread polls the gateway's per-scope counts (the case's `UsageReader`, and the
gateway's upstream retries when the handle is in process) at a steady interval
and hands a `Snapshot` to a sink:

- `RichSink`: one live rich progress line (terminals), redrawn every `refresh_s`;
- `LineSink`: one plain line every `interval_s` (CI logs, pipes, xdist workers);
- nothing at all for `off`.

`resolve_mode` turns `--progress auto|rich|lines|off` into one of them: `auto` is
rich on a terminal and lines elsewhere. Progress never fails a case: a read or a
draw that raises is logged and skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mipro_bench.results import PhaseUsage

log = logging.getLogger(__name__)

PROGRESS_MODES = ("auto", "rich", "lines", "off")
DEFAULT_INTERVAL_S = 30.0
RICH_REFRESH_S = 0.5

UsageReader = Callable[[], Mapping[str, PhaseUsage]]
RetriesReader = Callable[[], Mapping[str, int]]


@dataclass(frozen=True)
class PlannedPhase:
    """A phase of a case and the LM calls it plans (None: the optimizer cannot say).
    `approx`: the plan is an estimate (an optimizer's search), not a count (a split)."""

    name: str
    planned: int | None
    approx: bool = False


@dataclass(frozen=True)
class Snapshot:
    label: str
    phase: str | None
    phase_index: int  # 1-based position of `phase` in the plan (0: not started)
    n_phases: int
    calls: int  # LM calls of the current phase so far
    planned: int | None
    approx: bool
    case_calls: int
    errors: int  # requests the gateway answered with an error, this case so far
    retries: int  # upstream retries the gateway made, this case so far
    phase_elapsed_s: float
    case_elapsed_s: float
    phase_eta_s: float | None
    case_eta_s: float | None


def _eta(done: int, planned: int | None, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None while unknown (no plan, no call yet)."""
    if planned is None or done <= 0 or elapsed <= 0:
        return None
    return max(0.0, (planned - done) * elapsed / done)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def calls_text(s: Snapshot) -> str:
    if s.planned is None:
        return f"{s.calls} calls (plan unknown)"
    pct = 100 * s.calls / s.planned if s.planned else 100.0
    return f"{s.calls}/{'~' if s.approx else ''}{s.planned} calls ({pct:.0f}%)"


def format_line(s: Snapshot) -> str:
    """The one-line update: what a CI log shows every interval."""
    phase = s.phase or "starting"
    return (f"mipro-bench progress: {s.label} | {phase} ({s.phase_index}/{s.n_phases}) "
            f"{calls_text(s)} | errors {s.errors}, retries {s.retries} | "
            f"phase {fmt_seconds(s.phase_elapsed_s)}, ETA {fmt_seconds(s.phase_eta_s)} | "
            f"case {fmt_seconds(s.case_elapsed_s)}, {s.case_calls} calls, "
            f"ETA {fmt_seconds(s.case_eta_s)}")


class Sink(Protocol):
    """Where snapshots go. `tick_s`: how often the poller hands one over."""

    tick_s: float

    def start(self, label: str) -> None: ...
    def update(self, snapshot: Snapshot) -> None: ...
    def stop(self) -> None: ...
    def say(self, line: str) -> bool:
        """Print a message line without breaking the display; False: the caller prints."""
        ...


class LineSink:
    """A plain line every `interval_s` through `write` (nothing at start or end, so short
    cases print exactly what they printed before)."""

    def __init__(self, write: Callable[[str], None], interval_s: float = DEFAULT_INTERVAL_S,
                 prefix: str = "") -> None:
        self.write = write
        self.tick_s = interval_s
        self.prefix = prefix

    def start(self, label: str) -> None:
        pass

    def update(self, snapshot: Snapshot) -> None:
        self.write(self.prefix + format_line(snapshot))

    def stop(self) -> None:
        pass

    def say(self, line: str) -> bool:
        return False


class RichSink:
    """A live two-line rich display (transient: it disappears when the case ends):
    the case and its phase, then a bar with calls, errors, retries, elapsed and ETA."""

    def __init__(self, console: Any, refresh_s: float = RICH_REFRESH_S) -> None:
        self.console = console
        self.tick_s = refresh_s
        self._live: Any = None
        self._label = ""
        self._lock = threading.Lock()

    def start(self, label: str) -> None:
        from rich.live import Live

        with self._lock:
            self._label = label
            self._live = Live(self._render(None), console=self.console, transient=True,
                              auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
            self._live.start(refresh=True)

    def _render(self, s: Snapshot | None) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        if s is None:
            return Text(f"{self._label}: starting", no_wrap=True, overflow="ellipsis")
        head = Text.assemble((s.label, "bold"), f" · {s.phase or 'starting'} "
                             f"({s.phase_index}/{s.n_phases})", no_wrap=True,
                             overflow="ellipsis")
        detail = Text(f"{calls_text(s)} | ETA {fmt_seconds(s.phase_eta_s)} "
                      f"({fmt_seconds(s.phase_elapsed_s)} in) | case ETA "
                      f"{fmt_seconds(s.case_eta_s)} ({fmt_seconds(s.case_elapsed_s)} in) | "
                      f"err {s.errors}, retry {s.retries}",
                      no_wrap=True, overflow="ellipsis")
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=12, no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        grid.add_row(ProgressBar(total=s.planned, completed=min(s.calls, s.planned or s.calls),
                                 width=12), detail)
        return Group(head, grid)

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:
            if self._live is not None:
                self._live.update(self._render(snapshot), refresh=True)

    def stop(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None

    def say(self, line: str) -> bool:
        with self._lock:
            if self._live is None:
                return False
            self._live.console.print(line, highlight=False, markup=False)
            return True


class CaseProgress:
    """The live state of one case, polled by a daemon thread between `begin` and `end`.

    `clock` is injectable (tests drive `tick()` by hand with a fake clock and no thread:
    `threaded=False`)."""

    def __init__(self, label: str, sink: Sink, *, clock: Callable[[], float] = time.monotonic,
                 retries: Callable[[str], Mapping[str, int]] | None = None,
                 usage: Callable[[str], Mapping[str, PhaseUsage]] | None = None,
                 threaded: bool = True) -> None:
        self.label = label
        self.sink = sink
        self.clock = clock
        self._retries_of = retries
        self._usage_of = usage  # in process (the gateway handle), instead of HTTP polling
        self._threaded = threaded
        self._plan: list[PlannedPhase] = []
        self._read: UsageReader | None = None
        self._scope = ""
        self._phase: str | None = None
        self._phase_started = 0.0
        self._case_started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_usage: Mapping[str, PhaseUsage] = {}
        # phase -> where its calls are really counted (a shared baseline evaluation runs
        # under a scope of its own): (scope, that scope's phase, a reader of its usage).
        self._elsewhere: dict[str, tuple[str, str, UsageReader]] = {}

    # -- what the runner calls --

    def begin(self, plan: Sequence[PlannedPhase], read_usage: UsageReader | None,
              scope: str = "") -> None:
        self._plan = list(plan)
        self._scope = scope
        usage_of = self._usage_of
        self._read = read_usage if usage_of is None else (lambda: usage_of(scope))
        self._case_started = self._phase_started = self.clock()
        try:
            self.sink.start(self.label)
        except Exception as exc:  # a display problem never fails a case
            log.debug("progress display failed to start: %s", exc)
        if self._threaded:
            self._thread = threading.Thread(target=self._loop, name="mipro-progress",
                                            daemon=True)
            self._thread.start()

    def counted_elsewhere(self, phase: str, *, scope: str, scope_phase: str,
                          read: UsageReader) -> None:
        """This case's `phase` is spent under `scope`'s `scope_phase` (the shared baseline it
        computes or waits for): show that count while the phase runs, where the user looks.
        `read` reads that scope's usage when no in-process reader was given."""
        self._elsewhere[phase] = (scope, scope_phase, read)

    def phase(self, name: str) -> None:
        self._phase = name
        self._phase_started = self.clock()
        if self._threaded and isinstance(self.sink, RichSink):
            self.tick()  # a terminal shows the new phase at once

    def end(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.sink.stop()
        except Exception as exc:
            log.debug("progress display failed to stop: %s", exc)

    def say(self, line: str, fallback: Callable[[str], None]) -> None:
        """A message line: above the live display when one is drawn, else `fallback`."""
        try:
            if self.sink.say(line):
                return
        except Exception as exc:
            log.debug("progress display could not print: %s", exc)
        fallback(line)

    # -- polling --

    def _loop(self) -> None:
        while not self._stop.wait(self.sink.tick_s):
            self.tick()

    def tick(self) -> None:
        try:
            self.sink.update(self.snapshot())
        except Exception as exc:
            log.debug("progress update failed: %s", exc)

    def snapshot(self) -> Snapshot:
        now = self.clock()
        usage: Mapping[str, PhaseUsage] = self._last_usage
        if self._read is not None:
            try:
                usage = self._last_usage = dict(self._read())
            except Exception as exc:  # the last good count beats no line
                log.debug("progress usage read failed: %s", exc)
        for name, (scope, scope_phase, read) in list(self._elsewhere.items()):
            try:
                there = (self._usage_of(scope) if self._usage_of is not None else read())
            except Exception as exc:
                log.debug("progress usage read failed: %s", exc)
                continue
            if scope_phase in there:
                usage = {**usage, name: there[scope_phase]}
        retries = 0
        if self._retries_of is not None:
            try:
                retries = sum(self._retries_of(self._scope).values())
            except Exception as exc:
                log.debug("progress retries read failed: %s", exc)
        names = [p.name for p in self._plan]
        index = names.index(self._phase) if self._phase in names else -1
        current = self._plan[index] if index >= 0 else None
        calls = usage[self._phase].calls if self._phase in usage else 0
        planned = current.planned if current else None
        phase_elapsed = now - self._phase_started if self._phase else 0.0
        case_elapsed = now - self._case_started
        case_calls = sum(u.calls for u in usage.values())
        # The case's ETA: calls still planned (this phase's rest and every later phase) at
        # the case's rate so far; unknown while any of them has no plan.
        case_eta: float | None = None
        later = self._plan[index + 1:] if index >= 0 else self._plan
        if planned is not None or current is None:
            rest = [p.planned for p in later]
            if all(r is not None for r in rest) and case_calls > 0:
                left = max(0, (planned or 0) - calls) + sum(r or 0 for r in rest)
                case_eta = left * case_elapsed / case_calls
        return Snapshot(
            label=self.label, phase=self._phase, phase_index=index + 1,
            n_phases=len(self._plan), calls=calls, planned=planned,
            approx=bool(current and current.approx), case_calls=case_calls,
            errors=sum(u.errors for u in usage.values()), retries=retries,
            phase_elapsed_s=phase_elapsed, case_elapsed_s=case_elapsed,
            phase_eta_s=_eta(calls, planned, phase_elapsed), case_eta_s=case_eta)


def resolve_mode(mode: str | None, *, is_terminal: bool, xdist_worker: bool = False) -> str:
    """`rich`, `lines` or `off` for a run. xdist workers cannot draw on the controller's
    terminal: there rich (and auto) become lines, written to the worker's stderr."""
    mode = mode or "auto"
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
    if mode == "off":
        return "off"
    if xdist_worker:
        return "lines"
    if mode == "auto":
        return "rich" if is_terminal else "lines"
    return mode


def planned_optimize_calls(optimizer: Any, request: Any) -> tuple[int | None, bool]:
    """(calls, approx) an adapter plans for its optimize phase, from its optional
    `planned_calls(request)`; (None, True) when it cannot say."""
    fn = getattr(optimizer, "planned_calls", None)
    if fn is None:
        return None, True
    try:
        value = fn(request)
    except Exception as exc:
        log.debug("planned_calls failed: %s", exc)
        return None, True
    return (None, True) if value is None else (int(value), True)
