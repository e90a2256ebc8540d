"""DSPy MIPROv2 through the runner, offline: the simulated LM behind a real local gateway.

Runs on the invented tiny data set (6 intents), small enough for CI, with the
real adapter, real DSPy 3.4.1 MIPROv2 + optuna and a real HTTP gateway;
nothing is mocked. Each run gets its own gateway so fault knobs and counts
cannot leak into other tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mipro_bench.data import Splits, load_banking77, make_splits
from mipro_bench.executors import EvaluationFailed
from mipro_bench.executors.dspy_program import build_program
from mipro_bench.lm.gateway import GatewayHandle
from mipro_bench.optimizers import create_optimizer
from mipro_bench.optimizers.base import BASELINE_PROMPT, OptimizeRequest
from mipro_bench.optimizers.dspy_mipro import MiproBudget
from mipro_bench.results import PHASES, OptimizedPrompt, RunRecord, read_record
from mipro_bench.runner import gateway_usage_reader, run_case, score
from mipro_bench.serde import from_jsonable, to_jsonable
from tests.lm_support import recording_gateway

TRIALS = 3


@dataclass
class Run:
    record: RunRecord
    path: Path
    splits: Splits
    gateway: GatewayHandle
    sim_calls: int
    scope: str


def run(splits: Splits, tmp: Path, *, mode: str = "instruction_only",
        budget: MiproBudget | None = None,
        on_progress: Callable[[str, GatewayHandle], None] | None = None,
        options: dict[str, Any] | None = None) -> Run:
    with recording_gateway() as (gw, counter):
        scope = f"test-{mode}"
        request = OptimizeRequest(
            splits=splits, lm=gw.endpoint, mode=mode,  # type: ignore[arg-type]
            budget=budget or MiproBudget(trials=TRIALS), seed=0, workdir=tmp / "work", scope=scope,
            progress=(lambda msg: on_progress(msg, gw)) if on_progress else None,
            usage=gateway_usage_reader(gw, scope),
        )
        optimizer = create_optimizer("dspy_miprov2", num_threads=2, **(options or {}))
        record, path = run_case(optimizer, request, results_dir=tmp / "results")
        return Run(record, path, splits, gw, counter.calls, scope)


@pytest.fixture(scope="module")
def tiny_splits(tiny_data_dir: Path) -> Splits:
    return make_splits(load_banking77(tiny_data_dir), train_size=12, val_size=6, test_size=12,
                       seed=0)


@pytest.fixture(scope="module")
def io_run(tiny_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run(tiny_splits, tmp_path_factory.mktemp("io"))


@pytest.fixture(scope="module")
def fewshot_run(tiny_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run(tiny_splits, tmp_path_factory.mktemp("fs"), mode="fewshot",
               budget=MiproBudget(trials=TRIALS, max_bootstrapped_demos=2, max_labeled_demos=2))


def test_instruction_only_run_succeeds_with_zero_demos(io_run: Run) -> None:
    record = io_run.record
    assert record.status == "succeeded", record.error
    assert record.optimized_prompt is not None and record.optimized_prompt.demos == ()
    assert record.details["dspy"]["max_bootstrapped_demos"] == 0
    assert record.details["dspy"]["max_labeled_demos"] == 0


def test_trials_are_really_run(io_run: Run) -> None:
    dspy = io_run.record.details["dspy"]
    assert dspy["num_trials"] == TRIALS and dspy["auto"] is None
    assert dspy["search_trials_run"] == TRIALS
    # Full valset evaluations: the default program plus one per trial (no minibatch here).
    assert [t["trial"] for t in dspy["trials"]] == list(range(1, TRIALS + 2))
    assert dspy["trials"][-1]["total_eval_calls_so_far"] == len(io_run.splits.val) * (TRIALS + 1)


def test_seed_zero_is_recorded_with_the_seed_dspy_actually_used(io_run: Run) -> None:
    record = io_run.record
    assert record.config.seed == 0
    assert (record.details["requested_seed"], record.details["effective_seed"]) == (0, 1)


def test_usage_per_phase_adds_up_to_what_the_simulated_lm_answered(io_run: Run) -> None:
    usage = io_run.record.usage
    assert set(PHASES) <= set(usage)
    assert sum(u.calls for u in usage.values()) == io_run.sim_calls
    # Predict makes one call per item: the evaluations are exactly the test split.
    assert usage["baseline_eval"].calls == len(io_run.splits.test)
    assert usage["test_eval"].calls == len(io_run.splits.test)
    # The search alone is (T + 1) full val evaluations; bootstrap and proposer come on top.
    assert usage["optimize"].calls > len(io_run.splits.val) * (TRIALS + 1)
    assert all(u.errors == 0 and u.cost_usd is None for u in usage.values())


def test_trajectory_counts_gateway_calls_and_only_ever_improves(io_run: Run) -> None:
    points = io_run.record.trajectory
    assert len(points) == TRIALS + 1
    calls = [p.lm_calls for p in points]
    assert calls == sorted(calls) and calls[-1] <= io_run.record.usage["optimize"].calls
    scores = [p.score for p in points]
    assert scores == sorted(scores)  # best so far
    assert io_run.record.results.best_val_score == pytest.approx(scores[-1])


def test_test_split_is_disjoint_from_train_and_val(io_run: Run) -> None:
    splits, record = io_run.splits, io_run.record
    test_ids = [i.id for i in record.results.per_item]
    assert test_ids == [e.id for e in splits.test.examples]
    assert [i.id for i in record.results.baseline_per_item] == test_ids
    seen = {e.id for e in splits.train.examples} | {e.id for e in splits.val.examples}
    assert not seen & set(test_ids)
    assert not {e.text for e in splits.test.examples} & {e.text for e in splits.train.examples}
    assert record.data.digests == splits.digests()


def test_record_file_round_trips_and_has_the_required_keys(io_run: Run) -> None:
    data = json.loads(io_run.path.read_text())
    for key in ("schema_version", "case_id", "optimizer", "status", "error", "config", "lm",
                "data", "results", "optimized_prompt", "usage", "trajectory", "timing",
                "started_at", "details", "versions"):
        assert key in data, key
    assert io_run.path.name.startswith("banking77_dspy_mipro_")
    assert data["optimizer"] == "dspy_miprov2"
    assert data["lm"] == {"backend": "sim", "model": "gpt-4.1-nano", "base_url": None,
                          "simulated": True, "transport": "http"}
    assert read_record(io_run.path) == io_run.record
    results = data["results"]
    assert 0 <= results["best_val_score"] <= 1
    accuracy = sum(i["correct"] for i in results["per_item"]) / len(results["per_item"])
    assert results["optimized_test_accuracy"] == pytest.approx(accuracy)


def test_optimized_program_is_saved_next_to_the_record(io_run: Run) -> None:
    import dspy

    name = io_run.record.details["artifacts"]["program"]
    saved = io_run.path.parent / name
    assert saved.is_file() and saved.name.startswith(io_run.path.stem)
    program = build_program(tuple(io_run.splits.labels), BASELINE_PROMPT, "predict")
    program.load(str(saved))
    assert isinstance(program, dspy.Predict)
    assert program.signature.instructions == io_run.record.optimized_prompt.instruction


def test_fewshot_maps_demos_to_query_and_intent(fewshot_run: Run) -> None:
    record = fewshot_run.record
    assert record.status == "succeeded", record.error
    assert record.details["dspy"]["max_bootstrapped_demos"] == 2
    prompt = record.optimized_prompt
    assert prompt is not None and len(prompt.demos) <= 4
    labels = set(fewshot_run.splits.labels)
    train_texts = {e.text for e in fewshot_run.splits.train.examples}
    for demo in prompt.demos:
        assert demo.intent in labels and demo.query in train_texts


def test_lm_outage_mid_run_leaves_a_failed_record(tiny_splits: Splits, tmp_path: Path) -> None:
    def outage_after_baseline(message: str, gw: GatewayHandle) -> None:
        if message.startswith("baseline test accuracy"):
            gw.set_knobs(error_rate=1.0, error_status=500)

    result = run(tiny_splits, tmp_path, on_progress=outage_after_baseline,
                 options={"num_retries": 0})
    record = result.record
    assert record.status == "failed"
    assert record.error and "500" in record.error
    assert record.details["failed_phase"] == "optimize"
    # What finished is kept: the baseline was scored before the outage.
    assert record.results.baseline_test_accuracy is not None
    assert len(record.results.baseline_per_item) == len(tiny_splits.test)
    assert record.results.optimized_test_accuracy is None and record.optimized_prompt is None
    assert record.usage["optimize"].errors > 0
    assert read_record(result.path) == record  # written, and readable


def test_one_failed_item_is_scored_wrong_and_counted(tiny_splits: Splits, tmp_path: Path) -> None:
    # One evaluation thread and no DSPy retries: exactly the first test item's call fails.
    # The LM writes every answer as a label, so an item not failed always predicts one (an
    # unpinned baseline would otherwise drift into prose the rule rightly parses as None).
    with recording_gateway(format_drift=False) as (gw, _):
        request = OptimizeRequest(
            splits=tiny_splits, lm=gw.endpoint, mode="instruction_only",
            budget=MiproBudget(trials=1), seed=1, workdir=tmp_path / "work", scope="one-item",
        )
        optimizer = create_optimizer("dspy_miprov2", num_threads=1, num_retries=0)
        gw.set_knobs(fail_next=1, error_status=500)
        items = score(BASELINE_PROMPT, tiny_splits.test, request, "test_eval",
                      executor=optimizer.spec.native_executor,
                      options=optimizer.executor_options(), max_item_error_rate=0.1)
        assert gw.usage("one-item")["one-item"]["test_eval"].errors == 1
    assert len(items) == len(tiny_splits.test)
    errors = [i for i in items if i.error]
    assert len(errors) == 1 and errors[0].id == tiny_splits.test[0].id
    assert not errors[0].correct and errors[0].predicted is None and "500" in errors[0].error
    assert all(i.predicted is not None for i in items if not i.error)


def test_more_failed_items_than_allowed_fail_the_evaluation(tiny_splits: Splits,
                                                            tmp_path: Path) -> None:
    with recording_gateway() as (gw, _):
        request = OptimizeRequest(
            splits=tiny_splits, lm=gw.endpoint, mode="instruction_only",
            budget=MiproBudget(trials=1), seed=1, workdir=tmp_path / "work", scope="outage",
        )
        optimizer = create_optimizer("dspy_miprov2", num_threads=2, num_retries=0)
        gw.set_knobs(fail_next=3, error_status=500)  # 3 of 12 > 10 %
        with pytest.raises(EvaluationFailed, match=r"baseline_eval: 3/12 items failed in the LM "
                                                   r"\(more than 10%\); first: .*500"):
            score(BASELINE_PROMPT, tiny_splits.test, request, "baseline_eval",
                  executor=optimizer.spec.native_executor,
                  options=optimizer.executor_options(), max_item_error_rate=0.1)


def test_trials_with_auto_is_refused_before_any_lm_call(tiny_splits: Splits,
                                                        tmp_path: Path) -> None:
    with recording_gateway() as (gw, counter):
        request = OptimizeRequest(
            splits=tiny_splits, lm=gw.endpoint, mode="instruction_only",
            budget=MiproBudget(trials=5, auto="light"), seed=1, workdir=tmp_path, scope="bad",
        )
        record, path = run_case(create_optimizer("dspy_miprov2"), request,
                                results_dir=tmp_path / "r")
        assert counter.calls == 0  # refused by the check, before any LM call
        assert gw.usage("bad").get("bad", {}) == {}
    # The case leaves a failed record saying why (so the comparison keeps its row) ...
    assert record.status == "failed"
    assert record.error is not None and record.error.startswith("refused: ")
    assert "not both" in record.error
    assert record.details["refused"] == record.error.removeprefix("refused: ")
    assert record.details["failed_phase"] == "check"
    # ... and nothing ran: no phase used the LM, no result, no prompt.
    assert all(u.calls == 0 for u in record.usage.values())
    assert record.results.baseline_test_accuracy is None
    assert record.results.optimized_test_accuracy is None and record.optimized_prompt is None
    assert [p.name for p in (tmp_path / "r").iterdir()] == [path.name]
    assert read_record(path) == record


@pytest.mark.parametrize(("module", "output_type"), [("cot", "str"), ("predict", "literal")])
def test_other_program_shapes_evaluate_through_the_same_parser(
        tiny_splits: Splits, tmp_path: Path, module: str, output_type: str) -> None:
    with recording_gateway() as (gw, counter):
        request = OptimizeRequest(
            splits=tiny_splits, lm=gw.endpoint, mode="instruction_only",
            budget=MiproBudget(trials=1), seed=1, workdir=tmp_path, scope=f"{module}-{output_type}",
        )
        optimizer = create_optimizer("dspy_miprov2", module=module, output_type=output_type,
                                     num_threads=2)
        items = score(BASELINE_PROMPT, tiny_splits.test, request, "baseline_eval",
                      executor="dspy_program", options=optimizer.executor_options())
    assert counter.calls >= len(tiny_splits.test)
    assert all(i.error is None for i in items)
    assert sum(i.correct for i in items) > 0
    assert {i.predicted for i in items} <= set(tiny_splits.labels) | {None}


# --- a prompt scores the same from its record as when `optimize` returned it -----------------


@pytest.mark.integration
def test_a_prompt_read_back_from_its_record_scores_exactly_the_same(
        real_data_dir: Path, tmp_path: Path) -> None:
    """Executors score from the prompt value alone: the record is enough to re-score it.

    ChainOfThought few-shot, so the demos carry the bootstrapped `reasoning` too. A small
    real-Banking77 panel: on the tiny set the default program already scores 1.0 on val
    and MIPROv2 (rightly) keeps it, so no demos would come back. Seed 2 picks a demo set
    with the format-drifting simulated LM (measured: seeds 0, 1 and 3 keep no demos on
    this panel, seed 2 keeps two, both with reasoning).
    """
    splits = make_splits(load_banking77(real_data_dir), train_size=40, val_size=10,
                         test_size=12, seed=0)
    with recording_gateway() as (gw, _):
        request = OptimizeRequest(
            splits=splits, lm=gw.endpoint, mode="fewshot",
            budget=MiproBudget(trials=3, max_bootstrapped_demos=2, max_labeled_demos=0),
            seed=2, workdir=tmp_path / "work", scope="round-trip",
        )
        optimizer = create_optimizer("dspy_miprov2", num_threads=2, module="cot")
        record, _ = run_case(optimizer, request, results_dir=tmp_path / "results")
        assert record.status == "succeeded", record.error
        returned = record.optimized_prompt  # the outcome's prompt object, as optimize gave it
        assert returned is not None and returned.demos, returned
        from_record = RunRecord.from_dict(json.loads(json.dumps(record.to_dict())))
        read_back = from_record.optimized_prompt
        assert read_back == returned and read_back is not returned
        as_json = json.loads(json.dumps(to_jsonable(returned)))
        assert from_jsonable(OptimizedPrompt, as_json) == returned

        def scored(prompt: OptimizedPrompt, phase: str) -> tuple:
            return score(prompt, splits.test, request, phase,
                         executor=optimizer.spec.native_executor,
                         options=optimizer.executor_options(), max_item_error_rate=0.1)

        as_returned = scored(returned, "rescore_returned")
        as_recorded = scored(read_back, "rescore_recorded")
    assert as_recorded == as_returned
    assert as_returned == record.results.per_item  # and both equal the runner's test_eval
    assert not any(i.error for i in as_returned)
    reasoned = [d for d in returned.demos if d.reasoning]
    assert reasoned, f"no ChainOfThought demo with reasoning in {returned.demos}"
    assert [d.reasoning for d in read_back.demos] == [d.reasoning for d in returned.demos]
    saved = json.loads(json.dumps(record.to_dict()))["optimized_prompt"]["demos"]
    assert [d.get("reasoning") for d in saved] == [d.reasoning for d in returned.demos]
