#!/usr/bin/env python3
"""Run the benchmark matrix (both optimizers, matched modes) and print the comparison.

    python run_comparison.py --all                   # what `python dev.py bench` runs
    python run_comparison.py --dspy-only --seeds 1,2,3 --trials 20
    python run_comparison.py --all -n 2 --dspy-threads 8 --synth-concurrency 16

The earlier benchmark's `run_comparison.py --all` (also --synth-only, --dspy-only)
keeps working; it now runs `pytest benchmarks/` in-process, so this CLI and CI
produce the same records, table, JSON, Markdown and HTML report. pytest's output
is kept quiet (-q, no warnings summary, skip reasons kept); -v gives it back.
Arguments after `--` go to pytest unchanged. The last line printed is the report.

Exit codes: 0 ok; 1 a case failed, fell below an enforced floor, or the gate found
a regression; 2 bad options or configuration (one line); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mipro_bench.argtypes import usable_results_dir
from mipro_bench.cli import OneLineParser, non_negative_int, positive_int
from mipro_bench.floors_policy import FLOOR_MODES
from mipro_bench.gate import GateError, parse_alpha, parse_threshold
from mipro_bench.matrix import MatrixError
from mipro_bench.options import (
    DEFAULT_RESULTS_DIR,
    DEFAULT_TEST_SIZE,
    DEFAULT_TRAIN_SIZE,
    DEFAULT_VAL_SIZE,
)
from mipro_bench.selection import SelectionError, choice_from_options

PROG = "run_comparison.py"
ROOT = Path(__file__).resolve().parent
BENCHMARKS = ROOT / "benchmarks"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                           epilog="Arguments after `--` are passed to pytest unchanged.")
    # One destination, the last flag wins: `python dev.py bench --dspy-only` runs
    # `run_comparison.py --all --dspy-only`, which must mean DSPy only.
    which = parser.add_argument_group("which optimizers (the last of these wins)")
    which.add_argument("--all", dest="optimizer", action="store_const", const=None,
                       help="both optimizers (the default)")
    which.add_argument("--synth-only", dest="optimizer", action="store_const",
                       const="synth_mipro", help="only Synth MIPRO cases")
    which.add_argument("--dspy-only", dest="optimizer", action="store_const",
                       const="dspy_miprov2", help="only DSPy MIPROv2 cases")

    data = parser.add_argument_group("data (the same panel for every optimizer)")
    data.add_argument("--train-size", type=positive_int, default=None,
                      help=f"training examples, stratified (default {DEFAULT_TRAIN_SIZE})")
    data.add_argument("--val-size", type=positive_int, default=None,
                      help=f"validation examples (default {DEFAULT_VAL_SIZE})")
    data.add_argument("--test-size", type=positive_int, default=None,
                      help=f"held-out test examples (default {DEFAULT_TEST_SIZE})")
    data.add_argument("--data-seed", type=non_negative_int, default=None,
                      help="seed of the train/val/test panel (default 0)")
    data.add_argument("--data-dir", default=None,
                      help="Banking77 folder; default $BANKING77_DIR, else the Hugging Face hub")

    lm = parser.add_argument_group("LM (one model for both optimizers)")
    lm.add_argument("--model", default=None, help="default gpt-4.1-nano")
    lm.add_argument("--lm", choices=("sim", "openai", "local"), default=None,
                    help="default sim unless OPENAI_API_KEY or --api-base is set")
    lm.add_argument("--api-base", default=None, help="any OpenAI-compatible server")
    lm.add_argument("--synth-backend", choices=("local", "hosted"), default=None,
                    help="Synth backend: local (offline; default) or hosted (SYNTH_API_KEY)")

    matrix = parser.add_argument_group("matrix (overrides of benchmarks/matrix.toml)")
    matrix.add_argument("--matrix", default=None, metavar="PATH", help="another matrix file")
    matrix.add_argument("--modes", default=None, metavar="A,B",
                        help="e.g. instruction_only (default: the matrix's)")
    matrix.add_argument("--seeds", default=None, metavar="1,2",
                        help="optimizer seeds, e.g. 1,2,3 (default: the matrix's)")
    matrix.add_argument("--trials", type=positive_int, default=None,
                        help="DSPy MIPROv2 search trials (default: the matrix's)")
    matrix.add_argument("--rollouts", type=positive_int, default=None,
                        help="Synth MIPRO rollout budget (default: the matrix's)")
    matrix.add_argument("--budget", action="append", default=[], metavar="OPT.KEY=N",
                        help="any budget knob, e.g. dspy_miprov2.num_candidates=6")
    matrix.add_argument("--floors", choices=FLOOR_MODES, default=None,
                        help="score floors: auto (enforced where calibrated; default), "
                             "enforce, off")

    scale = parser.add_argument_group("scaling out")
    scale.add_argument("-n", "--workers", default=None, metavar="N|auto",
                       help="spread cases over N pytest-xdist worker processes")
    scale.add_argument("--dspy-threads", type=positive_int, default=None,
                       help="DSPy threads per case (default: the matrix's, 4)")
    scale.add_argument("--synth-concurrency", type=positive_int, default=None,
                       help="concurrent rollouts per Synth case (default: the adapter's, 8)")

    out = parser.add_argument_group("results and gating")
    out.add_argument("--results-dir", default=None,
                     help=f"records and reports (default {DEFAULT_RESULTS_DIR}/)")
    out.add_argument("--compare", default=None, metavar="PATH|latest",
                     help="gate against an earlier comparison JSON")
    out.add_argument("--compare-fail", action="append", default=[], metavar="METRIC:N[%]",
                     help="e.g. optimized_test_accuracy:5, optimized_test_accuracy:significant, "
                          "exact (needs --compare)")
    out.add_argument("--compare-alpha", default=None, metavar="ALPHA",
                     help="significance level of METRIC:significant (default 0.05)")
    out.add_argument("--save-baseline", default=None, metavar="PATH",
                     help="also save this run's comparison JSON as PATH")
    out.add_argument("-v", "--verbose", action="store_true",
                     help="pytest's normal output (warnings summary, captured logs)")
    return parser


def validate(args: argparse.Namespace) -> None:
    """Everything checkable before pytest starts; raises ValueError with one line."""
    budgets = list(args.budget)
    if args.trials is not None:
        budgets.append(f"dspy_miprov2.trials={args.trials}")
    if args.rollouts is not None:
        budgets.append(f"synth_mipro.rollouts={args.rollouts}")
    try:
        choice_from_options(matrix=args.matrix, modes=args.modes, seeds=args.seeds,
                            budgets=budgets, dspy_threads=args.dspy_threads,
                            synth_concurrency=args.synth_concurrency, model=args.model).load()
    except SelectionError as exc:  # name the option as this CLI spells it
        raise ValueError(str(exc).replace("--mipro-", "--")) from None
    for expr in args.compare_fail:
        parse_threshold(expr)
    if args.compare_alpha is not None:
        try:
            parse_alpha(args.compare_alpha)
        except GateError as exc:  # name the option as this CLI spells it
            raise ValueError(str(exc).replace("--mipro-", "--")) from None
    if args.compare_fail and not args.compare:
        raise ValueError("--compare-fail needs --compare PATH|latest")
    if args.compare and args.compare != "latest" and not Path(args.compare).is_file():
        raise ValueError(f"--compare {args.compare}: no such file")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise ValueError(f"--data-dir {args.data_dir}: no such directory")
    if args.results_dir is not None:
        usable_results_dir(args.results_dir)
    if args.workers is not None and not (args.workers.isdigit() or
                                         args.workers in ("auto", "logical")):
        raise ValueError(f"-n/--workers {args.workers!r}: expected a number or 'auto'")


def pytest_args(args: argparse.Namespace, passthrough: list[str]) -> list[str]:
    """The `pytest benchmarks/ ...` command line this CLI stands for."""
    out = [str(BENCHMARKS), "-p", "no:cacheprovider", "-W",
           "ignore::pytest.PytestAssertRewriteWarning"]
    if not args.verbose:
        # Quiet, but skip reasons (the "not supported" cases) and failures stay visible.
        out += ["-q", "-rfEs", "--disable-warnings", "--tb=short", "--show-capture=no"]
    if args.optimizer is not None:
        out += ["--mipro-optimizers", args.optimizer]
    for flag, value in (
        ("--mipro-train-size", args.train_size),
        ("--mipro-val-size", args.val_size),
        ("--mipro-test-size", args.test_size),
        ("--mipro-data-seed", args.data_seed),
        ("--mipro-data-dir", args.data_dir),
        ("--mipro-model", args.model),
        ("--mipro-lm", args.lm),
        ("--mipro-api-base", args.api_base),
        ("--mipro-synth-backend", args.synth_backend),
        ("--mipro-matrix", args.matrix),
        ("--mipro-modes", args.modes),
        ("--mipro-seeds", args.seeds),
        ("--mipro-floors", args.floors),
        ("--mipro-dspy-threads", args.dspy_threads),
        ("--mipro-synth-concurrency", args.synth_concurrency),
        ("--mipro-results-dir", args.results_dir),
        ("--mipro-compare", args.compare),
        ("--mipro-compare-alpha", args.compare_alpha),
        ("--mipro-save-baseline", args.save_baseline),
        ("-n", args.workers),
    ):
        if value is not None:
            out += [flag, str(value)]
    if args.trials is not None:
        out.append(f"--mipro-budget=dspy_miprov2.trials={args.trials}")
    if args.rollouts is not None:
        out.append(f"--mipro-budget=synth_mipro.rollouts={args.rollouts}")
    out += [f"--mipro-budget={expr}" for expr in args.budget]
    out += [f"--mipro-compare-fail={expr}" for expr in args.compare_fail]
    return out + passthrough


@dataclass
class _SessionGrab:
    """A pytest plugin object that keeps the mipro-bench session of the run it joins."""

    session: Any = None

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        from mipro_bench.plugin import SESSION_KEY

        self.session = config.stash.get(SESSION_KEY, None)


def outcome_message(code: int, session: Any) -> tuple[int, str | None]:
    """Map pytest's exit code to this CLI's, with one line saying what it means."""
    if code == pytest.ExitCode.OK:
        return EXIT_OK, None
    if code == pytest.ExitCode.TESTS_FAILED:
        gate = session is not None and session.failed
        why = "the regression gate failed" if gate else (
            "a case failed or fell below an enforced floor")
        return EXIT_FAILED, f"{PROG}: FAILED: {why} (see above)"
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        return EXIT_FAILED, (f"{PROG}: error: no benchmark case matched (check --synth-only/"
                             "--dspy-only, --modes, --matrix and any -k after --)")
    if code == pytest.ExitCode.USAGE_ERROR:
        return EXIT_USAGE, f"{PROG}: error: the benchmark could not start (see the line above)"
    if code == pytest.ExitCode.INTERRUPTED:
        return EXIT_INTERRUPTED, f"{PROG}: interrupted"
    return int(code), f"{PROG}: error: pytest ended with an internal error (exit {int(code)})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        try:
            validate(args)
        except (ValueError, GateError, MatrixError) as exc:
            parser.error(str(exc))
    except SystemExit as exc:  # argparse: --help (0) or one line on stderr (2)
        return int(exc.code or 0)
    grab = _SessionGrab()
    try:
        code = int(pytest.main(pytest_args(args, passthrough), plugins=[grab]))
    except KeyboardInterrupt:
        code = int(pytest.ExitCode.INTERRUPTED)
    exit_code, message = outcome_message(code, grab.session)
    sys.stdout.flush()
    if message:
        print(message, file=sys.stderr, flush=True)
    report = getattr(grab.session, "report_path", None)
    if report is not None:  # the last line: where to look
        print(f"\nReport: {Path(report).resolve()}", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
