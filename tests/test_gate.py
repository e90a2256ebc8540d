"""Regression gating: grammar, drops, exact changes, paired significance, refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from mipro_bench.gate import (
    Changed,
    Exact,
    GateError,
    Selection,
    SignificanceTest,
    Significant,
    check,
    evaluate,
    holm,
    load_baseline_records,
    parse_alpha,
    parse_threshold,
    preflight,
    resolve_baseline_path,
)
from mipro_bench.results import DataInfo, LMInfo, RunRecord, Scores
from tests import factories
from tests.factories import make_record


def with_accuracy(acc: float | None, **over):
    rec = make_record(**over)
    return dataclasses.replace(
        rec,
        results=Scores(baseline_test_accuracy=0.2, optimized_test_accuracy=acc, best_val_score=0.5),
    )


@pytest.mark.parametrize(
    "bad", ["optimized_test_accuracy", "accuracy:5", "optimized_test_accuracy:x", ""]
)
def test_bad_expressions_are_clear(bad: str) -> None:
    with pytest.raises(GateError, match="mipro-compare-fail"):
        parse_threshold(bad)


def test_drop_beyond_points_fails_with_names_and_values() -> None:
    t = parse_threshold("optimized_test_accuracy:5")
    regs = check([with_accuracy(0.60)], [with_accuracy(0.70)], [t])
    assert len(regs) == 1
    msg = regs[0].message()
    assert "dspy_miprov2[instruction_only" in msg and "optimized_test_accuracy" in msg
    assert "70.0" in msg and "60.0" in msg


def test_drop_within_tolerance_and_unchanged_pass() -> None:
    t = parse_threshold("optimized_test_accuracy:5")
    assert check([with_accuracy(0.66)], [with_accuracy(0.70)], [t]) == []
    assert check([with_accuracy(0.70)], [with_accuracy(0.70)], [t]) == []


def test_percent_threshold() -> None:
    t = parse_threshold("optimized_test_accuracy:10%")
    assert check([with_accuracy(0.64)], [with_accuracy(0.70)], [t]) == []  # 8.6 % drop
    assert len(check([with_accuracy(0.62)], [with_accuracy(0.70)], [t])) == 1  # 11.4 %


def test_failed_case_is_a_regression() -> None:
    t = parse_threshold("optimized_test_accuracy:5")
    regs = check([with_accuracy(None)], [with_accuracy(0.7)], [t])
    assert "no score" in regs[0].message()


def test_different_panel_or_model_refused() -> None:
    t = parse_threshold("optimized_test_accuracy:5")
    other_panel = with_accuracy(0.7, data=DataInfo(source="x", digests={"test": "zzz"}))
    with pytest.raises(GateError, match="different test panel"):
        check([with_accuracy(0.7)], [other_panel], [t])
    real = with_accuracy(
        0.7, lm=LMInfo(backend="openai", model="gpt-4.1-nano", base_url=None, simulated=False)
    )
    with pytest.raises(GateError, match="refusing to compare"):
        check([with_accuracy(0.7)], [real], [t])


def test_baseline_files(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="no comparison"):
        resolve_baseline_path("latest", tmp_path)
    older, newer = (
        tmp_path / "comparison_20260101_000000.json",
        tmp_path / "comparison_20261130_000000.json",
    )
    for p in (older, newer):
        p.write_text(json.dumps({"records": [make_record().to_dict()]}))
    assert resolve_baseline_path("latest", tmp_path) == newer
    assert load_baseline_records(newer) == [make_record()]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(GateError, match="not valid JSON"):
        load_baseline_records(tmp_path / "bad.json")


# --- grammar of the new checks ------------------------------------------------------------
def test_exact_and_significant_expressions_parse() -> None:
    assert parse_threshold(" exact ") == Exact()
    assert parse_threshold("optimized_test_accuracy:significant") == Significant(
        "optimized_test_accuracy", 0.0)
    sig = parse_threshold("baseline_test_accuracy:significant:2.5")
    assert sig == Significant("baseline_test_accuracy", 2.5)
    assert sig.describe() == "baseline_test_accuracy:significant:2.5"


@pytest.mark.parametrize(("bad", "message"), [
    ("optimized_test_accuracy:significant:x", "METRIC:significant:POINTS"),
    ("optimized_test_accuracy:significant:-1", "METRIC:significant:POINTS"),
    ("optimized_test_accuracy:significant:", "METRIC:significant:POINTS"),
    ("improvement:significant", "no per-item results"),
    ("best_val_score:significant", "no per-item results"),
    ("accuracy:significant", "unknown metric 'accuracy'"),
    ("exactly", "expected METRIC:POINTS"),
])
def test_bad_new_expressions_are_clear(bad: str, message: str) -> None:
    with pytest.raises(GateError, match=re.escape(message)):
        parse_threshold(bad)


@pytest.mark.parametrize("bad", ["0", "1", "1.5", "-0.05", "x", "nan", ""])
def test_alpha_outside_zero_one_is_refused(bad: str) -> None:
    with pytest.raises(GateError, match="--mipro-compare-alpha"):
        parse_alpha(bad)


def test_alpha_default_and_given() -> None:
    assert parse_alpha(None) == 0.05
    assert parse_alpha("0.01") == 0.01


# --- exact -------------------------------------------------------------------------------------
EXACT_CHECK = [Exact()]


def test_exact_passes_an_identical_rerun() -> None:
    assert check([factories.record()], [factories.record()], EXACT_CHECK) == []


def test_exact_names_changed_predictions_with_counts_and_first_ids() -> None:
    old = factories.record(optimized="11111", baseline="00000")
    new = factories.record(optimized="10000", baseline="00000")
    [failure] = check([new], [old], EXACT_CHECK)
    assert isinstance(failure, Changed)
    assert failure.line() == (
        f"CHANGED {old.case_id}: baseline predictions unchanged; optimized predictions changed "
        "on 4 of 5 items (test:1, test:2, test:3, ...); prompt changed: no; usage changed: no")


def test_exact_sees_a_baseline_prediction_change_even_with_the_same_accuracy() -> None:
    # Same accuracy (2 of 4 right), different items: a points threshold of 0 passes this.
    old, new = factories.record(baseline="1100"), factories.record(baseline="0011")
    assert check([new], [old], [parse_threshold("baseline_test_accuracy:0")]) == []
    [failure] = check([new], [old], EXACT_CHECK)
    assert "baseline predictions changed on 4 of 4 items (test:0, test:1, test:2, ...)" \
        in failure.line()


def test_exact_names_prompt_parts_and_usage_counts() -> None:
    old = factories.record()
    new = factories.record(instruction="Another instruction.", demos=[("q", "card_arrival")],
                           calls=(4, 31, 4))
    [failure] = check([new], [old], EXACT_CHECK)
    line = failure.line()
    assert "prompt changed: yes (instruction, demos)" in line
    assert "usage changed: optimize.calls 30->31, optimize.input_tokens 3000->3100, " \
           "optimize.output_tokens 300->310" in line
    only_demos = factories.record(demos=[("q", "card_arrival")])
    assert "prompt changed: yes (demos)" in check([only_demos], [old], EXACT_CHECK)[0].line()


def test_exact_sees_a_case_that_now_fails() -> None:
    old = factories.record()
    new = factories.record(status="failed", error="boom")
    line = check([new], [old], EXACT_CHECK)[0].line()
    assert "status succeeded -> failed" in line
    assert "optimized predictions changed on 4 of 4 items" in line
    assert "prompt changed: yes (prompt missing in the new run)" in line


def test_exact_refuses_a_real_lm_baseline_before_anything_runs() -> None:
    real = factories.record(simulated=False)
    with pytest.raises(GateError, match="exact needs deterministic runs, but the baseline ran"):
        preflight([real], EXACT_CHECK)


def test_exact_refuses_a_real_lm_run() -> None:
    real = factories.record(simulated=False)
    with pytest.raises(GateError, match="exact needs deterministic runs, but the baseline ran"):
        check([real], [real], EXACT_CHECK)
    # Against a simulated baseline, a real run is refused by the model rule already.
    with pytest.raises(GateError, match="refusing to compare"):
        check([real], [factories.record()], EXACT_CHECK)


# --- significance -------------------------------------------------------------------------------
SIG = parse_threshold("optimized_test_accuracy:significant")


def sig_record(optimized: str, **over) -> RunRecord:
    return factories.record(optimized=optimized, baseline="0" * len(optimized), **over)


def test_significantly_worse_fails_with_hand_computed_p() -> None:
    # 10 discordant items, all lost: exact two-sided p = 2 * 0.5**10.
    old, new = sig_record("1" * 40), sig_record("0" * 10 + "1" * 30)
    outcome = evaluate([new], [old], [SIG])
    [test] = outcome.failures
    assert isinstance(test, SignificanceTest)
    assert test.p == pytest.approx(2 * 0.5**10)
    assert test.p_holm == pytest.approx(2 * 0.5**10) and test.m == 1
    assert test.new - test.old == pytest.approx(-0.25)
    assert test.ci_high < 0 and test.confidence == pytest.approx(0.95)
    assert "significantly worse at alpha 0.05" in test.line()
    assert "100.0 -> 75.0 (-25.0 points, 95% CI [" in test.line()
    assert outcome.notes == [test.summary() + ": FAILS"]


def test_a_small_drop_is_not_significant_and_still_printed() -> None:
    # 2 lost of 2 discordant: p = 2 * 0.25 = 0.5.
    old, new = sig_record("1" * 40), sig_record("00" + "1" * 38)
    outcome = evaluate([new], [old], [SIG])
    assert outcome.failures == []
    [note] = outcome.notes
    assert "100.0 -> 95.0 (-5.0 points" in note and "McNemar p=0.5000" in note
    assert note.endswith(": passes")


def test_significantly_better_passes() -> None:
    old, new = sig_record("0" * 10 + "1" * 30), sig_record("1" * 40)
    assert evaluate([new], [old], [SIG]).failures == []


def test_holm_correction_across_cases() -> None:
    # Each case loses 6 of 6 discordant items: p = 2 * 0.5**6 = 0.03125 < 0.05 alone...
    old = [sig_record("1" * 10, seed=s) for s in (1, 2, 3)]
    new = [sig_record("0" * 6 + "1" * 4, seed=s) for s in (1, 2, 3)]
    assert len(check(new[:1], old[:1], [SIG])) == 1
    # ...but 3 * 0.03125 = 0.094 after Holm over the three cases gated together.
    outcome = evaluate(new, old, [SIG])
    assert outcome.failures == []
    assert all("Holm p=0.0938 (m=3)" in note for note in outcome.notes)
    # A looser alpha lets them fail again.
    assert len(check(new, old, [SIG], alpha=0.1)) == 3


def test_significant_with_points_needs_both() -> None:
    old, new = sig_record("1" * 40), sig_record("0" * 10 + "1" * 30)  # -25 points, p = 0.002
    assert check([new], [old], [parse_threshold("optimized_test_accuracy:significant:30")]) == []
    assert len(check([new], [old],
                     [parse_threshold("optimized_test_accuracy:significant:25")])) == 1


def test_alpha_sets_the_ci_level() -> None:
    old, new = sig_record("1" * 40), sig_record("00" + "1" * 38)
    [note] = evaluate([new], [old], [SIG], alpha=0.1).notes
    assert "90% CI" in note


def test_holm_matches_hand_values() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_significance_refuses_a_baseline_without_per_item_results() -> None:
    old = dataclasses.replace(sig_record("1" * 4), results=Scores(
        baseline_test_accuracy=0.0, optimized_test_accuracy=1.0, best_val_score=0.5))
    with pytest.raises(GateError, match=r"the baseline has no per-item results \(per_item\)"):
        preflight([old], [SIG])


def test_significance_refuses_another_panel() -> None:
    old = sig_record("1" * 4, test_digest="another-panel")
    with pytest.raises(GateError, match="different test panel"):
        check([sig_record("1" * 4)], [old], [SIG])


def test_significance_fails_a_case_that_lost_its_results() -> None:
    old, new = sig_record("1" * 4), factories.record(status="failed", error="boom")
    [failure] = check([new], [old], [SIG])
    assert "no per-item results (the case failed)" in failure.line()


# --- disappeared cases and `latest` ---------------------------------------------------------------
def test_a_baseline_case_missing_from_the_run_fails_unless_deselected() -> None:
    dspy, synth = factories.record(), factories.record(optimizer="synth_mipro")
    [gone] = check([dspy], [dspy, synth], [])
    assert gone.line() == f"case disappeared: {synth.case_id}"
    dspy_only = Selection(optimizers=frozenset({"dspy_miprov2"}))
    assert check([dspy], [dspy, synth], [], selection=dspy_only) == []
    both = Selection(optimizers=frozenset({"dspy_miprov2", "synth_mipro"}))
    assert len(check([dspy], [dspy, synth], [], selection=both)) == 1
    fewshot = factories.record(mode="fewshot")
    only_instruction = Selection(modes=frozenset({"instruction_only"}))
    assert check([dspy], [dspy, fewshot], [], selection=only_instruction) == []
    assert check([dspy], [dspy, fewshot], [], selection=Selection(seeds=frozenset({0}))) != []


def _comparison(path: Path, generated_at: str | None) -> Path:
    payload: dict = {"records": [factories.record().to_dict()]}
    if generated_at is not None:
        payload["run"] = {"generated_at": generated_at}
    path.write_text(json.dumps(payload))
    return path


def test_latest_is_the_newest_recorded_run_not_the_last_name(tmp_path: Path) -> None:
    recorded_later = _comparison(tmp_path / "comparison_20260101_000000_1.json",
                                 "2026-12-01T10:00:00+00:00")
    _comparison(tmp_path / "comparison_20261130_000000.json", "2026-11-30T00:00:00+00:00")
    assert resolve_baseline_path("latest", tmp_path) == recorded_later


def test_latest_falls_back_to_mtime_without_a_recorded_time(tmp_path: Path) -> None:
    touched_later = _comparison(tmp_path / "comparison_a.json", None)
    older = _comparison(tmp_path / "comparison_b.json", None)
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(touched_later, (2_000_000, 2_000_000))
    assert resolve_baseline_path("latest", tmp_path) == touched_later
