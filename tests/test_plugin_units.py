"""The plugin's parts without running a benchmark: matrix options, floor policy, session
summary and worker payloads, the gateway's LM clock, unique record names across processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from types import SimpleNamespace

import pytest

from mipro_bench.floors_policy import judge, uncalibrated_reason
from mipro_bench.gate import GateError, check, parse_threshold
from mipro_bench.lm.usage import UsageLedger, usage_from_json, usage_to_json
from mipro_bench.matrix import DEFAULT_MATRIX, Calibration, MatrixError, load_matrix
from mipro_bench.matrix_choice import (
    MatrixChoice,
    MatrixChoiceError,
    choice_from_options,
    parse_budget,
    parse_seeds,
)
from mipro_bench.results import CaseConfig, LMInfo, PhaseUsage, Timing, result_path
from mipro_bench.session import MiproSession, lm_time_split
from tests.factories import make_record

CALIBRATION = Calibration(train_size=100, val_size=50, test_size=308, data_seed=0)


def on_panel(train: int = 100, val: int = 50, test: int = 308, **over):
    config = CaseConfig(model="gpt-4.1-nano", mode="instruction_only", train_size=train,
                        val_size=val, test_size=test, budget={"trials": 10}, seed=1)
    return make_record(config=config, **over)


def dspy_case():
    return load_matrix(DEFAULT_MATRIX).for_optimizer("dspy_miprov2")[0]


# --- matrix options -----------------------------------------------------------------------


def test_options_become_dotted_overrides() -> None:
    choice = choice_from_options(
        seeds="1,2,3", modes="instruction_only",
        budgets=["dspy_miprov2.trials=2", "synth_mipro.rollouts=40"],
        per_optimizer_concurrency={"dspy_miprov2": 8, "synth_mipro": 16},
        optimizers="dspy_miprov2",
    )
    assert choice.overrides == {
        "matrix.seeds": [1, 2, 3],
        "matrix.modes": ["instruction_only"],
        "budget.dspy_miprov2.trials": 2,
        "budget.synth_mipro.rollouts": 40,
        "options.dspy_miprov2.num_threads": 8,
        "options.synth_mipro.max_concurrent": 16,
        "options.synth_mipro.eval_concurrency": 16,
    }
    assert choice.selects("dspy_miprov2") and not choice.selects("synth_mipro")
    matrix = choice.load()
    dspy = matrix.for_optimizer("dspy_miprov2")
    assert [c.seed for c in dspy] == [1, 2, 3]
    assert {c.mode for c in matrix.cases} == {"instruction_only"}
    assert {c.budget.trials for c in dspy} == {2}
    assert {c.options["num_threads"] for c in dspy} == {8}
    assert {c.budget.rollouts for c in matrix.for_optimizer("synth_mipro")} == {40}
    assert "budget.dspy_miprov2.trials" in matrix.overridden


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seeds": "1,x"}, "seeds are integers"),
    ({"seeds": ""}, "comma-separated"),
    ({"seeds": "1,1"}, "twice"),
    ({"modes": "zero_shot"}, "unknown mode 'zero_shot'"),
    ({"optimizers": "dspy"}, "unknown optimizer 'dspy'"),
    ({"budgets": ["trials=2"]}, "OPTIMIZER.KEY=VALUE"),
    ({"budgets": ["gepa.trials=2"]}, "unknown optimizer 'gepa'"),
    ({"per_optimizer_concurrency": {"dspy_miprov2": 0}},
     "--mipro-dspy-threads must be at least 1"),
    ({"per_optimizer_concurrency": {"synth_mipro": -3}},
     "--mipro-synth-concurrency must be at least 1"),
    ({"concurrency": 0}, "must be at least 1"),
    ({"options": ["module=cot"]}, "OPTIMIZER.KEY=VALUE"),
    ({"options": ["gepa.module=cot"]}, "unknown optimizer 'gepa'"),
    ({"matrix": "/no/such/matrix.toml"}, "no such file"),
])
def test_bad_matrix_options_are_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(MatrixChoiceError, match=message) as info:
        choice_from_options(**kwargs)
    assert "\n" not in str(info.value)


def test_a_wrong_budget_key_is_the_matrix_files_own_message() -> None:
    choice = choice_from_options(budgets=["dspy_miprov2.trails=2"])
    with pytest.raises(MatrixError, match=r"unknown key\(s\) trails.*overrides: "
                                          r"budget.dspy_miprov2.trails=2"):
        choice.load()


def test_parsers() -> None:
    assert parse_seeds(" 3, 1 ") == [3, 1]
    assert parse_budget("dspy_miprov2.auto=light") == ("budget.dspy_miprov2.auto", "light")


def test_a_model_outside_the_matrix_gets_the_matrix_for_itself() -> None:
    matrix = MatrixChoice(model="gpt-4o-mini").load()
    assert {c.model for c in matrix.cases} == {"gpt-4o-mini"}
    assert {c.model for c in MatrixChoice(model="gpt-4.1-nano").load().cases} == {"gpt-4.1-nano"}


def test_one_concurrency_sets_every_optimizers_speed_knobs_and_a_flag_wins() -> None:
    overrides = choice_from_options(concurrency=3).overrides
    assert overrides == {
        "options.dspy_miprov2.num_threads": 3,
        "options.dspy_gepa.num_threads": 3,
        "options.synth_mipro.max_concurrent": 3,
        "options.synth_mipro.eval_concurrency": 3,
    }
    own = choice_from_options(concurrency=3, per_optimizer_concurrency={"dspy_miprov2": 5})
    assert own.overrides["options.dspy_miprov2.num_threads"] == 5
    assert own.overrides["options.synth_mipro.max_concurrent"] == 3


def test_option_overrides_reach_the_cases_and_are_checked() -> None:
    choice = choice_from_options(options=["dspy_miprov2.module=cot"])
    assert choice.overrides == {"options.dspy_miprov2.module": "cot"}
    assert {c.options["module"] for c in choice.load().for_optimizer("dspy_miprov2")} == {"cot"}
    with pytest.raises(MatrixError, match=r"\[options.dspy_miprov2\]: unknown key\(s\) modul;"):
        choice_from_options(options=["dspy_miprov2.modul=cot"]).load()


def _config_with(choice: MatrixChoice, tmp_path: Path) -> SimpleNamespace:
    """What `session_matrix` reads of a pytest config: its stash, as pytest_configure left it."""
    from mipro_bench.plugin import CHOICE_KEY, SESSION_KEY

    config = SimpleNamespace(stash=pytest.Stash())
    config.stash[CHOICE_KEY] = choice
    config.stash[SESSION_KEY] = MiproSession(results_dir=tmp_path)
    return config


def test_the_session_matrix_follows_the_sessions_own_choice(tmp_path: Path) -> None:
    from mipro_bench.plugin import SESSION_KEY, session_matrix

    chosen = _config_with(choice_from_options(seeds="4,5"), tmp_path)
    default = _config_with(MatrixChoice(), tmp_path)
    assert {c.seed for c in session_matrix(chosen).cases} == {4, 5}
    # Two sessions in one process do not see each other's choice (nothing module-global).
    assert {c.seed for c in session_matrix(default).cases} == {
        c.seed for c in load_matrix(DEFAULT_MATRIX).cases}
    assert session_matrix(chosen) is session_matrix(chosen)  # loaded once
    assert chosen.stash[SESSION_KEY].matrix is session_matrix(chosen)


def test_a_broken_matrix_stops_the_session_with_one_line(tmp_path: Path) -> None:
    from mipro_bench.plugin import session_matrix

    bad = tmp_path / "matrix.toml"
    bad.write_text("[matrix\n")
    with pytest.raises(pytest.exit.Exception, match="not valid TOML") as info:
        session_matrix(_config_with(MatrixChoice(path=bad), tmp_path))
    assert info.value.returncode == 4 and "\n" not in str(info.value.msg)


def test_the_shipped_matrix_names_its_calibration_panel() -> None:
    assert load_matrix(DEFAULT_MATRIX).calibration == CALIBRATION


def test_calibration_table_is_checked(tmp_path: Path) -> None:
    text = DEFAULT_MATRIX.read_text().replace("test_size = 308", "test_size = -1")
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(MatrixError, match=r"\[calibration\] test_size = -1"):
        load_matrix(path)


# --- floors policy ------------------------------------------------------------------------

MISS = ["optimized test accuracy 0.300 < floor 0.375"]


def test_floors_are_enforced_on_the_calibration_panel() -> None:
    verdict = judge("auto", dspy_case(), on_panel(), MISS, CALIBRATION, frozenset())
    assert verdict.enforced == tuple(MISS) and verdict.note is None


def test_concurrency_overrides_keep_the_calibration() -> None:
    overridden = frozenset({"options.dspy_miprov2.num_threads", "matrix.seeds"})
    assert uncalibrated_reason(dspy_case(), on_panel(), CALIBRATION, overridden) is None


def test_floors_are_reported_not_enforced_elsewhere() -> None:
    small = judge("auto", dspy_case(), on_panel(20, 10, 40), MISS, CALIBRATION, frozenset())
    assert small.enforced == ()
    assert small.note is not None
    assert "panel train 20, val 10, test 40" in small.note.reason
    assert "calibrated for train 100, val 50, test 308" in small.note.reason
    budget = judge("auto", dspy_case(), on_panel(), MISS, CALIBRATION,
                   frozenset({"budget.dspy_miprov2.trials"}))
    assert budget.enforced == () and "budget.dspy_miprov2.trials" in budget.note.reason
    # Another optimizer's budget does not touch this case's calibration.
    other = judge("auto", dspy_case(), on_panel(), MISS, CALIBRATION,
                  frozenset({"budget.synth_mipro.rollouts"}))
    assert other.enforced == tuple(MISS)


def test_enforce_off_and_failed_runs() -> None:
    small = on_panel(20, 10, 40)
    assert judge("enforce", dspy_case(), small, MISS, CALIBRATION, frozenset()).enforced
    off = judge("off", dspy_case(), on_panel(), MISS, CALIBRATION, frozenset())
    assert off.enforced == () and "--mipro-floors off" in off.note.reason
    failed = on_panel(20, 10, 40, status="failed", error="boom")
    for mode in ("auto", "off"):
        assert judge(mode, dspy_case(), failed, ["run failed: boom"], CALIBRATION,
                     frozenset()).enforced == ("run failed: boom",)


def test_session_keeps_floor_notes_and_ships_them_from_workers(tmp_path: Path) -> None:
    matrix = load_matrix(DEFAULT_MATRIX)
    worker = MiproSession(results_dir=tmp_path)
    assert worker.judge_floors(dspy_case(), on_panel(20, 10, 40), MISS, matrix) == []
    assert worker.judge_floors(dspy_case(), on_panel(), MISS, matrix) == MISS
    controller = MiproSession(results_dir=tmp_path)
    controller.merge_worker_payload(worker.worker_payload())
    assert controller.floor_notes == worker.floor_notes
    assert len(controller.floor_notes) == 1
    lines = "\n".join(controller.summary_lines())
    assert "1 case(s) below a floor, reported, not enforced" in lines
    assert MISS[0] in lines


# --- session summary ------------------------------------------------------------------------


def test_summary_ends_with_the_html_report_and_splits_lm_time(tmp_path: Path) -> None:
    usage = {"optimize": PhaseUsage(calls=3, lm_seconds=6.0, lm_busy_seconds=2.5),
             "test_eval": PhaseUsage(calls=2, lm_seconds=1.0, lm_busy_seconds=0.5)}
    session = MiproSession(results_dir=tmp_path, save_baseline=tmp_path / "b.json")
    session.add_record(make_record(usage=usage, timing=Timing(elapsed_seconds=10.0)))
    session.finish()
    lines = session.summary_lines()
    assert set(session.written) == {"json", "markdown", "html", "baseline"}
    assert lines[-1] == f"mipro-bench html: {session.report_path}"
    assert session.report_path.name.startswith("report_")
    timing = next(line for line in lines if line.startswith("mipro-bench time"))
    assert "ran 10.0 s; the LM was busy 3.0 s of it (30%), the harness 7.0 s" in timing


def test_lm_time_split_needs_both_clocks() -> None:
    assert lm_time_split([make_record()]) is None  # no elapsed time, no LM time
    assert lm_time_split([make_record(timing=Timing(elapsed_seconds=4.0))]) is None
    timed = make_record(timing=Timing(elapsed_seconds=4.0),
                        usage={"optimize": PhaseUsage(calls=1, lm_busy_seconds=1.5)})
    assert lm_time_split([timed, timed]) == (8.0, 3.0)


def test_session_refuses_a_bad_floor_mode(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="--mipro-floors 'sometimes'"):
        MiproSession.from_options(results_dir=tmp_path, compare=None, compare_fail=[],
                                  save_baseline=None, floors="sometimes")


def test_gate_refuses_a_baseline_of_another_model() -> None:
    other = make_record(lm=LMInfo(backend="sim", model="gpt-4o-mini", base_url=None,
                                  simulated=True))
    with pytest.raises(GateError, match=r"none of this run.s cases.*gpt-4o-mini.*gpt-4\.1-nano"):
        check([make_record()], [other], [parse_threshold("optimized_test_accuracy:5")])


# --- the gateway's LM clock ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ledger_sums_call_time_and_the_union_of_busy_intervals() -> None:
    clock = FakeClock()
    ledger = UsageLedger(clock=clock)
    a = ledger.started("case", "optimize")      # t=0: call a starts
    clock.now = 1.0
    b = ledger.started("case", "optimize")      # t=1: call b overlaps
    clock.now = 3.0
    ledger.finished("case", "optimize", a)      # a took 3 s
    clock.now = 4.0
    ledger.finished("case", "optimize", b)      # b took 3 s; busy 0..4
    clock.now = 10.0
    c = ledger.started("case", "optimize")      # idle 4..10, then c
    clock.now = 10.5
    mid = ledger.snapshot()["case"]["optimize"]
    assert mid.lm_busy_seconds == pytest.approx(4.5)  # an open interval counts so far
    clock.now = 11.0
    ledger.finished("case", "optimize", c)
    usage = ledger.snapshot()["case"]["optimize"]
    assert usage.lm_seconds == pytest.approx(7.0)
    assert usage.lm_busy_seconds == pytest.approx(5.0)
    assert usage_from_json(usage_to_json(ledger.snapshot()))["case"]["optimize"].lm_seconds == \
        pytest.approx(7.0)


def test_timing_takes_no_part_in_equality_and_adds_up() -> None:
    a = PhaseUsage(calls=1, lm_seconds=1.0, lm_busy_seconds=1.0)
    b = PhaseUsage(calls=1, lm_seconds=2.0, lm_busy_seconds=0.5)
    assert a == b
    total = a + b + PhaseUsage(calls=1)
    assert (total.calls, total.lm_seconds, total.lm_busy_seconds) == (3, 3.0, 1.5)
    assert (PhaseUsage() + PhaseUsage()).lm_seconds is None


# --- unique record names across processes ---------------------------------------------------


def _claim(args: tuple[str, int]) -> list[str]:
    directory, n = args
    return [result_path(Path(directory), "dspy_mipro", stamp="20260101_000000").name
            for _ in range(n)]


def test_record_names_are_claimed_across_processes(tmp_path: Path) -> None:
    """xdist workers finishing cases in the same second must not share a record file."""
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        names = [n for chunk in pool.map(_claim, [(str(tmp_path), 5)] * 3) for n in chunk]
    assert len(names) == len(set(names)) == 15
    assert all((tmp_path / n).exists() for n in names)
