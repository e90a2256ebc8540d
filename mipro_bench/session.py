"""The run's state across a pytest session: collected records, reports, the gate.

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

from mipro_bench.gate import (
    GateError,
    Regression,
    Threshold,
    check,
    load_baseline_records,
    parse_threshold,
    resolve_baseline_path,
)
from mipro_bench.results import RunRecord, timestamp, write_json_atomic

if TYPE_CHECKING:  # compare/report pull in scipy and matplotlib: import them only when needed
    from mipro_bench.compare import UnsupportedCase

WORKER_KEY = "mipro_bench"


@dataclass
class MiproSession:
    results_dir: Path
    compare_spec: str | None = None
    thresholds: list[Threshold] = field(default_factory=list)
    save_baseline: Path | None = None
    records: list[RunRecord] = field(default_factory=list)
    unsupported: list[UnsupportedCase] = field(default_factory=list)
    written: dict[str, Path] = field(default_factory=dict)
    regressions: list[Regression] = field(default_factory=list)
    gate_error: str | None = None
    table: str | None = None

    @classmethod
    def from_options(
        cls,
        *,
        results_dir: Path,
        compare: str | None,
        compare_fail: list[str],
        save_baseline: str | None,
    ) -> MiproSession:
        """Raises GateError for a bad gate expression, before any case runs."""
        thresholds = [parse_threshold(expr) for expr in compare_fail]
        if thresholds and not compare:
            raise GateError("--mipro-compare-fail needs --mipro-compare PATH|latest")
        if compare and compare != "latest" and not Path(compare).is_file():
            raise GateError(f"--mipro-compare {compare}: no such file")
        return cls(
            results_dir=results_dir,
            compare_spec=compare,
            thresholds=thresholds,
            save_baseline=Path(save_baseline) if save_baseline else None,
        )

    # -- collection -------------------------------------------------------------------
    def add_record(self, record: RunRecord) -> None:
        self.records.append(record)

    def add_unsupported(self, case: UnsupportedCase) -> None:
        if case not in self.unsupported:
            self.unsupported.append(case)

    def worker_payload(self) -> str:
        return json.dumps(
            {
                "records": [r.to_dict() for r in self.records],
                "unsupported": [asdict(u) for u in self.unsupported],
            }
        )

    def merge_worker_payload(self, payload: str) -> None:
        data = json.loads(payload)
        for raw in data.get("records", []):
            self.add_record(RunRecord.from_dict(raw))
        from mipro_bench.compare import UnsupportedCase

        for raw in data.get("unsupported", []):
            self.add_unsupported(UnsupportedCase(**raw))

    # -- the end of the session ----------------------------------------------------------
    def finish(self) -> None:
        """Write the comparison and reports, then apply the gate; never raises on bad input."""
        if not self.records and not self.unsupported:
            return
        from mipro_bench.compare import build_comparison
        from mipro_bench.report import render_table, write_reports

        records = sorted(self.records, key=lambda r: r.case_id)
        comparison = build_comparison(records, unsupported=self.unsupported)
        stamp = timestamp()
        self.written = write_reports(comparison, self.results_dir, stamp)
        self.table = render_table(comparison)
        if self.save_baseline is not None:
            payload = json.loads(self.written["json"].read_text(encoding="utf-8"))
            self.written["baseline"] = write_json_atomic(self.save_baseline, payload)
        if self.compare_spec:
            self._gate(records)

    def _gate(self, records: list[RunRecord]) -> None:
        try:
            path = resolve_baseline_path(self.compare_spec or "", self.results_dir)
            if path.resolve() == self.written.get("json", Path()).resolve():
                raise GateError("--mipro-compare latest found only this run's own comparison")
            baseline = load_baseline_records(path)
            self.regressions = check(records, baseline, self.thresholds)
        except GateError as exc:
            self.gate_error = str(exc)

    @property
    def failed(self) -> bool:
        return bool(self.regressions) or self.gate_error is not None

    def summary_lines(self) -> list[str]:
        lines: list[str] = []
        if self.table:
            lines.append(self.table)
        for kind, path in self.written.items():
            lines.append(f"mipro-bench {kind}: {path}")
        if self.gate_error:
            lines.append(f"mipro-bench gate: cannot compare: {self.gate_error}")
        elif self.compare_spec:
            if self.regressions:
                lines.append(f"mipro-bench gate: {len(self.regressions)} regression(s):")
                lines.extend(f"  REGRESSION {r.message()}" for r in self.regressions)
            else:
                done = ", ".join(t.describe() for t in self.thresholds) or "no thresholds"
                lines.append(f"mipro-bench gate: no regressions ({done})")
        return lines


def payload_from_workeroutput(workeroutput: dict[str, Any]) -> str | None:
    return workeroutput.get(WORKER_KEY)
