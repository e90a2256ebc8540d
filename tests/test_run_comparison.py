"""run_comparison.py: its options become `pytest benchmarks/` options, bad ones are one
line and exit 2, pytest's exit codes become clear messages, and the main job ends with
the table and, last, the report path."""

from __future__ import annotations

from pathlib import Path

import pytest

import run_comparison as cli
from tests.plugin_support import REPO, Run, run_cli

SMALL = ["--train-size", "20", "--val-size", "10", "--test-size", "40", "--trials", "3",
         "--rollouts", "60"]


def translate(*argv: str) -> list[str]:
    argv_list = list(argv)
    passthrough: list[str] = []
    if "--" in argv_list:
        cut = argv_list.index("--")
        argv_list, passthrough = argv_list[:cut], argv_list[cut + 1:]
    args = cli.build_parser().parse_args(argv_list)
    cli.validate(args)  # folds --dspy-only and the budget shortcuts into the shared options
    return cli.pytest_args(args, passthrough)


def value_of(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# --- translation -------------------------------------------------------------------------


def test_all_runs_every_optimizer_quietly_with_skip_reasons() -> None:
    args = translate("--all")
    assert args[0] == str(REPO / "benchmarks")
    assert "--mipro-optimizers" not in args
    assert {"-q", "-rfEs", "--disable-warnings"} <= set(args)
    assert "--mipro-train-size" not in args  # pytest's defaults, not a second copy of them


@pytest.mark.parametrize(("flag", "optimizer"), [("--dspy-only", "dspy_miprov2"),
                                                 ("--synth-only", "synth_mipro")])
def test_only_flags_select_one_optimizer(flag: str, optimizer: str) -> None:
    assert value_of(translate(flag), "--mipro-optimizers") == optimizer


def test_the_last_selection_flag_wins() -> None:
    """`python dev.py bench --dspy-only` runs `run_comparison.py --all --dspy-only`."""
    assert value_of(translate("--all", "--dspy-only"), "--mipro-optimizers") == "dspy_miprov2"
    assert "--mipro-optimizers" not in translate("--synth-only", "--all")


def test_shared_options_map_to_the_plugins() -> None:
    args = translate("--train-size", "20", "--val-size", "10", "--test-size", "40",
                     "--data-seed", "3", "--model", "gpt-4o-mini", "--lm", "sim",
                     "--seeds", "1,2", "--modes", "instruction_only", "--trials", "4",
                     "--rollouts", "80", "--budget", "dspy_miprov2.num_candidates=5",
                     "--dspy-threads", "8", "--synth-concurrency", "16", "-n", "2",
                     "--floors", "enforce", "--results-dir", "out", "--compare", "latest",
                     "--compare-fail", "improvement:5", "--save-baseline", "b.json",
                     "--compare-alpha", "0.01",
                     "--", "-x", "-k", "dspy")
    expected = {
        "--mipro-train-size": "20", "--mipro-val-size": "10", "--mipro-test-size": "40",
        "--mipro-data-seed": "3", "--mipro-model": "gpt-4o-mini", "--mipro-lm": "sim",
        "--mipro-seeds": "1,2", "--mipro-modes": "instruction_only",
        "--mipro-dspy-threads": "8", "--mipro-synth-concurrency": "16", "-n": "2",
        "--mipro-floors": "enforce", "--mipro-results-dir": "out", "--mipro-compare": "latest",
        "--mipro-save-baseline": "b.json", "--mipro-compare-alpha": "0.01",
    }
    for flag, value in expected.items():
        assert value_of(args, flag) == value, flag
    for given in ("--mipro-budget=dspy_miprov2.trials=4", "--mipro-budget=synth_mipro.rollouts=80",
                  "--mipro-budget=dspy_miprov2.num_candidates=5",
                  "--mipro-compare-fail=improvement:5"):
        assert given in args
    assert args[-3:] == ["-x", "-k", "dspy"]  # after `--`, unchanged and last


def test_every_non_default_option_becomes_its_plugin_flag() -> None:
    args = translate("--concurrency", "3", "--option", "dspy_miprov2.module=cot",
                     "--option", "synth_mipro.batch_size=5", "--synth-backend", "hosted",
                     "--matrix", str(REPO / "benchmarks" / "matrix.toml"))
    assert value_of(args, "--mipro-concurrency") == "3"
    assert value_of(args, "--mipro-synth-backend") == "hosted"
    assert value_of(args, "--mipro-matrix") == str(REPO / "benchmarks" / "matrix.toml")
    assert "--mipro-option=dspy_miprov2.module=cot" in args
    assert "--mipro-option=synth_mipro.batch_size=5" in args
    defaults = translate()
    assert not [a for a in defaults if a.startswith("--mipro-")], defaults


def test_verbose_gives_pytests_own_output_back() -> None:
    args = translate("--all", "-v")
    assert "-q" not in args and "--disable-warnings" not in args


# --- bad options: one line, exit 2, before pytest ------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["--trainsize", "5"], "unrecognized arguments: --trainsize 5"),
    (["--train-size", "0"], "must be at least 1"),
    (["--seeds", "1,a"], "seeds are integers"),
    (["--modes", "zero_shot"], "unknown mode 'zero_shot'"),
    (["--budget", "trials=3"], "OPTIMIZER.KEY=VALUE"),
    (["--compare-fail", "improvement:5"], "--compare-fail needs --compare"),
    (["--compare", "latest", "--compare-fail", "accuracy"], "expected METRIC:POINTS"),
    (["--compare", "/no/such/baseline.json"], "no such file"),
    (["--compare", "latest", "--compare-fail", "optimized_test_accuracy:significant:x"],
     "METRIC:significant:POINTS"),
    (["--compare", "latest", "--compare-alpha", "1.5"],
     " --compare-alpha '1.5': expected a number"),
    (["--seed", "3"], "unrecognized arguments: --seed 3"),  # no abbreviations of --seeds
    (["--train", "5"], "unrecognized arguments: --train 5"),
    (["--concurrency", "0"], "must be at least 1"),
    (["--option", "dspy_miprov2.modul=cot"], "[options.dspy_miprov2]: unknown key(s) modul"),
    (["--data-dir", "/no/such/dir"], "no such directory"),
    (["-n", "lots"], "expected a number or 'auto'"),
    (["--budget", "dspy_miprov2.trails=3"], "unknown key(s) trails"),
    (["--matrix", "/no/such/matrix.toml"], "no such file"),
    (["--results-dir", str(Path(__file__).parent / "data/tiny_banking77/train.csv")],
     "train.csv is not a directory"),
])
def test_bad_options_are_one_line_and_exit_2(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("run_comparison.py: error: "), err
    assert message in err


@pytest.mark.parametrize(("code", "exit_code", "message"), [
    (0, 0, None),
    (1, 1, "FAILED: a case failed or fell below an enforced floor"),
    (2, 130, "interrupted"),
    (3, 3, "internal error"),
    (4, 2, "the benchmark could not start"),
    (5, 1, "no benchmark case matched"),
])
def test_pytest_exit_codes_become_clear_messages(code: int, exit_code: int,
                                                 message: str | None) -> None:
    got_code, got_message = cli.outcome_message(code, None)
    assert got_code == exit_code
    if message is None:
        assert got_message is None
    else:
        assert message in got_message and "\n" not in got_message


# --- as users run it -----------------------------------------------------------------------


@pytest.mark.integration
def test_all_prints_the_table_and_ends_with_the_report(tmp_path: Path,
                                                       real_data_dir: Path) -> None:
    run = run_cli(tmp_path, real_data_dir, "--all", *SMALL)
    assert run.returncode == 0, run.explain()
    lines = run.stdout.rstrip().splitlines()
    assert lines[-1].startswith("Report: "), lines[-3:]
    report = Path(lines[-1].removeprefix("Report: "))
    assert report.is_absolute() and report.is_file()
    assert report.parent == run.results_dir.resolve()
    assert report.name.startswith("report_") and report.suffix == ".html"
    assert len(run.files("comparison_*.json")) == len(run.files("comparison_*.md")) == 1
    assert "Test accuracy (held-out test split, scored by the suite)" in run.stdout
    for optimizer in ("dspy_miprov2", "synth_mipro"):
        assert f" {optimizer} " in run.stdout
    assert "not supported" in run.stdout
    assert "SKIPPED [1]" in run.stdout  # skip reasons stay visible
    assert "warnings summary" not in run.stdout
    assert "Traceback" not in run.output


@pytest.mark.integration
def test_no_matching_case_is_a_clear_message(tmp_path: Path, real_data_dir: Path) -> None:
    run = run_cli(tmp_path, real_data_dir, "--dspy-only", *SMALL, "--", "-k", "nothing_here")
    assert run.returncode == 1, run.explain()
    assert "run_comparison.py: error: no benchmark case matched" in run.stderr
    assert not run.results_dir.exists()


def test_a_broken_data_dir_stops_the_run_with_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_cli(tmp_path, empty, "--dspy-only", "--modes", "instruction_only",
                  "--data-dir", str(empty))
    assert run.returncode == 2, run.explain()
    assert "the benchmark could not start" in run.stderr
    assert f"mipro-bench: {empty}" in run.output  # the data error names the folder
    assert "Traceback" not in run.output


def test_bad_options_from_the_shell(tmp_path: Path) -> None:
    run: Run = run_cli(tmp_path, tmp_path, "--all", "--seeds", "x")
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.strip().count("\n") == 0
    assert run.stderr.startswith("run_comparison.py: error: --seeds 'x': seeds are integers")
