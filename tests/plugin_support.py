"""Running `pytest benchmarks/` (or run_comparison.py) as a user would, for the plugin tests.

Each run is a subprocess from the repository root with BANKING77_DIR set, its own
results directory and its own --basetemp, so runs never share files, and the outer
pytest's environment (PYTEST_ADDOPTS, xdist worker variables) does not leak in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Small panel and budgets: the whole matrix in ~10 s on two cores. Floors calibrated for
# the default panel are then reported, not enforced (mipro_bench.floors_policy).
SMALL = [
    "--mipro-train-size", "20", "--mipro-val-size", "10", "--mipro-test-size", "40",
    "--mipro-budget", "dspy_miprov2.trials=3", "--mipro-budget", "synth_mipro.rollouts=60",
]
ONE_CASE = ["--mipro-optimizers", "dspy_miprov2", "--mipro-modes", "instruction_only"]
DSPY_INSTRUCTION = "dspy_miprov2[instruction_only-gpt-4.1-nano-seed1]"


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    results_dir: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def files(self, pattern: str) -> list[Path]:
        return sorted(self.results_dir.glob(pattern))

    def comparison(self) -> dict[str, Any]:
        found = self.files("comparison_*.json")
        assert len(found) == 1, (found, self.output[-3000:])
        return json.loads(found[0].read_text(encoding="utf-8"))

    def explain(self) -> str:
        return f"exit {self.returncode}; args {self.args}\n{self.output[-4000:]}"


def clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "COV_"))}
    env["BANKING77_DIR"] = str(data_dir)
    env.pop("OPENAI_API_KEY", None)  # offline: the simulated LM, whatever the machine has
    env.pop("SYNTH_API_KEY", None)
    return env


def run_benchmarks(tmp: Path, data_dir: Path, *args: str, name: str = "run",
                   timeout: float = 600) -> Run:
    """`python -m pytest benchmarks/ -q <small sizes> <args>` with results in tmp/name."""
    results = tmp / name
    cmd = [sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider", "-q",
           "--basetemp", str(tmp / f"{name}-basetemp"), "--mipro-results-dir", str(results),
           *SMALL, *args]
    done = subprocess.run(cmd, cwd=REPO, env=clean_env(data_dir), capture_output=True,
                          text=True, timeout=timeout)
    return Run(cmd, done.returncode, done.stdout, done.stderr, results)


def run_cli(tmp: Path, data_dir: Path, *args: str, name: str = "cli",
            timeout: float = 600) -> Run:
    """`python run_comparison.py --results-dir tmp/name <args>`."""
    results = tmp / name
    cmd = [sys.executable, str(REPO / "run_comparison.py"), "--results-dir", str(results), *args]
    done = subprocess.run(cmd, cwd=REPO, env=clean_env(data_dir), capture_output=True,
                          text=True, timeout=timeout)
    return Run(cmd, done.returncode, done.stdout, done.stderr, results)


def _results_without_sharing_order(results: dict[str, Any]) -> dict[str, Any]:
    """Results minus which case happened to run a shared baseline first (`reused`): under
    xdist each worker runs its own, serially the first case does; the evaluation, its scope
    and its items are the same either way and stay compared."""
    out = dict(results)
    by = {}
    for name, scores in (results.get("by_executor") or {}).items():
        shared = scores.get("baseline_shared")
        if isinstance(shared, dict):
            scores = {**scores, "baseline_shared": {k: v for k, v in shared.items()
                                                    if k != "reused"}}
        by[name] = scores
    if by:
        out["by_executor"] = by
    return out


def scores_of(record: dict[str, Any]) -> dict[str, Any]:
    """What a deterministic rerun must reproduce exactly: everything but clocks and paths."""
    # Costs too, exactly: the ledger sums whole picodollars, whatever order calls finish in.
    usage = {phase: {k: v for k, v in u.items() if not k.startswith("lm_")}
             for phase, u in record["usage"].items()}
    return {
        "case_id": record["case_id"],
        "status": record["status"],
        # The adapter options minus the concurrency knobs, which change speed, not results.
        "config": {**record["config"], "extra": {
            k: v for k, v in record["config"]["extra"].items()
            if k not in ("num_threads", "max_concurrent", "eval_concurrency")}},
        "lm": record["lm"],
        "data": record["data"],
        "results": _results_without_sharing_order(record["results"]),
        "optimized_prompt": record["optimized_prompt"],
        "trajectory": record["trajectory"],
        "usage": usage,
    }
