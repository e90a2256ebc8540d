"""Live progress: lines with counts and ETA on a fake clock, rich in a pseudo-terminal, off."""

from __future__ import annotations

import threading
import time
from io import StringIO

import pytest
from rich.console import Console

from mipro_bench.lm.usage import UsageLedger
from mipro_bench.progress import (
    CaseProgress,
    LineSink,
    PlannedPhase,
    RichSink,
    format_line,
    planned_optimize_calls,
    resolve_mode,
)
from mipro_bench.results import PhaseUsage

PLAN = [PlannedPhase("baseline_eval", 100), PlannedPhase("optimize", 600, approx=True),
        PlannedPhase("test_eval", 100)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fixture(sink, usage: dict[str, PhaseUsage], retries: dict[str, int] | None = None):
    clock = Clock()
    progress = CaseProgress("dspy_miprov2-instruction_only-seed1", sink, clock=clock,
                            retries=lambda scope: retries or {}, threaded=False)
    progress.begin(PLAN, lambda: usage, scope="s1")
    return progress, clock


def test_lines_show_counts_errors_retries_and_eta_on_a_fake_clock() -> None:
    lines: list[str] = []
    usage: dict[str, PhaseUsage] = {}
    progress, clock = _fixture(LineSink(lines.append, interval_s=30), usage,
                               retries={"optimize": 2})
    progress.phase("baseline_eval")
    usage["baseline_eval"] = PhaseUsage(calls=100, errors=1)
    clock.now += 10
    progress.phase("optimize")
    clock.now += 20
    usage["optimize"] = PhaseUsage(calls=150, errors=2)
    progress.tick()
    line = lines[-1]
    assert "optimize (2/5)" not in line  # the plan has 3 phases
    assert "optimize (2/3) 150/~600 calls (25%)" in line
    assert "errors 3, retries 2" in line
    # 150 calls in 20 s: 450 left -> 60 s; the case: 250 calls in 30 s, 550 left -> 66 s
    assert "phase 20s, ETA 1m00s" in line
    assert "case 30s, 250 calls, ETA 1m06s" in line
    progress.end()


def test_unknown_plan_says_so_and_has_no_eta() -> None:
    lines: list[str] = []
    usage = {"optimize": PhaseUsage(calls=7)}
    clock = Clock()
    progress = CaseProgress("gepa", LineSink(lines.append), clock=clock, threaded=False)
    progress.begin([PlannedPhase("optimize", None)], lambda: usage)
    progress.phase("optimize")
    clock.now += 5
    progress.tick()
    assert "7 calls (plan unknown)" in lines[-1] and "ETA ?" in lines[-1]


def test_lines_appear_at_a_steady_interval_from_the_poller_thread() -> None:
    lines: list[str] = []
    got = threading.Event()

    def write(line: str) -> None:
        lines.append(line)
        if len(lines) >= 2:
            got.set()

    ledger = UsageLedger()
    progress = CaseProgress("case", LineSink(write, interval_s=0.05))
    progress.begin(PLAN, lambda: ledger.snapshot("s1").get("s1", {}), scope="s1")
    progress.phase("baseline_eval")
    for _ in range(3):
        ledger.record_call("s1", "baseline_eval", input_tokens=1, output_tokens=1,
                           cost_usd=None)
    assert got.wait(5), lines
    progress.end()
    n = len(lines)
    time.sleep(0.2)
    assert len(lines) == n  # stopped with the case
    assert "baseline_eval (1/3) 3/100 calls (3%)" in lines[-1]


def test_nothing_is_printed_before_the_first_interval() -> None:
    lines: list[str] = []
    progress = CaseProgress("case", LineSink(lines.append, interval_s=30))
    progress.begin(PLAN, lambda: {})
    progress.phase("baseline_eval")
    progress.end()
    assert lines == []  # a short case prints exactly what it printed before


def test_rich_mode_draws_a_live_display_in_a_pseudo_terminal() -> None:
    out = StringIO()
    console = Console(force_terminal=True, file=out, width=120)
    usage = {"optimize": PhaseUsage(calls=300)}
    progress, clock = _fixture(RichSink(console), usage)
    progress.phase("optimize")
    clock.now += 30
    progress.tick()
    progress.say("mipro-bench baseline test accuracy 0.370", print)
    progress.end()
    text = out.getvalue()
    assert "\x1b[" in text  # drawn with terminal control codes
    assert "optimize (2/3)" in text and "300/~600 calls (50%)" in text
    assert "ETA 30s" in text
    assert "mipro-bench baseline test accuracy 0.370" in text  # printed above the display


def test_off_and_auto() -> None:
    assert resolve_mode("off", is_terminal=True) == "off"
    assert resolve_mode("auto", is_terminal=True) == "rich"
    assert resolve_mode("auto", is_terminal=False) == "lines"
    assert resolve_mode("rich", is_terminal=False) == "rich"
    assert resolve_mode("rich", is_terminal=True, xdist_worker=True) == "lines"
    assert resolve_mode("off", is_terminal=False, xdist_worker=True) == "off"
    with pytest.raises(ValueError):
        resolve_mode("fancy", is_terminal=True)


def test_a_failing_reader_or_sink_never_fails_the_case() -> None:
    class Broken(LineSink):
        def update(self, snapshot):  # type: ignore[no-untyped-def]
            raise RuntimeError("display gone")

    def boom() -> dict[str, PhaseUsage]:
        raise OSError("gateway gone")

    progress = CaseProgress("case", Broken(print), threaded=False)
    progress.begin(PLAN, boom)
    progress.phase("optimize")
    progress.tick()
    progress.end()
    assert "0/~600" in format_line(progress.snapshot())


def test_planned_optimize_calls_of_the_builtin_adapters_match_the_matrix_notes() -> None:
    """Default panel and budgets (benchmarks/matrix.toml measures 625/643, 566 and 563)."""
    from types import SimpleNamespace

    from mipro_bench.optimizers.dspy_gepa import DSPyGEPA, GepaBudget
    from mipro_bench.optimizers.dspy_mipro import DSPyMIPROv2, MiproBudget
    from mipro_bench.optimizers.synth_mipro import RolloutBudget, SynthMIPRO

    def request(budget, mode="instruction_only"):  # type: ignore[no-untyped-def]
        splits = SimpleNamespace(train=[0] * 100, val=[0] * 50, test=[0] * 308)
        return SimpleNamespace(budget=budget, mode=mode, splits=splits, seed=1)

    mipro = planned_optimize_calls(DSPyMIPROv2(), request(MiproBudget(trials=10)))
    assert mipro == (620, True)
    assert planned_optimize_calls(DSPyMIPROv2(), request(MiproBudget(auto="light"))) == (
        None, True)  # a preset: DSPy picks the trials
    assert planned_optimize_calls(SynthMIPRO(), request(RolloutBudget(rollouts=550))) == (
        568, True)
    assert planned_optimize_calls(DSPyGEPA(), request(GepaBudget(max_metric_calls=550))) == (
        558, True)


def test_ledger_counts_upstream_retries_apart_from_usage() -> None:
    ledger = UsageLedger()
    ledger.record_retries("s1", "optimize", 2)
    ledger.record_retries("s1", "optimize", 0)
    ledger.record_retries("s2", "test_eval", 1)
    assert ledger.retries("s1") == {"s1": {"optimize": 2}}
    assert ledger.snapshot("s1") == {}  # usage (what records carry) is unchanged
    ledger.reset("s1")
    assert ledger.retries() == {"s2": {"test_eval": 1}}


def test_planned_calls_without_a_method_is_unknown() -> None:
    assert planned_optimize_calls(object(), None) == (None, True)
