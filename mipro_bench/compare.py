"""The comparison model: run records in, one fair, versioned comparison out.

Every report (terminal table, Markdown, HTML, JSON) renders this one value, so
the fairness rules live here and nowhere else:
- rows are one optimizer x mode x model; optimizer seeds are aggregated (mean
  and spread) and every seed's values are kept;
- an accuracy is always the suite's own test accuracy with a CI over test
  items; an optimizer's self-reported best score is kept apart and labelled;
- optimizers are compared only within one mode, one model and one executor
  (the format a prompt runs in), on the same test items (paired bootstrap CI
  of the difference, McNemar); a winner is named only when the CI of the
  difference excludes zero in that executor, and a pair says when executors
  disagree; the format effect (same prompt, two executors) is its own table;
- a failed case says "failed: <error>", a skipped one "not supported: ...",
  never a zero; an unknown cost is null, never 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mipro_bench import stats
from mipro_bench.prompt import BASELINE_INSTRUCTION
from mipro_bench.results import (
    MATCH_STEPS,
    MODES,
    PHASES,
    CaseConfig,
    ItemResult,
    LMInfo,
    OptimizedPrompt,
    PhaseUsage,
    RecordError,
    RunRecord,
    TrajectoryPoint,
    now_iso,
)
from mipro_bench.serde import SerdeError, from_jsonable, to_jsonable
from mipro_bench.stats import (
    AccuracyEstimate,
    PairedComparison,
    PairedDifference,
    SeedSummary,
)

COMPARISON_SCHEMA_VERSION = 2
READABLE_COMPARISON_VERSIONS = (1, 2)  # 1: no per-executor results (read with defaults)
DEFAULT_RESAMPLES = stats.DEFAULT_RESAMPLES
NO_DIFFERENCE = "no significant difference"

RowKind = Literal["measured", "not_supported"]


class ComparisonError(ValueError):
    """Records that cannot be compared as asked (the message says why, in one line)."""


@dataclass(frozen=True)
class UnsupportedCase:
    """A case the optimizer cannot run (e.g. Synth MIPRO few-shot): shown, never scored."""

    optimizer: str
    mode: str
    model: str
    reason: str


@dataclass(frozen=True)
class Estimate:
    """A test accuracy (or improvement) across seeds.

    value is the mean over seeds; the CI is a bootstrap over test items of that
    mean (each item's score averaged over the seeds first); `seeds` is the spread.
    """

    value: float
    ci_low: float | None
    ci_high: float | None
    confidence: float
    seeds: SeedSummary


@dataclass(frozen=True)
class UsageSummary:
    """One phase's LM usage per run (mean over the row's successful seeds).

    cost_usd is None when any of those runs spent calls at an unknown price.
    """

    calls: float
    input_tokens: float
    output_tokens: float
    cost_usd: float | None
    errors: float


@dataclass(frozen=True)
class IntentDelta:
    """Per-intent test accuracy of the baseline and the optimized prompt (pooled over seeds)."""

    intent: str
    n_items: int
    baseline: float
    optimized: float
    difference: float


@dataclass(frozen=True)
class IntentPairDelta:
    """Per-intent optimized test accuracy of two optimizers (pooled over seeds)."""

    intent: str
    n_items: int
    accuracy_a: float
    accuracy_b: float
    difference: float


@dataclass(frozen=True)
class DiagnosticsSummary:
    """How one executor's answers were parsed (pooled over seeds): the share of each step
    of the label rule, answers naming no intent, LM errors, and LM calls per item."""

    n_items: int
    shares: dict[str, float]
    no_intent: int
    errors: int
    calls_per_item: float | None


@dataclass(frozen=True)
class ExecutorEstimate:
    """One executor's test accuracies for a row's baseline and optimized prompt."""

    executor: str
    native: bool
    baseline: Estimate | None = None
    optimized: Estimate | None = None
    baseline_diagnostics: DiagnosticsSummary | None = None
    optimized_diagnostics: DiagnosticsSummary | None = None
    error: str | None = None


@dataclass(frozen=True)
class FormatEffect:
    """The same prompt in two executors, on the same items: difference = A - B."""

    prompt: str  # "baseline" or "<optimizer> [<mode>]"
    model: str
    executor_a: str
    executor_b: str
    n_items: int
    difference: PairedDifference | None = None
    mcnemar_p: float | None = None  # one run per side only
    discordant: int | None = None
    status: str = "compared"


@dataclass(frozen=True)
class SeedResult:
    """One record, as the comparison reads it."""

    case_id: str
    seed: int
    status: str
    error: str | None
    baseline_accuracy: float | None  # test accuracy (from per-item results when present)
    optimized_accuracy: float | None
    baseline: AccuracyEstimate | None  # the same with its CI; None without per-item results
    optimized: AccuracyEstimate | None
    improvement: PairedComparison | None  # optimized vs baseline on the same items
    best_val_score: float | None  # the optimizer's own score: never a test accuracy
    usage: dict[str, PhaseUsage]
    lm_calls: int
    tokens: int
    cost_usd: float | None
    elapsed_seconds: float | None
    optimize_seconds: float | None
    trajectory: tuple[TrajectoryPoint, ...]
    optimized_prompt: OptimizedPrompt | None
    config: CaseConfig
    lm: LMInfo
    backend: str | None
    test_digest: str | None
    started_at: str
    # What the calls would have cost on the named model when no real cost applies (the
    # simulated LM); shown as "est.", never as a cost.
    cost_usd_estimate: float | None = None


@dataclass(frozen=True)
class Row:
    """One optimizer x mode x model."""

    optimizer: str
    mode: str
    model: str
    kind: RowKind
    status: str  # "succeeded" | "failed: <error>" | "partial: ..." | "not supported: <reason>"
    simulated: bool | None
    lm_backend: str | None
    backend: str | None
    n_seeds: int
    n_succeeded: int
    baseline: Estimate | None = None
    optimized: Estimate | None = None
    improvement: Estimate | None = None
    best_val_score: SeedSummary | None = None
    usage: dict[str, UsageSummary] = field(default_factory=dict)
    lm_calls: float | None = None
    replayed: bool = False  # answered from a recording (no LM called)
    # The optimize phase's calls split by the role of the LM that made them, when the
    # optimizer reports it (details.lm_calls_by_role), e.g. task model vs reflection.
    optimize_calls_by_role: dict[str, float] = field(default_factory=dict)
    tokens: float | None = None
    cost_usd: float | None = None
    cost_usd_estimate: float | None = None  # simulated runs: the named model's price, "est."
    elapsed_seconds: SeedSummary | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    per_intent: tuple[IntentDelta, ...] = ()
    seeds: tuple[SeedResult, ...] = ()
    reason: str | None = None
    native_executor: str | None = None
    # Every executor's accuracies, the native one first (its values equal the row's own).
    by_executor: tuple[ExecutorEstimate, ...] = ()
    # Flags a reader must not miss (e.g. an optimized prompt identical to the baseline).
    flags: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.optimizer, self.mode, self.model)

    @property
    def label(self) -> str:
        return f"{self.optimizer} [{self.mode}, {self.model}]"


@dataclass(frozen=True)
class SeedPair:
    seed_a: int
    seed_b: int
    comparison: PairedComparison


@dataclass(frozen=True)
class PairRow:
    """optimizer_a against optimizer_b on the same test items (difference = a - b)."""

    optimizer_a: str
    optimizer_b: str
    mode_a: str
    mode_b: str
    model: str
    matched_mode: bool
    status: str  # "compared" | "not comparable: <why>"
    verdict: str
    winner: str | None = None
    n_items: int = 0
    n_seeds_a: int = 0
    n_seeds_b: int = 0
    difference: PairedDifference | None = None
    mcnemar_p: float | None = None  # set when each side has one run; else see per_seed
    per_seed: tuple[SeedPair, ...] = ()
    per_intent: tuple[IntentPairDelta, ...] = ()
    # The executor both sides' prompts ran in here ("" in version-1 comparisons: each side's
    # native one), and for which side it is the native format.
    executor: str = ""
    native_for: tuple[str, ...] = ()
    # Set when another executor's verdict on the same two prompts differs from this one's.
    disagreement: str | None = None
    # Set when the two optimize phases spent different LM calls.
    budget_note: str | None = None

    @property
    def label(self) -> str:
        if self.matched_mode:
            return f"{self.optimizer_a} vs {self.optimizer_b} [{self.mode_a}, {self.model}]"
        return (f"{self.optimizer_a} [{self.mode_a}] vs {self.optimizer_b} [{self.mode_b}] "
                f"[CROSS-MODE, {self.model}]")


@dataclass(frozen=True)
class RunInfo:
    """What the whole comparison was run on and computed with."""

    generated_at: str
    simulated: bool
    confidence: float
    n_resamples: int
    bootstrap_seed: int
    models: tuple[str, ...]
    lm_backends: tuple[str, ...]
    data_sources: tuple[str, ...]
    digests: dict[str, tuple[str, ...]]
    sizes: dict[str, tuple[int, ...]]
    data_seeds: tuple[int, ...]
    seeds: tuple[int, ...]
    versions: dict[str, str]
    replayed_from: tuple[str, ...] = ()  # recordings the records were answered from
    lm_transports: tuple[str, ...] = ()  # how the LM was reached: http, respx


@dataclass(frozen=True)
class Comparison:
    """The whole comparison; `records` are the inputs, kept so the JSON can serve as a
    regression-gate baseline (gate.load_baseline_records reads them) and be recomputed."""

    run: RunInfo
    rows: tuple[Row, ...]
    pairs: tuple[PairRow, ...]
    notes: tuple[str, ...] = ()
    records: tuple[RunRecord, ...] = ()
    schema_version: int = COMPARISON_SCHEMA_VERSION
    format_effects: tuple[FormatEffect, ...] = ()

    @property
    def simulated(self) -> bool:
        return self.run.simulated

    def to_dict(self) -> dict[str, Any]:
        out = to_jsonable(self)
        out["records"] = [r.to_dict() for r in self.records]
        return {"schema_version": out.pop("schema_version"), **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version not in READABLE_COMPARISON_VERSIONS:
            raise ComparisonError(
                f"comparison schema_version {version!r} is not supported "
                f"(expected one of {', '.join(map(str, READABLE_COMPARISON_VERSIONS))})"
            )
        try:
            records = tuple(RunRecord.from_dict(r) for r in data.get("records", ()))
            body = from_jsonable(cls, {**data, "records": [],
                                       "schema_version": COMPARISON_SCHEMA_VERSION})
        except (SerdeError, RecordError) as exc:
            raise ComparisonError(f"malformed comparison: {exc}") from None
        return dataclasses.replace(body, records=records)


# ---------------------------------------------------------------- building


def build_comparison(
    records: Sequence[RunRecord],
    *,
    unsupported: Iterable[UnsupportedCase | Any] = (),
    confidence: float = stats.DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    cross_mode: bool = False,
    generated_at: str | None = None,
) -> Comparison:
    """Aggregate records into rows and matched-mode pairwise comparisons.

    `unsupported` lists the cases the plugin skipped (UnsupportedCase, or anything
    with optimizer/mode/model/reason attributes or keys); they become "not supported"
    rows. `cross_mode=True` also juxtaposes optimizers across modes, labelled as
    such and never with a winner. Bootstraps are seeded from `seed` and the row
    or pair they belong to, so a result does not depend on the records' order.
    """
    if not 0.0 < confidence < 1.0:
        raise ComparisonError(f"confidence must be between 0 and 1, got {confidence!r}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ComparisonError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if int(seed) != seed or seed < 0:
        raise ComparisonError(f"seed must be a non-negative integer, got {seed!r}")
    skipped = tuple(_unsupported_case(u) for u in unsupported)
    for rec in records:
        if not isinstance(rec, RunRecord):
            raise ComparisonError(f"expected RunRecord objects, got {type(rec).__name__}")
    ctx = _Ctx(confidence=confidence, n_resamples=int(n_resamples), seed=int(seed))
    notes: list[str] = []
    groups = _group(records, notes)

    rows: dict[tuple[str, str, str], Row] = {
        key: _measured_row(key, recs, ctx, notes) for key, recs in groups.items()
    }
    for case in skipped:
        key = (case.optimizer, case.mode, case.model)
        if key in rows:
            notes.append(f"{case.optimizer} [{case.mode}, {case.model}] was reported both as "
                         f"run and as not supported; the run is shown")
            continue
        rows[key] = Row(
            optimizer=case.optimizer, mode=case.mode, model=case.model, kind="not_supported",
            status=f"not supported: {case.reason}", simulated=None, lm_backend=None,
            backend=None, n_seeds=0, n_succeeded=0, reason=case.reason,
        )
    ordered = tuple(sorted(rows.values(), key=_row_order))
    pairs = _pairs(ordered, groups, ctx, cross_mode)
    noted: set[tuple[str, str, str, str, str]] = set()
    for pair in pairs:
        which = (pair.optimizer_a, pair.optimizer_b, pair.mode_a, pair.mode_b, pair.model)
        if pair.disagreement and which not in noted:
            noted.add(which)
            notes.append(f"{pair.label}: {pair.disagreement}")
    return Comparison(
        run=_run_info(records, ctx, generated_at or now_iso()),
        rows=ordered,
        pairs=pairs,
        format_effects=_format_effects(ordered, groups, ctx),
        notes=tuple(notes),
        records=tuple(sorted((r for recs in groups.values() for r in recs),
                             key=lambda r: (r.optimizer, r.config.mode, _model(r), r.config.seed))),
    )


def _unsupported_case(value: Any) -> UnsupportedCase:
    """Accept the plugin's own skipped-case objects (or dicts) as long as they say enough."""
    if isinstance(value, UnsupportedCase):
        return value
    names = ("optimizer", "mode", "model", "reason")
    try:
        got = ([value[n] for n in names] if isinstance(value, dict)
               else [getattr(value, n) for n in names])
    except (KeyError, AttributeError):
        raise ComparisonError(
            f"an unsupported case needs optimizer, mode, model and reason; got {value!r}"
        ) from None
    return UnsupportedCase(*(str(v) for v in got))


