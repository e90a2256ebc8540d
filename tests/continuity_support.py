"""Running run_comparison.py for the resume, record and replay tests, and stopping it at a
chosen journal line.

A run is a subprocess in its own process group (`start_new_session`), so `kill -9` of
the group takes every thread and child with it, as a Ctrl-\\ or an OOM kill would. The
moment is chosen by the journal, not by a sleep: the test reads the case's journal as it
grows and stops the group (SIGSTOP, so nothing moves while the test looks) once the wanted
phase has N lines, snapshots what was journaled and written, then SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipro_bench.lm.call_kind import call_kind
from mipro_bench.lm.journal import JOURNAL_SUFFIX, read_journal_dir
from tests.plugin_support import REPO, clean_env

PHASES = ("baseline_eval", "optimize", "test_eval")
# Each run takes seconds: the whole matrix (MIPROv2 x2, Synth, GEPA) on a small panel.
SMALL = ["--train-size", "20", "--val-size", "10", "--test-size", "40", "--trials", "2",
         "--rollouts", "40", "--metric-calls", "40"]
# Every live LM call waits this long in the killed runs, so a phase lasts long enough to be
# caught mid-way (tests/slow_lm_plugin.py); results do not depend on it.
SLOW = ["--", "-p", "tests.slow_lm_plugin"]
LATENCY_S = "0.04"
EXACT_OK = "mipro-bench gate: no regressions (exact)"


@dataclass
class Done:
    """A finished run_comparison.py: exit code, output, results directory."""

    args: list[str]
    returncode: int
    output: str
    results_dir: Path

    def comparison(self) -> dict[str, Any]:
        found = sorted(self.results_dir.glob("comparison_*.json"))
        assert found, self.explain()
        return json.loads(found[-1].read_text(encoding="utf-8"))

    def records(self) -> dict[str, dict[str, Any]]:
        """The comparison's records by case id."""
        return {r["case_id"]: r for r in self.comparison()["records"]}

    def explain(self) -> str:
        return f"exit {self.returncode}; args {self.args}\n{self.output[-5000:]}"


def cli_command(results: Path, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "run_comparison.py"), "--results-dir", str(results),
            *args]


def run(results: Path, data_dir: Path, *args: str, timeout: float = 300) -> Done:
    cmd = cli_command(results, *args)
    done = subprocess.run(cmd, cwd=REPO, env=clean_env(data_dir), capture_output=True,
                          text=True, timeout=timeout)
    return Done(cmd, done.returncode, done.stdout + done.stderr, results)


def record_files(results: Path) -> set[str]:
    """The case record files (not the DSPy program artifacts) of a results directory."""
    return {p.name for p in results.glob("banking77_*.json")
            if not p.name.endswith(".program.json")}


def journaled_keys(journal_dir: Path) -> dict[str, set[tuple[str, int]]]:
    """Per scope, the (fingerprint, occurrence) of every whole, successful journal line:
    what a resume can answer without the LM."""
    out: dict[str, set[tuple[str, int]]] = {}
    for entry in read_journal_dir(journal_dir).entries:
        if entry.ok:
            out.setdefault(entry.scope, set()).add((entry.fingerprint, entry.occurrence))
    return out


class JournalTail:
    """Reads one journal file as it grows (whole lines only) and counts lines per phase."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""
        self.phases: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()  # "phase:call kind" (e.g. optimize:proposer)
        self.order: list[str] = []  # phases in the order they first appeared

    def poll(self) -> Counter[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.phases
        self.offset += len(data)
        *lines, self.rest = (self.rest + data).split(b"\n")
        for line in lines:
            try:
                entry = json.loads(line)
                phase = entry["phase"]
            except (ValueError, KeyError):
                continue
            if phase not in self.phases:
                self.order.append(phase)
            self.phases[phase] += 1
            request = entry.get("request")
            if isinstance(request, dict):
                self.kinds[f"{phase}:{call_kind(request)}"] += 1
        return self.phases


@dataclass
class Killed:
    """What a killed run left behind, read while its process group was stopped."""

    output: str
    phases: Counter[str]  # the watched scope's journal lines per phase at the stop
    order: list[str]
    kinds: Counter[str]  # the watched scope's journal lines per "phase:call kind"
    keys: dict[str, set[tuple[str, int]]]  # per scope, what the journals can answer
    records: set[str] = field(default_factory=set)  # record files written before the kill


def kill_at(results: Path, data_dir: Path, scope: str, phase: str, lines: int,
            *args: str, timeout: float = 240, kind: str | None = None) -> Killed:
    """Start `run_comparison.py <args>` (own process group, slow LM), stop the group once
    `scope`'s journal holds `lines` lines of `phase` (of that call kind, when `kind` is
    given: e.g. "proposer" for Synth's proposer turns), snapshot, then SIGKILL the group."""
    cmd = cli_command(results, *args, *SLOW)
    env = {**clean_env(data_dir), "MIPRO_TEST_LM_LATENCY": LATENCY_S}
    log = results.parent / f"{results.name}-{scope}-{phase}.log"
    results.mkdir(parents=True, exist_ok=True)
    tail = JournalTail(results / "journal" / f"{scope}{JOURNAL_SUFFIX}")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            def seen() -> int:
                counts = tail.poll()
                return counts[phase] if kind is None else tail.kinds[f"{phase}:{kind}"]

            while seen() < lines:
                if proc.poll() is not None:
                    raise AssertionError(f"the run ended (exit {proc.returncode}) before "
                                         f"{scope} journaled {lines} {phase} lines "
                                         f"(had {dict(tail.phases)}):\n"
                                         f"{log.read_text(errors='replace')[-4000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"timeout waiting for {scope} {phase}")
                time.sleep(0.002)
            os.killpg(proc.pid, signal.SIGSTOP)
            tail.poll()
            snapshot = Killed(output="", phases=Counter(tail.phases), order=list(tail.order),
                              kinds=Counter(tail.kinds),
                              keys=journaled_keys(results / "journal"),
                              records=record_files(results))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    snapshot.output = log.read_text(errors="replace")
    return snapshot


def shared_phases(record: dict[str, Any]) -> set[str]:
    """Phases whose usage is a copy of a shared baseline evaluation (run once, under a scope
    of its own: details.shared_baseline), not calls of the case's own scope."""
    out = set()
    for executor in record["details"].get("shared_baseline") or {}:
        native = record["details"].get("executor") == executor
        out.add("baseline_eval" if native else f"baseline_eval:{executor}")
    return out


def replayed(record: dict[str, Any]) -> int:
    """Calls of the case's own scope answered from its journal (shared baselines apart)."""
    skip = shared_phases(record)
    return sum(u.get("replayed_calls", 0) for p, u in record["usage"].items() if p not in skip)


def calls(record: dict[str, Any]) -> int:
    return sum(u["calls"] for u in record["usage"].values())
