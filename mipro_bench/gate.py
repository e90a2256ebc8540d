"""Regression gating against a previous comparison, in pytest-benchmark's grammar.

`--mipro-compare PATH|latest` names the earlier comparison JSON (`latest`: the
comparison_*.json in the results directory with the newest recorded time).
Each `--mipro-compare-fail=EXPR` adds one check:

- `METRIC:N` fails when METRIC dropped by more than N points (accuracies are
  0..1 in records, points are 0..100 here); `METRIC:N%` when it dropped by
  more than N percent of its old value.
- `METRIC:significant` fails when the new run is worse than the baseline on the
  same test items with paired significance: the two-sided exact McNemar p of
  per-item correctness (new vs old), Holm-corrected over every significance test
  of the gate, is below alpha (`--mipro-compare-alpha`, default 0.05) and the
  new accuracy is the lower one. `METRIC:significant:N` also needs a drop of at
  least N points. A real LM is noisy: a fixed drop in points either cries wolf
  on 300 items or misses real losses, and significance is what separates them.
- `exact` fails on any change against the baseline of a deterministic
  (simulated) run: a per-item prediction (baseline or optimized), the optimized
  prompt, or a usage count. A deterministic run that changes at all changed for
  a reason, and the reason must be looked at, not tolerated within N points.

Whatever the checks, a baseline case that this run was asked to run but did not
record fails as "case disappeared" (see `Selection`). Runs on a different panel
or model are refused: comparing them would be the old benchmark's mistake again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mipro_bench.errors import UserError
from mipro_bench.results import ItemResult, RecordError, RunRecord

# metric -> (how to read it from a record, higher is better?)
METRICS: dict[str, tuple[str, bool]] = {
    "optimized_test_accuracy": ("optimized_test_accuracy", True),
    "baseline_test_accuracy": ("baseline_test_accuracy", True),
    "improvement": ("improvement", True),
    "best_val_score": ("best_val_score", True),
}
# The metrics with per-item correctness behind them (the Scores field), which is what a
# paired significance test needs; improvement and best_val_score have none.
PAIRED_METRICS: dict[str, str] = {
    "optimized_test_accuracy": "per_item",
    "baseline_test_accuracy": "baseline_per_item",
}
EXACT = "exact"
DEFAULT_ALPHA = 0.05
USAGE_COUNTS = ("calls", "input_tokens", "output_tokens", "errors")
FIRST_IDS = 3  # how many changed item ids a diff names
_EXPR = re.compile(r"^(?P<metric>[a-z_]+):(?P<amount>\d+(\.\d+)?)(?P<pct>%?)$")
_SIGNIFICANT = re.compile(r"^(?P<metric>[a-z_]+):significant(?::(?P<amount>.*))?$")


class GateError(UserError, ValueError):
    """A gate that cannot be applied (bad expression, missing or incomparable baseline)."""


# --- the checks an expression parses to ----------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """METRIC:N or METRIC:N%: a drop larger than N points (or N percent) fails."""

    metric: str
    amount: float
    percent: bool

    def describe(self) -> str:
        return f"{self.metric}:{self.amount:g}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class Significant:
    """METRIC:significant[:N]: significantly worse (and by at least N points) fails."""

    metric: str
    min_points: float = 0.0

    def describe(self) -> str:
        return f"{self.metric}:significant" + (f":{self.min_points:g}" if self.min_points else "")


@dataclass(frozen=True)
class Exact:
    """exact: any change of a deterministic run's predictions, prompt or usage fails."""

    def describe(self) -> str:
        return EXACT


Check = Threshold | Significant | Exact


def parse_threshold(expr: str) -> Check:
    """One --mipro-compare-fail expression; GateError (a usage error) when malformed."""
    text = expr.strip()
    if text == EXACT:
        return Exact()
    significant = _SIGNIFICANT.match(text)
    if significant:
        metric = _known_metric(expr, significant["metric"])
        if metric not in PAIRED_METRICS:
            raise GateError(
                f"--mipro-compare-fail={expr!r}: {metric} has no per-item results to test for "
                f"significance; one of {', '.join(PAIRED_METRICS)}"
            )
        amount = significant["amount"]
        if amount is not None and not re.fullmatch(r"\d+(\.\d+)?", amount):
            raise GateError(
                f"--mipro-compare-fail={expr!r}: expected METRIC:significant or "
                "METRIC:significant:POINTS, e.g. optimized_test_accuracy:significant:3"
            )
        return Significant(metric, float(amount) if amount is not None else 0.0)
    match = _EXPR.match(text)
    if not match:
        raise GateError(
            f"--mipro-compare-fail={expr!r}: expected METRIC:POINTS, METRIC:PERCENT%, "
            "METRIC:significant[:POINTS] or exact, e.g. optimized_test_accuracy:5"
        )
    return Threshold(_known_metric(expr, match["metric"]), float(match["amount"]),
                     bool(match["pct"]))


