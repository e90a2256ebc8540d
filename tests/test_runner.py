"""The runner's contract with any optimizer: phase order, failed records, artifacts, refusal,
and the one item-error policy.

The optimizer here is a small real implementation of the protocol written for
these tests (its own `OptimizerSpec`, no LM), and it scores in a small real
executor, `table`, which answers from a lookup table. The runner finds
executors by name, like every other, so the test registers `table` for its
duration (`table_executor`); the runner's own behaviour is what is under test.
The DSPy path is covered in test_dspy_mipro_run.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mipro_bench import executors
from mipro_bench.data import Split, Splits, load_banking77, make_splits
from mipro_bench.executors import EvaluationFailed
from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.optimizers.base import (
    NotSupported,
    OptimizeOutcome,
    OptimizeRequest,
    UsageError,
)
from mipro_bench.optimizers.spec import OptimizerSpec
from mipro_bench.results import ItemResult, OptimizedPrompt, PhaseUsage, read_record
from mipro_bench.runner import allowed_item_errors, run_case, score
from mipro_bench.typed_config import BudgetBase, OptionsBase


@dataclass(frozen=True)
class TableBudget(BudgetBase):
    rollouts: int | None = None


class TableExecutor:
    """Right for the first k items (k = the optimizer's `better` for its optimized prompt,
    else 1); items listed in `errors` fail in the "LM"; every call is noted on the
    optimizer the options name."""

    name: ClassVar[str] = "table"

    def can_express(self, prompt: OptimizedPrompt) -> bool:
        return True

    def evaluate(self, prompt: OptimizedPrompt, split: Split, request: OptimizeRequest,
                 phase: str, *, max_errors: int, options: Mapping[str, Any] | None = None,
                 ) -> tuple[ItemResult, ...]:
        owner: TableOptimizer = (options or {})["owner"]
        owner.phases.append(phase)
        owner.max_errors[phase] = max_errors
        if owner.fail_in == phase:
            raise ConnectionError("LM unreachable")
        k = owner.better if prompt.instruction == "better" else 1
        out = []
        for i, e in enumerate(split.examples):
            if i in owner.errors:
                out.append(ItemResult(e.id, e.label, None, False, error="HTTP 500"))
            else:
                out.append(ItemResult(e.id, e.label, e.label if i < k else None, i < k))
        return tuple(out)


class TableOptimizer:
    """Optimizing turns the baseline (1 right) into "better" (`better` right)."""

    spec: ClassVar[OptimizerSpec] = OptimizerSpec(
        name="table", slug="table", title="Table", modes=frozenset({"instruction_only"}),
        unsupported={"fewshot": "the table optimizer has no fewshot mode"},
        budget_type=TableBudget, options_type=OptionsBase,
        adapter="tests.test_runner:TableOptimizer", native_executor="table")

    def __init__(self, *, better: int = 3, fail_in: str | None = None,
                 refuse: bool = False, errors: tuple[int, ...] = ()) -> None:
        self.better, self.fail_in, self.refuse, self.errors = better, fail_in, refuse, errors
        self.phases: list[str] = []
        self.max_errors: dict[str, int] = {}

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

    def executor_options(self) -> dict[str, Any]:
        return {"owner": self}


@pytest.fixture(autouse=True)
def table_executor(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`table` as the only executor, for this test only (so the runner's cross-scoring has
    no other executor to try; tests that want one register it)."""
    monkeypatch.setattr(executors, "_classes", lambda: {"table": TableExecutor})
    yield


@pytest.fixture(scope="module")
def splits(tiny_data_dir: Path) -> Splits:
    return make_splits(load_banking77(tiny_data_dir), train_size=6, val_size=4, test_size=6)


