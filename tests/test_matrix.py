"""The benchmark matrix: expansion, unsupported cases, budgets, floors, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mipro_bench.matrix import DEFAULT_MATRIX, Floors, MatrixError, load_matrix
from mipro_bench.optimizers.dspy_mipro import MiproBudget
from mipro_bench.optimizers.synth_mipro import RolloutBudget
from tests.factories import make_record

MINIMAL = """
[matrix]
optimizers = ["dspy_miprov2", "synth_mipro"]
modes = ["instruction_only", "fewshot"]
models = ["gpt-4.1-nano", "other-model"]
seeds = [1, 2]

[budget.dspy_miprov2]
trials = 7

[budget.synth_mipro]
rollouts = 400

[[floors]]
max_drop_vs_baseline = 0.02

[[floors]]
lm = "sim"
min_optimized_test_accuracy = 0.5

[[floors]]
lm = "sim"
optimizer = "dspy_miprov2"
mode = "fewshot"
min_optimized_test_accuracy = 0.7
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


def test_expands_every_combination_with_stable_ids(tmp_path: Path) -> None:
    matrix = load_matrix(write(tmp_path, MINIMAL))
    assert len(matrix.cases) == 2 * 2 * 2 * 2
    ids = [c.id for c in matrix.cases]
    assert "dspy_miprov2-instruction_only-gpt-4.1-nano-seed1" in ids
    assert len(set(ids)) == len(ids)
    dspy_cases = matrix.for_optimizer("dspy_miprov2")
    assert {c.budget for c in dspy_cases} == {MiproBudget(trials=7)}
    assert {c.budget for c in matrix.for_optimizer("synth_mipro")} == {RolloutBudget(rollouts=400)}


def test_unsupported_combinations_are_kept_with_a_reason(tmp_path: Path) -> None:
    matrix = load_matrix(write(tmp_path, MINIMAL))
    synth_fewshot = [c for c in matrix.for_optimizer("synth_mipro") if c.mode == "fewshot"]
    assert synth_fewshot and all(c.unsupported and "instructions only" in c.unsupported
                                 for c in synth_fewshot)
    assert all(c.unsupported is None for c in matrix.for_optimizer("dspy_miprov2"))


def test_floors_merge_by_selector_later_rules_override(tmp_path: Path) -> None:
    matrix = load_matrix(write(tmp_path, MINIMAL))
    io = matrix.case("dspy_miprov2-instruction_only-gpt-4.1-nano-seed1")
    fs = matrix.case("dspy_miprov2-fewshot-gpt-4.1-nano-seed1")
    assert io.floors(simulated=True) == Floors(min_optimized_test_accuracy=0.5,
                                               max_drop_vs_baseline=0.02)
    assert fs.floors(simulated=True).min_optimized_test_accuracy == 0.7
    assert fs.floors(simulated=False) == Floors(max_drop_vs_baseline=0.02)


def test_floor_violations_name_each_unmet_floor() -> None:
    record = make_record()  # baseline 0.0, optimized 0.5
    passing = Floors(min_optimized_test_accuracy=0.5, max_drop_vs_baseline=0.0)
    assert passing.violations(record) == []
    problems = Floors(min_optimized_test_accuracy=0.6, min_improvement=0.6).violations(record)
    assert len(problems) == 2 and "0.500 < floor 0.600" in problems[0]
    worse = make_record(results=make_record().results.__class__(
        baseline_test_accuracy=0.8, optimized_test_accuracy=0.5, best_val_score=None))
    assert "below the baseline 0.800" in Floors(max_drop_vs_baseline=0.1).violations(worse)[0]


def test_a_failed_record_fails_every_floor_with_its_error() -> None:
    record = make_record(status="failed", error="LMError: gateway said 500")
    assert Floors().violations(record) == ["run failed: LMError: gateway said 500"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[matrix\n", "not valid TOML"),
        (MINIMAL.replace('"synth_mipro"]', '"gepa"]'), "unknown optimizer 'gepa'"),
        (MINIMAL.replace('"fewshot"]', '"zeroshot"]'), "unknown mode 'zeroshot'"),
        (MINIMAL.replace("trials = 7", "trails = 7"),
         "[budget.dspy_miprov2]: unknown key(s) trails; known: trials, auto"),
        (MINIMAL.replace("trials = 7", "trials = -1"),
         "[budget.dspy_miprov2]: trials must be >= 0, got -1"),
        (MINIMAL.replace("trials = 7", 'trials = "ten"'),
         "[budget.dspy_miprov2]: trials = 'ten' is not valid (expected int"),
        (MINIMAL.replace("rollouts = 400", "rollouts = 400\ntrials = 3"),
         "[budget.synth_mipro]: unknown key(s) trials; known: rollouts"),
        (MINIMAL + "\n[options.dspy_miprov2]\nnum_thread = 2\n",
         "[options.dspy_miprov2]: unknown key(s) num_thread; known: module"),
        (MINIMAL + '\n[options.synth_mipro]\nbackend = "cloud"\n',
         "[options.synth_mipro]: backend = 'cloud' is not valid"),
        (MINIMAL.replace("seeds = [1, 2]", "seeds = []"), "seeds must be a non-empty list"),
        (MINIMAL.replace("rollouts = 400", ""), "[budget.synth_mipro] missing"),
        (MINIMAL + '\n[[floors]]\nlm = "gpu"\n', "lm must be one of sim, real"),
        (MINIMAL + "\n[[floors]]\nmin_accuracy = 0.1\n", "unknown key(s) min_accuracy"),
        (MINIMAL + "\n[[floors]]\nmax_drop_vs_baseline = 5\n", "must be a number in [0, 1]"),
    ],
)
def test_bad_matrix_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MatrixError) as info:
        load_matrix(path)
    assert message in str(info.value)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="no such matrix file"):
        load_matrix(tmp_path / "nope.toml")


def test_the_shipped_matrix_loads_and_has_the_documented_cases() -> None:
    matrix = load_matrix(DEFAULT_MATRIX)
    ids = {c.id for c in matrix.cases}
    assert "dspy_miprov2-instruction_only-gpt-4.1-nano-seed1" in ids
    assert "dspy_miprov2-fewshot-gpt-4.1-nano-seed1" in ids
    skipped = matrix.case("synth_mipro-fewshot-gpt-4.1-nano-seed1")
    assert skipped.unsupported
    for case in matrix.for_optimizer("dspy_miprov2"):
        assert case.floors(simulated=True).min_optimized_test_accuracy is not None


def test_instruction_only_cases_record_zero_demos() -> None:
    from mipro_bench.matrix import load_matrix

    cases = load_matrix().cases
    dspy = {c.mode: c for c in cases if c.optimizer == "dspy_miprov2"}
    dspy_io, dspy_fs = dspy["instruction_only"], dspy["fewshot"]
    assert dspy_io.budget.max_bootstrapped_demos == 0 and dspy_io.budget.max_labeled_demos == 0
    assert dspy_fs.budget.max_bootstrapped_demos == 4
