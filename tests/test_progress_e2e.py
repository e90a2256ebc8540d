"""Live progress end to end: `pytest benchmarks/` and a seed CLI print their progress lines
(counts, plan, ETA) at the interval asked for outside a terminal, and nothing with `off`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin_support import ONE_CASE, REPO, clean_env, run_benchmarks

pytestmark = pytest.mark.integration

LINE = re.compile(r"mipro-bench progress: (.+?) \| (\S+) \((\d)/5\) (\d+)/~?(\d+) calls "
                  r"\(\d+%\) \| errors (\d+), retries (\d+) \| phase \S+, ETA \S+ \| "
                  r"case \S+, \d+ calls, ETA \S+")


@pytest.mark.parametrize("mode", ["lines", "off"])
def test_pytest_path_prints_progress_lines_at_the_interval(mode: str, tmp_path: Path,
                                                           real_data_dir: Path) -> None:
    run = run_benchmarks(tmp_path, real_data_dir, *ONE_CASE, "--mipro-progress", mode,
                         "--mipro-progress-interval", "0.3", name=mode)
    assert run.returncode == 0, run.explain()
    lines = [m for m in LINE.finditer(run.output)]
    if mode == "off":
        assert "mipro-bench progress:" not in run.output
        return
    assert len(lines) >= 3, run.explain()
    assert {m.group(1) for m in lines} == {"dspy_miprov2-instruction_only-gpt-4.1-nano-seed1"}
    assert {m.group(2) for m in lines} & {"baseline_eval", "optimize", "test_eval"}
    assert "Test accuracy (held-out test split" in run.output  # the table is still there


def test_seed_cli_prints_progress_lines_outside_a_terminal(tmp_path: Path,
                                                           real_data_dir: Path) -> None:
    cmd = [sys.executable, str(REPO / "run_dspy_mipro_banking77.py"), "--trials", "3",
           "--train-size", "20", "--val-size", "10", "--test-size", "40", "--results-dir",
           str(tmp_path / "r"), "--progress", "lines", "--progress-interval", "0.3"]
    done = subprocess.run(cmd, cwd=REPO, env=clean_env(real_data_dir), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = list(LINE.finditer(done.stderr))
    assert lines, done.stderr
    assert {m.group(1) for m in lines} == {"dspy_miprov2 instruction_only seed 1"}
    assert "progress" not in done.stdout  # stdout keeps only the summary table
