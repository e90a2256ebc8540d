"""The comparison model: rows, matched-mode pairs, refusals, and its JSON."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from scipy.stats import binomtest

from mipro_bench.compare import (
    NO_DIFFERENCE,
    Comparison,
    ComparisonError,
    UnsupportedCase,
    build_comparison,
    compare_records,
)
from mipro_bench.gate import load_baseline_records
from mipro_bench.results import write_json_atomic
from tests.factories import record

STRONG = "1" * 36 + "0" * 4  # 36/40
WEAK = "1" * 20 + "0" * 20  # 20/40: every item WEAK gets right, STRONG does too
BASE = "1" * 10 + "0" * 30  # 10/40


def _two_optimizers(**kw) -> list:
    return [
        record(optimizer="dspy_miprov2", baseline=BASE, optimized=STRONG, **kw),
        record(optimizer="synth_mipro", baseline=BASE, optimized=WEAK, **kw),
    ]


def _row(comp: Comparison, optimizer: str, mode: str = "instruction_only"):
    (row,) = [r for r in comp.rows if r.optimizer == optimizer and r.mode == mode]
    return row


def test_rows_carry_test_accuracy_cis_and_keep_the_own_score_apart() -> None:
    comp = build_comparison(_two_optimizers(best_val=0.99), n_resamples=2000)
    row = _row(comp, "dspy_miprov2")
    assert row.kind == "measured" and row.status == "succeeded"
    assert row.baseline.value == pytest.approx(0.25)
    assert row.optimized.value == pytest.approx(0.9)
    assert row.improvement.value == pytest.approx(0.65)
    assert row.optimized.ci_low < 0.9 < row.optimized.ci_high
    assert row.improvement.ci_low > 0
    # The optimizer's own score is its own field, not the test accuracy.
    assert row.best_val_score.mean == 0.99
    assert row.optimized.value != row.best_val_score.mean
    assert row.simulated is True
    (seed,) = row.seeds
    assert seed.improvement.a_only == 26 and seed.improvement.b_only == 0


def test_a_winner_is_named_only_when_the_ci_excludes_zero() -> None:
    comp = build_comparison(_two_optimizers(), n_resamples=2000)
    (pair,) = comp.pairs
    assert pair.matched_mode and pair.status == "compared"
    assert (pair.optimizer_a, pair.optimizer_b) == ("dspy_miprov2", "synth_mipro")
    assert pair.difference.difference == pytest.approx(0.4)
    assert pair.difference.ci_low > 0
    assert pair.winner == "dspy_miprov2"
    assert pair.verdict == "dspy_miprov2 better"
    assert pair.mcnemar_p == pytest.approx(binomtest(16, 16, 0.5).pvalue)  # 2 / 2**16


def test_a_close_pair_gets_no_winner() -> None:
    recs = [
        record(optimizer="dspy_miprov2", optimized="1" * 21 + "0" * 19),
        record(optimizer="synth_mipro", optimized="1" * 20 + "0" * 20),
    ]
    (pair,) = build_comparison(recs, n_resamples=2000).pairs
    # One discordant item: the resamples that miss it give 0, so the CI touches zero.
    assert pair.difference.ci_low <= 0 <= pair.difference.ci_high
    assert pair.winner is None
    assert pair.verdict == NO_DIFFERENCE
    assert pair.mcnemar_p == 1.0  # one discordant pair: binomtest(1, 1) is 1.0


def test_modes_are_never_paired_unless_asked_and_then_labelled() -> None:
    recs = [
        record(optimizer="dspy_miprov2", mode="fewshot", optimized=STRONG, baseline=BASE),
        record(optimizer="synth_mipro", mode="instruction_only", optimized=WEAK, baseline=BASE),
    ]
    assert build_comparison(recs, n_resamples=500).pairs == ()
    (pair,) = build_comparison(recs, n_resamples=500, cross_mode=True).pairs
    assert not pair.matched_mode
    assert pair.winner is None
    assert "CROSS-MODE" in pair.verdict and "CROSS-MODE" in pair.label
    # Even a difference whose CI excludes zero names no winner across modes.
    assert pair.difference.interval.excludes_zero


def test_rows_are_one_per_optimizer_mode_model() -> None:
    recs = [
        *_two_optimizers(),
        record(optimizer="dspy_miprov2", mode="fewshot"),
        record(optimizer="dspy_miprov2", model="gpt-4o-mini"),
    ]
    comp = build_comparison(recs, n_resamples=200)
    keys = [r.key for r in comp.rows]
    assert keys == [
        ("dspy_miprov2", "instruction_only", "gpt-4.1-nano"),
        ("synth_mipro", "instruction_only", "gpt-4.1-nano"),
        ("dspy_miprov2", "instruction_only", "gpt-4o-mini"),
        ("dspy_miprov2", "fewshot", "gpt-4.1-nano"),
    ]
    # Only the two optimizers on the same mode and model are paired.
    assert [(p.optimizer_a, p.optimizer_b, p.model) for p in comp.pairs] == [
        ("dspy_miprov2", "synth_mipro", "gpt-4.1-nano")
    ]


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"test_digest": "another-panel"}, "different test data"),
        ({"lm_model": "gpt-4o"}, "different models"),
        ({"simulated": False}, "simulated LM"),
    ],
)
def test_unfair_pairs_are_refused(override: dict, why: str) -> None:
    a = record(optimizer="dspy_miprov2", optimized=STRONG)
    b = record(optimizer="synth_mipro", optimized=WEAK, **override)
    (pair,) = build_comparison([a, b], n_resamples=200).pairs
    assert pair.status.startswith("not comparable:") and why in pair.status
    assert pair.winner is None and pair.difference is None
    with pytest.raises(ComparisonError, match=why):
        compare_records(a, b)


def test_pairs_refuse_different_item_ids() -> None:
    a = record(optimizer="dspy_miprov2", optimized="1100")
    b = record(optimizer="synth_mipro", optimized="11000")
    (pair,) = build_comparison([a, b], n_resamples=200).pairs
    assert pair.status.startswith("not comparable:") and "different test items" in pair.status
    with pytest.raises(ComparisonError, match="different test items"):
        compare_records(a, b)


def test_compare_records_pairs_two_records() -> None:
    a, b = _two_optimizers()
    comp = compare_records(a, b, n_resamples=500)
    assert (comp.a_only, comp.b_only) == (16, 0)
    with pytest.raises(ComparisonError, match="different modes"):
        compare_records(a, record(optimizer="synth_mipro", mode="fewshot"))


def test_a_failed_case_says_failed_and_never_zero() -> None:
    recs = [
        record(optimizer="dspy_miprov2", optimized=STRONG),
        record(optimizer="synth_mipro", status="failed", error="job timed out after 900 s\nmore"),
    ]
    comp = build_comparison(recs, n_resamples=200)
    row = _row(comp, "synth_mipro")
    assert row.status == "failed: job timed out after 900 s"
    assert row.optimized is None and row.improvement is None and row.best_val_score is None
    assert row.n_succeeded == 0 and row.seeds[0].optimized_accuracy is None
    (pair,) = comp.pairs
    assert pair.status == "not comparable: synth_mipro [instruction_only] has no successful run"


def test_partial_seed_failure_aggregates_the_successful_seeds() -> None:
    recs = [
        record(seed=0, optimized="1100"),
        record(seed=1, optimized="1110"),
        record(seed=2, status="failed", error="boom"),
    ]
    row = build_comparison(recs, n_resamples=200).rows[0]
    assert row.status == "partial: 1 of 3 seeds failed (seed 2: boom)"
    assert (row.n_seeds, row.n_succeeded) == (3, 2)
    assert row.optimized.seeds.values == (0.5, 0.75)
    assert [s.status for s in row.seeds] == ["succeeded", "succeeded", "failed"]


def test_seeds_are_aggregated_and_kept() -> None:
    recs = [record(seed=s, optimized=p, baseline="1000", best_val=v, elapsed=e)
            for s, p, v, e in [(0, "1100", 0.6, 10.0), (1, "1110", 0.7, 20.0),
                               (2, "1111", 0.8, 30.0)]]
    row = build_comparison(recs, n_resamples=4000).rows[0]
    assert row.optimized.value == pytest.approx(0.75)
    assert row.optimized.seeds.std == pytest.approx(0.25)
    assert (row.optimized.seeds.min, row.optimized.seeds.max) == (0.5, 1.0)
    assert row.improvement.value == pytest.approx(0.5)
    assert row.best_val_score.mean == pytest.approx(0.7)
    assert row.elapsed_seconds.mean == pytest.approx(20.0)
    assert [s.seed for s in row.seeds] == [0, 1, 2]
    # Item scores averaged over seeds are [1, 1, 2/3, 1/3]: the CI is within their range.
    assert 1 / 3 <= row.optimized.ci_low < 0.75 < row.optimized.ci_high <= 1.0


def test_seeds_pair_by_seed_and_mcnemar_is_per_seed() -> None:
    recs = []
    for s in (0, 1):
        recs.append(record(optimizer="dspy_miprov2", seed=s, optimized=STRONG))
        recs.append(record(optimizer="synth_mipro", seed=s, optimized=WEAK))
    (pair,) = build_comparison(recs, n_resamples=500).pairs
    assert pair.mcnemar_p is None  # two runs a side: see per_seed
    assert [(p.seed_a, p.seed_b) for p in pair.per_seed] == [(0, 0), (1, 1)]
    assert all(p.comparison.a_only == 16 for p in pair.per_seed)
    assert (pair.n_seeds_a, pair.n_seeds_b) == (2, 2)


def test_usage_and_cost_never_invent_a_zero() -> None:
    unknown = build_comparison([record(cost=None)], n_resamples=100).rows[0]
    assert unknown.cost_usd is None
    assert unknown.usage["optimize"].cost_usd is None
    assert unknown.usage["optimize"].calls == 30 and unknown.lm_calls == 38
    assert unknown.tokens == 38 * 110
    known = build_comparison([record(cost=0.001)], n_resamples=100).rows[0]
    assert known.cost_usd == pytest.approx(0.038)
    mixed = build_comparison([record(seed=0, cost=0.001), record(seed=1, cost=None)],
                             n_resamples=100).rows[0]
    assert mixed.cost_usd is None
    free = build_comparison([record(cost=None, calls=(0, 0, 0))], n_resamples=100).rows[0]
    assert free.cost_usd == 0.0  # no calls at all really cost nothing


def test_per_intent_differences() -> None:
    # Intents cycle card_arrival, lost_or_stolen_card, pin_blocked, top_up_failed.
    recs = [
        record(optimizer="dspy_miprov2", baseline="00000000", optimized="11110000"),
        record(optimizer="synth_mipro", baseline="00000000", optimized="10001000"),
    ]
    comp = build_comparison(recs, n_resamples=100)
    deltas = {d.intent: d for d in _row(comp, "dspy_miprov2").per_intent}
    assert deltas["card_arrival"].difference == 0.5 and deltas["card_arrival"].n_items == 2
    assert deltas["pin_blocked"].optimized == 0.5 and deltas["pin_blocked"].baseline == 0.0
    (pair,) = comp.pairs
    between = {d.intent: d.difference for d in pair.per_intent}
    assert between == {"card_arrival": -0.5, "lost_or_stolen_card": 0.5,
                       "pin_blocked": 0.5, "top_up_failed": 0.5}


@dataclass(frozen=True)
class _PluginSkip:
    optimizer: str
    mode: str
    model: str
    reason: str


def test_unsupported_cases_become_rows() -> None:
    comp = build_comparison(
        _two_optimizers(),
        unsupported=[
            UnsupportedCase("synth_mipro", "fewshot", "gpt-4.1-nano", "instruction-only"),
            _PluginSkip("other_opt", "fewshot", "gpt-4.1-nano", "not installed"),
            {"optimizer": "third", "mode": "fewshot", "model": "gpt-4.1-nano", "reason": "x"},
        ],
        n_resamples=100,
    )
    row = _row(comp, "synth_mipro", "fewshot")
    assert row.kind == "not_supported" and row.status == "not supported: instruction-only"
    assert row.optimized is None and row.baseline is None
    assert _row(comp, "other_opt", "fewshot").reason == "not installed"
    assert len(comp.pairs) == 1  # unsupported rows are never paired
    with pytest.raises(ComparisonError, match="optimizer, mode, model and reason"):
        build_comparison([], unsupported=[{"optimizer": "x"}])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ComparisonError, match="RunRecord"):
        build_comparison([{"optimizer": "x"}])  # type: ignore[list-item]
    with pytest.raises(ComparisonError, match="confidence"):
        build_comparison([], confidence=95)
    with pytest.raises(ComparisonError, match="n_resamples"):
        build_comparison([], n_resamples=0)


def test_order_of_records_does_not_change_the_result() -> None:
    recs = [record(optimizer=o, seed=s, optimized=p)
            for o, p in [("dspy_miprov2", STRONG), ("synth_mipro", WEAK)] for s in (0, 1, 2)]
    first = build_comparison(recs, n_resamples=500, generated_at="t")
    shuffled = recs[:]
    random.Random(4).shuffle(shuffled)
    second = build_comparison(shuffled, n_resamples=500, generated_at="t")
    assert first.rows == second.rows and first.pairs == second.pairs


def test_a_repeated_case_keeps_the_latest_run_and_says_so() -> None:
    import dataclasses

    old = record(optimized="0000")
    new = dataclasses.replace(record(optimized="1111"), started_at="2026-02-01T00:00:00+00:00")
    comp = build_comparison([new, old], n_resamples=100)
    assert comp.rows[0].optimized.value == 1.0
    assert any("recorded twice" in n for n in comp.notes)


def test_json_round_trip_and_gate_can_read_it(tmp_path: Path) -> None:
    recs = [*_two_optimizers(cost=0.002, demos=[("Where is my card?", "card_arrival")]),
            record(optimizer="synth_mipro", seed=1, status="failed", error="x")]
    comp = build_comparison(
        recs, unsupported=[UnsupportedCase("synth_mipro", "fewshot", "gpt-4.1-nano", "n/a")],
        n_resamples=300,
    )
    data = json.loads(json.dumps(comp.to_dict()))
    assert data["schema_version"] == 2 and next(iter(data)) == "schema_version"
    back = Comparison.from_dict(data)
    assert back == comp
    path = write_json_atomic(tmp_path / "comparison_x.json", comp.to_dict())
    assert {r.case_id for r in load_baseline_records(path)} == {r.case_id for r in recs}


def test_from_dict_refuses_other_versions_and_malformed_input() -> None:
    comp = build_comparison(_two_optimizers(), n_resamples=100)
    data = comp.to_dict()
    with pytest.raises(ComparisonError, match="schema_version 99"):
        Comparison.from_dict({**data, "schema_version": 99})
    broken = {**data, "rows": [{"optimizer": 3}]}
    with pytest.raises(ComparisonError, match="malformed comparison"):
        Comparison.from_dict(broken)


def test_run_info_describes_the_run() -> None:
    comp = build_comparison(_two_optimizers(), n_resamples=100, seed=3, generated_at="now")
    run = comp.run
    assert run.simulated and comp.simulated
    assert run.models == ("gpt-4.1-nano",) and run.digests["test"] == ("digest-test-panel",)
    assert (run.n_resamples, run.bootstrap_seed, run.generated_at) == (100, 3, "now")
    assert run.sizes["test"] == (40,)


def test_a_run_with_repeated_item_ids_is_not_paired() -> None:
    import dataclasses

    good = record(optimizer="dspy_miprov2", optimized="1100")
    bad = record(optimizer="synth_mipro", optimized="1100")
    items = bad.results.per_item
    bad = dataclasses.replace(bad, results=dataclasses.replace(
        bad.results, per_item=(*items[:-1], dataclasses.replace(items[-1], id=items[0].id))))
    comp = build_comparison([good, bad], n_resamples=100)
    (pair,) = comp.pairs
    assert pair.status == "not comparable: a run's per-item results repeat an id"
    assert _row(comp, "synth_mipro").seeds[0].improvement is None


def test_cross_mode_pairs_are_labelled_in_every_report() -> None:
    from mipro_bench.report import render_html, render_markdown, render_table

    recs = [record(optimizer="dspy_miprov2", mode="fewshot", optimized=STRONG),
            record(optimizer="synth_mipro", optimized=WEAK)]
    comp = build_comparison(recs, n_resamples=100, cross_mode=True)
    for text in (render_table(comp, width=200), render_markdown(comp), render_html(comp)):
        assert "CROSS-MODE" in text
        assert "better" not in text


def test_the_comparison_keeps_each_used_record_once() -> None:
    import dataclasses

    old = record(optimized="0000")
    new = dataclasses.replace(old, started_at="2026-02-01T00:00:00+00:00")
    comp = build_comparison([old, new, record(optimizer="synth_mipro")], n_resamples=100)
    assert [(r.optimizer, r.started_at) for r in comp.records] == [
        ("dspy_miprov2", "2026-02-01T00:00:00+00:00"), ("synth_mipro", old.started_at)]
