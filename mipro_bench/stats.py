"""Uncertainty for accuracies: bootstrap CIs, paired differences, McNemar, seed spread.

A benchmark that names a winner from two point accuracies on a few hundred
items mostly measures noise. Everything here is about the *test items*: a
percentile bootstrap over items for one accuracy, a paired bootstrap over the
same items for a difference of two prompts (pairing removes the item
difficulty both sides share), and an exact McNemar test on the discordant
pairs. Across optimizer seeds we only describe the spread (mean, std, range);
the seeds are few and are not a sample to bootstrap.

The bootstrap draws its resamples as multinomial counts over the distinct
values of the vector instead of as index arrays. A resample of n items drawn
with replacement is exactly a multinomial(n, empirical frequencies) count of
each distinct value, so the resample distribution is the same, and the cost
no longer grows with n times the number of resamples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.stats import binomtest

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 10_000

SeedLike = int | Sequence[int] | np.random.SeedSequence


class StatsError(ValueError):
    """Input these statistics cannot be computed from (empty, mismatched, out of range)."""


class PairingError(StatsError):
    """Two sides that were not scored on the same items, so they cannot be paired."""


class Scored(Protocol):
    """Anything with a test-item id and a correctness flag (results.ItemResult)."""

    @property
    def id(self) -> str: ...

    @property
    def correct(self) -> bool: ...


ItemScores = Mapping[str, bool] | Mapping[str, float] | Iterable[Scored]


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


class _WithInterval:
    """The CI fields as an Interval, for every result that carries ci_low/ci_high/confidence."""

    ci_low: float
    ci_high: float
    confidence: float

    @property
    def interval(self) -> Interval:
        return Interval(self.ci_low, self.ci_high, self.confidence)


class _WithSignificance(_WithInterval):
    """A difference with a CI: significant when the CI excludes zero."""

    @property
    def significant(self) -> bool:
        """True when the CI of the difference excludes zero (the only case a winner is named)."""
        return self.interval.excludes_zero


@dataclass(frozen=True)
class AccuracyEstimate(_WithInterval):
    """An accuracy on n items with its percentile-bootstrap CI."""

    accuracy: float
    n: int
    correct: int
    ci_low: float
    ci_high: float
    confidence: float


@dataclass(frozen=True)
class PairedDifference(_WithSignificance):
    """mean(a) - mean(b) over the same items, with a paired bootstrap CI.

    The per-item scores may be fractions (an item's accuracy averaged over seeds).
    """

    n: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float


@dataclass(frozen=True)
class PairedComparison(_WithSignificance):
    """Two prompts' right/wrong on the same items: difference, paired CI, McNemar.

    a_only counts items A got right and B wrong (the discordant pairs), b_only the reverse.
    """

    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    both_correct: int
    a_only: int
    b_only: int
    both_wrong: int
    mcnemar_p: float


@dataclass(frozen=True)
class SeedSummary:
    """Spread of one number across optimizer seeds (std uses ddof=1 when n > 1, else 0)."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    values: tuple[float, ...]


def _check(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise StatsError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise StatsError(f"n_resamples must be a positive integer, got {n_resamples!r}")


def bootstrap_means(
    values: Sequence[float] | np.ndarray, *, n_resamples: int, seed: SeedLike = 0
) -> np.ndarray:
    """The means of `n_resamples` bootstrap resamples of `values` (drawn with replacement)."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise StatsError("cannot bootstrap an empty sample")
    _check(DEFAULT_CONFIDENCE, n_resamples)
    levels, counts = np.unique(arr, return_counts=True)
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(arr.size, counts / arr.size, size=int(n_resamples))
    return (drawn @ levels) / arr.size


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: SeedLike = 0,
) -> Interval:
    """Percentile bootstrap CI of a mean; a constant sample's CI is the point itself."""
    _check(confidence, n_resamples)
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise StatsError("cannot compute a confidence interval of an empty sample")
    if np.all(arr == arr[0]):
        point = float(arr[0])
        return Interval(point, point, confidence)
    means = bootstrap_means(arr, n_resamples=n_resamples, seed=seed)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(float(low), float(high), confidence)


def accuracy_ci(
    correct: Sequence[bool] | np.ndarray,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: SeedLike = 0,
) -> AccuracyEstimate:
    """Accuracy of a right/wrong vector with its percentile-bootstrap CI."""
    arr = np.asarray(correct)
    if arr.ndim != 1 or arr.size == 0:
        raise StatsError("cannot compute an accuracy of zero items")
    if not np.isin(arr, (0, 1)).all():
        raise StatsError("accuracy needs right/wrong values (booleans or 0/1)")
    arr = arr.astype(float)
    ci = bootstrap_mean_ci(arr, confidence=confidence, n_resamples=n_resamples, seed=seed)
    hits = int(arr.sum())
    return AccuracyEstimate(
        accuracy=hits / arr.size,
        n=int(arr.size),
        correct=hits,
        ci_low=ci.low,
        ci_high=ci.high,
        confidence=confidence,
    )


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p: a binomial test of a_only out of the discordant pairs at 1/2.

    With no discordant pair there is no evidence either way: p = 1.0.
    """
    if a_only < 0 or b_only < 0:
        raise StatsError("discordant counts must be non-negative")
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    return float(binomtest(a_only, discordant, 0.5, alternative="two-sided").pvalue)


def scores_by_id(items: ItemScores, *, side: str = "scores") -> dict[str, float]:
    """Item id -> score (bool as 0/1) from a mapping or from ItemResult-like objects."""
    if isinstance(items, Mapping):
        return {str(key): float(value) for key, value in items.items()}
    out: dict[str, float] = {}
    for item in items:
        if item.id in out:
            raise PairingError(f"{side}: item id {item.id!r} appears more than once")
        out[item.id] = float(item.correct)
    return out


def align(a: ItemScores, b: ItemScores) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Match two sides' scores by item id; refuse when the id sets differ."""
    sa, sb = scores_by_id(a, side="A"), scores_by_id(b, side="B")
    if not sa or not sb:
        raise PairingError("cannot pair an empty set of items")
    if sa.keys() != sb.keys():
        only_a = sorted(sa.keys() - sb.keys())
        only_b = sorted(sb.keys() - sa.keys())
        raise PairingError(
            "the two sides were scored on different test items: "
            f"{len(only_a)} only in A (e.g. {', '.join(only_a[:3]) or '-'}), "
            f"{len(only_b)} only in B (e.g. {', '.join(only_b[:3]) or '-'})"
        )
    ids = tuple(sorted(sa))
    return ids, np.array([sa[i] for i in ids]), np.array([sb[i] for i in ids])


def paired_difference(
    a: ItemScores,
    b: ItemScores,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: SeedLike = 0,
) -> PairedDifference:
    """mean(a) - mean(b) over the same items, CI by resampling items (pairs stay together)."""
    _check(confidence, n_resamples)
    _, va, vb = align(a, b)
    return _difference(va, vb, confidence=confidence, n_resamples=n_resamples, seed=seed)


def _difference(
    va: np.ndarray, vb: np.ndarray, *, confidence: float, n_resamples: int, seed: SeedLike
) -> PairedDifference:
    ci = bootstrap_mean_ci(va - vb, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return PairedDifference(
        n=int(va.size),
        mean_a=float(va.mean()),
        mean_b=float(vb.mean()),
        difference=float((va - vb).mean()),
        ci_low=ci.low,
        ci_high=ci.high,
        confidence=confidence,
    )


def paired_comparison(
    a: ItemScores,
    b: ItemScores,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: SeedLike = 0,
) -> PairedComparison:
    """Right/wrong of two prompts on the same items: difference, paired bootstrap CI, McNemar."""
    _check(confidence, n_resamples)
    _, va, vb = align(a, b)
    if not (np.isin(va, (0.0, 1.0)).all() and np.isin(vb, (0.0, 1.0)).all()):
        raise StatsError("a paired comparison needs right/wrong values; use paired_difference")
    ra, rb = va.astype(bool), vb.astype(bool)
    diff = _difference(va, vb, confidence=confidence, n_resamples=n_resamples, seed=seed)
    a_only = int((ra & ~rb).sum())
    b_only = int((~ra & rb).sum())
    return PairedComparison(
        n=diff.n,
        accuracy_a=diff.mean_a,
        accuracy_b=diff.mean_b,
        difference=diff.difference,
        ci_low=diff.ci_low,
        ci_high=diff.ci_high,
        confidence=confidence,
        both_correct=int((ra & rb).sum()),
        a_only=a_only,
        b_only=b_only,
        both_wrong=int((~ra & ~rb).sum()),
        mcnemar_p=mcnemar_exact(a_only, b_only),
    )


def summarize_seeds(values: Sequence[float]) -> SeedSummary:
    """Mean, std (ddof=1 for n > 1; 0 for a single seed), min and max across seeds."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise StatsError("cannot summarize zero seeds")
    if not np.isfinite(arr).all():
        raise StatsError("seed values must be finite numbers")
    return SeedSummary(
        n=int(arr.size),
        mean=float(arr.mean()),
        std=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        min=float(arr.min()),
        max=float(arr.max()),
        values=tuple(float(v) for v in arr),
    )
