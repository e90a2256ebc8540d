"""Format-neutral scoring: per-executor results in records, pairs within one executor, the
format effect, parse diagnostics, the shared baseline, and the report's flags."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mipro_bench import executors
from mipro_bench.compare import build_comparison
from mipro_bench.data import Split, Splits, load_banking77, make_splits
from mipro_bench.executors.task_app import TaskAppExecutor, system_message
from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.optimizers.base import OptimizeOutcome, OptimizeRequest
from mipro_bench.optimizers.spec import OptimizerSpec
from mipro_bench.prompt import BASELINE_INSTRUCTION
from mipro_bench.report.markdown import render_markdown
from mipro_bench.report.table import render_table
from mipro_bench.results import (
    Demo,
    ExecutorScores,
    ItemResult,
    OptimizedPrompt,
    ParseDiagnostics,
    PhaseUsage,
    RunRecord,
    read_record,
)
from mipro_bench.runner import run_case
from mipro_bench.session_servers import SessionServers
from mipro_bench.typed_config import BudgetBase, OptionsBase
from tests.factories import items, record

# --- records -----------------------------------------------------------------------------------


def test_a_version_1_record_reads_with_its_native_results_as_its_one_executor() -> None:
    rec = record()
    data = rec.to_dict()
    data["schema_version"] = 1
    data["results"].pop("by_executor")
    data["results"].pop("native_executor")
    data["details"] = {"executor": "dspy_program"}
    back = RunRecord.from_dict(data)
    assert back.results.native_executor == "dspy_program"
    (name, scores), = back.results.by_executor.items()
    assert name == "dspy_program" and scores.native
    assert scores.per_item == rec.results.per_item
    assert scores.baseline_diagnostics is None  # version 1 had no match steps


def test_match_steps_stay_out_of_the_json_when_unknown_and_round_trip_when_known() -> None:
    plain = ItemResult("a", "x", "x", True)
    matched = ItemResult("b", "x", None, False, match="none")
    rec = dataclasses.replace(record(), results=dataclasses.replace(
        record().results, per_item=(plain, matched), native_executor="dspy_program",
        by_executor={"dspy_program": ExecutorScores(
            native=True, per_item=(plain, matched),
            optimized_diagnostics=ParseDiagnostics.of((plain, matched), lm_calls=3))}))
    data = json.loads(json.dumps(rec.to_dict()))
    assert "match" not in data["results"]["per_item"][0]
    assert data["results"]["per_item"][1]["match"] == "none"
    diag = data["results"]["by_executor"]["dspy_program"]["optimized_diagnostics"]
    assert diag["calls_per_item"] == 1.5 and diag["no_intent"] == 1
    back = RunRecord.from_dict(data)
    assert back.results.per_item[1].match == "none"
    assert back.results.by_executor["dspy_program"].optimized_diagnostics.lm_calls == 3
    # The match step is a diagnostic: the exact gate compares predictions.
    assert ItemResult("b", "x", None, False) == matched


# --- the task-app executor expresses demos -----------------------------------------------------


def test_demos_render_as_labelled_examples_after_the_instruction() -> None:
    demos = (Demo("Where is my card?", "card_arrival"),
             Demo("Rate?", "exchange_rate", reasoning="asks about\nthe rate"))
    text = system_message("Classify.", demos)
    assert text == ("Classify.\n\nExamples:\nQuery: Where is my card?\nIntent: card_arrival"
                    "\n\nQuery: Rate?\nReasoning: asks about the rate\nIntent: exchange_rate")
    assert system_message("Classify.") == "Classify."
    assert TaskAppExecutor().can_express(OptimizedPrompt("x", demos))


# --- the runner: every executor, one shared baseline -------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Budget(BudgetBase):
    rollouts: int | None = None


def _fake_executor(name: str, right: int, fail: bool = False) -> type:
    class Fake:
        calls: ClassVar[list[tuple[str, str]]] = []
        format_options: ClassVar[tuple[str, ...]] = ()
        default_options: ClassVar[dict[str, Any]] = {}

        def can_express(self, prompt: OptimizedPrompt) -> bool:
            return True

        def evaluate(self, prompt: OptimizedPrompt, split: Split, request: OptimizeRequest,
                     phase: str, *, max_errors: int, options: Mapping[str, Any] | None = None,
                     ) -> tuple[ItemResult, ...]:
            type(self).calls.append((request.scope, phase))
            if fail:
                raise ConnectionError("executor down")
            k = right + (1 if prompt.instruction == "better" else 0)
            return tuple(ItemResult(e.id, e.label, e.label if i < k else None, i < k,
                                    match="exact" if i < k else "none")
                         for i, e in enumerate(split.examples))

    Fake.name = name  # type: ignore[attr-defined]
    Fake.calls = []
    return Fake


class _Optimizer:
    spec: ClassVar[OptimizerSpec] = OptimizerSpec(
        name="fake", slug="fake", title="Fake", modes=frozenset({"instruction_only"}),
        unsupported={}, budget_type=_Budget, options_type=OptionsBase,
        adapter="tests.test_format_neutral:_Optimizer", native_executor="one")

    def check(self, request: OptimizeRequest) -> None:
        pass

    def optimize(self, request: OptimizeRequest) -> OptimizeOutcome:
        return OptimizeOutcome(prompt=OptimizedPrompt("better"), best_val_score=0.5)

    def executor_options(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, type]]:
    found = {"one": _fake_executor("one", 1), "two": _fake_executor("two", 2)}
    monkeypatch.setattr(executors, "_classes", lambda: found)
    yield found


@pytest.fixture(scope="module")
def splits(tiny_data_dir: Path) -> Splits:
    return make_splits(load_banking77(tiny_data_dir), train_size=6, val_size=4, test_size=6)


def _request(splits: Splits, tmp_path: Path, scope: str, harness: SessionServers | None,
             ) -> OptimizeRequest:
    settings, _ = resolve_lm_settings(lm="sim")

    def usage() -> dict[str, PhaseUsage]:
        return {"baseline_eval": PhaseUsage(calls=6), "baseline_eval:two": PhaseUsage(calls=7),
                "test_eval": PhaseUsage(calls=6), "test_eval:two": PhaseUsage(calls=8)}

    return OptimizeRequest(splits=splits, lm=LMEndpoint(settings, "http://127.0.0.1:9"),
                           mode="instruction_only", budget=_Budget(rollouts=1), seed=0,
                           workdir=tmp_path / scope, scope=scope, usage=usage, harness=harness)


def test_every_executor_scores_both_prompts_under_its_own_phases(
        splits: Splits, tmp_path: Path, fakes: dict[str, type]) -> None:
    rec, path = run_case(_Optimizer(), _request(splits, tmp_path, "c1", None),
                         results_dir=tmp_path / "r")
    assert fakes["one"].calls == [("c1", "baseline_eval"), ("c1", "test_eval")]
    assert fakes["two"].calls == [("c1", "baseline_eval:two"), ("c1", "test_eval:two")]
    assert list(rec.results.by_executor) == ["one", "two"]  # native first
    two = rec.results.by_executor["two"]
    assert not two.native and two.optimized_test_accuracy == pytest.approx(3 / 6)
    assert two.optimized_diagnostics.calls_per_item == pytest.approx(8 / 6)
    assert two.optimized_diagnostics.steps["exact"] == 3
    # The native results stay where the gate reads them.
    assert rec.results.per_item == rec.results.by_executor["one"].per_item
    assert rec.schema_version == 2 and read_record(path) == rec


def test_the_baseline_is_scored_once_per_executor_and_shared(
        splits: Splits, tmp_path: Path, fakes: dict[str, type],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The shared evaluation's usage is read under its own scope from the gateway.
    monkeypatch.setattr(LMEndpoint, "usage", lambda self, optimizer=None, **_: {
        optimizer: {"baseline_eval": PhaseUsage(calls=6)}})
    with SessionServers(splits) as harness:
        first, _ = run_case(_Optimizer(), _request(splits, tmp_path, "c1", harness),
                            results_dir=tmp_path / "r")
        second, _ = run_case(_Optimizer(), _request(splits, tmp_path, "c2", harness),
                             results_dir=tmp_path / "r")
    assert ("c2", "baseline_eval") not in fakes["one"].calls
    assert ("c2", "baseline_eval:two") not in fakes["two"].calls
    assert second.results.baseline_per_item == first.results.baseline_per_item
    shared = second.details["shared_baseline"]["one"]
    # It ran once, under a scope of its own (named by what it depends on, not by the case
    # that ran first), so a journal or a recording finds it whatever the order of cases.
    under = shared["counted_under"]
    assert shared["reused"] and under["phase"] == "baseline_eval"
    assert under["scope"].startswith("baseline-one-")
    assert first.details["shared_baseline"]["one"]["counted_under"] == under
    assert [c for c in fakes["one"].calls if c[1] == "baseline_eval"] == [
        (under["scope"], "baseline_eval")]
    assert first.details["shared_baseline"]["one"]["reused"] is False
    # The reusing record still says what scoring the baseline costs (a copy, flagged).
    assert second.usage["baseline_eval"].calls == first.usage["baseline_eval"].calls
    assert shared["usage_copied"] is True


def test_a_failing_other_executor_is_recorded_and_does_not_fail_the_case(
        splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = {"one": _fake_executor("one", 1), "two": _fake_executor("two", 2, fail=True)}
    monkeypatch.setattr(executors, "_classes", lambda: found)
    rec, _ = run_case(_Optimizer(), _request(splits, tmp_path, "c1", None),
                      results_dir=tmp_path / "r")
    assert rec.status == "succeeded"
    assert "executor down" in rec.results.by_executor["two"].error


# --- the comparison ----------------------------------------------------------------------------


def _with_executors(rec: RunRecord, native: str, other: str, other_opt: str,
                    other_base: str | None = None) -> RunRecord:
    res = rec.results
    other_items = items(other_opt)
    base_other = items(other_base) if other_base else res.baseline_per_item
    by = {native: ExecutorScores(native=True, baseline_per_item=res.baseline_per_item,
                                 per_item=res.per_item),
          other: ExecutorScores(native=False, baseline_per_item=base_other,
                                per_item=other_items)}
    return dataclasses.replace(rec, results=dataclasses.replace(
        res, native_executor=native, by_executor=by))


STRONG = "1" * 36 + "0" * 4
WEAK = "1" * 20 + "0" * 20
BASE = "1" * 10 + "0" * 30


def test_pairs_are_per_executor_and_a_disagreement_is_said() -> None:
    a = _with_executors(record(optimizer="dspy_miprov2", baseline=BASE, optimized=STRONG),
                        "dspy_program", "task_app", WEAK)
    b = _with_executors(record(optimizer="synth_mipro", baseline=BASE, optimized=WEAK,
                               calls=(4, 20, 4)),
                        "task_app", "dspy_program", WEAK)
    comp = build_comparison([a, b], n_resamples=500)
    by = {p.executor: p for p in comp.pairs}
    assert set(by) == {"dspy_program", "task_app"}
    assert by["dspy_program"].winner == "dspy_miprov2"
    assert by["dspy_program"].native_for == ("dspy_miprov2",)
    assert by["task_app"].winner is None and by["task_app"].native_for == ("synth_mipro",)
    assert "executors disagree" in by["task_app"].disagreement
    assert any("executors disagree" in n for n in comp.notes)
    assert by["task_app"].budget_note == ("unequal optimize budgets: dspy_miprov2 spent 30 LM "
                                          "calls, synth_mipro 20")
    text = render_table(comp, width=140)
    assert "unequal optimize budgets" in text and "Format effect" in text


def test_the_format_effect_has_its_own_rows_with_a_paired_ci() -> None:
    base_other = "1" * 5 + "0" * 35  # the baseline loses 5 items in the other format
    a = _with_executors(record(baseline=BASE, optimized=STRONG), "dspy_program", "task_app",
                        STRONG, other_base=base_other)
    comp = build_comparison([a], n_resamples=500)
    baseline, optimized = comp.format_effects
    assert baseline.prompt == "baseline"
    assert (baseline.executor_a, baseline.executor_b) == ("dspy_program", "task_app")
    assert baseline.difference.difference == pytest.approx(5 / 40)
    assert baseline.discordant == 5 and baseline.difference.ci_low > 0
    assert optimized.prompt == "dspy_miprov2 [instruction_only]"
    assert optimized.difference.difference == 0
    md = render_markdown(comp)
    assert "## Format effect" in md and "## Per executor" in md


def test_an_optimized_prompt_equal_to_the_baseline_is_flagged() -> None:
    rec = record(mode="fewshot", instruction=BASELINE_INSTRUCTION, optimized="0101",
                 baseline="0101")
    (row,) = build_comparison([rec], n_resamples=100).rows
    assert row.flags and row.flags[0].startswith("UNCHANGED PROMPT")
    assert "UNCHANGED PROMPT" in render_table(build_comparison([rec], n_resamples=100))


def test_a_proposer_that_added_nothing_is_flagged_with_its_error() -> None:
    rec = record(instruction=BASELINE_INSTRUCTION, optimized="0101", baseline="0101")
    failed = dataclasses.replace(rec, details={
        "proposer_error": "mipro_proposer_provider_no_native_tool_call: I'll propose a plan"})
    comp = build_comparison([failed], n_resamples=100)
    (flag,) = [f for f in comp.rows[0].flags if f.startswith("PROPOSER FAILED")]
    assert "no_native_tool_call" in flag and "seed 0" in flag
    assert "PROPOSER FAILED" in render_table(comp)
    assert not any(f.startswith("PROPOSER FAILED")
                   for f in build_comparison([rec], n_resamples=100).rows[0].flags)


PACKAGE = {"name": "synth-optimizers", "version": "0.1.1", "module": "synth_optimizers.miprov2"}


def test_a_local_backend_row_says_synths_published_package_ran_here() -> None:
    rec = dataclasses.replace(record(optimizer="synth_mipro"), backend="local",
                              details={"synth": {"optimizer_package": PACKAGE}})
    comp = build_comparison([rec], n_resamples=100)
    (row,) = comp.rows
    (flag,) = [f for f in row.flags if f.startswith("LOCAL BACKEND")]
    assert "Synth's published MIPROv2 (synth-optimizers 0.1.1) on this machine" in flag
    assert "not Synth's hosted service" in flag and "re-implementation" not in flag
    assert "LOCAL" in render_table(comp)
    assert "synth-optimizers 0.1.1" in render_markdown(comp)


def test_an_older_local_record_without_a_package_is_labelled_as_the_suites_own() -> None:
    rec = dataclasses.replace(record(optimizer="synth_mipro"), backend="local")
    (row,) = build_comparison([rec], n_resamples=100).rows
    (flag,) = [f for f in row.flags if f.startswith("LOCAL BACKEND")]
    assert "name no optimizer package" in flag and "re-implementation" in flag
    assert "synth-optimizers" not in flag and "not Synth's hosted service" in flag


def test_the_html_report_warns_on_few_items_per_intent_and_not_to_compare_own_scores() -> None:
    from mipro_bench.report.html import render_html

    html = render_html(build_comparison([record(baseline="0101", optimized="1101")],
                                        n_resamples=100))
    assert 'id="small-intents-warning"' in html
    assert "Compare optimizers at equal LM calls" not in html
    assert "not comparable across optimizers" in html
