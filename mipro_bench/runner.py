"""One benchmark case end to end: baseline eval -> optimize -> test eval -> frozen record.

Format-neutral scoring: after the native executor's two evaluations (phases
`baseline_eval` and `test_eval`, the record's main results), every other
registered executor that can express the prompts scores the baseline and the
optimized prompt too, under its own phases (`baseline_eval:<executor>`,
`test_eval:<executor>`), so the native counts are what they always were. The
baseline is the same prompt for every optimizer: with the session's servers it is
scored once per executor, format, panel and model (`SharedBaselines`)
and reused by every later case. Its LM calls are counted once, under the scope
of the case that ran it; a case that reuses it gets a copy of that phase's
usage in its own usage block (so every record's `baseline_eval` still says what
scoring the baseline costs) and says so in `details.shared_baseline`.

The runner, not the adapter, owns the order of phases, the clocks, the usage
read-out and the record, so every optimizer is measured the same way: both
prompts scored by the suite on the same test split, usage counted by the
gateway per phase, and an optimizer's own best score kept apart from test
accuracy. A run that fails (any exception, an LM outage included) still
leaves a `failed` record with the error and whatever it finished; so does a
case its optimizer's `check` refuses (before any LM call): its record says
`refused: <reason>` (and `details.refused`), so the comparison still has its row;
so does a case a service refuses once it has started (`ServiceRefused`, e.g. Synth's
hosted service refusing the job's route), whatever it finished kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mipro_bench.case_context import UsageReader
from mipro_bench.data import Split
from mipro_bench.executors import EvaluationFailed, executor_names, get_executor
from mipro_bench.executors.base import MAX_ITEM_ERROR_RATE, allowed_item_errors
from mipro_bench.optimizers.base import (
    BASELINE_PROMPT,
    NotSupported,
    OptimizeOutcome,
    Optimizer,
    OptimizeRequest,
    ServiceRefused,
    UsageError,
)
from mipro_bench.progress import PlannedPhase, planned_optimize_calls
from mipro_bench.results import (
    PHASES,
    CaseConfig,
    DataInfo,
    ExecutorScores,
    ItemResult,
    LMInfo,
    OptimizedPrompt,
    ParseDiagnostics,
    PhaseUsage,
    RunRecord,
    Scores,
    Timing,
    accuracy,
    now_iso,
    result_path,
    write_json_atomic,
)
from mipro_bench.shared_baselines import SharedEvaluation

log = logging.getLogger(__name__)



@dataclass
class _ExecutorProgress:
    """One executor's evaluations of this case so far."""

    native: bool
    phases: dict[str, str]
    baseline: tuple[ItemResult, ...] | None = None
    optimized: tuple[ItemResult, ...] | None = None
    shared: SharedEvaluation | None = None
    reused: bool = False
    error: str | None = None


@dataclass
class _Progress:
    """What a run has finished so far (what a failed record can still report)."""

    baseline: tuple[ItemResult, ...] | None = None
    outcome: OptimizeOutcome | None = None
    optimized: tuple[ItemResult, ...] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    phase: str | None = None
    executors: dict[str, _ExecutorProgress] = field(default_factory=dict)
    watch: Any = None  # the case's live progress display (mipro_bench.progress), if any


def eval_phases(executor: str, native: bool) -> dict[str, str]:
    """The usage phases an executor's two test evaluations are counted under."""
    if native:
        return {"baseline": "baseline_eval", "optimized": "test_eval"}
    return {"baseline": f"baseline_eval:{executor}", "optimized": f"test_eval:{executor}"}


SHARED_PHASE = "baseline_eval"  # the phase of a shared baseline, under its own scope


