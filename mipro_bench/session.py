"""The run's state across a pytest session: collected records, reports, floors, the gate.

The plugin module only wires hooks to this object (as pytest-benchmark's
plugin.py does with its session.py). Records arrive in-process from the
benchmark cases, or from xdist workers through `workeroutput`, never by
scanning the results directory, so a stale file can never enter a table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mipro_bench.floors_policy import FLOOR_MODES, FloorMode, FloorNote, judge
from mipro_bench.gate import (
    DEFAULT_ALPHA,
    Check,
    Failure,
    GateError,
    Selection,
    Significant,
    evaluate,
    load_baseline_records,
    parse_alpha,
    parse_threshold,
    preflight,
    resolve_baseline_path,
)
from mipro_bench.results import RunRecord, timestamp, write_json_atomic

if TYPE_CHECKING:  # compare/report pull in scipy and matplotlib: import them only when needed
    from mipro_bench.compare import UnsupportedCase
    from mipro_bench.journal_plan import JournalPlan
    from mipro_bench.matrix import Case, Matrix
    from mipro_bench.matrix_choice import MatrixChoice

WORKER_KEY = "mipro_bench"
# The order of the written files in the summary: the HTML report last, where a reader's
# eye lands at the end of the output.
_FILE_ORDER = ("json", "markdown", "baseline", "recording", "html")


@dataclass
class MiproSession:
    results_dir: Path
    compare_spec: str | None = None
    thresholds: list[Check] = field(default_factory=list)
    alpha: float = DEFAULT_ALPHA
    # The baseline is read when the session starts: `latest` means the newest comparison
    # before this run (not the one this run writes), and a bad file stops the run early.
    baseline_path: Path | None = None
    baseline: list[RunRecord] = field(default_factory=list)
    save_baseline: Path | None = None
    floors: FloorMode = "auto"
    records: list[RunRecord] = field(default_factory=list)
    unsupported: list[UnsupportedCase] = field(default_factory=list)
    floor_notes: list[FloorNote] = field(default_factory=list)
    written: dict[str, Path] = field(default_factory=dict)
    regressions: list[Failure] = field(default_factory=list)
    gate_notes: list[str] = field(default_factory=list)  # every significance test's line
    gate_error: str | None = None
    table: str | None = None
    matrix: Matrix | None = None  # the session's matrix (the plugin sets it at collection)
    choice: MatrixChoice | None = None  # what the session asked for (the plugin sets it)
    journal_plan: JournalPlan | None = None  # --mipro-resume/record/replay (the plugin sets it)

    @classmethod
    def from_options(
        cls,
        *,
        results_dir: Path,
        compare: str | None,
        compare_fail: list[str],
        save_baseline: str | None,
        floors: str = "auto",
        compare_alpha: str | float | None = None,
        replaying: bool = False,
    ) -> MiproSession:
        """Raises GateError for a bad gate expression or an unreadable baseline, before any
        case runs."""
        thresholds = [parse_threshold(expr) for expr in compare_fail]
        alpha = parse_alpha(compare_alpha)
        if thresholds and not compare:
            raise GateError("--mipro-compare-fail needs --mipro-compare PATH|latest")
        if compare_alpha is not None and not any(isinstance(t, Significant) for t in thresholds):
            raise GateError("--mipro-compare-alpha applies only to "
                            "--mipro-compare-fail=METRIC:significant")
        if floors not in FLOOR_MODES:
            raise GateError(f"--mipro-floors {floors!r}: expected one of {', '.join(FLOOR_MODES)}")
        baseline_path = resolve_baseline_path(compare, results_dir) if compare else None
        baseline = load_baseline_records(baseline_path) if baseline_path else []
        try:
            preflight(baseline, thresholds, replaying=replaying)
        except GateError as exc:
            raise GateError(f"{exc} (baseline {baseline_path})") from None
        return cls(
            results_dir=results_dir,
            compare_spec=compare,
            thresholds=thresholds,
            alpha=alpha,
            baseline_path=baseline_path,
            baseline=baseline,
            save_baseline=Path(save_baseline) if save_baseline else None,
            floors=floors,  # type: ignore[arg-type]
        )

    # -- collection -------------------------------------------------------------------
    def add_record(self, record: RunRecord) -> None:
        self.records.append(record)

    def add_unsupported(self, case: UnsupportedCase) -> None:
        if case not in self.unsupported:
            self.unsupported.append(case)

    def judge_floors(self, case: Case, record: RunRecord, problems: list[str],
                     matrix: Matrix | None = None) -> list[str]:
        """The floor problems that fail this case; the rest are kept as notes for the
        summary (see mipro_bench.floors_policy for when floors are enforced)."""
        if matrix is None:
            from mipro_bench.matrix import load_matrix

            matrix = self.matrix if self.matrix is not None else load_matrix()
        verdict = judge(self.floors, case, record, problems, matrix.calibration,
                        matrix.overridden)
        if verdict.note is not None:
            self.floor_notes.append(verdict.note)
        return list(verdict.enforced)

    def worker_payload(self) -> str:
        return json.dumps(
            {
                "records": [r.to_dict() for r in self.records],
                "unsupported": [asdict(u) for u in self.unsupported],
                "floor_notes": [asdict(n) for n in self.floor_notes],
            }
        )

    def merge_worker_payload(self, payload: str) -> None:
        data = json.loads(payload)
        for raw in data.get("records", []):
            self.add_record(RunRecord.from_dict(raw))
        from mipro_bench.compare import UnsupportedCase

        for raw in data.get("unsupported", []):
            self.add_unsupported(UnsupportedCase(**raw))
        for raw in data.get("floor_notes", []):
            self.floor_notes.append(FloorNote(raw["case_id"], tuple(raw["problems"]),
                                              raw["reason"]))

    # -- the end of the session ----------------------------------------------------------
    def finish(self) -> None:
        """Write the comparison and reports, then apply the gate; never raises on bad input."""
        if not self.records and not self.unsupported:
            return
        self._save_recording()
        from mipro_bench.compare import build_comparison
        from mipro_bench.report import render_table, write_reports

        records = sorted(self.records, key=lambda r: r.case_id)
        unsupported = sorted(self.unsupported, key=lambda u: (u.optimizer, u.mode, u.model))
        comparison = build_comparison(records, unsupported=unsupported)
        self.written.update(write_reports(comparison, self.results_dir, self._free_stamp()))
        self.table = render_table(comparison)
        if self.save_baseline is not None:
            payload = json.loads(self.written["json"].read_text(encoding="utf-8"))
            self.written["baseline"] = write_json_atomic(self.save_baseline, payload)
        if self.compare_spec:
            self._gate(records)

    def _save_recording(self) -> None:
        """`--mipro-record PATH`: this session's journaled calls, saved before the reports
        (so a report bug cannot lose the recording of a paid run)."""
        if self.journal_plan is None or self.journal_plan.record is None:
            return
        saved = self.journal_plan.save_recording(self.results_dir, self.records)
        if saved is not None:
            self.written["recording"] = saved

    def _free_stamp(self) -> str:
        """YYYYMMDD_HHMMSS, with _1, _2... when a session of the same second wrote one."""
        base = stamp = timestamp()
        n = 0
        while (self.results_dir / f"comparison_{stamp}.json").exists():
            n += 1
            stamp = f"{base}_{n}"
        return stamp

    def _gate(self, records: list[RunRecord]) -> None:
        try:
            outcome = evaluate(records, self.baseline, self.thresholds, alpha=self.alpha,
                               selection=session_selection(self.choice, self.matrix))
        except GateError as exc:
            self.gate_error = f"{exc} (baseline {self.baseline_path})"
            return
        self.regressions, self.gate_notes = outcome.failures, outcome.notes

    @property
    def failed(self) -> bool:
        return bool(self.regressions) or self.gate_error is not None

    @property
    def report_path(self) -> Path | None:
        """The HTML report of this session, once written."""
        return self.written.get("html")

    def summary_lines(self) -> list[str]:
        lines: list[str] = []
        if self.table:
            lines.append(self.table)
        if self.floor_notes:
            lines.append(f"mipro-bench floors: {len(self.floor_notes)} case(s) below a floor, "
                         "reported, not enforced:")
            lines.extend(f"  {note.line()}" for note in sorted(self.floor_notes,
                                                               key=lambda n: n.case_id))
        timing = self.timing_line()
        if timing:
            lines.append(timing)
        lines.extend(self._gate_lines())
        for kind in sorted(self.written, key=lambda k: (*_FILE_ORDER, k).index(k)):
            lines.append(f"mipro-bench {kind}: {self.written[kind]}")
        return lines

    def _gate_lines(self) -> list[str]:
        if self.gate_error:
            return [f"mipro-bench gate: FAILED, cannot compare: {self.gate_error}"]
        if not self.compare_spec:
            return []
        how = " (the newest comparison_*.json by recorded time)" \
            if self.compare_spec == "latest" else ""
        lines = [f"mipro-bench gate: baseline {self.baseline_path}{how}"]
        if not self.records:
            return [*lines, "mipro-bench gate: no case produced a record, nothing to compare"]
        if self.gate_notes:
            lines.append(f"mipro-bench gate: paired significance (two-sided exact McNemar on "
                         f"per-item correctness, Holm-corrected over {len(self.gate_notes)} "
                         f"test(s), alpha {self.alpha:g}; CI unadjusted):")
            lines.extend(f"  {note}" for note in self.gate_notes)
        if self.regressions:
            return [*lines, f"mipro-bench gate: FAILED, {len(self.regressions)} regression(s):",
                    *(f"  {r.line()}" for r in self.regressions)]
        done = ", ".join(t.describe() for t in self.thresholds) or "no thresholds"
        return [*lines, f"mipro-bench gate: no regressions ({done})"]

    def timing_line(self) -> str | None:
        """How the cases' time split between the LM (the gateway's server-side clock) and
        the harness (everything else: optimizers' own work, clients, task app, reports)."""
        split = lm_time_split(self.records)
        if split is None:
            return None
        elapsed, busy = split
        share = busy / elapsed if elapsed > 0 else 0.0
        return (f"mipro-bench time: {len(self.records)} case(s) ran {elapsed:.1f} s; the LM was "
                f"busy {busy:.1f} s of it ({share:.0%}), the harness {elapsed - busy:.1f} s")


def lm_time_split(records: list[RunRecord]) -> tuple[float, float] | None:
    """(seconds the cases ran, seconds the LM had a call in flight), when both are known."""
    elapsed = busy = 0.0
    known = False
    for record in records:
        if record.timing.elapsed_seconds is None:
            return None
        elapsed += record.timing.elapsed_seconds
        for usage in record.usage.values():
            if usage.lm_busy_seconds is not None:
                busy += usage.lm_busy_seconds
                known = True
    return (elapsed, busy) if known else None


def session_selection(choice: MatrixChoice | None, matrix: Matrix | None) -> Selection:
    """What this session was asked to run, for the gate's "case disappeared" rule
    (gate.Selection): the explicit narrowing options, or another matrix file's own lists."""
    from mipro_bench.matrix import load_matrix
    from mipro_bench.matrix_choice import MatrixChoice

    choice = choice if choice is not None else MatrixChoice()
    optimizers = frozenset(choice.optimizers) if choice.optimizers is not None else None
    models = frozenset({choice.model}) if choice.model else None
    if choice.path is not None:
        cases = (matrix if matrix is not None else load_matrix(choice.path)).cases
        chosen = {c.optimizer for c in cases}
        return Selection(optimizers=frozenset(chosen & optimizers if optimizers else chosen),
                         modes=frozenset(c.mode for c in cases),
                         seeds=frozenset(c.seed for c in cases),
                         models=frozenset(c.model for c in cases))
    modes, seeds = choice.overrides.get("matrix.modes"), choice.overrides.get("matrix.seeds")
    return Selection(optimizers=optimizers,
                     modes=frozenset(modes) if modes is not None else None,
                     seeds=frozenset(seeds) if seeds is not None else None,
                     models=models)


def payload_from_workeroutput(workeroutput: dict[str, Any]) -> str | None:
    return workeroutput.get(WORKER_KEY)