def _known_metric(expr: str, metric: str) -> str:
    if metric not in METRICS:
        raise GateError(
            f"--mipro-compare-fail={expr!r}: unknown metric {metric!r}; one of {', '.join(METRICS)}"
        )
    return metric


def parse_alpha(value: str | float | None) -> float:
    """--mipro-compare-alpha: a probability strictly between 0 and 1 (None: the default)."""
    if value is None:
        return DEFAULT_ALPHA
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        alpha = float("nan")
    if not 0.0 < alpha < 1.0:  # also false for nan
        raise GateError(f"--mipro-compare-alpha {value!r}: expected a number between 0 and 1 "
                        "(exclusive), e.g. 0.05")
    return alpha


# --- which baseline cases this run must have -----------------------------------------------
@dataclass(frozen=True)
class Selection:
    """The cases a run was asked to run: None in a field means every value.

    The rule for "case disappeared": a baseline case must have a record in this run
    unless the run's own selection leaves it out (--mipro-optimizers / --dspy-only /
    --synth-only, --mipro-modes, --mipro-seeds, --mipro-model, or the lists of another
    --mipro-matrix file). Everything else that loses a case (an edit of the default
    matrix, a crash before the record, a collection error, -k or a narrower test path)
    fails the gate, because from the results alone it cannot be told apart from a case
    that silently stopped running.
    """

    optimizers: frozenset[str] | None = None
    modes: frozenset[str] | None = None
    seeds: frozenset[int] | None = None
    models: frozenset[str] | None = None

    def selects(self, record: RunRecord) -> bool:
        return all(allowed is None or value in allowed for allowed, value in (
            (self.optimizers, record.optimizer), (self.modes, record.config.mode),
            (self.seeds, record.config.seed), (self.models, record.lm.model)))


# --- what the gate found ---------------------------------------------------------------------
class Failure(Protocol):
    """One problem the gate found: which case, and the line that says what."""

    @property
    def case_id(self) -> str: ...

    def line(self) -> str: ...


@dataclass(frozen=True)
class Regression:
    case_id: str
    threshold: Threshold
    old: float
    new: float

    def message(self) -> str:
        unit = "%" if self.threshold.percent else " points"
        new = "no score (the case failed)" if self.new == float("-inf") else f"{self.new * 100:.1f}"
        return (
            f"{self.case_id}: {self.threshold.metric} fell from {self.old * 100:.1f} to "
            f"{new} (allowed drop {self.threshold.amount:g}{unit})"
        )

    def line(self) -> str:
        return f"REGRESSION {self.message()}"


@dataclass(frozen=True)
class Disappeared:
    case_id: str

    def line(self) -> str:
        return f"case disappeared: {self.case_id}"


@dataclass(frozen=True)
class ItemsDiff:
    """How one side's per-item results differ: changed (or added/removed) ids of total."""

    changed: int
    total: int
    first: tuple[str, ...]

    def describe(self, side: str) -> str:
        if not self.changed:
            return f"{side} predictions unchanged"
        more = ", ..." if self.changed > len(self.first) else ""
        return (f"{side} predictions changed on {self.changed} of {self.total} items "
                f"({', '.join(self.first)}{more})")


@dataclass(frozen=True)
class Changed:
    """`exact`: one case's differences from its baseline, in one line."""

    case_id: str
    status: tuple[str, str] | None
    baseline_items: ItemsDiff
    optimized_items: ItemsDiff
    prompt: tuple[str, ...]  # the prompt parts that changed: instruction, demos
    usage: tuple[str, ...]  # e.g. "optimize.calls 612->615"

    def line(self) -> str:
        parts = [f"status {self.status[0]} -> {self.status[1]}"] if self.status else []
        parts += [self.baseline_items.describe("baseline"),
                  self.optimized_items.describe("optimized"),
                  "prompt changed: " + (f"yes ({', '.join(self.prompt)})" if self.prompt else "no"),
                  "usage changed: " + (", ".join(self.usage) if self.usage else "no")]
        return f"CHANGED {self.case_id}: {'; '.join(parts)}"


