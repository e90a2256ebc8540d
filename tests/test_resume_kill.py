"""`kill -9` of `run_comparison.py --all --resume` inside each phase, in the DSPy and the
Synth path, then `--resume` again: the comparison completes and equals an uninterrupted
run exactly (the `exact` gate), finished cases are reused, and the resumed cases answer
every journaled call from the journal (no call is paid twice) and only the rest live.

The kill moment is chosen from the journal (tests/continuity_support.py): the run's
process group is stopped once the case's journal holds a third of the phase's calls (its
count in the uninterrupted run), checked to be still inside that phase, then SIGKILLed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.continuity_support import (
    EXACT_OK,
    PHASES,
    SMALL,
    Done,
    Killed,
    calls,
    kill_at,
    record_files,
    replayed,
    run,
    shared_phases,
)

pytestmark = pytest.mark.integration

DSPY_FEWSHOT = "dspy_miprov2[fewshot-gpt-4.1-nano-seed1]"  # the second DSPy case to run
SYNTH = "synth_mipro[instruction_only-gpt-4.1-nano-seed1]"  # runs after both DSPy MIPROv2


@dataclass(frozen=True)
class Reference:
    """The uninterrupted run: its comparison JSON and, per case, scope and usage."""

    comparison: Path
    records: dict[str, dict[str, Any]]

    def scope(self, case: str) -> str:
        return str(self.records[case]["details"]["scope"])

    def phase_calls(self, case: str, phase: str) -> int:
        return int(self.records[case]["usage"][phase]["calls"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Reference:
    done = run(tmp_path_factory.mktemp("reference") / "results", real_data_dir,
               "--all", *SMALL)
    assert done.returncode == 0, done.explain()
    records = done.records()
    assert {DSPY_FEWSHOT, SYNTH} <= set(records), sorted(records)
    assert all(replayed(r) == 0 and "reused_from" not in r["details"]
               for r in records.values())
    comparison = sorted(done.results_dir.glob("comparison_*.json"))[-1]
    return Reference(comparison, records)


def kill_inside(reference: Reference, results: Path, data_dir: Path, case: str, phase: str,
                *args: str) -> Killed:
    """Kill the run a third of the way into `case`'s `phase`, and check it landed there."""
    total = reference.phase_calls(case, phase)
    killed = kill_at(results, data_dir, reference.scope(case), phase, max(1, total // 3),
                     "--all", "--resume", *SMALL, *args)
    later = PHASES[PHASES.index(phase) + 1:]
    assert killed.order and killed.order[-1] == phase, killed.order
    assert killed.phases[phase] < total and not any(killed.phases[p] for p in later), (
        f"the kill landed after {case} {phase} ({dict(killed.phases)} of {total}); "
        "the machine was too slow for the latency knob")
    return killed


def check_resumed(final: Done, reference: Reference, stages: list[Killed],
                  killed_in: dict[str, str]) -> None:
    """The resumed comparison equals the uninterrupted one exactly; each record was made
    by the first run after which it existed, reusing exactly the journal as it was when
    that run started; records made before the last run are reused, not run again."""
    assert final.returncode == 0, final.explain()
    assert EXACT_OK in final.output, final.explain()
    records = final.records()
    assert set(records) == set(reference.records)
    made_by: dict[str, int] = {}  # record file -> index of the run that wrote it
    for index, stage in enumerate(stages):
        for name in stage.records:
            made_by.setdefault(name, index)
    for name in record_files(final.results_dir):
        made_by.setdefault(name, len(stages))
    case_files: dict[str, tuple[str, int]] = {}
    for name, index in made_by.items():
        case = _case_of(final.results_dir / name)
        assert case not in case_files, f"{case} finished twice: {case_files[case]}, {name}"
        case_files[case] = (name, index)
    for case, record in records.items():
        scope = reference.scope(case)
        name, index = case_files[case]
        if index < len(stages):  # finished before the last run: reused, not run again
            assert record["details"].get("reused_from") == name, (case, record["details"])
        else:
            assert "reused_from" not in record["details"], case
        # The run that made this record started from the journal the previous kill left.
        journaled = len(stages[index - 1].keys.get(scope, ())) if index > 0 else 0
        got, total = replayed(record), calls(record)
        assert total == calls(reference.records[case])
        # Every journaled call answered from the journal, so the live calls (total - got)
        # are exactly those unfinished or in flight at the kill: none paid twice.
        assert got == journaled, (case, got, journaled)
        if case in killed_in:
            phase = killed_in[case]
            assert 0 < journaled < total
            for p in PHASES:
                if p in shared_phases(record):
                    continue  # a copy of the shared evaluation's usage, not this scope's
                usage = record["usage"][p]
                if PHASES.index(p) < PHASES.index(phase):
                    assert usage["replayed_calls"] == usage["calls"], (case, p, usage)
                elif PHASES.index(p) > PHASES.index(phase):
                    assert usage["replayed_calls"] == 0, (case, p, usage)
                else:
                    assert 0 < usage["replayed_calls"] < usage["calls"], (case, p, usage)


def _case_of(path: Path) -> str:
    return str(json.loads(path.read_text(encoding="utf-8"))["case_id"])


# No "baseline_eval" here: a case's baseline is the session's shared evaluation (run
# once per executor under a scope of its own), killed in the next test.
@pytest.mark.parametrize("phase", ["optimize", "test_eval"])
def test_kill_9_in_each_phase_of_dspy_then_synth_resumes_exactly(
        phase: str, reference: Reference, tmp_path: Path, real_data_dir: Path) -> None:
    """Run 1 dies inside the DSPy few-shot case's `phase` (the instruction-only case has
    finished); run 2 (--resume) dies inside the Synth case's `phase`; run 3 completes."""
    results = tmp_path / "results"
    first = kill_inside(reference, results, real_data_dir, DSPY_FEWSHOT, phase)
    assert len(first.records) == 1, first.records  # DSPy instruction-only finished
    second = kill_inside(reference, results, real_data_dir, SYNTH, phase)
    assert len(second.records) == 2, second.records  # both DSPy cases finished
    final = run(results, real_data_dir, "--all", "--resume", *SMALL,
                "--compare", str(reference.comparison), "--compare-fail", "exact")
    check_resumed(final, reference, [first, second], {DSPY_FEWSHOT: phase, SYNTH: phase})
    assert "reusing" in final.output


def shared_baseline(record: dict[str, Any], executor: str) -> dict[str, Any]:
    return dict(record["details"]["shared_baseline"][executor])


@pytest.mark.parametrize("executor", ["dspy_program", "task_app"])
def test_kill_9_inside_a_shared_baseline_evaluation_resumes_exactly(
        executor: str, reference: Reference, tmp_path: Path, real_data_dir: Path) -> None:
    """The baseline prompt is scored once per executor, under a scope of its own, by the
    first case that needs it (then copied to every case). Run 1 dies a third of the way
    into that evaluation; --resume answers its journaled calls from the journal, runs only
    the rest live, and the comparison equals the uninterrupted one."""
    first_case = next(r for r in reference.records.values()
                      if not shared_baseline(r, executor)["reused"])
    where = shared_baseline(first_case, executor)["counted_under"]
    scope, phase = where["scope"], where["phase"]
    usage_phase = ("baseline_eval" if first_case["details"]["executor"] == executor
                   else f"baseline_eval:{executor}")
    total = int(first_case["usage"][usage_phase]["calls"])
    results = tmp_path / "results"
    killed = kill_at(results, real_data_dir, scope, phase, max(1, total // 3),
                     "--all", "--resume", *SMALL)
    journaled = len(killed.keys.get(scope, ()))
    assert 0 < journaled < total and killed.phases[phase] < total, (journaled, total)
    assert not killed.records  # no case finished: every case waits on this evaluation
    final = run(results, real_data_dir, "--all", "--resume", *SMALL,
                "--compare", str(reference.comparison), "--compare-fail", "exact")
    assert final.returncode == 0, final.explain()
    assert EXACT_OK in final.output, final.explain()
    records = final.records()
    assert set(records) == set(reference.records)
    for case, record in records.items():
        info = shared_baseline(record, executor)
        assert info["counted_under"] == where, case  # one evaluation for every case
        native = record["details"]["executor"] == executor
        usage = record["usage"]["baseline_eval" if native else f"baseline_eval:{executor}"]
        # The copy every case shows is the resumed evaluation's: the journaled calls came
        # from the journal, only the rest went live (none paid twice).
        assert (usage["calls"], usage["replayed_calls"]) == (total, journaled), (case, usage)
    assert sum(not shared_baseline(r, executor)["reused"] for r in records.values()) == 1


def test_kill_9_under_xdist_resumes_exactly(reference: Reference, tmp_path: Path,
                                           real_data_dir: Path) -> None:
    """With `-n 2` the cases run on two workers at once, each with its own gateway writing
    to the same journal dir; a kill inside the Synth optimize phase still resumes exactly."""
    results = tmp_path / "results"
    killed = kill_inside(reference, results, real_data_dir, SYNTH, "optimize", "-n", "2")
    final = run(results, real_data_dir, "--all", "--resume", *SMALL, "-n", "2",
                "--compare", str(reference.comparison), "--compare-fail", "exact")
    check_resumed(final, reference, [killed], {SYNTH: "optimize"})


def test_kill_9_inside_synths_proposer_loop_resumes_exactly(
        reference: Reference, tmp_path: Path, real_data_dir: Path) -> None:
    """The run dies after Synth's proposer (synth-optimizers' ReAct agent, its turns sent
    through the gateway) has taken two turns of a session; --resume answers those turns and
    every rollout before them from the journal, and the comparison equals the uninterrupted
    one exactly (Synth's ledger of the killed run is left behind, the resumed job starts a
    new one)."""
    results = tmp_path / "results"
    scope = reference.scope(SYNTH)
    killed = kill_at(results, real_data_dir, scope, "optimize", 2, "--all", "--resume",
                     *SMALL, kind="proposer")
    assert killed.kinds["optimize:proposer"] >= 2
    assert killed.kinds["optimize:tool_call"] > 0  # Synth's baseline trial came first
    total = reference.phase_calls(SYNTH, "optimize")
    assert killed.phases["optimize"] < total, (dict(killed.phases), total)
    final = run(results, real_data_dir, "--all", "--resume", *SMALL,
                "--compare", str(reference.comparison), "--compare-fail", "exact")
    check_resumed(final, reference, [killed], {SYNTH: "optimize"})
