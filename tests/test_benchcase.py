"""A matrix case as a pytest test: ids, skips with reasons, attached records, floors.

Each case runs on a session engine (`mipro_bench.engine.Engine`), as the plugin's
`bench_case` fixture runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mipro_bench.data import Splits, load_banking77, make_splits
from mipro_bench.engine import Engine
from mipro_bench.fixtures.cases import RECORD_KEY, USER_PROPERTY, case_params, run_bench_case
from mipro_bench.journal_plan import JournalPlan
from mipro_bench.matrix import Case, Floors, load_matrix
from mipro_bench.optimizers.dspy_mipro import MiproBudget
from mipro_bench.options import BenchOptions
from mipro_bench.results import RunRecord
from mipro_bench.session import MiproSession


@pytest.fixture(scope="module")
def tiny_splits(tiny_data_dir: Path) -> Splits:
    return make_splits(load_banking77(tiny_data_dir), train_size=8, val_size=4, test_size=6)


def sim_engine(results_dir: Path) -> Engine:
    return Engine(BenchOptions(lm="sim", results_dir=results_dir), JournalPlan(), say=print)


def case(**over) -> Case:
    base = dict(optimizer="dspy_miprov2", mode="instruction_only", model="gpt-4.1-nano", seed=1,
                budget=MiproBudget(trials=1), options={"num_threads": 2})
    base.update(over)
    return Case(**base)


def test_params_carry_the_documented_ids() -> None:
    matrix = load_matrix()
    params = case_params(matrix)
    ids = [p.id for p in params]
    assert ids == [c.id for c in matrix.cases]  # every case, unsupported ones included
    assert "dspy_miprov2-instruction_only-gpt-4.1-nano-seed1" in ids
    assert "synth_mipro-fewshot-gpt-4.1-nano-seed1" in ids  # collected, skipped at run time
    assert all(p.values == (c,) for p, c in zip(params, matrix.cases, strict=True))
    assert all([m.name for m in p.marks] == ["benchmark_case"] for p in params)


def test_params_keep_only_the_selected_optimizers() -> None:
    matrix = load_matrix()
    synth = [p.id for p in case_params(matrix, ("synth_mipro",))]
    assert synth and all(i.startswith("synth_mipro-") for i in synth)
    assert case_params(matrix, ("gepa",)) == []  # the plugin turns this into a skip


def test_unsupported_case_is_skipped_with_its_reason_and_reported(
        tiny_splits: Splits, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    session = MiproSession(results_dir=tmp_path)
    with sim_engine(tmp_path) as engine, pytest.raises(pytest.skip.Exception, match="no demos"):
        run_bench_case(case(optimizer="synth_mipro", mode="fewshot",
                            unsupported="Synth MIPRO optimizes instructions only (no demos)"),
                       item=request.node, engine=engine, splits=tiny_splits,
                       workdir=tmp_path / "w", session=session)
    assert [(u.optimizer, u.mode) for u in session.unsupported] == [("synth_mipro", "fewshot")]
    assert not list(tmp_path.glob("*.json"))


def test_other_model_is_skipped_not_run(tiny_splits: Splits, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    with sim_engine(tmp_path) as engine:
        with pytest.raises(pytest.skip.Exception, match="not selected"):
            run_bench_case(case(model="gpt-5"), item=request.node, engine=engine,
                           splits=tiny_splits, workdir=tmp_path / "w")
        assert engine.gateway().usage() == {}  # not a single LM call


def test_record_is_attached_and_an_unmet_floor_fails_the_case(
        tiny_splits: Splits, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    session = MiproSession(results_dir=tmp_path, floors="enforce")  # enforced on any panel
    impossible = {"sim": Floors(min_optimized_test_accuracy=1.0, min_improvement=1.0)}
    with sim_engine(tmp_path / "results") as engine, \
            pytest.raises(pytest.fail.Exception) as failed:
        run_bench_case(case(floors_by_lm=impossible), item=request.node, engine=engine,
                       splits=tiny_splits, workdir=tmp_path / "w", session=session)
    assert "< floor 1.000" in str(failed.value) and "record:" in str(failed.value)
    props = dict(request.node.user_properties)
    record = RunRecord.from_dict(props[USER_PROPERTY])
    assert record.status == "succeeded" and record.config.seed == 1
    assert request.node.stash[RECORD_KEY] == record
    assert session.records == [record]
    assert Path(props["mipro_record_path"]).is_file()
    # The record's own floors pass when they are reachable (same record, sane floor).
    assert Floors(max_drop_vs_baseline=1.0).violations(record) == []
