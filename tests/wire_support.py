"""Reading what the LM actually received, from the gateway's journal, for the wire tests.

A run of run_comparison.py with `--resume` journals every LM call of every case, with its
phase and its whole request (`<results>/journal/<scope>.journal.jsonl`, docs/
resume-record-replay.md). These helpers read those requests and say, per request, whether
a prompt's instruction and demos are in it, in the terms of the executor that sent it:

- dspy_program (DSPy's ChatAdapter, or its JSON fallback): the instruction is in the system
  message (re-indented, so compared with whitespace collapsed) and each demo is a
  user message holding its query followed by an assistant message holding its label;
- task_app (the forced tool call): the instruction is in the system message, and each demo
  a `Query: <query>` line under `Examples:` whose next `Intent:` line is its label.

Loaded with `-p tests.wire_support` by the benchmark subprocess, this module is also a
pytest plugin that breaks one thing on purpose when MIPRO_BENCH_WIRE_BREAK names it (the
wire tests' proof that their checks notice; tests/broken_adapters.py is the same mechanism
for the score gate):

- dspy_drops_demos: DSPy itself stops formatting demos into its messages
  (dspy.adapters.base.Adapter.format_demos returns nothing), the measured case in which
  the few-shot score moved by under a point;
- task_app_drops_demos: the task-app executor renders a prompt without its demos.
Without MIPRO_BENCH_WIRE_BREAK the plugin does nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from mipro_bench.lm.journal import JournalEntry, read_journal_dir
from tests.plugin_support import REPO, clean_env

ENV = "MIPRO_BENCH_WIRE_BREAK"
BREAKS = ("dspy_drops_demos", "task_app_drops_demos")
EXECUTORS = ("dspy_program", "task_app")


def pytest_configure(config: Any) -> None:
    breakage = os.environ.get(ENV, "")
    if not breakage:
        return
    if breakage not in BREAKS:
        raise ValueError(f"{ENV}={breakage!r}: expected one of {', '.join(BREAKS)}")
    if breakage == "dspy_drops_demos":
        from dspy.adapters.base import Adapter

        def format_demos(self, signature, demos):  # type: ignore[no-untyped-def]
            return []

        Adapter.format_demos = format_demos
    else:
        from mipro_bench.executors import task_app

        intact = task_app.system_message

        def system_message(instruction, demos=()):  # type: ignore[no-untyped-def]
            return intact(instruction, ())

        task_app.system_message = system_message


# -- running a comparison with its journal ------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """A finished run_comparison.py: its records by case id and its journaled calls."""

    args: list[str]
    returncode: int
    output: str
    results_dir: Path
    records: dict[str, dict[str, Any]]
    entries: tuple[JournalEntry, ...]

    def explain(self) -> str:
        return f"exit {self.returncode}; args {self.args}\n{self.output[-4000:]}"

    def requests(self, scope: str, phase: str) -> list[dict[str, Any]]:
        """Every journaled request of one scope's phase (successful or not)."""
        return [e.request for e in self.entries if e.scope == scope and e.phase == phase]


def run_journaled(results: Path, data_dir: Path, *args: str, breakage: str = "",
                  broken_adapter: str = "", timeout: float = 600) -> Wire:
    """`run_comparison.py --resume` into a fresh results dir (so every call goes live and
    is journaled), with this module loaded as a plugin and `breakage` applied if given;
    `broken_adapter` names a breakage of tests/broken_adapters.py to apply instead."""
    from tests import broken_adapters

    cmd = [sys.executable, str(REPO / "run_comparison.py"), "--results-dir", str(results),
           "--resume", "--progress", "off", *args,
           "--", "-p", "tests.wire_support", "-p", "tests.broken_adapters"]
    env = clean_env(data_dir)
    env.pop(ENV, None)
    env.pop(broken_adapters.ENV, None)
    if breakage:
        env[ENV] = breakage
    if broken_adapter:
        env[broken_adapters.ENV] = broken_adapter
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    records: dict[str, dict[str, Any]] = {}
    found = sorted(results.glob("comparison_*.json"))
    if found:
        records = {r["case_id"]: r
                   for r in json.loads(found[-1].read_text(encoding="utf-8"))["records"]}
    journal = read_journal_dir(results / "journal")
    return Wire(cmd, done.returncode, done.stdout + done.stderr, results, records,
                journal.entries)


# -- where a record's evaluations were sent -----------------------------------------------


def optimized_phase(record: dict[str, Any], executor: str) -> tuple[str, str]:
    """(scope, phase) of the optimized prompt's test evaluation in `executor`: the case's
    own scope; `test_eval` in its native executor, `test_eval:<executor>` in the other."""
    native = record["details"]["executor"]
    phase = "test_eval" if executor == native else f"test_eval:{executor}"
    recorded = record["results"]["by_executor"][executor]["phases"]["optimized"]
    assert recorded == phase, (record["case_id"], executor, recorded)
    return str(record["details"]["scope"]), phase


