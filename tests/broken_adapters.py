"""A pytest plugin that breaks one adapter on purpose, for the gate's own tests.

    MIPRO_BENCH_BREAK=<breakage> python run_comparison.py ... -- -p tests.broken_adapters

Loaded with `-p` by the pytest session that runs the benchmark cases (run_comparison.py
runs it in-process; the task app, the local Synth backend and the LM gateway are threads
of that process), it patches exactly one thing at configure time, before any case runs.
The breakages are the bugs a maintainer would fear after upgrading dspy or synth-ai, or
after touching the suite's own code (tests/test_gate_catches_broken_adapters.py):

- demos_dropped: the DSPy program built for a prompt silently loses its demos
  (mipro_bench.executors.dspy_program.build_program), so few-shot scores as zero-shot;
- instruction_not_applied:<optimizer>: the optimizer's executor scores the baseline
  instruction at test time instead of the outcome's (dspy_miprov2: the DSPy program
  executor, synth_mipro: the task-app executor);
- returns_baseline:<optimizer>: the adapter's optimize() returns the baseline prompt, as
  an adapter that misreads the optimizer's result would;
- case_sensitive_labels: the suite's label rule stops ignoring case
  (mipro_bench.labels.normalize keeps capitals), so "Card Arrival" no longer parses.
Without MIPRO_BENCH_BREAK the plugin does nothing.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

ENV = "MIPRO_BENCH_BREAK"
BREAKAGES = (
    "demos_dropped",
    "instruction_not_applied:dspy_miprov2",
    "instruction_not_applied:synth_mipro",
    "returns_baseline:dspy_miprov2",
    "returns_baseline:synth_mipro",
    "case_sensitive_labels",
)


def pytest_configure(config: Any) -> None:
    breakage = os.environ.get(ENV, "")
    if not breakage:
        return
    if breakage not in BREAKAGES:
        raise ValueError(f"{ENV}={breakage!r}: expected one of {', '.join(BREAKAGES)}")
    kind, _, optimizer = breakage.partition(":")
    {"demos_dropped": _drop_demos, "instruction_not_applied": _skip_instruction,
     "returns_baseline": _return_baseline, "case_sensitive_labels": _case_sensitive,
     }[kind](optimizer)


def _drop_demos(_: str) -> None:
    from mipro_bench.executors import dspy_program

    intact = dspy_program.build_program

    def build_program(labels, prompt, module, output_type="str"):
        return intact(labels, dataclasses.replace(prompt, demos=()), module, output_type)

    dspy_program.build_program = build_program


def _skip_instruction(optimizer: str) -> None:
    from mipro_bench.prompt import BASELINE_INSTRUCTION

    if optimizer == "dspy_miprov2":
        from mipro_bench.executors.dspy_program import DSPyProgramExecutor as executor
    else:
        from mipro_bench.executors.task_app import TaskAppExecutor as executor
    intact = executor.evaluate

    def evaluate(self, prompt, split, request, phase, **kwargs):
        if phase == "test_eval":
            prompt = dataclasses.replace(prompt, instruction=BASELINE_INSTRUCTION)
        return intact(self, prompt, split, request, phase, **kwargs)

    executor.evaluate = evaluate


def _return_baseline(optimizer: str) -> None:
    from mipro_bench.optimizers.base import BASELINE_PROMPT

    if optimizer == "dspy_miprov2":
        from mipro_bench.optimizers.dspy_mipro import DSPyMIPROv2 as adapter
    else:
        from mipro_bench.optimizers.synth_mipro import SynthMIPRO as adapter
    intact = adapter.optimize

    def optimize(self, request):
        return dataclasses.replace(intact(self, request), prompt=BASELINE_PROMPT)

    adapter.optimize = optimize


def _case_sensitive(_: str) -> None:
    from mipro_bench import labels

    def normalize(text: str) -> str:  # the intact rule, minus .lower()
        return re.sub(r"[\s_\-]+", "_", text.strip().strip("\"'`.,;:!")).strip("_")

    labels.normalize = normalize
