"""Build real RunRecords for tests (the real type, with values the test chooses)."""

from __future__ import annotations

from mipro_bench.results import (
    CaseConfig,
    DataInfo,
    ItemResult,
    LMInfo,
    OptimizedPrompt,
    PhaseUsage,
    RunRecord,
    Scores,
    Timing,
)


def make_record(**over) -> RunRecord:
    items = (
        ItemResult("test:1", "card_arrival", "card_arrival", True),
        ItemResult("test:2", "pin_blocked", None, False),
    )
    base = dict(
        optimizer="dspy_miprov2",
        status="succeeded",
        config=CaseConfig(
            model="gpt-4.1-nano",
            mode="instruction_only",
            train_size=5,
            val_size=3,
            test_size=2,
            budget={"trials": 5},
            seed=1,
        ),
        lm=LMInfo(backend="sim", model="gpt-4.1-nano", base_url=None, simulated=True),
        data=DataInfo(source="local:x", digests={"test": "abc"}),
        results=Scores(
            baseline_test_accuracy=0.0,
            optimized_test_accuracy=0.5,
            best_val_score=0.66,
            per_item=items,
        ),
        optimized_prompt=OptimizedPrompt("Classify."),
        usage={"optimize": PhaseUsage(calls=3, input_tokens=10, output_tokens=2)},
        trajectory=(),
        timing=Timing(optimize_seconds=1.0),
        started_at="2026-11-30T00:00:00+00:00",
    )
    base.update(over)
    return RunRecord(**base)
