"""Statistics against values computable by hand (or by enumerating every resample)."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from mipro_bench import stats
from mipro_bench.results import ItemResult


def test_all_correct_and_all_wrong_give_the_point_as_ci() -> None:
    for value in (True, False):
        est = stats.accuracy_ci([value] * 37, seed=3)
        assert est.accuracy == float(value)
        assert (est.ci_low, est.ci_high) == (float(value), float(value))
        assert est.n == 37 and est.correct == (37 if value else 0)


def test_equal_vectors_have_a_zero_width_difference_ci() -> None:
    a = {f"t{i}": i % 3 == 0 for i in range(30)}
    comp = stats.paired_comparison(a, dict(a), seed=1)
    assert comp.difference == 0.0
    assert (comp.ci_low, comp.ci_high) == (0.0, 0.0)
    assert comp.mcnemar_p == 1.0
    assert not comp.significant


def test_resample_distribution_equals_exhaustive_enumeration() -> None:
    # Every one of the 4**4 = 256 equally likely index resamples of this vector, enumerated.
    values = np.array([1.0, 0.5, 0.5, 0.0])
    exact = Counter(
        round(float(values[list(idx)].mean()), 6)
        for idx in itertools.product(range(4), repeat=4)
    )
    drawn = stats.bootstrap_means(values, n_resamples=200_000, seed=7)
    seen = Counter(round(float(m), 6) for m in drawn)
    assert set(seen) <= set(exact)
    for mean, count in exact.items():
        assert seen[mean] / drawn.size == pytest.approx(count / 256, abs=0.004), mean


def test_percentile_ci_of_a_tiny_case_by_hand() -> None:
    # [1,1,1,0]: resampled hits ~ Binomial(4, 3/4). P(k<=0) = 1/256 < 2.5% < P(k<=1) = 13/256,
    # so the 2.5% quantile is 1/4; P(k<=3) = 175/256 < 97.5%, so the 97.5% quantile is 1.
    for seed in range(5):
        est = stats.accuracy_ci([True, True, True, False], seed=seed)
        assert est.accuracy == 0.75
        assert (est.ci_low, est.ci_high) == (0.25, 1.0)


def test_paired_difference_ci_and_mcnemar_by_hand() -> None:
    a = [1, 1, 1, 1, 0]
    b = [0, 0, 0, 1, 0]
    # d = [1,1,1,0,0]: resampled sum ~ Binomial(5, 0.6); P(0) = 0.01 < 2.5% < P(<=1) = 0.087,
    # so the low quantile is 1/5; P(<=4) = 0.922 < 97.5%, so the high quantile is 5/5.
    comp = stats.paired_comparison(
        {f"t{i}": bool(v) for i, v in enumerate(a)},
        {f"t{i}": bool(v) for i, v in enumerate(b)},
        seed=11,
    )
    assert comp.accuracy_a == 0.8 and comp.accuracy_b == 0.2
    assert comp.difference == pytest.approx(0.6)
    assert (comp.ci_low, comp.ci_high) == (pytest.approx(0.2), 1.0)
    assert (comp.both_correct, comp.a_only, comp.b_only, comp.both_wrong) == (1, 3, 0, 1)
    assert comp.mcnemar_p == pytest.approx(0.25)  # 2 * (1/2)**3
    assert comp.significant


# Exact two-sided p = min(1, 2 * P(X <= min(a, b))) for X ~ Binomial(a + b, 1/2), written
# out by hand as (twice the tail count) / 2**n, so the test does not repeat the code's own
# scipy call.
@pytest.mark.parametrize(("a_only", "b_only", "expected"), [
    (10, 2, 2 * (1 + 12 + 66) / 2**12),                     # 0.0386
    (2, 10, 2 * (1 + 12 + 66) / 2**12),                     # symmetric
    (3, 9, 2 * (1 + 12 + 66 + 220) / 2**12),                # 0.1460
    (7, 6, 1.0),                                            # the tail is half: 2 * 1/2
    (1, 0, 1.0),                                            # 2 * 1/2
    (0, 5, 2 / 2**5),                                       # 0.0625
    (16, 4, 2 * (1 + 20 + 190 + 1140 + 4845) / 2**20),      # 0.0118
])
def test_mcnemar_matches_hand_computed_exact_binomial_values(a_only: int, b_only: int,
                                                            expected: float) -> None:
    assert stats.mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_known_values() -> None:
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(3, 3) == 1.0
    assert stats.mcnemar_exact(0, 5) == pytest.approx(2 * 0.5**5)
    with pytest.raises(stats.StatsError):
        stats.mcnemar_exact(-1, 2)


def test_paired_comparison_counts_a_handmade_table() -> None:
    # 12 items right only with A, 4 only with B, 30 both, 14 neither.
    cells = [(1, 0)] * 12 + [(0, 1)] * 4 + [(1, 1)] * 30 + [(0, 0)] * 14
    a = [ItemResult(f"x{i}", "l", "l", bool(x)) for i, (x, _) in enumerate(cells)]
    # B listed in reverse order: ids, not positions, pair the items.
    b = [ItemResult(f"x{i}", "l", "l", bool(y)) for i, (_, y) in enumerate(cells)][::-1]
    comp = stats.paired_comparison(a, b, n_resamples=2000)
    assert (comp.a_only, comp.b_only, comp.both_correct, comp.both_wrong) == (12, 4, 30, 14)
    assert comp.difference == pytest.approx(8 / 60)
    # 4 of 16 discordant: 2 * (1 + 16 + 120 + 560 + 1820) / 2**16
    assert comp.mcnemar_p == pytest.approx(2 * 2517 / 2**16, rel=1e-9)


def test_pairing_refuses_different_item_sets() -> None:
    with pytest.raises(stats.PairingError, match=r"1 only in A \(e.g. t3\), 1 only in B"):
        stats.paired_comparison({"t1": True, "t2": False, "t3": True},
                                {"t1": True, "t2": False, "t4": True})
    dup = [ItemResult("t1", "l", "l", True), ItemResult("t1", "l", "l", False)]
    with pytest.raises(stats.PairingError, match="more than once"):
        stats.paired_comparison(dup, dup)


def test_non_binary_scores_need_paired_difference() -> None:
    a, b = {"t1": 0.5, "t2": 1.0}, {"t1": 0.0, "t2": 1.0}
    with pytest.raises(stats.StatsError, match="paired_difference"):
        stats.paired_comparison(a, b)
    diff = stats.paired_difference(a, b, seed=0)
    assert diff.difference == pytest.approx(0.25)
    # d = [0.5, 0]: resample means are 0, 0.25, 0.5 with probabilities 1/4, 1/2, 1/4.
    assert (diff.ci_low, diff.ci_high) == (0.0, 0.5)


def test_seed_summary() -> None:
    s = stats.summarize_seeds([0.5, 0.7, 0.6])
    assert (s.n, s.min, s.max) == (3, 0.5, 0.7)
    assert s.mean == pytest.approx(0.6)
    assert s.std == pytest.approx(0.1)  # ddof=1: sqrt((0.01 + 0.01 + 0) / 2)
    one = stats.summarize_seeds([0.42])
    assert (one.mean, one.std, one.min, one.max) == (0.42, 0.0, 0.42, 0.42)
    with pytest.raises(stats.StatsError):
        stats.summarize_seeds([])


def test_seeded_bootstrap_is_reproducible() -> None:
    x = [True] * 30 + [False] * 20
    assert stats.accuracy_ci(x, seed=5) == stats.accuracy_ci(x, seed=5)
    a = stats.bootstrap_means(np.array(x, float), n_resamples=50, seed=5)
    b = stats.bootstrap_means(np.array(x, float), n_resamples=50, seed=6)
    assert not np.array_equal(a, b)


def test_ci_width_follows_confidence_and_contains_the_estimate() -> None:
    x = [True] * 60 + [False] * 40
    wide = stats.accuracy_ci(x, confidence=0.99, seed=0)
    narrow = stats.accuracy_ci(x, confidence=0.80, seed=0)
    assert wide.ci_low < narrow.ci_low <= 0.6 <= narrow.ci_high < wide.ci_high
    # The normal approximation of a binomial: 1.96 * sqrt(.6 * .4 / 100) ~ 0.096 each side.
    mid = stats.accuracy_ci(x, seed=0)
    assert mid.ci_high - mid.ci_low == pytest.approx(2 * 0.096, abs=0.03)


def test_ci_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(2024)
    p, n, reps = 0.7, 100, 400
    covered = 0
    for rep in range(reps):
        sample = rng.random(n) < p
        est = stats.accuracy_ci(sample, n_resamples=2000, seed=rep)
        covered += est.ci_low <= p <= est.ci_high
    assert 0.90 <= covered / reps <= 0.985


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0}, "confidence"),
        ({"n_resamples": 0}, "n_resamples"),
        ({"n_resamples": 2.5}, "n_resamples"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(stats.StatsError, match=message):
        stats.accuracy_ci([True, False], **kwargs)


def test_empty_and_non_binary_inputs_are_refused() -> None:
    with pytest.raises(stats.StatsError, match="zero items"):
        stats.accuracy_ci([])
    with pytest.raises(stats.StatsError, match="right/wrong"):
        stats.accuracy_ci([0.5, 1.0])
    with pytest.raises(stats.StatsError, match="empty"):
        stats.bootstrap_mean_ci([])
