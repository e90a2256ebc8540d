"""The runner's contract with any optimizer: phase order, failed records, artifacts, refusal.

The optimizer here is a small real implementation of the protocol written for
these tests (it answers from a lookup table, no LM), so the runner's own
behaviour is what is under test; the DSPy path is covered in
test_dspy_mipro_run.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from mipro_bench.data import Split, Splits, load_banking77, make_splits
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.lm.settings import resolve_lm_settings
from mipro_bench.optimizers.base import (
    Budget,
    NotSupported,
    OptimizeOutcome,
    OptimizeRequest,
    UsageError,
)
from mipro_bench.results import ItemResult, OptimizedPrompt, PhaseUsage, read_record
from mipro_bench.runner import run_case


class TableOptimizer:
    """Predicts the right label for the first `k` items; optimizing raises k to `better`."""

    name: ClassVar[str] = "table"
    slug: ClassVar[str] = "table"
    supported_modes: ClassVar[frozenset[str]] = frozenset({"instruction_only"})

    def __init__(self, *, better: int = 3, fail_in: str | None = None,
                 refuse: bool = False) -> None:
        self.better, self.fail_in, self.refuse = better, fail_in, refuse
        self.phases: list[str] = []

    def check(self, request: OptimizeRequest) -> None:
        if self.refuse:
            raise UsageError("refused before any call")

    def optimize(self, request: OptimizeRequest) -> OptimizeOutcome:
        self.phases.append("optimize")
        if self.fail_in == "optimize":
            raise RuntimeError("optimizer blew up\nwith a second line")
        artifact = request.workdir / "prompt.txt"
        artifact.parent.mkdir(parents=True, exist_ok=True)
        artifact.write_text("better")
        return OptimizeOutcome(prompt=OptimizedPrompt("better"), best_val_score=0.75,
                               details={"own": 1}, artifacts={"prompt": artifact})

    def evaluate(self, prompt: OptimizedPrompt, split: Split, request: OptimizeRequest,
                 phase: str) -> tuple[ItemResult, ...]:
        self.phases.append(phase)
        if self.fail_in == phase:
            raise ConnectionError("LM unreachable")
        k = self.better if prompt.instruction == "better" else 1
        return tuple(ItemResult(e.id, e.label, e.label if i < k else None, i < k)
                     for i, e in enumerate(split.examples))


@pytest.fixture(scope="module")
def splits(tiny_data_dir: Path) -> Splits:
    return make_splits(load_banking77(tiny_data_dir), train_size=6, val_size=4, test_size=6)


def request_for(splits: Splits, tmp_path: Path, mode: str = "instruction_only",
                ) -> OptimizeRequest:
    settings, _ = resolve_lm_settings(lm="sim")
    return OptimizeRequest(splits=splits, lm=LMEndpoint(settings, "http://127.0.0.1:9"),
                           mode=mode, budget=Budget(rollouts=10), seed=3,  # type: ignore[arg-type]
                           workdir=tmp_path / "work", scope="s",
                           usage=lambda: {"optimize": PhaseUsage(calls=7)})


def test_phases_in_order_and_scores_from_the_suites_evaluation(splits: Splits,
                                                                tmp_path: Path) -> None:
    optimizer = TableOptimizer()
    record, path = run_case(optimizer, request_for(splits, tmp_path), results_dir=tmp_path / "r")
    assert optimizer.phases == ["baseline_eval", "optimize", "test_eval"]
    assert record.status == "succeeded" and record.error is None
    assert record.results.baseline_test_accuracy == pytest.approx(1 / 6)
    assert record.results.optimized_test_accuracy == pytest.approx(3 / 6)
    assert record.results.best_val_score == 0.75  # the optimizer's own, kept apart
    assert record.usage["optimize"].calls == 7
    assert record.usage["baseline_eval"] == PhaseUsage()  # every phase present
    assert record.details["own"] == 1 and record.details["scope"] == "s"
    assert (path.parent / record.details["artifacts"]["prompt"]).read_text() == "better"
    assert read_record(path) == record


@pytest.mark.parametrize("phase", ["baseline_eval", "optimize", "test_eval"])
def test_a_failure_in_any_phase_still_writes_a_failed_record(splits: Splits, tmp_path: Path,
                                                              phase: str) -> None:
    record, path = run_case(TableOptimizer(fail_in=phase), request_for(splits, tmp_path),
                            results_dir=tmp_path / "r")
    assert record.status == "failed" and record.details["failed_phase"] == phase
    assert record.error is not None and "\n" not in record.error
    finished_baseline = phase != "baseline_eval"
    assert (record.results.baseline_test_accuracy is not None) == finished_baseline
    assert (record.optimized_prompt is not None) == (phase == "test_eval")
    assert record.results.optimized_test_accuracy is None
    assert read_record(path).status == "failed"


def test_interrupt_writes_the_record_then_propagates(splits: Splits, tmp_path: Path) -> None:
    class Interrupted(TableOptimizer):
        def optimize(self, request: OptimizeRequest) -> OptimizeOutcome:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_case(Interrupted(), request_for(splits, tmp_path), results_dir=tmp_path / "r")
    (path,) = (tmp_path / "r").glob("banking77_table_*.json")
    assert read_record(path).error == "interrupted (KeyboardInterrupt)"


def test_refusals_come_before_any_evaluation_or_file(splits: Splits, tmp_path: Path) -> None:
    optimizer = TableOptimizer(refuse=True)
    with pytest.raises(UsageError):
        run_case(optimizer, request_for(splits, tmp_path), results_dir=tmp_path / "r")
    with pytest.raises(NotSupported, match="fewshot"):
        run_case(TableOptimizer(), request_for(splits, tmp_path, "fewshot"),
                 results_dir=tmp_path / "r")
    assert optimizer.phases == [] and not (tmp_path / "r").exists()


def test_unreadable_usage_is_noted_not_fatal(splits: Splits, tmp_path: Path) -> None:
    def broken() -> dict[str, PhaseUsage]:
        raise ConnectionError("gateway gone")

    record, _ = run_case(TableOptimizer(), request_for(splits, tmp_path),
                         results_dir=tmp_path / "r", usage=broken)
    assert record.status == "succeeded" and record.usage == {}
    assert "gateway gone" in record.details["usage_error"]