def request_for(splits: Splits, tmp_path: Path, mode: str = "instruction_only",
                ) -> OptimizeRequest:
    settings, _ = resolve_lm_settings(lm="sim")
    return OptimizeRequest(splits=splits, lm=LMEndpoint(settings, "http://127.0.0.1:9"),
                           mode=mode, budget=TableBudget(rollouts=10), seed=3,  # type: ignore[arg-type]
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


def test_a_refused_case_leaves_a_record_with_the_reason_and_runs_nothing(
        splits: Splits, tmp_path: Path) -> None:
    optimizer = TableOptimizer(refuse=True)
    with pytest.raises(NotSupported, match="fewshot"):
        run_case(TableOptimizer(), request_for(splits, tmp_path, "fewshot"),
                 results_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    record, path = run_case(optimizer, request_for(splits, tmp_path), results_dir=tmp_path / "r")
    assert optimizer.phases == []
    assert record.status == "failed" and record.error.startswith("refused: ")
    assert record.details["refused"] in record.error
    assert record.details["failed_phase"] == "check"
    assert record.results.baseline_test_accuracy is None
    assert read_record(path) == record


def test_unreadable_usage_is_noted_not_fatal(splits: Splits, tmp_path: Path) -> None:
    def broken() -> dict[str, PhaseUsage]:
        raise ConnectionError("gateway gone")

    record, _ = run_case(TableOptimizer(), request_for(splits, tmp_path),
                         results_dir=tmp_path / "r", usage=broken)
    assert record.status == "succeeded" and record.usage == {}
    assert "gateway gone" in record.details["usage_error"]


def test_the_record_names_the_executor_and_the_budget(splits: Splits, tmp_path: Path) -> None:
    record, _ = run_case(TableOptimizer(), request_for(splits, tmp_path),
                         results_dir=tmp_path / "r")
    assert record.optimizer == "table" and record.details["executor"] == "table"
    assert record.config.budget == {"rollouts": 10}


# --- the one item-error policy (the runner's, not an adapter's) ------------------------------


def test_a_few_failed_items_are_scored_wrong_and_kept(splits: Splits, tmp_path: Path) -> None:
    optimizer = TableOptimizer(errors=(0,))  # 1 of 6 items fails in both evaluations
    record, _ = run_case(optimizer, request_for(splits, tmp_path), results_dir=tmp_path / "r",
                         max_item_error_rate=0.2)
    assert record.status == "succeeded", record.error
    assert optimizer.max_errors == {"baseline_eval": 1, "test_eval": 1}  # floor(0.2 * 6)
    first = record.results.per_item[0]
    assert (first.correct, first.predicted, first.error) == (False, None, "HTTP 500")
    assert record.results.optimized_test_accuracy == pytest.approx(2 / 6)
    assert record.details["item_errors"] == {"baseline_eval": 1, "test_eval": 1}


def test_more_failed_items_than_the_rate_allows_fail_the_run(splits: Splits,
                                                             tmp_path: Path) -> None:
    optimizer = TableOptimizer(errors=(0,))
    record, _ = run_case(optimizer, request_for(splits, tmp_path), results_dir=tmp_path / "r",
                         max_item_error_rate=0.1)  # floor(0.6) = 0 items may fail
    assert record.status == "failed" and record.details["failed_phase"] == "baseline_eval"
    assert record.error == ("EvaluationFailed: baseline_eval: 1/6 items failed in the LM "
                            "(more than 10%); first: HTTP 500")
    assert optimizer.phases == ["baseline_eval"]  # nothing was optimized on a failed baseline


def test_score_applies_the_policy_to_any_executor(splits: Splits, tmp_path: Path) -> None:
    request = request_for(splits, tmp_path)
    owner = TableOptimizer(errors=(1, 2))
    items = score(OptimizedPrompt("better"), splits.test, request, "test_eval",
                  executor="table", options=owner.executor_options(), max_item_error_rate=0.34)
    assert [i.error is not None for i in items] == [False, True, True, False, False, False]
    too_many = r"test_eval: 2/6 items failed in the LM .more than 33%"
    with pytest.raises(EvaluationFailed, match=too_many):
        score(OptimizedPrompt("better"), splits.test, request, "test_eval", executor="table",
              options=owner.executor_options(), max_item_error_rate=0.33)
    assert owner.max_errors["test_eval"] == 1


@pytest.mark.parametrize(("n", "rate", "allowed"), [(12, 0.1, 1), (9, 0.1, 0), (308, 0.1, 30),
                                                    (6, 0.0, 0), (6, 1.0, 6)])
def test_allowed_item_errors_rounds_down(n: int, rate: float, allowed: int) -> None:
    assert allowed_item_errors(n, rate) == allowed