@dataclass(frozen=True)
class _Ctx:
    confidence: float
    n_resamples: int
    seed: int

    def rng_seed(self, *parts: object) -> list[int]:
        """A seed for one bootstrap, derived from the run seed and what it is for."""
        digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
        return [self.seed, int.from_bytes(digest[:8], "big")]

    def kw(self, *parts: object) -> dict[str, Any]:
        return {"confidence": self.confidence, "n_resamples": self.n_resamples,
                "seed": self.rng_seed(*parts)}


def _model(rec: RunRecord) -> str:
    return rec.config.model


def _group(
    records: Sequence[RunRecord], notes: list[str]
) -> dict[tuple[str, str, str], list[RunRecord]]:
    """Records per optimizer x mode x model; a repeated case keeps its latest run."""
    by_case: dict[tuple[str, str, str, int], RunRecord] = {}
    for rec in records:
        case = (rec.optimizer, rec.config.mode, _model(rec), rec.config.seed)
        if case in by_case:
            older, newer = sorted((by_case[case], rec), key=lambda r: r.started_at)
            notes.append(f"{rec.case_id} was recorded twice; the run started at "
                         f"{newer.started_at} is used, the one at {older.started_at} ignored")
            by_case[case] = newer
        else:
            by_case[case] = rec
    groups: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for (optimizer, mode, model, _), rec in by_case.items():
        groups[(optimizer, mode, model)].append(rec)
    for recs in groups.values():
        recs.sort(key=lambda r: r.config.seed)
    return dict(groups)


