"""Where a case's score floors are enforced, and where they are only reported.

A floor in `benchmarks/matrix.toml` is a number measured on one panel (train,
val and test sizes, data seed) with the matrix's own budgets: on 308 test items
the simulated LM's 37.5 % is a fact; on 40 items and two trials it is noise
(one item is 2.5 points). So by default (`--mipro-floors auto`) a floor miss
fails the case only where the floors were calibrated ([calibration] in the
TOML, and no budget or result-changing option overridden); anywhere else the
miss is reported in the session summary as "not enforced" and the case passes.
`enforce` applies the floors everywhere, `off` nowhere. A case whose run
failed always fails: that is not a floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mipro_bench.matrix import Calibration, Case
from mipro_bench.optimizers import get_spec
from mipro_bench.results import RunRecord

FloorMode = Literal["auto", "enforce", "off"]
FLOOR_MODES: tuple[FloorMode, ...] = ("auto", "enforce", "off")


@dataclass(frozen=True)
class FloorNote:
    """Floor misses of one case that were reported, not enforced, and why."""

    case_id: str
    problems: tuple[str, ...]
    reason: str

    def line(self) -> str:
        return f"{self.case_id}: {'; '.join(self.problems)} (not enforced: {self.reason})"


@dataclass(frozen=True)
class Verdict:
    enforced: tuple[str, ...]  # fail the case with these
    note: FloorNote | None = None  # or report these


def uncalibrated_reason(case: Case, record: RunRecord, calibration: Calibration | None,
                        overridden: frozenset[str]) -> str | None:
    """Why `record` did not run where the floors were measured (None: it did)."""
    if calibration is None:
        return "the matrix has no [calibration] panel"
    cfg = record.config
    ran = (cfg.train_size, cfg.val_size, cfg.test_size, cfg.data_seed)
    want = (calibration.train_size, calibration.val_size, calibration.test_size,
            calibration.data_seed)
    if ran != want:
        return (f"panel train {cfg.train_size}, val {cfg.val_size}, test {cfg.test_size}, "
                f"data seed {cfg.data_seed}; floors are calibrated for {calibration.describe()}")
    neutral = {f"options.{case.optimizer}.{k}"
               for k in get_spec(case.optimizer).concurrency_options}
    changed = sorted(
        key for key in overridden
        if key.startswith((f"budget.{case.optimizer}.", f"options.{case.optimizer}."))
        and key not in neutral
    )
    if changed:
        return f"overridden {', '.join(changed)}; floors are calibrated for the matrix's own"
    return None


def judge(mode: FloorMode, case: Case, record: RunRecord, problems: list[str],
          calibration: Calibration | None, overridden: frozenset[str]) -> Verdict:
    """Split a case's floor problems into what fails it and what is only reported."""
    if not problems:
        return Verdict(())
    if record.status != "succeeded" or mode == "enforce":
        return Verdict(tuple(problems))
    if mode == "off":
        return Verdict((), FloorNote(record.case_id, tuple(problems), "--mipro-floors off"))
    reason = uncalibrated_reason(case, record, calibration, overridden)
    if reason is None:
        return Verdict(tuple(problems))
    return Verdict((), FloorNote(record.case_id, tuple(problems), reason))
