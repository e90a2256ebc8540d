"""The result record: round trip, refusal of unknown versions, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mipro_bench.results import (
    SCHEMA_VERSION,
    CaseConfig,
    DataInfo,
    ItemResult,
    LMInfo,
    OptimizedPrompt,
    PhaseUsage,
    RecordError,
    RunRecord,
    Scores,
    Timing,
    read_record,
    write_record,
)


def make_record(**over) -> RunRecord:
    items = (ItemResult("test:1", "card_arrival", "card_arrival", True),
             ItemResult("test:2", "pin_blocked", None, False))
    base = dict(
        optimizer="dspy_miprov2",
        status="succeeded",
        config=CaseConfig(model="gpt-4.1-nano", mode="instruction_only", train_size=5,
                          val_size=3, test_size=2, budget={"trials": 5}, seed=1),
        lm=LMInfo(backend="sim", model="gpt-4.1-nano", base_url=None, simulated=True),
        data=DataInfo(source="local:x", digests={"test": "abc"}),
        results=Scores(baseline_test_accuracy=0.0, optimized_test_accuracy=0.5,
                       best_val_score=0.66, per_item=items),
        optimized_prompt=OptimizedPrompt("Classify."),
        usage={"optimize": PhaseUsage(calls=3, input_tokens=10, output_tokens=2)},
        trajectory=(),
        timing=Timing(optimize_seconds=1.0),
        started_at="2026-11-30T00:00:00+00:00",
    )
    base.update(over)
    return RunRecord(**base)


def test_round_trip_is_lossless() -> None:
    record = make_record()
    data = json.loads(json.dumps(record.to_dict()))
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["results"]["improvement"] == pytest.approx(0.5)
    assert RunRecord.from_dict(data) == record


def test_unknown_cost_stays_null_when_summed() -> None:
    total = PhaseUsage(calls=1) + PhaseUsage(calls=2)
    assert total.calls == 3 and total.cost_usd is None
    assert (PhaseUsage(cost_usd=0.5) + PhaseUsage()).cost_usd == pytest.approx(0.5)


def test_other_schema_version_refused() -> None:
    data = make_record().to_dict()
    data["schema_version"] = 99
    with pytest.raises(RecordError, match="schema_version 99"):
        RunRecord.from_dict(data)


def test_write_names_and_never_overwrites(tmp_path: Path) -> None:
    a = write_record(make_record(), tmp_path, "dspy_mipro")
    b = write_record(make_record(), tmp_path, "dspy_mipro")
    assert a != b and a.name.startswith("banking77_dspy_mipro_")
    assert read_record(a) == make_record()
    assert not list(tmp_path.glob(".*.tmp"))


def test_read_garbage_is_a_record_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{nope")
    with pytest.raises(RecordError, match="not valid JSON"):
        read_record(bad)