def _row_order(row: Row) -> tuple[int, str, str, str]:
    return (_mode_rank(row.mode), row.mode, row.model, row.optimizer)


def _ok(rec: RunRecord) -> bool:
    return rec.status == "succeeded"


def _item_map(items: Sequence[ItemResult]) -> dict[str, bool] | None:
    """id -> correct; None without items or when an id repeats (such a run cannot be paired)."""
    if not items:
        return None
    out: dict[str, bool] = {}
    for item in items:
        out[item.id] = bool(item.correct)
    return out if len(out) == len(items) else None


def _maps(runs: Sequence[RunRecord], attr: str) -> list[dict[str, bool]] | None:
    """Every run's item map, or None if any run lacks one: never average a subset silently."""
    maps = [_item_map(getattr(r.results, attr)) for r in runs]
    return None if not maps or any(m is None for m in maps) else maps  # type: ignore[return-value]


Which = Literal["baseline", "optimized"]


def _exec_items(rec: RunRecord, executor: str, which: Which) -> tuple[ItemResult, ...]:
    """One executor's per-item results of a record ("" = the native results)."""
    res = rec.results
    scores = res.by_executor.get(executor) if executor else None
    if scores is None:
        if executor and executor != res.native_executor:
            return ()
        return res.baseline_per_item if which == "baseline" else res.per_item
    return scores.baseline_per_item if which == "baseline" else scores.per_item


