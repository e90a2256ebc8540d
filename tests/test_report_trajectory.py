"""The score-vs-budget chart: only validation points make the "best" line, which never falls;
training-minibatch scores are drawn apart, labelled as such, never called validation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mipro_bench.compare import build_comparison
from mipro_bench.report.charts import (
    MINIBATCH_LABEL,
    best_so_far,
    point_kind,
    trajectory_chart,
    trajectory_figure,
)
from mipro_bench.results import TrajectoryPoint
from tests.factories import record

# What the local Synth backend reports on a small run: minibatch means first (they fall
# from 60 to 40 as the search moves on), then full val evaluations, one of them lower.
SYNTH = (
    TrajectoryPoint(10, 10, 0.6, "candidate 1 (minibatch)"),
    TrajectoryPoint(20, 20, 0.4, "candidate 2 (minibatch)"),
    TrajectoryPoint(30, 30, 0.5, "full eval 1 (val)"),
    TrajectoryPoint(45, 45, 0.3, "full eval 2 (val)"),
    TrajectoryPoint(60, 60, 0.55, "full eval 3 (val)"),
)
DSPY = (TrajectoryPoint(5, 5, 0.5, "default program"), TrajectoryPoint(15, 15, 0.45, "full eval 1"),
        TrajectoryPoint(25, 25, 0.7, "full eval 2"))


def _comparison():
    synth = replace(record(optimizer="synth_mipro", baseline="1" * 10 + "0" * 30,
                           optimized="1" * 12 + "0" * 28), trajectory=SYNTH)
    dspy = replace(record(optimizer="dspy_miprov2", baseline="1" * 10 + "0" * 30,
                          optimized="1" * 14 + "0" * 26), trajectory=DSPY)
    return build_comparison([synth, dspy], n_resamples=100,
                            generated_at="2026-01-01T00:00:00+00:00")


def test_point_kinds() -> None:
    assert [point_kind(p) for p in SYNTH] == ["minibatch", "minibatch", "val", "val", "val"]
    assert {point_kind(p) for p in DSPY} == {"val"}
    assert point_kind(TrajectoryPoint(1, 1, 0.1, "round 1 (online)")) == "online"


def test_best_so_far_uses_validation_points_only_and_never_falls() -> None:
    assert best_so_far(SYNTH) == [(30, 0.5), (45, 0.5), (60, 0.55)]
    assert best_so_far(DSPY) == [(5, 0.5), (15, 0.5), (25, 0.7)]
    assert best_so_far(SYNTH[:2]) == []  # minibatch scores alone make no "best" line


def test_the_chart_draws_monotone_best_lines_and_minibatch_points_apart() -> None:
    fig = trajectory_figure(_comparison())
    assert fig is not None
    ax = fig.axes[0]
    for line in ax.lines:  # every step line is a best-so-far: it never falls
        ys = np.asarray(line.get_ydata(), dtype=float)
        assert (np.diff(ys) >= 0).all(), ys
    # the minibatch scores are the only scatter markers, at their own places
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert sorted(map(tuple, offsets.tolist())) == [(10.0, 60.0), (20.0, 40.0)]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    minibatch = [t for t in labels if "minibatch" in t]
    assert minibatch and all(MINIBATCH_LABEL in t for t in minibatch)
    assert all("minibatch" not in t for t in labels if "best validation" in t)
    assert "validation" not in ax.get_ylabel()


def test_the_svg_labels_minibatch_scores_as_not_validation() -> None:
    svg = trajectory_chart(_comparison())
    assert svg is not None
    assert "training minibatch score (not validation)" in svg
    assert "best validation so far" in svg