def baseline_key(executor: str, options: Mapping[str, Any] | None,
                 request: OptimizeRequest) -> str:
    """What a baseline evaluation's results depend on: the executor and the options that
    change its format, the test panel, the LM (model, endpoint, sampling) and the prompt."""
    ex = get_executor(executor)
    effective = {**dict(getattr(ex, "default_options", {}) or {}), **dict(options or {})}
    names = getattr(ex, "format_options", None)
    fmt = ({k: effective.get(k) for k in names} if names is not None
           else {k: repr(v) for k, v in sorted(effective.items())})
    s = request.lm.settings
    parts = {
        "executor": executor, "format": fmt, "test": request.splits.test.digest,
        "labels": list(request.splits.labels),
        # Not the recording a replay answers from: a replay must name the same evaluation
        # (and find its scope in the recording) as the live run it reproduces.
        "lm": [s.backend, s.model, s.base_url, s.temperature, s.max_tokens],
        "prompt": [BASELINE_PROMPT.instruction, [repr(d) for d in BASELINE_PROMPT.demos]],
    }
    blob = json.dumps(parts, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def gateway_usage_reader(gateway: Any, scope: str) -> UsageReader:
    """This scope's per-phase usage from a gateway handle (`.usage(optimizer=scope)`)."""
    return lambda: gateway.usage(scope).get(scope, {})


def score(prompt: OptimizedPrompt, split: Split, request: OptimizeRequest, phase: str, *,
          executor: str, options: Mapping[str, Any] | None = None,
          max_item_error_rate: float = MAX_ITEM_ERROR_RATE) -> tuple[ItemResult, ...]:
    """`prompt` scored on `split` by `executor`, with the suite's one item-error policy:
    more than `max_item_error_rate` of the items failing in the LM fails the evaluation
    (an outage, not a score); fewer are scored wrong and keep their error."""
    allowed = allowed_item_errors(len(split), max_item_error_rate)
    items = get_executor(executor).evaluate(prompt, split, request, phase,
                                            max_errors=allowed, options=options)
    errors = [item for item in items if item.error]
    if len(errors) > allowed:
        raise EvaluationFailed(
            f"{phase}: {len(errors)}/{len(items)} items failed in the LM "
            f"(more than {max_item_error_rate:.0%}); first: {errors[0].error}")
    return items


def run_case(
    optimizer: Optimizer,
    request: OptimizeRequest,
    *,
    results_dir: Path,
    usage: UsageReader | None = None,
    max_item_error_rate: float = MAX_ITEM_ERROR_RATE,
    details: Mapping[str, Any] | None = None,
    executors: Sequence[str] | None = None,
    watch: Any = None,
) -> tuple[RunRecord, Path]:
    """Run one case and write its record atomically; returns (record, path).

    The native executor's evaluations decide the case; then every executor in
    `executors` (default: every registered one) that can express both prompts scores
    them too. A non-native evaluation that fails is recorded on that executor
    (`by_executor[name].error`) and does not fail the case. An unsupported mode raises
    (the matrix shows it as "not supported"); a case its optimizer's `check` refuses
    (UsageError, before any LM call) ends in a `failed` record whose error is
    `refused: <reason>` and whose `details.refused` is the reason (as does a
    `ServiceRefused` raised by a phase, after what it finished); everything after
    that ends in a written record, `failed` or not. `watch` (a `progress.CaseProgress`)
    is told the plan and each phase, and shows the gateway's counts live.
    """
    spec = optimizer.spec
    if not spec.supports(request.mode):
        raise NotSupported(spec.unsupported_reason(request.mode) or request.mode)
    refused: str | None = None
    try:
        optimizer.check(request)  # before any LM call
    except NotSupported:
        raise
    except UsageError as exc:
        refused = " ".join(str(exc).split()) or type(exc).__name__
    usage = usage or request.read_usage
    started_at = now_iso()
    t0 = time.perf_counter()
    done = _Progress()
    error: str | None = None
    interrupted: BaseException | None = None
    splits = request.splits

    native = spec.native_executor
    others = [name for name in (executor_names() if executors is None else executors)
              if name != native]
    done.watch = watch
    if watch is not None:
        watch.begin(_plan(optimizer, request, native, others), usage, request.scope)

    def evaluate(prompt: OptimizedPrompt, phase: str, executor: str,
                 options: Mapping[str, Any] | None) -> tuple[ItemResult, ...]:
        return score(prompt, splits.test, request, phase, executor=executor,
                     options=options, max_item_error_rate=max_item_error_rate)

    def baseline(executor: str, options: Mapping[str, Any] | None) -> tuple[ItemResult, ...]:
        progress = done.executors[executor]
        phase = progress.phases["baseline"]
        if request.harness is None:
            return evaluate(BASELINE_PROMPT, phase, executor, options)
        key = baseline_key(executor, options, request)
        # Counted under a scope of its own, named by what it depends on (not by the case
        # that happens to run first), so its journal is found again on --resume and in a
        # recording whatever the order of cases or workers.
        shared_scope = f"baseline-{executor}-{key[:12]}"

        shared_request = replace(request, scope=shared_scope, usage=None)
        if done.watch is not None:  # its calls count under the shared scope: show them here
            done.watch.counted_elsewhere(phase, scope=shared_scope, scope_phase=SHARED_PHASE,
                                         read=shared_request.read_usage)

        def compute() -> SharedEvaluation:
            items = score(BASELINE_PROMPT, splits.test, shared_request, SHARED_PHASE,
                          executor=executor, options=options,
                          max_item_error_rate=max_item_error_rate)
            got, _ = _read_usage(shared_request.read_usage)
            return SharedEvaluation(items=items, scope=shared_scope, phase=SHARED_PHASE,
                                    usage=got.get(SHARED_PHASE), key=key)

        progress.shared, progress.reused = request.harness.baselines.get_or_compute(key, compute)
        return progress.shared.items

    def cross_score(executor: str, prompt: OptimizedPrompt) -> None:
        progress = done.executors[executor] = _ExecutorProgress(
            native=False, phases=eval_phases(executor, native=False))
        if not get_executor(executor).can_express(prompt):
            progress.error = f"{executor} cannot express this prompt"
            return
        try:
            progress.baseline = _timed(done, progress.phases["baseline"],
                                       lambda: baseline(executor, None))
            progress.optimized = _timed(done, progress.phases["optimized"], lambda: evaluate(
                prompt, progress.phases["optimized"], executor, None))
            request.say(f"{executor}: baseline {accuracy(progress.baseline):.3f}, "
                        f"optimized {accuracy(progress.optimized):.3f}")
        except Exception as exc:
            progress.error = _one_line(exc)
            log.warning("case %s: %s could not score its prompts: %s", request.scope,
                        executor, progress.error)

    try:
        if refused is not None:
            done.phase = "check"
            raise CaseRefused(refused)
        done.executors[native] = _ExecutorProgress(native=True,
                                                   phases=eval_phases(native, native=True))
        done.baseline = _timed(done, "baseline_eval",
                               lambda: baseline(native, optimizer.executor_options()))
        done.executors[native].baseline = done.baseline
        request.say(f"baseline test accuracy {accuracy(done.baseline):.3f}")
        done.outcome = _timed(done, "optimize", lambda: optimizer.optimize(request))
        outcome = done.outcome
        done.optimized = _timed(done, "test_eval", lambda: evaluate(
            outcome.prompt, "test_eval", native, optimizer.executor_options()))
        done.executors[native].optimized = done.optimized
        request.say(f"optimized test accuracy {accuracy(done.optimized):.3f}")
        for executor in others:
            cross_score(executor, outcome.prompt)
        done.phase = None
    except CaseRefused as exc:
        error = f"refused: {exc}"
    except ServiceRefused as exc:  # refused by a service mid-case: recorded as a refusal too
        refused = " ".join(str(exc).split()) or type(exc).__name__
        error = f"refused: {refused}"
    except Exception as exc:
        error = _one_line(exc)
        log.warning("case %s failed in %s: %s", request.scope, done.phase, error)
        log.debug("%s", traceback.format_exc())
    except KeyboardInterrupt as exc:  # still leave a record of what was finished
        error, interrupted = "interrupted (KeyboardInterrupt)", exc
    finally:
        if watch is not None:
            watch.end()
    elapsed = time.perf_counter() - t0

    usage_by_phase, usage_error = _read_usage(usage)
    for progress in done.executors.values():  # a reused baseline: its usage, copied
        if progress.shared is not None and progress.shared.usage:
            # Every case shows what scoring the baseline costs, in its own phase name; the
            # calls were made once, under the shared scope (details.shared_baseline). The LM
            # time belongs to the case that ran it only: a reusing case spent none, and the
            # session's time split must not count it twice.
            shared_usage = progress.shared.usage
            if progress.reused:
                shared_usage = replace(shared_usage, lm_seconds=0.0, lm_busy_seconds=0.0)
            usage_by_phase[progress.phases["baseline"]] = shared_usage
    usage_by_phase = dict(sorted(usage_by_phase.items(), key=lambda kv: _phase_rank(kv[0])))
    path = result_path(Path(results_dir), spec.slug)
    artifacts = _keep_artifacts(done.outcome, path)
    record = _record(optimizer, request, done, started_at, elapsed, error,
                     usage_by_phase, usage_error, artifacts)
    extra: dict[str, Any] = dict(details or {})
    if refused is not None:
        extra["refused"] = refused
    extra.update(_lm_diagnostics(request))
    if extra:
        record = replace(record, details={**record.details, **extra})
    write_json_atomic(path, record.to_dict())
    if interrupted is not None:
        raise interrupted
    return record, path


def _phase_rank(phase: str) -> tuple[int, str, int]:
    """Native phases in PHASES order, then each other executor's baseline and test."""
    if phase in PHASES:
        return (0, "", PHASES.index(phase))
    base, _, executor = phase.partition(":")
    return (1, executor, PHASES.index(base) if base in PHASES else len(PHASES))


class CaseRefused(Exception):
    """The optimizer's check refused the case (its reason); no phase ran."""


def _lm_diagnostics(request: OptimizeRequest) -> dict[str, Any]:
    """The run's LM limits and what the gateway had to change in requests: the token limit
    per call kind (`lm_limits`) and the request shapes it downgraded because the server
    rejected them (`request_downgrades`, session-wide, empty when none)."""
    from mipro_bench.lm.pricing import pricing_note

    settings = request.lm.settings
    out: dict[str, Any] = {"lm_limits": {"max_tokens": settings.limits},
                           "pricing": pricing_note(settings.backend, settings.model,
                                                   settings.prices_per_mtok)}
    try:
        diagnostics = request.lm.diagnostics()
    except Exception:  # an older or unreachable gateway: the record matters more
        return out
    out["request_downgrades"] = list(diagnostics.get("request_downgrades") or [])
    capped = diagnostics.get("calls_capped") or {}
    if capped:
        out["lm_limits"]["calls_capped"] = dict(capped)
    return out


def _plan(optimizer: Optimizer, request: OptimizeRequest, native: str,
          others: Sequence[str]) -> list[PlannedPhase]:
    """What each phase plans to spend: one call per test item per evaluation (retries and
    fallbacks come on top), and the optimize phase's `planned_calls` where it can say."""
    n = len(request.splits.test)
    planned, approx = planned_optimize_calls(optimizer, request)
    plan = [PlannedPhase("baseline_eval", n), PlannedPhase("optimize", planned, approx),
            PlannedPhase("test_eval", n)]
    for name in others:
        phases = eval_phases(name, native=False)
        plan += [PlannedPhase(phases["baseline"], n), PlannedPhase(phases["optimized"], n)]
    return plan


def _timed(done: _Progress, phase: str, fn: Callable[[], Any]) -> Any:
    done.phase = phase
    if done.watch is not None:
        done.watch.phase(phase)
    start = time.perf_counter()
    try:
        return fn()
    finally:
        done.seconds[phase] = time.perf_counter() - start


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:500]}"


