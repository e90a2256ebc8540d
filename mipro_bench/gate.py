"""Regression gating against a previous comparison, in pytest-benchmark's grammar.

`--mipro-compare PATH|latest` names the earlier comparison JSON;
`--mipro-compare-fail=METRIC:N` fails when METRIC dropped by more than N
points (accuracies are 0..1 in records, points are 0..100 here), and
`METRIC:N%` when it dropped by more than N percent of its old value.
pytest-benchmark itself cannot gate accuracy (it only fails when a value
goes up), which is why this exists. Runs on a different panel or model are
refused: comparing them would be the old benchmark's mistake again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipro_bench.errors import UserError
from mipro_bench.results import RecordError, RunRecord

# metric -> (how to read it from a record, higher is better?, scale to points)
METRICS: dict[str, tuple[str, bool]] = {
    "optimized_test_accuracy": ("optimized_test_accuracy", True),
    "baseline_test_accuracy": ("baseline_test_accuracy", True),
    "improvement": ("improvement", True),
    "best_val_score": ("best_val_score", True),
}
_EXPR = re.compile(r"^(?P<metric>[a-z_]+):(?P<amount>\d+(\.\d+)?)(?P<pct>%?)$")


class GateError(UserError, ValueError):
    """A gate that cannot be applied (bad expression, missing or incomparable baseline)."""


@dataclass(frozen=True)
class Threshold:
    metric: str
    amount: float
    percent: bool

    def describe(self) -> str:
        return f"{self.metric}:{self.amount:g}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class Regression:
    case_id: str
    threshold: Threshold
    old: float
    new: float

    def message(self) -> str:
        unit = "%" if self.threshold.percent else " points"
        new = "no score (the case failed)" if self.new == float("-inf") else f"{self.new * 100:.1f}"
        return (
            f"{self.case_id}: {self.threshold.metric} fell from {self.old * 100:.1f} to "
            f"{new} (allowed drop {self.threshold.amount:g}{unit})"
        )


def parse_threshold(expr: str) -> Threshold:
    match = _EXPR.match(expr.strip())
    if not match:
        raise GateError(
            f"--mipro-compare-fail={expr!r}: expected METRIC:POINTS or METRIC:PERCENT%, "
            "e.g. optimized_test_accuracy:5"
        )
    metric = match["metric"]
    if metric not in METRICS:
        raise GateError(
            f"--mipro-compare-fail={expr!r}: unknown metric {metric!r}; one of {', '.join(METRICS)}"
        )
    return Threshold(metric, float(match["amount"]), bool(match["pct"]))


def resolve_baseline_path(spec: str, results_dir: Path) -> Path:
    """`latest` is the newest comparison_*.json in the results directory."""
    if spec == "latest":
        found = sorted(results_dir.glob("comparison_*.json"))
        if not found:
            raise GateError(f"--mipro-compare latest: no comparison_*.json in {results_dir}")
        return found[-1]
    path = Path(spec)
    if not path.is_file():
        raise GateError(f"--mipro-compare {spec}: no such file")
    return path


def load_baseline_records(path: Path) -> list[RunRecord]:
    """The records of a comparison JSON (or of a single record file)."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GateError(f"{path}: not valid JSON ({exc})") from None
    raw = data.get("records") if isinstance(data, dict) and "records" in data else [data]
    try:
        return [RunRecord.from_dict(r) for r in raw]
    except RecordError as exc:
        raise GateError(f"{path}: {exc}") from None


def _value(record: RunRecord, metric: str) -> float | None:
    attr, _ = METRICS[metric]
    return getattr(record.results, attr)


def check(
    current: list[RunRecord], baseline: list[RunRecord], thresholds: list[Threshold]
) -> list[Regression]:
    """Regressions of current against baseline; raises GateError on incomparable runs."""
    old_by_case = {r.case_id: r for r in baseline}
    if current and baseline and not any(r.case_id in old_by_case for r in current):
        # The case id names the model, so a baseline from another model shares no case with
        # this run: without this, such a gate would compare nothing and pass.
        raise GateError(
            f"the baseline has none of this run's cases (it ran {_describe(baseline)}; this "
            f"run {_describe(current)}); compare runs of the same model and matrix"
        )
    regressions: list[Regression] = []
    for record in current:
        old = old_by_case.get(record.case_id)
        if old is None:
            continue
        if old.data.digests.get("test") != record.data.digests.get("test"):
            raise GateError(
                f"{record.case_id}: the baseline used a different test panel (digest "
                f"{str(old.data.digests.get('test'))[:12]} vs "
                f"{str(record.data.digests.get('test'))[:12]}); compare runs on the same splits"
            )
        if (old.lm.model, old.lm.simulated) != (record.lm.model, record.lm.simulated):
            raise GateError(
                f"{record.case_id}: the baseline used model {old.lm.model!r} "
                f"(simulated={old.lm.simulated}), this run {record.lm.model!r} "
                f"(simulated={record.lm.simulated}); refusing to compare"
            )
        for threshold in thresholds:
            new_v, old_v = _value(record, threshold.metric), _value(old, threshold.metric)
            if old_v is None:
                continue
            if new_v is None:  # a failed case lost its score: that is a regression
                new_v = float("-inf")
            allowed = (
                abs(old_v) * threshold.amount / 100 if threshold.percent else threshold.amount / 100
            )
            if old_v - new_v > allowed + 1e-12:
                regressions.append(Regression(record.case_id, threshold, old_v, new_v))
    return regressions


def _describe(records: list[RunRecord]) -> str:
    models = sorted({f"{r.lm.model} ({'simulated' if r.lm.simulated else 'real'})"
                     for r in records})
    return f"model {', '.join(models)}: {', '.join(sorted(r.case_id for r in records)[:3])}" + (
        ", ..." if len(records) > 3 else "")
