"""Real RunRecords with per-item results the test writes down, so statistics are known.

`items("1101")` makes four test items (ids test:0..3) scored right, right, wrong,
right; intents cycle through LABELS so per-intent numbers are predictable too.
`make_record(field=...)` is the same record with whole RunRecord fields swapped in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from mipro_bench.results import (
    CaseConfig,
    DataInfo,
    Demo,
    ItemResult,
    LMInfo,
    OptimizedPrompt,
    PhaseUsage,
    RunRecord,
    Scores,
    Timing,
    TrajectoryPoint,
)

LABELS = ("card_arrival", "lost_or_stolen_card", "pin_blocked", "top_up_failed")
MODEL = "gpt-4.1-nano"


def items(pattern: str | Sequence[bool], *, labels: Sequence[str] = LABELS,
          prefix: str = "test") -> tuple[ItemResult, ...]:
    """One ItemResult per character ("1" right, "0" wrong); item i has intent labels[i % k]."""
    flags = [c == "1" for c in pattern] if isinstance(pattern, str) else list(pattern)
    out = []
    for i, ok in enumerate(flags):
        expected = labels[i % len(labels)]
        wrong = labels[(i + 1) % len(labels)]
        out.append(ItemResult(f"{prefix}:{i}", expected, expected if ok else wrong, bool(ok)))
    return tuple(out)


def _accuracy(xs: tuple[ItemResult, ...]) -> float | None:
    return sum(i.correct for i in xs) / len(xs) if xs else None


def usage(calls: tuple[int, int, int] = (4, 30, 4), *, cost: float | None = None,
          tokens_per_call: int = 100) -> dict[str, PhaseUsage]:
    """Usage by phase (baseline_eval, optimize, test_eval); cost per call, or None unknown."""
    phases = ("baseline_eval", "optimize", "test_eval")
    return {
        phase: PhaseUsage(
            calls=n,
            input_tokens=n * tokens_per_call,
            output_tokens=n * 10,
            cost_usd=None if cost is None else n * cost,
        )
        for phase, n in zip(phases, calls, strict=True)
    }


def record(
    *,
    optimizer: str = "dspy_miprov2",
    mode: str = "instruction_only",
    model: str = MODEL,
    seed: int = 0,
    baseline: str | Sequence[bool] = "0101",
    optimized: str | Sequence[bool] = "1101",
    status: str = "succeeded",
    error: str | None = None,
    simulated: bool = True,
    test_digest: str = "digest-test-panel",
    best_val: float | None = 0.9,
    calls: tuple[int, int, int] = (4, 30, 4),
    cost: float | None = None,
    trajectory: Sequence[tuple[int, float]] | None = None,
    instruction: str = "Classify the banking query into one intent.",
    demos: Sequence[tuple[str, str]] = (),
    elapsed: float | None = 12.5,
    budget: dict[str, Any] | None = None,
    lm_model: str | None = None,
    labels: Sequence[str] = LABELS,
) -> RunRecord:
    base_items = items(baseline, labels=labels)
    opt_items = items(optimized, labels=labels) if status == "succeeded" else ()
    points = trajectory if trajectory is not None else ((5, 0.5), (15, 0.7), (30, best_val or 0))
    return RunRecord(
        optimizer=optimizer,
        status=status,  # type: ignore[arg-type]
        error=error,
        config=CaseConfig(
            model=model,
            mode=mode,  # type: ignore[arg-type]
            train_size=8,
            val_size=4,
            test_size=len(base_items),
            budget=budget if budget is not None else {"trials": 6},
            seed=seed,
        ),
        lm=LMInfo(backend="sim" if simulated else "openai", model=lm_model or model,
                  base_url="http://127.0.0.1:1/v1" if simulated else None, simulated=simulated),
        data=DataInfo(source="local:tiny", digests={"train": "d-train", "val": "d-val",
                                                    "test": test_digest}),
        results=Scores(
            baseline_test_accuracy=_accuracy(base_items),
            optimized_test_accuracy=_accuracy(opt_items),
            best_val_score=best_val if status == "succeeded" else None,
            baseline_per_item=base_items,
            per_item=opt_items,
        ),
        optimized_prompt=(OptimizedPrompt(instruction, tuple(Demo(q, i) for q, i in demos))
                          if status == "succeeded" else None),
        usage=usage(calls, cost=cost),
        trajectory=tuple(TrajectoryPoint(lm_calls=c, rollouts=None, score=s) for c, s in points)
        if status == "succeeded" else (),
        timing=Timing(optimize_seconds=elapsed, eval_seconds=1.0, elapsed_seconds=elapsed),
        started_at=f"2026-01-01T00:00:{seed:02d}+00:00",
        backend="local" if optimizer.startswith("synth") else None,
        versions={"python": "3.11", "dspy": "3.4.1"},
    )


def make_record(**fields: Any) -> RunRecord:
    """A small succeeded record (baseline 0.0, optimized 0.5 on two items, best val 0.66, no
    elapsed time) with the given RunRecord fields replaced, for tests about one field."""
    base = record(baseline="00", optimized="10", best_val=0.66, elapsed=None)
    return dataclasses.replace(base, **fields)