def _read_usage(
    usage: UsageReader | None,
) -> tuple[dict[str, PhaseUsage], str | None]:
    if usage is None:
        return {}, "no usage reader (gateway not reachable from the runner)"
    try:
        got = dict(usage())
    except Exception as exc:  # the record matters more than its usage block
        return {}, f"usage unavailable: {_one_line(exc)}"
    # Every phase appears (a phase that made no call shows zeros, not a gap).
    return {phase: got.get(phase, PhaseUsage()) for phase in (*PHASES, *got)}, None


def _keep_artifacts(outcome: OptimizeOutcome | None, record_path: Path) -> dict[str, str]:
    """Copy the optimizer's files next to the record: <record stem>.<name><suffix>."""
    kept: dict[str, str] = {}
    if outcome is None:
        return kept
    for name, source in outcome.artifacts.items():
        source = Path(source)
        if not source.is_file():
            continue
        target = record_path.with_name(f"{record_path.stem}.{name}{source.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        kept[name] = target.name  # relative to the record's directory: portable
    return kept


def _record(
    optimizer: Optimizer,
    request: OptimizeRequest,
    done: _Progress,
    started_at: str,
    elapsed: float,
    error: str | None,
    usage: dict[str, PhaseUsage],
    usage_error: str | None,
    artifacts: dict[str, str],
) -> RunRecord:
    splits, settings, outcome = request.splits, request.lm.settings, done.outcome
    details: dict[str, Any] = dict(outcome.details) if outcome else {}
    details.update(
        scope=request.scope,
        phase_seconds={k: round(v, 3) for k, v in done.seconds.items()},
        item_errors={
            phase: sum(1 for i in items if i.error)
            for phase, items in (("baseline_eval", done.baseline), ("test_eval", done.optimized))
            if items is not None
        },
    )
    if artifacts:
        details["artifacts"] = artifacts
    if error is not None:
        details["failed_phase"] = done.phase
    details["executor"] = optimizer.spec.native_executor
    if usage_error is not None:
        details["usage_error"] = usage_error
    by_executor = _by_executor(done, usage)
    shared = {name: scores.baseline_shared for name, scores in by_executor.items()
              if scores.baseline_shared is not None}
    if shared:
        details["shared_baseline"] = shared
    evals = [done.seconds[p] for p in ("baseline_eval", "test_eval") if p in done.seconds]
    return RunRecord(
        optimizer=optimizer.spec.name,
        status="failed" if error is not None else "succeeded",
        error=error,
        backend=outcome.backend if outcome else None,
        config=CaseConfig(
            model=settings.model,
            mode=request.mode,
            train_size=len(splits.train),
            val_size=len(splits.val),
            test_size=len(splits.test),
            budget=request.budget.to_dict(),
            seed=request.seed,
            data_seed=splits.seed,
            extra=_json_safe(request.options),
        ),
        lm=LMInfo(
            backend=settings.backend,
            model=settings.model,
            base_url=settings.base_url,  # the upstream, never the gateway, never a key
            simulated=settings.simulated,
            replayed_from=settings.replayed_from,
            transport=settings.transport,
        ),
        data=DataInfo(source=splits.source, digests=splits.digests()),
        results=Scores(
            baseline_test_accuracy=accuracy(done.baseline) if done.baseline else None,
            optimized_test_accuracy=accuracy(done.optimized) if done.optimized else None,
            best_val_score=outcome.best_val_score if outcome else None,
            baseline_per_item=done.baseline or (),
            per_item=done.optimized or (),
            native_executor=optimizer.spec.native_executor,
            by_executor=by_executor,
        ),
        optimized_prompt=outcome.prompt if outcome else None,
        usage=usage,
        trajectory=outcome.trajectory if outcome else (),
        timing=Timing(
            optimize_seconds=done.seconds.get("optimize"),
            eval_seconds=sum(evals) if evals else None,
            elapsed_seconds=elapsed,
        ),
        started_at=started_at,
        details=details,
    )


def _by_executor(done: _Progress, usage: dict[str, PhaseUsage]) -> dict[str, ExecutorScores]:
    """Every executor's results, native first, each with its parse diagnostics."""
    out: dict[str, ExecutorScores] = {}
    for name, progress in sorted(done.executors.items(), key=lambda kv: not kv[1].native):
        if progress.baseline is None and progress.error is None:
            continue  # never reached (the case failed before)

        def diagnostics(items: tuple[ItemResult, ...] | None, which: str,
                        progress: _ExecutorProgress = progress) -> ParseDiagnostics | None:
            if not items:
                return None
            phase_usage = usage.get(progress.phases[which])
            return ParseDiagnostics.of(items, phase_usage.calls if phase_usage else None)

        shared = None
        if progress.shared is not None:
            shared = {"key": progress.shared.key, "reused": progress.reused,
                      "counted_under": {"scope": progress.shared.scope,
                                        "phase": progress.shared.phase},
                      "usage_copied": progress.shared.usage is not None}
        out[name] = ExecutorScores(
            native=progress.native,
            baseline_per_item=progress.baseline or (),
            per_item=progress.optimized or (),
            baseline_diagnostics=diagnostics(progress.baseline, "baseline"),
            optimized_diagnostics=diagnostics(progress.optimized, "optimized"),
            phases=dict(progress.phases),
            baseline_shared=shared,
            error=progress.error,
        )
    return out


def _json_safe(options: Mapping[str, Any]) -> dict[str, Any]:
    """Adapter options as they can appear in JSON (callables and objects are left out)."""
    return {k: v for k, v in options.items()
            if isinstance(v, str | int | float | bool | type(None) | list | dict)}