def _exec_maps(runs: Sequence[RunRecord], executor: str, which: Which
               ) -> list[dict[str, bool]] | None:
    maps = [_item_map(_exec_items(r, executor, which)) for r in runs]
    return None if not maps or any(m is None for m in maps) else maps  # type: ignore[return-value]


def _executors_of(runs: Sequence[RunRecord], native: str | None) -> list[str]:
    """The executors the runs were scored in, the native one first."""
    names: list[str] = []
    for rec in runs:
        names += [n for n in rec.results.by_executor if n not in names]
    return sorted(names, key=lambda n: (n != native, n))


def _diagnostics(runs: Sequence[RunRecord], executor: str, which: Which
                 ) -> DiagnosticsSummary | None:
    got = []
    for rec in runs:
        scores = rec.results.by_executor.get(executor)
        diag = None if scores is None else (
            scores.baseline_diagnostics if which == "baseline" else scores.optimized_diagnostics)
        if diag is None:
            return None
        got.append(diag)
    if not got:
        return None
    steps = {step: sum(d.steps.get(step, 0) for d in got) for step in MATCH_STEPS}
    parsed = sum(steps.values())
    n = sum(d.n_items for d in got)
    calls = [d.lm_calls for d in got]
    return DiagnosticsSummary(
        n_items=n,
        shares={k: (v / parsed if parsed else 0.0) for k, v in steps.items()},
        no_intent=sum(d.no_intent for d in got),
        errors=sum(d.errors for d in got),
        calls_per_item=(sum(c for c in calls if c is not None) / n
                        if n and all(c is not None for c in calls) else None),
    )


def _executor_estimates(key: tuple[str, str, str], runs: list[RunRecord], ctx: _Ctx,
                        native: str | None) -> tuple[ExecutorEstimate, ...]:
    out = []
    one_panel = len({r.data.digests.get("test") for r in runs}) == 1
    for name in _executors_of(runs, native):
        is_native = name == native
        estimates: dict[str, Estimate | None] = {}
        for which in ("baseline", "optimized"):
            maps = _exec_maps(runs, name, which)  # type: ignore[arg-type]
            if maps is None:
                estimates[which] = None
                continue
            values = [float(np.mean(list(m.values()))) for m in maps]
            mean = _seed_mean(maps) if one_panel else None
            parts = (*key, which) if is_native else (*key, name, which)
            ci = (stats.bootstrap_mean_ci(list(mean.values()), **ctx.kw(*parts))
                  if mean else None)
            estimates[which] = _across_seeds(values, ci, ctx)
        error = next((r.results.by_executor[name].error for r in runs
                      if name in r.results.by_executor and r.results.by_executor[name].error),
                     None)
        out.append(ExecutorEstimate(
            executor=name, native=is_native, baseline=estimates["baseline"],
            optimized=estimates["optimized"],
            baseline_diagnostics=_diagnostics(runs, name, "baseline"),
            optimized_diagnostics=_diagnostics(runs, name, "optimized"), error=error))
    return tuple(out)


def _row_flags(runs: list[RunRecord], mode: str) -> tuple[str, ...]:
    flags = []
    same = [r.config.seed for r in runs if r.optimized_prompt is not None
            and r.optimized_prompt.instruction.strip() == BASELINE_INSTRUCTION.strip()
            and not r.optimized_prompt.demos]
    if same:
        what = "no demos and the baseline instruction" if mode == "fewshot" else \
            "the baseline instruction"
        flags.append(f"UNCHANGED PROMPT: the optimized prompt is the baseline itself ({what}; "
                     f"seed {', '.join(map(str, same))}): its +0.0 is not an optimization")
    failed = [(r.config.seed, r.details["proposer_error"]) for r in runs
              if isinstance(r.details.get("proposer_error"), str)]
    if failed:
        seeds = ", ".join(str(seed) for seed, _ in failed)
        flags.append(f"PROPOSER FAILED: the optimizer's own proposer added no candidate (seed "
                     f"{seeds}; first error: {failed[0][1][:200]}), so its search only had the "
                     "baseline; the run itself went on, as the optimizer's code does")
    local = [r for r in runs if r.backend == "local"]
    if local:
        flags.append(local_backend_flag(local))
    return tuple(flags)


def optimizer_package(record: RunRecord) -> str | None:
    """'<name> <version>' of the optimizer package a record says ran
    (`details.synth.optimizer_package`), or None: records before the local backend ran
    Synth's published package do not name one."""
    synth = record.details.get("synth")
    package = synth.get("optimizer_package") if isinstance(synth, dict) else None
    if not isinstance(package, dict) or not package.get("name"):
        return None
    return " ".join(str(package[k]) for k in ("name", "version") if package.get(k))


def local_backend_flag(runs: list[RunRecord]) -> str:
    """The LOCAL BACKEND flag: which Synth code ran on this machine, as the records name it,
    so a reader never takes a local row for Synth's hosted service. An older record that
    names no package ran the suite's own re-implementation, and the flag says so."""
    packages = sorted({p for r in runs if (p := optimizer_package(r))})
    unnamed = sum(1 for r in runs if optimizer_package(r) is None)
    parts = []
    if packages:
        parts.append(f"the local backend runs Synth's published MIPROv2 "
                     f"({', '.join(packages)}) on this machine")
    if unnamed:
        parts.append(f"{'some records name' if packages else 'the records name'} no optimizer "
                     "package (older records: the suite's own re-implementation of Synth's "
                     "MIPRO)")
    return f"LOCAL BACKEND: {'; '.join(parts)}, not Synth's hosted service (backend=local)"