def baseline_phase(record: dict[str, Any], executor: str) -> tuple[str, str]:
    """(scope, phase) of the baseline evaluation the record shows in `executor`: the shared
    baseline scope that evaluation was counted under."""
    shared = record["results"]["by_executor"][executor]["baseline_shared"]["counted_under"]
    scope, phase = str(shared["scope"]), str(shared["phase"])
    assert scope.startswith(f"baseline-{executor}-") and phase == "baseline_eval", shared
    return scope, phase


# -- what one request carries -------------------------------------------------------------


def executor_of(request: dict[str, Any]) -> str:
    """The task app forces a tool call; a DSPy program sends plain chat."""
    return "task_app" if request.get("tools") else "dspy_program"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _flat(text: str) -> str:
    return " ".join(text.split())


def system_text(request: dict[str, Any]) -> str:
    return "\n".join(_text(m.get("content")) for m in request.get("messages", [])
                     if m.get("role") == "system")


def has_instruction(request: dict[str, Any], instruction: str) -> bool:
    """The instruction's words, in order, in the system message (whitespace collapsed:
    DSPy re-indents an instruction's lines under "your objective is:")."""
    return _flat(instruction) in _flat(system_text(request))


def _has_label(text: str, label: str) -> bool:
    return re.search(rf"(?<![\w?]){re.escape(label)}(?![\w?])", text) is not None


def has_demo(request: dict[str, Any], query: str, label: str) -> bool:
    """The demo (query and its label, together) is in the request as its executor shows
    demos; a test item's own query in the last user message is not a demo."""
    messages = request.get("messages", [])
    if executor_of(request) == "dspy_program":
        return any(
            a.get("role") == "user" and b.get("role") == "assistant"
            and query in _text(a.get("content")) and _has_label(_text(b.get("content")), label)
            for a, b in pairwise(messages))
    system = system_text(request)
    header = system.find("\nExamples:\n")
    if header < 0:
        return False
    start = system.find(f"\nQuery: {query}\n", header)
    if start < 0:
        return False
    intent = system.find("\nIntent: ", start + 1)
    if intent < 0:
        return False
    return system[intent + 1:].split("\n", 1)[0] == f"Intent: {label}"


# -- the checks ---------------------------------------------------------------------------


def demo_problems(wire: Wire, record: dict[str, Any]) -> list[str]:
    """What is wrong on the wire with the record's demos, one line per problem: a test-phase
    request (either executor) missing one of them, or a baseline request carrying one."""
    demos = [(d["query"], d["intent"]) for d in record["optimized_prompt"]["demos"]]
    problems: list[str] = []
    for executor in EXECUTORS:
        scope, phase = optimized_phase(record, executor)
        requests = wire.requests(scope, phase)
        if not requests:
            problems.append(f"{scope} {phase}: no journaled request")
        for index, (query, label) in enumerate(demos):
            missing = sum(not has_demo(r, query, label) for r in requests)
            if missing:
                problems.append(f"{scope} {phase}: demo {index} ({label}) missing from "
                                f"{missing} of {len(requests)} requests")
        scope, phase = baseline_phase(record, executor)
        requests = wire.requests(scope, phase)
        if not requests:
            problems.append(f"{scope} {phase}: no journaled request")
        for index, (query, label) in enumerate(demos):
            present = sum(has_demo(r, query, label) for r in requests)
            if present:
                problems.append(f"{scope} {phase}: demo {index} ({label}) in {present} "
                                f"of {len(requests)} baseline requests")
    return problems


def instruction_problems(wire: Wire, record: dict[str, Any], baseline: str) -> list[str]:
    """What is wrong on the wire with the record's optimized instruction: a test-phase
    request (either executor) without it; a baseline request with it (when it is not the
    baseline instruction) or without the baseline instruction."""
    instruction = record["optimized_prompt"]["instruction"]
    problems: list[str] = []

    def each_carries(where: tuple[str, str], text: str, what: str) -> list[dict[str, Any]]:
        scope, phase = where
        requests = wire.requests(scope, phase)
        if not requests:
            problems.append(f"{scope} {phase}: no journaled request")
        missing = sum(not has_instruction(r, text) for r in requests)
        if missing:
            problems.append(f"{scope} {phase}: {what} missing from {missing} "
                            f"of {len(requests)} requests")
        return requests

    for executor in EXECUTORS:
        each_carries(optimized_phase(record, executor), instruction, "optimized instruction")
        scope, phase = baseline_phase(record, executor)
        requests = each_carries((scope, phase), baseline, "baseline instruction")
        if _flat(instruction) != _flat(baseline):
            present = sum(has_instruction(r, instruction) for r in requests)
            if present:
                problems.append(f"{scope} {phase}: optimized instruction in {present} of "
                                f"{len(requests)} baseline requests")
    return problems
