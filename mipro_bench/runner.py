"""One benchmark case end to end: baseline eval -> optimize -> test eval -> frozen record.

The runner, not the adapter, owns the order of phases, the clocks, the usage
read-out and the record, so every optimizer is measured the same way: both
prompts scored by the suite on the same test split, usage counted by the
gateway per phase, and an optimizer's own best score kept apart from test
accuracy. A run that fails (any exception, an LM outage included) still
leaves a `failed` record with the error and whatever it finished; so does a
case its optimizer's `check` refuses (before any LM call): its record says
`refused: <reason>` (and `details.refused`), so the comparison still has its row.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mipro_bench.data import Split
from mipro_bench.executors import EvaluationFailed, get_executor
from mipro_bench.optimizers.base import (
    BASELINE_PROMPT,
    NotSupported,
    OptimizeOutcome,
    Optimizer,
    OptimizeRequest,
    UsageError,
    UsageReader,
)
from mipro_bench.results import (
    PHASES,
    CaseConfig,
    DataInfo,
    ItemResult,
    LMInfo,
    OptimizedPrompt,
    PhaseUsage,
    RunRecord,
    Scores,
    Timing,
    accuracy,
    now_iso,
    result_path,
    write_json_atomic,
)

log = logging.getLogger(__name__)

# More than this share of an evaluation's items failing in the LM fails the evaluation.
MAX_ITEM_ERROR_RATE = 0.1


@dataclass
class _Progress:
    """What a run has finished so far (what a failed record can still report)."""

    baseline: tuple[ItemResult, ...] | None = None
    outcome: OptimizeOutcome | None = None
    optimized: tuple[ItemResult, ...] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    phase: str | None = None


def gateway_usage_reader(gateway: Any, scope: str) -> UsageReader:
    """This scope's per-phase usage from a gateway handle (`.usage(optimizer=scope)`)."""
    return lambda: gateway.usage(scope).get(scope, {})


def allowed_item_errors(n_items: int, rate: float = MAX_ITEM_ERROR_RATE) -> int:
    """How many items of an evaluation may fail in the LM before it is an outage."""
    return math.floor(rate * n_items)


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
) -> tuple[RunRecord, Path]:
    """Run one case and write its record atomically; returns (record, path).

    Both test evaluations run in the optimizer's native executor. An unsupported mode
    raises (the matrix shows it as "not supported"); a case its optimizer's `check`
    refuses (UsageError, before any LM call) ends in a `failed` record whose error is
    `refused: <reason>` and whose `details.refused` is the reason; everything after
    that ends in a written record, `failed` or not.
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

    def evaluate(prompt: OptimizedPrompt, phase: str) -> tuple[ItemResult, ...]:
        return score(prompt, splits.test, request, phase, executor=spec.native_executor,
                     options=optimizer.executor_options(),
                     max_item_error_rate=max_item_error_rate)

    try:
        if refused is not None:
            done.phase = "check"
            raise CaseRefused(refused)
        done.baseline = _timed(done, "baseline_eval",
                               lambda: evaluate(BASELINE_PROMPT, "baseline_eval"))
        request.say(f"baseline test accuracy {accuracy(done.baseline):.3f}")
        done.outcome = _timed(done, "optimize", lambda: optimizer.optimize(request))
        outcome = done.outcome
        done.optimized = _timed(done, "test_eval",
                                lambda: evaluate(outcome.prompt, "test_eval"))
        request.say(f"optimized test accuracy {accuracy(done.optimized):.3f}")
        done.phase = None
    except CaseRefused as exc:
        error = f"refused: {exc}"
    except Exception as exc:
        error = _one_line(exc)
        log.warning("case %s failed in %s: %s", request.scope, done.phase, error)
        log.debug("%s", traceback.format_exc())
    except KeyboardInterrupt as exc:  # still leave a record of what was finished
        error, interrupted = "interrupted (KeyboardInterrupt)", exc
    elapsed = time.perf_counter() - t0

    usage_by_phase, usage_error = _read_usage(usage)
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


def _timed(done: _Progress, phase: str, fn: Callable[[], Any]) -> Any:
    done.phase = phase
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
        ),
        data=DataInfo(source=splits.source, digests=splits.digests()),
        results=Scores(
            baseline_test_accuracy=accuracy(done.baseline) if done.baseline else None,
            optimized_test_accuracy=accuracy(done.optimized) if done.optimized else None,
            best_val_score=outcome.best_val_score if outcome else None,
            baseline_per_item=done.baseline or (),
            per_item=done.optimized or (),
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


def _json_safe(options: Mapping[str, Any]) -> dict[str, Any]:
    """Adapter options as they can appear in JSON (callables and objects are left out)."""
    return {k: v for k, v in options.items()
            if isinstance(v, str | int | float | bool | type(None) | list | dict)}