def _estimate(items: tuple[ItemResult, ...], ctx: _Ctx, *parts: object
              ) -> AccuracyEstimate | None:
    """The CI needs per-item results; a record with only a bare accuracy gets none."""
    if not items:
        return None
    return stats.accuracy_ci([i.correct for i in items], **ctx.kw(*parts))


def _accuracy(estimate: AccuracyEstimate | None, scalar: float | None) -> float | None:
    return estimate.accuracy if estimate is not None else scalar


def _total_estimate(usage: dict[str, PhaseUsage]) -> float | None:
    """The estimated cost (simulated runs), when every phase that made calls has one."""
    if not usage or not all(u.cost_usd_estimate is not None or u.calls == 0
                            for u in usage.values()):
        return None
    return float(sum(u.cost_usd_estimate or 0.0 for u in usage.values()))


def _phase_cost_known(usage: PhaseUsage) -> bool:
    return usage.cost_usd is not None or usage.calls == 0


def _total_cost(usage: dict[str, PhaseUsage]) -> float | None:
    """Known only when every phase that spent calls has a price; never 0 for unknown."""
    if not usage or not all(_phase_cost_known(u) for u in usage.values()):
        return None
    return float(sum(u.cost_usd or 0.0 for u in usage.values()))


def _seed_result(rec: RunRecord, ctx: _Ctx) -> SeedResult:
    res = rec.results
    ok = _ok(rec)
    base = _estimate(res.baseline_per_item, ctx, rec.case_id, "base")
    opt = _estimate(res.per_item, ctx, rec.case_id, "opt") if ok else None
    improvement = None
    if ok and res.per_item and res.baseline_per_item:
        try:
            improvement = stats.paired_comparison(
                res.per_item, res.baseline_per_item, **ctx.kw(rec.case_id, "improvement"))
        except stats.PairingError:
            improvement = None
    total = rec.total_usage()
    return SeedResult(
        case_id=rec.case_id,
        seed=rec.config.seed,
        status=rec.status,
        error=rec.error,
        baseline_accuracy=_accuracy(base, res.baseline_test_accuracy),
        optimized_accuracy=_accuracy(opt, res.optimized_test_accuracy) if ok else None,
        baseline=base,
        optimized=opt,
        improvement=improvement,
        best_val_score=res.best_val_score if ok else None,
        usage=dict(rec.usage),
        lm_calls=total.calls,
        tokens=total.input_tokens + total.output_tokens,
        cost_usd=_total_cost(rec.usage),
        cost_usd_estimate=_total_estimate(rec.usage),
        elapsed_seconds=rec.timing.elapsed_seconds,
        optimize_seconds=rec.timing.optimize_seconds,
        trajectory=rec.trajectory,
        optimized_prompt=rec.optimized_prompt,
        config=rec.config,
        lm=rec.lm,
        backend=rec.backend,
        test_digest=rec.data.digests.get("test"),
        started_at=rec.started_at,
    )


def _seed_mean(maps: list[dict[str, bool]]) -> dict[str, float] | None:
    """Each item's score averaged over seeds; None unless every seed scored the same items."""
    if not maps or any(m.keys() != maps[0].keys() for m in maps):
        return None
    return {k: float(np.mean([m[k] for m in maps])) for k in maps[0]}


def _across_seeds(values: list[float], ci: stats.Interval | None, ctx: _Ctx) -> Estimate:
    spread = stats.summarize_seeds(values)
    return Estimate(
        value=spread.mean,
        ci_low=None if ci is None else ci.low,
        ci_high=None if ci is None else ci.high,
        confidence=ctx.confidence,
        seeds=spread,
    )


def _mean_or_none(values: list[float | None]) -> float | None:
    """A mean that stays unknown (None) if any value is unknown, or there are none."""
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known and len(known) == len(values) else None


def _status(recs: list[RunRecord]) -> str:
    failed = [r for r in recs if not _ok(r)]
    if not failed:
        return "succeeded"
    first = (failed[0].error or "no error message recorded").strip().splitlines()[0]
    if len(failed) == len(recs):
        return f"failed: {first}"
    seeds = ", ".join(str(r.config.seed) for r in failed)
    return f"partial: {len(failed)} of {len(recs)} seeds failed (seed {seeds}: {first})"


def _usage_summary(runs: list[RunRecord]) -> dict[str, UsageSummary]:
    phases = [p for p in PHASES if any(p in r.usage for r in runs)]
    phases += sorted({p for r in runs for p in r.usage} - set(phases))
    out = {}
    for phase in phases:
        got = [r.usage.get(phase, PhaseUsage()) for r in runs]
        known = all(_phase_cost_known(u) for u in got)
        out[phase] = UsageSummary(
            calls=float(np.mean([u.calls for u in got])),
            input_tokens=float(np.mean([u.input_tokens for u in got])),
            output_tokens=float(np.mean([u.output_tokens for u in got])),
            cost_usd=float(np.mean([u.cost_usd or 0.0 for u in got])) if known else None,
            errors=float(np.mean([u.errors for u in got])),
        )
    return out


def _calls_by_role(runs: list[RunRecord]) -> dict[str, float]:
    """Mean optimize-phase calls per LM role over the runs that report every role."""
    tables = [r.details.get("lm_calls_by_role") for r in runs]
    if not runs or not all(isinstance(t, dict) and t for t in tables):
        return {}
    roles = sorted(set.intersection(*(set(t) for t in tables)))  # type: ignore[arg-type]
    return {role: float(np.mean([float(t[role] or 0) for t in tables])) for role in roles}


