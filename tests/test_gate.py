"""Regression gating: grammar, drops in points and percent, refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mipro_bench.gate import (
    GateError,
    check,
    load_baseline_records,
    parse_threshold,
    resolve_baseline_path,
)
from mipro_bench.results import DataInfo, LMInfo, Scores
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