@dataclass(frozen=True)
class SignificanceTest:
    """One case's paired test for one metric, new run against baseline (difference = new - old).

    A case whose new run has no per-item results (it failed) has no test: p is None and
    it fails outright, as a lost score does under METRIC:N.
    """

    case_id: str
    check: Significant
    old: float
    new: float | None
    n: int = 0
    ci_low: float = 0.0
    ci_high: float = 0.0
    confidence: float = 0.95
    p: float | None = None
    p_holm: float | None = None
    m: int = 1
    alpha: float = DEFAULT_ALPHA
    failed: bool = False

    def summary(self) -> str:
        metric = self.check.metric
        if self.new is None or self.p is None:
            return f"{self.case_id}: {metric} {self.old * 100:.1f} -> no per-item results " \
                   "(the case failed)"
        diff = (self.new - self.old) * 100
        return (
            f"{self.case_id}: {metric} {self.old * 100:.1f} -> {self.new * 100:.1f} "
            f"({diff:+.1f} points, {self.confidence:.0%} CI [{self.ci_low * 100:+.1f}, "
            f"{self.ci_high * 100:+.1f}], n={self.n}), McNemar p={self.p:.4f}, "
            f"Holm p={self.p_holm:.4f} (m={self.m})"
        )

    def line(self) -> str:
        need = f" by at least {self.check.min_points:g} points" if self.check.min_points else ""
        return (f"REGRESSION {self.summary()}: significantly worse{need} at alpha "
                f"{self.alpha:g}")


@dataclass
class GateOutcome:
    """The failures, and the lines every significance test prints whether it passed or not."""

    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- baseline files --------------------------------------------------------------------------
def resolve_baseline_path(spec: str, results_dir: Path) -> Path:
    """`latest` is the comparison_*.json in the results directory recorded last."""
    if spec == "latest":
        found = list(results_dir.glob("comparison_*.json"))
        if not found:
            raise GateError(f"--mipro-compare latest: no comparison_*.json in {results_dir}")
        return max(found, key=_recorded_order)
    path = Path(spec)
    if not path.is_file():
        raise GateError(f"--mipro-compare {spec}: no such file")
    return path


def _recorded_order(path: Path) -> tuple[datetime, float, str]:
    """When a comparison was made, as it says itself (run.generated_at), else its mtime.

    Names sort wrongly across days once the `_1` suffix or another clock's stamp is
    involved, and a copied file keeps its name but not its mtime: the recorded time is
    the one that travels with the file.
    """
    mtime = path.stat().st_mtime
    when = datetime.fromtimestamp(mtime, UTC)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        recorded = datetime.fromisoformat(data["run"]["generated_at"])
        when = recorded if recorded.tzinfo else recorded.replace(tzinfo=UTC)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return when, mtime, path.name


