"""Which items `pytest benchmarks/` collects: matrix overrides, optimizer filter, perf
benchmarks left out unless asked. Collection only (no LM, no data), as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.plugin_support import REPO, clean_env

PERF_PREFIX = "benchmarks/perf/"


def collect(*args: str, tmp: Path) -> tuple[int, list[str], str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp / "bt"), *args],
        cwd=REPO, env=clean_env(tmp), capture_output=True, text=True, timeout=300,
    )
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    return done.returncode, ids, done.stdout + done.stderr


def test_the_comparison_leaves_perf_benchmarks_out(tmp_path: Path) -> None:
    code, ids, out = collect("benchmarks/", tmp=tmp_path)
    assert code == 0, out
    assert ids and not [i for i in ids if i.startswith(PERF_PREFIX)]
    assert all(i.startswith("benchmarks/test_matrix_cases.py::test_case[") for i in ids)
    assert {i.split("[")[1].rstrip("]") for i in ids} == {
        "dspy_miprov2-instruction_only-gpt-4.1-nano-seed1",
        "dspy_miprov2-fewshot-gpt-4.1-nano-seed1",
        "synth_mipro-instruction_only-gpt-4.1-nano-seed1",
        "synth_mipro-fewshot-gpt-4.1-nano-seed1",  # collected, skipped as "not supported"
        "dspy_gepa-instruction_only-gpt-4.1-nano-seed1",
        "dspy_gepa-fewshot-gpt-4.1-nano-seed1",  # collected, skipped as "not supported"
    }
    assert "deselected" in out


def test_perf_benchmarks_run_when_asked(tmp_path: Path) -> None:
    code, ids, out = collect("benchmarks/perf", tmp=tmp_path)
    assert code == 0, out
    assert ids and all(i.startswith(PERF_PREFIX) for i in ids)
    assert any(i.startswith(f"{PERF_PREFIX}test_main_job_perf.py::") for i in ids)
    code, both, out = collect("benchmarks/", "--mipro-perf", tmp=tmp_path)
    assert code == 0, out
    assert set(ids) < set(both)
    assert any(i.startswith("benchmarks/test_matrix_cases.py::test_case[dspy_miprov2-")
               for i in both)


def test_matrix_options_reshape_the_cases(tmp_path: Path) -> None:
    code, ids, out = collect(
        "benchmarks/", "--mipro-optimizers", "dspy_miprov2", "--mipro-seeds", "1,2",
        "--mipro-modes", "instruction_only", "--mipro-model", "gpt-4o-mini", tmp=tmp_path)
    assert code == 0, out
    assert ids == [
        "benchmarks/test_matrix_cases.py::test_case[dspy_miprov2-instruction_only-"
        "gpt-4o-mini-seed1]",
        "benchmarks/test_matrix_cases.py::test_case[dspy_miprov2-instruction_only-"
        "gpt-4o-mini-seed2]",
    ]


def test_another_matrix_file(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        '[matrix]\noptimizers = ["synth_mipro"]\nmodes = ["instruction_only"]\n'
        'models = ["gpt-4.1-nano"]\nseeds = [7]\n\n[budget.synth_mipro]\nrollouts = 30\n')
    code, ids, out = collect("benchmarks/", "--mipro-matrix", str(matrix), tmp=tmp_path)
    assert code == 0, out
    assert [i.split("[")[1] for i in ids] == ["synth_mipro-instruction_only-gpt-4.1-nano-seed7]"]


def test_a_matrix_override_the_matrix_refuses_is_one_line_exit_4(tmp_path: Path) -> None:
    code, ids, out = collect("benchmarks/", "--mipro-budget", "synth_mipro.rolouts=5",
                             tmp=tmp_path)
    assert code == 4, out
    assert ids == []
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1
    assert ("[budget.synth_mipro]: unknown key(s) rolouts; known: rollouts, num_candidates, "
            "minibatch_size") in errors[0]
    assert "Traceback" not in out


def test_an_optimizer_filter_naming_none_of_the_matrix_collects_nothing(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        '[matrix]\noptimizers = ["synth_mipro"]\nmodes = ["instruction_only"]\n'
        'models = ["gpt-4.1-nano"]\nseeds = [7]\n\n[budget.synth_mipro]\nrollouts = 30\n')
    code, ids, out = collect("benchmarks/", "--mipro-matrix", str(matrix),
                             "--mipro-optimizers", "dspy_miprov2", tmp=tmp_path)
    assert ids == [] and "no-case-selected" not in out, out
    assert code == 5, out  # pytest's "no tests collected": the placeholder is deselected