def _per_intent(runs: list[RunRecord]) -> tuple[IntentDelta, ...]:
    base: dict[str, list[bool]] = defaultdict(list)
    opt: dict[str, list[bool]] = defaultdict(list)
    ids: dict[str, set[str]] = defaultdict(set)
    for rec in runs:
        if not (rec.results.per_item and rec.results.baseline_per_item):
            continue
        for item in rec.results.baseline_per_item:
            base[item.expected].append(item.correct)
        for item in rec.results.per_item:
            opt[item.expected].append(item.correct)
            ids[item.expected].add(item.id)
    out = []
    for intent in sorted(set(base) & set(opt)):
        b, o = float(np.mean(base[intent])), float(np.mean(opt[intent]))
        out.append(IntentDelta(intent=intent, n_items=len(ids[intent]), baseline=b,
                               optimized=o, difference=o - b))
    return tuple(out)


def _measured_row(key: tuple[str, str, str], recs: list[RunRecord], ctx: _Ctx,
                  notes: list[str]) -> Row:
    optimizer, mode, model = key
    seeds = tuple(_seed_result(r, ctx) for r in recs)
    runs = [r for r in recs if _ok(r)]
    good = [s for s in seeds if s.status == "succeeded"]
    label = f"{optimizer} [{mode}, {model}]"
    if len({s.test_digest for s in good}) > 1:
        notes.append(f"{label}: seeds were scored on different test panels; "
                     f"the row's CIs are omitted")

    def estimate(attr: str, per_item: str, part: str) -> Estimate | None:
        got = [getattr(s, attr) for s in good if getattr(s, attr) is not None]
        if not got or len(got) != len(good):
            return None
        maps = _maps(runs, per_item)
        ci = None
        if maps is not None and len({s.test_digest for s in good}) == 1:
            mean = _seed_mean(maps)
            if mean is not None:
                ci = stats.bootstrap_mean_ci(list(mean.values()), **ctx.kw(*key, part))
        return _across_seeds(got, ci, ctx)

    baseline = estimate("baseline_accuracy", "baseline_per_item", "baseline")
    optimized = estimate("optimized_accuracy", "per_item", "optimized")
    improvement = None
    diffs = [s.optimized_accuracy - s.baseline_accuracy for s in good
             if s.optimized_accuracy is not None and s.baseline_accuracy is not None]
    if good and len(diffs) == len(good):
        opt_maps, base_maps = _maps(runs, "per_item"), _maps(runs, "baseline_per_item")
        opt_mean = _seed_mean(opt_maps) if opt_maps else None
        base_mean = _seed_mean(base_maps) if base_maps else None
        ci = None
        if (opt_mean is not None and base_mean is not None
                and len({s.test_digest for s in good}) == 1):
            try:
                d = stats.paired_difference(opt_mean, base_mean, **ctx.kw(*key, "improvement"))
                ci = d.interval
            except stats.PairingError:
                ci = None
        improvement = _across_seeds(diffs, ci, ctx)
    vals = [s.best_val_score for s in good if s.best_val_score is not None]
    elapsed = [s.elapsed_seconds for s in good if s.elapsed_seconds is not None]
    costs = [s.cost_usd for s in good]
    first = runs[0] if runs else recs[0]
    budgets = {repr(r.config.budget) for r in recs}
    if len(budgets) > 1:
        notes.append(f"{label}: seeds ran with different budgets; the first is shown")
    return Row(
        optimizer=optimizer,
        mode=mode,
        model=model,
        kind="measured",
        status=_status(recs),
        simulated=any(r.lm.simulated for r in recs),
        replayed=any(r.lm.replayed_from for r in recs),
        lm_backend=first.lm.backend,
        backend=first.backend,
        n_seeds=len(recs),
        n_succeeded=len(runs),
        baseline=baseline,
        optimized=optimized,
        improvement=improvement,
        best_val_score=stats.summarize_seeds(vals) if vals else None,
        usage=_usage_summary(runs),
        optimize_calls_by_role=_calls_by_role(runs),
        lm_calls=float(np.mean([s.lm_calls for s in good])) if good else None,
        tokens=float(np.mean([s.tokens for s in good])) if good else None,
        cost_usd=_mean_or_none(costs),
        cost_usd_estimate=_mean_or_none([s.cost_usd_estimate for s in good])
        if all(s.cost_usd is None for s in good) else None,
        elapsed_seconds=stats.summarize_seeds(elapsed) if elapsed else None,
        budget=dict(first.config.budget),
        per_intent=_per_intent(runs),
        seeds=seeds,
        native_executor=first.results.native_executor or first.details.get("executor"),
        by_executor=_executor_estimates(
            key, runs, ctx, first.results.native_executor or first.details.get("executor")),
        flags=_row_flags(runs, mode),
    )


# ---------------------------------------------------------------- pairs


