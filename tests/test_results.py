"""The result record: round trip, refusal of unknown versions, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mipro_bench.results import (
    SCHEMA_VERSION,
    PhaseUsage,
    RecordError,
    RunRecord,
    read_record,
    write_record,
)
from tests.factories import make_record


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
