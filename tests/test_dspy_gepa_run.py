"""DSPy GEPA through the runner, offline: real dspy 3.4.1 GEPA, the simulated LM, a real gateway.

The tiny invented data set (6 intents) is easy for the simulated LM; on
train 20 / val 16 the baseline misses some val items and the sim's reflection
hints win one back, so the optimized instruction really differs from the
baseline there. Nothing is mocked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mipro_bench.data import Splits, load_banking77, make_splits
from mipro_bench.lm.gateway import GatewayHandle
from mipro_bench.optimizers import create_optimizer, get_spec
from mipro_bench.optimizers.base import BASELINE_PROMPT, OptimizeRequest
from mipro_bench.optimizers.dspy_gepa import GEPA_RUN_DIR
from mipro_bench.results import RunRecord, read_record
from mipro_bench.runner import gateway_usage_reader, run_case
from tests.lm_support import recording_gateway

METRIC_CALLS = 60


@dataclass
class Run:
    record: RunRecord
    path: Path
    splits: Splits
    sim_calls: int
    bodies: list[dict[str, Any]]
    workdir: Path


def run(splits: Splits, tmp: Path, *, calls: int = METRIC_CALLS,
        options: dict[str, Any] | None = None, on_start: Any = None) -> Run:
    with recording_gateway() as (gw, counter):
        scope = "test-gepa"
        request = OptimizeRequest(
            splits=splits, lm=gw.endpoint, mode="instruction_only",
            budget=get_spec("dspy_gepa").parse_budget({"max_metric_calls": calls}), seed=0,
            workdir=tmp / "work", scope=scope, usage=gateway_usage_reader(gw, scope),
            progress=(lambda msg: on_start(msg, gw)) if on_start else None,
        )
        optimizer = create_optimizer("dspy_gepa", num_threads=2, **(options or {}))
        record, path = run_case(optimizer, request, results_dir=tmp / "results")
        return Run(record, path, splits, counter.calls, list(counter.bodies), tmp / "work")


@pytest.fixture(scope="module")
def tiny_splits(tiny_data_dir: Path) -> Splits:
    return make_splits(load_banking77(tiny_data_dir), train_size=20, val_size=16, test_size=12,
                       seed=0)


@pytest.fixture(scope="module")
def io_run(tiny_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run(tiny_splits, tmp_path_factory.mktemp("gepa"))


def gepa(run: Run) -> dict[str, Any]:
    return run.record.details["dspy_gepa"]


def test_run_succeeds_instruction_only(io_run: Run) -> None:
    record = io_run.record
    assert record.status == "succeeded", record.error
    assert record.optimizer == "dspy_gepa" and record.config.mode == "instruction_only"
    assert record.optimized_prompt is not None and record.optimized_prompt.demos == ()
    assert io_run.path.name.startswith("banking77_dspy_gepa_")
    assert read_record(io_run.path) == record


def test_spends_within_its_budget_plus_at_most_one_iteration(io_run: Run) -> None:
    d = gepa(io_run)
    assert d["resolved_max_metric_calls"] == METRIC_CALLS
    # GEPA checks its budget before an iteration: the last may overrun by 2 minibatches + val.
    overrun = 2 * d["reflection_minibatch_size"] + len(io_run.splits.val)
    assert METRIC_CALLS <= d["metric_calls"] <= METRIC_CALLS + overrun
    # One metric call = one task-model call (Predict, DSPy's cache off).
    assert d["task_model_calls"] == d["metric_calls"] == d["task_model_requests"]


def test_reflection_calls_are_counted_apart_from_task_model_calls(io_run: Run) -> None:
    d, usage = gepa(io_run), io_run.record.usage
    assert d["reflection_calls"] > 0 and d["reflection_calls"] == d["reflection_lm_requests"]
    assert d["reflection_calls"] + d["task_model_calls"] == usage["optimize"].calls
    # At the wire: the reflection requests are exactly the optimize calls GEPA's prompt made.
    shown = [b for b in io_run.bodies if "examples_with_feedback" in json.dumps(b)]
    assert len(shown) == d["reflection_calls"]
    assert sum(u.calls for u in usage.values()) == io_run.sim_calls
    assert usage["baseline_eval"].calls == usage["test_eval"].calls == len(io_run.splits.test)


def test_feedback_reaches_the_reflection_lm(io_run: Run) -> None:
    shown = next(b for b in io_run.bodies if "examples_with_feedback" in json.dumps(b))
    text = json.dumps(shown)
    assert "the expected intent is" in text
    assert "The instructions I provided to the assistant" in text


def test_optimized_instruction_differs_and_carries_the_reflection_hints(io_run: Run) -> None:
    d, prompt = gepa(io_run), io_run.record.optimized_prompt
    assert d["best_candidate"] > 0
    assert prompt.instruction != BASELINE_PROMPT.instruction
    assert prompt.instruction.startswith(BASELINE_PROMPT.instruction)
    assert "Intent hints" in prompt.instruction
    assert prompt.instruction in [p["instruction"] for p in d["proposals"]]


def test_best_val_score_is_gepas_own_and_the_trajectory_only_improves(io_run: Run) -> None:
    d, record = gepa(io_run), io_run.record
    assert record.results.best_val_score == pytest.approx(max(d["val_aggregate_scores"]))
    assert 0 <= record.results.best_val_score <= 1
    points = record.trajectory
    assert len(points) == d["num_full_val_evals"] and points[0].label == "default program"
    assert points[0].rollouts == len(io_run.splits.val)
    scores = [p.score for p in points]
    assert scores == sorted(scores) and scores[-1] == pytest.approx(record.results.best_val_score)
    calls = [p.lm_calls for p in points]
    assert calls == sorted(calls) and calls[-1] <= record.usage["optimize"].calls


def test_seeds_log_dir_and_artifact_are_recorded(io_run: Run) -> None:
    import dspy

    from mipro_bench.optimizers.dspy_gepa import build_program

    record = io_run.record
    assert (record.details["requested_seed"], record.details["effective_seed"]) == (0, 0)
    assert (io_run.workdir / GEPA_RUN_DIR).is_dir()
    assert (io_run.workdir / "dspy.log").is_file()  # DSPy's and GEPA's prints, not the terminal
    saved = io_run.path.parent / record.details["artifacts"]["program"]
    program = build_program(tuple(io_run.splits.labels), BASELINE_PROMPT, "predict")
    program.load(str(saved))
    assert isinstance(program, dspy.Predict)
    assert program.signature.instructions == record.optimized_prompt.instruction


def test_reused_workdir_is_refused_rather_than_resumed(io_run: Run) -> None:
    with recording_gateway() as (gw, counter):
        request = OptimizeRequest(
            splits=io_run.splits, lm=gw.endpoint, mode="instruction_only",
            budget=get_spec("dspy_gepa").parse_budget({"max_metric_calls": METRIC_CALLS}),
            seed=0, workdir=io_run.workdir, scope="again")
        with pytest.raises(Exception, match="holds an earlier GEPA run"):
            create_optimizer("dspy_gepa").optimize(request)
        assert counter.calls == 0


def test_lm_outage_in_the_search_fails_the_run(tiny_splits: Splits, tmp_path: Path) -> None:
    def outage_after_baseline(message: str, gw: GatewayHandle) -> None:
        if message.startswith("baseline test accuracy"):
            gw.set_knobs(error_rate=1.0, error_status=500)

    result = run(tiny_splits, tmp_path, options={"num_retries": 0},
                 on_start=outage_after_baseline)
    record = result.record
    assert record.status == "failed"
    assert record.details["failed_phase"] == "optimize"
    assert record.error and "500" in record.error
    assert record.optimized_prompt is None