def compare_records(a: RunRecord, b: RunRecord, *, confidence: float = stats.DEFAULT_CONFIDENCE,
                    n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> PairedComparison:
    """Optimized test results of two records on the same items; refuses unfair pairs."""
    why = _not_comparable([a], [b], matched_mode=True)
    if why:
        raise ComparisonError(f"cannot compare {a.case_id} with {b.case_id}: {why}")
    ctx = _Ctx(confidence, n_resamples, seed)
    try:
        return stats.paired_comparison(a.results.per_item, b.results.per_item,
                                       **ctx.kw(a.case_id, b.case_id))
    except stats.PairingError as exc:
        raise ComparisonError(f"cannot compare {a.case_id} with {b.case_id}: {exc}") from None


def _not_comparable(a: list[RunRecord], b: list[RunRecord], *, matched_mode: bool,
                    executor: str = "") -> str | None:
    """Why these records may not be paired (in `executor`; "" = each native), or None."""
    both = a + b
    for side in (a, b):
        if not any(_ok(r) for r in side):
            return f"{side[0].optimizer} [{side[0].config.mode}] has no successful run"
    runs = [r for r in both if _ok(r)]
    if matched_mode and len({r.config.mode for r in runs}) > 1:
        return "different modes"
    models = sorted({r.config.model for r in runs} | {r.lm.model for r in runs})
    if len({r.config.model for r in runs}) > 1 or len({r.lm.model for r in runs}) > 1:
        return f"different models ({', '.join(models)})"
    if len({r.lm.simulated for r in runs}) > 1:
        return "one side ran on the simulated LM, the other on a real one"
    digests = {r.data.digests.get("test") for r in runs}
    if None in digests:
        return "a record has no test data digest"
    if len(digests) > 1:
        shown = ", ".join(sorted(d[:12] for d in digests if d))
        return f"different test data (digests {shown})"
    if any(not _exec_items(r, executor, "optimized") for r in runs):
        return ("a record has no per-item test results"
                + (f" in {executor}" if executor else ""))
    return None


def _pooled_intent(runs: list[RunRecord], executor: str = ""
                   ) -> dict[str, tuple[list[bool], set[str]]]:
    out: dict[str, tuple[list[bool], set[str]]] = defaultdict(lambda: ([], set()))
    for rec in runs:
        for item in _exec_items(rec, executor, "optimized"):
            out[item.expected][0].append(item.correct)
            out[item.expected][1].add(item.id)
    return out


def _pair(a_row: Row, b_row: Row, a: list[RunRecord], b: list[RunRecord], ctx: _Ctx,
          matched_mode: bool, executor: str = "") -> PairRow:
    base = {
        "optimizer_a": a_row.optimizer, "optimizer_b": b_row.optimizer,
        "mode_a": a_row.mode, "mode_b": b_row.mode, "model": a_row.model,
        "matched_mode": matched_mode, "executor": executor,
        "native_for": tuple(r.optimizer for r in (a_row, b_row)
                            if executor and r.native_executor == executor),
        "budget_note": _budget_note(a_row, b_row),
    }
    why = _not_comparable(a, b, matched_mode=matched_mode, executor=executor)
    if why:
        return PairRow(**base, status=f"not comparable: {why}", verdict="not compared")
    ra, rb = [r for r in a if _ok(r)], [r for r in b if _ok(r)]
    maps_a = _exec_maps(ra, executor, "optimized")
    maps_b = _exec_maps(rb, executor, "optimized")
    if maps_a is None or maps_b is None:
        return PairRow(**base, status="not comparable: a run's per-item results repeat an id",
                       verdict="not compared")
    ma, mb = _seed_mean(maps_a), _seed_mean(maps_b)
    if ma is None or mb is None:
        return PairRow(**base, status="not comparable: seeds scored different items",
                       verdict="not compared")
    key: tuple[str, ...] = (a_row.optimizer, a_row.mode, b_row.optimizer, b_row.mode,
                            a_row.model)
    if executor:
        key = (*key, executor)
    try:
        diff = stats.paired_difference(ma, mb, **ctx.kw(*key, "pair"))
    except stats.PairingError as exc:
        return PairRow(**base, status=f"not comparable: {exc}", verdict="not compared")
    per_seed = []
    if len(ra) == 1 and len(rb) == 1:
        matches = [(ra[0], rb[0])]
    else:
        by_seed = {r.config.seed: r for r in rb}
        matches = [(r, by_seed[r.config.seed]) for r in ra if r.config.seed in by_seed]
    for x, y in matches:
        comp = stats.paired_comparison(_exec_items(x, executor, "optimized"),
                                       _exec_items(y, executor, "optimized"),
                                       **ctx.kw(*key, "seed", x.config.seed, y.config.seed))
        per_seed.append(SeedPair(seed_a=x.config.seed, seed_b=y.config.seed, comparison=comp))
    single = len(ra) == 1 and len(rb) == 1
    winner = None
    if not matched_mode:
        verdict = (f"CROSS-MODE ({a_row.mode} vs {b_row.mode}): not a matched comparison, "
                   f"no winner named")
    elif diff.significant:
        winner = a_row.optimizer if diff.difference > 0 else b_row.optimizer
        verdict = f"{winner} better"
    else:
        verdict = NO_DIFFERENCE
    ia, ib = _pooled_intent(ra, executor), _pooled_intent(rb, executor)
    intents = tuple(
        IntentPairDelta(
            intent=name, n_items=len(ia[name][1]),
            accuracy_a=float(np.mean(ia[name][0])), accuracy_b=float(np.mean(ib[name][0])),
            difference=float(np.mean(ia[name][0]) - np.mean(ib[name][0])),
        )
        for name in sorted(set(ia) & set(ib))
    )
    return PairRow(
        **base, status="compared", verdict=verdict, winner=winner, n_items=diff.n,
        n_seeds_a=len(ra), n_seeds_b=len(rb), difference=diff,
        mcnemar_p=per_seed[0].comparison.mcnemar_p if single else None,
        per_seed=tuple(per_seed), per_intent=intents,
    )


def _pairs(rows: tuple[Row, ...], groups: dict[tuple[str, str, str], list[RunRecord]],
           ctx: _Ctx, cross_mode: bool) -> tuple[PairRow, ...]:
    measured = [r for r in rows if r.kind == "measured"]
    out = []
    for x, y in itertools.combinations(measured, 2):
        if x.optimizer == y.optimizer or x.model != y.model:
            continue
        same_mode = x.mode == y.mode
        if not same_mode and not cross_mode:
            continue
        out.extend(_pairs_by_executor(x, y, groups[x.key], groups[y.key], ctx, same_mode))
    out.sort(key=lambda p: (not p.matched_mode, _mode_rank(p.mode_a), p.model,
                            p.optimizer_a, p.optimizer_b))  # stable: executor order kept
    return tuple(out)


def _pairs_by_executor(x: Row, y: Row, a: list[RunRecord], b: list[RunRecord], ctx: _Ctx,
                       same_mode: bool) -> list[PairRow]:
    """One pair per executor both sides were scored in (x's native first, then y's); a
    version-1 record (no per-executor results) gives the one native-vs-native pair."""
    ra, rb = [r for r in a if _ok(r)], [r for r in b if _ok(r)]
    common = [n for n in _executors_of(ra, x.native_executor)
              if n in _executors_of(rb, y.native_executor)]
    if not common or not ra or not rb:
        return [_pair(x, y, a, b, ctx, matched_mode=same_mode)]
    common.sort(key=lambda n: (n != x.native_executor, n != y.native_executor, n))
    pairs = [_pair(x, y, a, b, ctx, matched_mode=same_mode, executor=n) for n in common]
    compared = [p for p in pairs if p.status == "compared"]
    if len({p.winner for p in compared}) > 1:
        said = "; ".join(f"{p.executor}: {p.verdict}" for p in compared)
        pairs = [dataclasses.replace(p, disagreement=f"the executors disagree ({said})")
                 for p in pairs]
    return pairs


def _budget_note(a: Row, b: Row) -> str | None:
    """Said on a pair whose two optimize phases spent different LM calls."""
    ua, ub = a.usage.get("optimize"), b.usage.get("optimize")
    if ua is None or ub is None or ua.calls == ub.calls:
        return None
    return (f"unequal optimize budgets: {a.optimizer} spent {ua.calls:,.0f} LM calls, "
            f"{b.optimizer} {ub.calls:,.0f}")


# ---------------------------------------------------------------- format effect


def _format_effects(rows: tuple[Row, ...], groups: dict[tuple[str, str, str], list[RunRecord]],
                    ctx: _Ctx) -> tuple[FormatEffect, ...]:
    """The same prompt scored by two executors: the baseline once per model and panel, then
    each row's optimized prompt (its native executor as A)."""
    out: list[FormatEffect] = []
    seen_baseline: set[tuple[str, str | None]] = set()
    for row in rows:
        if row.kind != "measured":
            continue
        runs = [r for r in groups[row.key] if _ok(r)]
        if not runs:
            continue
        names = _executors_of(runs, row.native_executor)
        if len(names) < 2:
            continue
        panel = (row.model, runs[0].data.digests.get("test"))
        if panel not in seen_baseline:
            seen_baseline.add(panel)
            for ea, eb in itertools.combinations(sorted(names), 2):
                out.append(_format_effect("baseline", row.model, ea, eb, runs[:1], "baseline",
                                          ctx))
        native = row.native_executor if row.native_executor in names else names[0]
        for other in names:
            if other != native:
                out.append(_format_effect(f"{row.optimizer} [{row.mode}]", row.model, native,
                                          other, runs, "optimized", ctx))
    return tuple(out)


def _format_effect(prompt: str, model: str, ea: str, eb: str, runs: list[RunRecord],
                   which: Which, ctx: _Ctx) -> FormatEffect:
    base = {"prompt": prompt, "model": model, "executor_a": ea, "executor_b": eb}
    ma, mb = _exec_maps(runs, ea, which), _exec_maps(runs, eb, which)
    mean_a = _seed_mean(ma) if ma else None
    mean_b = _seed_mean(mb) if mb else None
    if mean_a is None or mean_b is None:
        return FormatEffect(**base, n_items=0, status="not compared: missing per-item results")
    try:
        diff = stats.paired_difference(mean_a, mean_b, **ctx.kw("format", prompt, model, ea, eb))
    except stats.PairingError as exc:
        return FormatEffect(**base, n_items=0, status=f"not compared: {exc}")
    p = discordant = None
    if len(runs) == 1:
        comp = stats.paired_comparison(_exec_items(runs[0], ea, which),
                                       _exec_items(runs[0], eb, which),
                                       **ctx.kw("format-mcnemar", prompt, model, ea, eb))
        p, discordant = comp.mcnemar_p, comp.a_only + comp.b_only
    return FormatEffect(**base, n_items=diff.n, difference=diff, mcnemar_p=p,
                        discordant=discordant)


def _mode_rank(mode: str) -> int:
    return MODES.index(mode) if mode in MODES else len(MODES)  # type: ignore[arg-type]


def _run_info(records: Sequence[RunRecord], ctx: _Ctx, generated_at: str) -> RunInfo:
    def distinct(values: Iterable[Any]) -> tuple[Any, ...]:
        return tuple(sorted({v for v in values if v is not None}))

    versions: dict[str, str] = {}
    for rec in records:
        for name, version in rec.versions.items():
            if versions.get(name, version) != version:
                versions[name] = f"{versions[name]}, {version}"
            else:
                versions[name] = version
    return RunInfo(
        generated_at=generated_at,
        simulated=any(r.lm.simulated for r in records),
        replayed_from=distinct(r.lm.replayed_from for r in records),
        confidence=ctx.confidence,
        n_resamples=ctx.n_resamples,
        bootstrap_seed=ctx.seed,
        models=distinct(r.config.model for r in records),
        lm_backends=distinct(r.lm.backend for r in records),
        lm_transports=distinct(r.lm.transport for r in records),
        data_sources=distinct(r.data.source for r in records),
        digests={split: distinct(r.data.digests.get(split) for r in records)
                 for split in ("train", "val", "test")},
        sizes={
            "train": distinct(r.config.train_size for r in records),
            "val": distinct(r.config.val_size for r in records),
            "test": distinct(r.config.test_size for r in records),
        },
        data_seeds=distinct(r.config.data_seed for r in records),
        seeds=distinct(r.config.seed for r in records),
        versions=versions,
    )