def load_baseline_records(path: Path) -> list[RunRecord]:
    """The records of a comparison JSON (or of a single record file)."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GateError(f"{path}: not valid JSON ({exc})") from None
    raw = data.get("records") if isinstance(data, dict) and "records" in data else [data]
    try:
        return [RunRecord.from_dict(r) for r in raw]
    except RecordError as exc:
        raise GateError(f"{path}: {exc}") from None


# --- checking ----------------------------------------------------------------------------------
def is_deterministic(record: RunRecord) -> bool:
    """A run that repeats exactly: the simulated LM, or a replay of a recording."""
    return record.lm.simulated or record.lm.replayed_from is not None


def preflight(baseline: Sequence[RunRecord], checks: Sequence[Check], *,
              replaying: bool = False) -> None:
    """Refuse, before any case runs, a baseline these checks cannot use (one line).

    `replaying`: this run answers from a recording, so it repeats exactly even when the
    baseline (the recorded live run) was a real model: exact gating is what it is for."""
    if any(isinstance(c, Exact) for c in checks) and not replaying:
        for old in baseline:
            if not is_deterministic(old):
                raise GateError(_not_deterministic("the baseline", old))
    for check_ in checks:
        if isinstance(check_, Significant):
            for old in baseline:
                if old.status == "succeeded" and not _items(old, check_.metric):
                    raise GateError(
                        f"{old.case_id}: the baseline has no per-item results "
                        f"({PAIRED_METRICS[check_.metric]}), which {check_.describe()} needs; "
                        "re-record the baseline with this version"
                    )


def check(
    current: list[RunRecord], baseline: list[RunRecord], thresholds: Sequence[Check],
    *, alpha: float = DEFAULT_ALPHA, selection: Selection | None = None,
) -> list[Failure]:
    """The failures of current against baseline; raises GateError on incomparable runs."""
    return evaluate(current, baseline, thresholds, alpha=alpha, selection=selection).failures


def evaluate(
    current: list[RunRecord], baseline: list[RunRecord], thresholds: Sequence[Check],
    *, alpha: float = DEFAULT_ALPHA, selection: Selection | None = None,
) -> GateOutcome:
    """Apply every check to every case both runs have, and the disappearance rule."""
    preflight(baseline, thresholds,
              replaying=bool(current) and all(r.lm.replayed_from for r in current))
    old_by_case = {r.case_id: r for r in baseline}
    if current and baseline and not any(r.case_id in old_by_case for r in current):
        # The case id names the model, so a baseline from another model shares no case with
        # this run: without this, such a gate would compare nothing and pass.
        raise GateError(
            f"the baseline has none of this run's cases (it ran {_describe(baseline)}; this "
            f"run {_describe(current)}); compare runs of the same model and matrix"
        )
    pairs = [(record, old_by_case[record.case_id]) for record in current
             if record.case_id in old_by_case]
    for record, old in pairs:
        _refuse_incomparable(record, old)
    outcome = GateOutcome()
    new_ids = {r.case_id for r in current}
    selection = selection or Selection()
    outcome.failures += [Disappeared(old.case_id) for old in baseline
                         if old.case_id not in new_ids and selection.selects(old)]
    for threshold in thresholds:
        if isinstance(threshold, Threshold):
            outcome.failures += _drops(pairs, threshold)
        elif isinstance(threshold, Exact):
            outcome.failures += [d for record, old in pairs
                                 if (d := exact_diff(record, old)) is not None]
    tests = significance_tests(pairs, [t for t in thresholds if isinstance(t, Significant)],
                               alpha=alpha)
    outcome.notes += [test.summary() + (": FAILS" if test.failed else ": passes")
                      for test in tests]
    outcome.failures += [test for test in tests if test.failed]
    return outcome


def _refuse_incomparable(record: RunRecord, old: RunRecord) -> None:
    """Same panel, same model, both simulated or both real (so `exact`, which preflight
    allows only for a deterministic baseline, only ever sees deterministic runs)."""
    if old.data.digests.get("test") != record.data.digests.get("test"):
        raise GateError(
            f"{record.case_id}: the baseline used a different test panel (digest "
            f"{str(old.data.digests.get('test'))[:12]} vs "
            f"{str(record.data.digests.get('test'))[:12]}); compare runs on the same splits"
        )
    if (old.lm.model, old.lm.simulated) != (record.lm.model, record.lm.simulated):
        raise GateError(
            f"{record.case_id}: the baseline used model {old.lm.model!r} "
            f"(simulated={old.lm.simulated}), this run {record.lm.model!r} "
            f"(simulated={record.lm.simulated}); refusing to compare"
        )


def _not_deterministic(which: str, record: RunRecord) -> str:
    return (f"--mipro-compare-fail=exact needs deterministic runs, but {which} ran "
            f"{record.case_id} on a real LM ({record.lm.backend}); gate real runs with "
            "METRIC:significant")


def _value(record: RunRecord, metric: str) -> float | None:
    attr, _ = METRICS[metric]
    return getattr(record.results, attr)


def _drops(pairs: list[tuple[RunRecord, RunRecord]], threshold: Threshold) -> list[Failure]:
    out: list[Failure] = []
    for record, old in pairs:
        new_v, old_v = _value(record, threshold.metric), _value(old, threshold.metric)
        if old_v is None:
            continue
        if new_v is None:  # a failed case lost its score: that is a regression
            new_v = float("-inf")
        allowed = (
            abs(old_v) * threshold.amount / 100 if threshold.percent else threshold.amount / 100
        )
        if old_v - new_v > allowed + 1e-12:
            out.append(Regression(record.case_id, threshold, old_v, new_v))
    return out


# --- exact -------------------------------------------------------------------------------------
def exact_diff(record: RunRecord, old: RunRecord) -> Changed | None:
    """What changed in a deterministic case against its baseline, or None when nothing did."""
    status = (old.status, record.status) if old.status != record.status else None
    base = _items_diff(old.results.baseline_per_item, record.results.baseline_per_item)
    opt = _items_diff(old.results.per_item, record.results.per_item)
    prompt = _prompt_diff(old, record)
    usage = _usage_diff(old, record)
    if status is None and not (base.changed or opt.changed or prompt or usage):
        return None
    return Changed(record.case_id, status, base, opt, prompt, usage)


def _items_diff(old: Sequence[ItemResult], new: Sequence[ItemResult]) -> ItemsDiff:
    """Items whose result differs, or that only one side has, in the baseline's order."""
    old_by_id = {i.id: i for i in old}
    new_by_id = {i.id: i for i in new}
    order = [i.id for i in old] + [i.id for i in new if i.id not in old_by_id]
    changed = [item_id for item_id in order if old_by_id.get(item_id) != new_by_id.get(item_id)]
    return ItemsDiff(len(changed), len(order), tuple(changed[:FIRST_IDS]))


def _prompt_diff(old: RunRecord, new: RunRecord) -> tuple[str, ...]:
    a, b = old.optimized_prompt, new.optimized_prompt
    if a == b:
        return ()
    if a is None or b is None:
        return ("prompt missing in the " + ("baseline" if a is None else "new run"),)
    return tuple(part for part, same in (("instruction", a.instruction == b.instruction),
                                         ("demos", a.demos == b.demos)) if not same)


def _usage_diff(old: RunRecord, new: RunRecord) -> tuple[str, ...]:
    out = []
    for phase in sorted(old.usage.keys() | new.usage.keys()):
        a, b = old.usage.get(phase), new.usage.get(phase)
        for name in USAGE_COUNTS:
            va = getattr(a, name) if a is not None else None
            vb = getattr(b, name) if b is not None else None
            if va != vb:
                out.append(f"{phase}.{name} {va}->{vb}")
    return tuple(out)


# --- significance ------------------------------------------------------------------------------
def _items(record: RunRecord, metric: str) -> tuple[ItemResult, ...]:
    items: tuple[ItemResult, ...] = getattr(record.results, PAIRED_METRICS[metric])
    return items


def significance_tests(
    pairs: list[tuple[RunRecord, RunRecord]], checks: Sequence[Significant], *, alpha: float,
) -> list[SignificanceTest]:
    """Every (case, significant metric) test, Holm-corrected as one family.

    The family is every test this gate makes (cases x significant metrics): with m
    cases gated at alpha each, one of them would fail by chance far more often than
    alpha; Holm's step-down keeps the chance of any false failure at most alpha.
    """
    from mipro_bench.stats import PairingError, paired_comparison  # numpy/scipy: only here

    tests: list[SignificanceTest] = []
    for check_ in checks:
        for record, old in pairs:
            old_v = _value(old, check_.metric)
            if old_v is None:  # the baseline case failed: nothing to be worse than
                continue
            new_items = _items(record, check_.metric)
            if not new_items:
                tests.append(SignificanceTest(record.case_id, check_, old_v, None, alpha=alpha,
                                              failed=True))
                continue
            try:
                cmp = paired_comparison(new_items, _items(old, check_.metric),
                                        confidence=1.0 - alpha)
            except PairingError as exc:
                raise GateError(f"{record.case_id}: {exc}") from None
            tests.append(SignificanceTest(
                record.case_id, check_, old=cmp.accuracy_b, new=cmp.accuracy_a, n=cmp.n,
                ci_low=cmp.ci_low, ci_high=cmp.ci_high, confidence=cmp.confidence,
                p=cmp.mcnemar_p, alpha=alpha))
    tested = [i for i, t in enumerate(tests) if t.p is not None]
    adjusted = dict(zip(tested, holm([tests[i].p or 0.0 for i in tested]), strict=True))
    for i in tested:
        test = tests[i]
        drop = test.old - (test.new or 0.0)
        worse = drop > 1e-12 and drop + 1e-12 >= test.check.min_points / 100
        tests[i] = replace(test, p_holm=adjusted[i], m=len(tested),
                           failed=worse and adjusted[i] < alpha)
    return tests


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p values, in the input's order (adjusted p < alpha <=> Holm rejects)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _describe(records: list[RunRecord]) -> str:
    models = sorted({f"{r.lm.model} ({'simulated' if r.lm.simulated else 'real'})"
                     for r in records})
    return f"model {', '.join(models)}: {', '.join(sorted(r.case_id for r in records)[:3])}" + (
        ", ..." if len(records) > 3 else "")
