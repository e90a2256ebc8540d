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

from mipro_bench.argtypes import OneLineParser, positive_int, usable_results_dir
from mipro_bench.errors import UserError
from mipro_bench.gate import parse_alpha, parse_threshold
from mipro_bench.journal_plan import JournalPlan
from mipro_bench.optimizers import registry
from mipro_bench.optimizers.base import UsageError
from mipro_bench.options import (
    CLI_PREFIX,
    COMMON,
    PLUGIN_PREFIX,
    SESSION,
    add_options,
    spec_options,
    to_pytest_args,
)

PROG = "run_comparison.py"
ROOT = Path(__file__).resolve().parent
BENCHMARKS = ROOT / "benchmarks"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                           epilog="Arguments after `--` are passed to pytest unchanged.")
    # One destination, the last flag wins: `python dev.py bench --dspy-only` runs
    # `run_comparison.py --all --dspy-only`, which must mean that optimizer only.
    which = parser.add_argument_group("which optimizers (the last of these wins)")
    which.add_argument("--all", dest="only", action="store_const", const=None,
                       help="every registered optimizer (the default)")
    for spec in registry().values():
        if spec.only_flag:
            which.add_argument(f"--{spec.only_flag}", dest="only", action="store_const",
                               const=spec.name, help=f"only {spec.title} cases")
    groups: dict[str, Any] = {}
    for opt in (*COMMON, *SESSION, *spec_options()):
        group = groups.setdefault(opt.group, parser.add_argument_group(opt.group))
        add_options(group.add_argument, CLI_PREFIX, [opt])
    for spec in registry().values():
        for shortcut in spec.cli_shortcuts:
            groups["matrix"].add_argument(f"--{shortcut.flag}", type=positive_int, default=None,
                                          metavar="N", dest=f"shortcut_{spec.name}_{shortcut.knob}",
                                          help=f"{shortcut.help} (default: the matrix's)")
    scale = groups["scale"]
    scale.add_argument("-n", "--workers", default=None, metavar="N|auto",
                       help="spread cases over N pytest-xdist worker processes")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="pytest's normal output (warnings summary, captured logs)")
    return parser


def _shortcut_budgets(args: argparse.Namespace) -> list[str]:
    out = []
    for spec in registry().values():
        for shortcut in spec.cli_shortcuts:
            value = getattr(args, f"shortcut_{spec.name}_{shortcut.knob}")
            if value is not None:
                out.append(f"{spec.name}.{shortcut.knob}={value}")
    return out


def validate(args: argparse.Namespace) -> None:
    """Everything checkable before pytest starts; raises UserError with one line, naming
    each option as this CLI spells it (no `--mipro-` prefix)."""
    try:
        _validate(args)
    except UserError as exc:
        raise UsageError(str(exc).replace(PLUGIN_PREFIX, CLI_PREFIX)) from None


def _validate(args: argparse.Namespace) -> None:
    from mipro_bench.plugin import matrix_choice

    args.budget = [*args.budget, *_shortcut_budgets(args)]
    if args.only is not None:
        args.optimizers = args.only
    journal_plan = JournalPlan.from_options(resume=args.resume, record=args.record,
                                         replay=args.replay)
    matrix_choice(lambda dest: getattr(args, dest), journal_plan).load()
    for expr in args.compare_fail:
        parse_threshold(expr)
    parse_alpha(args.compare_alpha)
    if (args.price_in is None) != (args.price_out is None):
        raise UsageError("give both --price-in and --price-out (USD per million input and "
                         "output tokens), or neither")
    if args.compare_fail and not args.compare:
        raise UsageError("--compare-fail needs --compare PATH|latest")
    if args.compare and args.compare != "latest" and not Path(args.compare).is_file():
        raise UsageError(f"--compare {args.compare}: no such file")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no such directory")
    try:
        usable_results_dir(args.results_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.workers is not None and not (args.workers.isdigit() or
                                         args.workers in ("auto", "logical")):
        raise UsageError(f"-n/--workers {args.workers!r}: expected a number or 'auto'")


def pytest_args(args: argparse.Namespace, passthrough: list[str]) -> list[str]:
    """The `pytest benchmarks/ ...` command line this CLI stands for: every option of the
    shared table that differs from its default, spelled with the plugin's prefix."""
    out = [str(BENCHMARKS), "-p", "no:cacheprovider", "-W",
           "ignore::pytest.PytestAssertRewriteWarning"]
    if not args.verbose:
        # Quiet, but skip reasons (the "not supported" cases) and failures stay visible.
        out += ["-q", "-rfEs", "--disable-warnings", "--tb=short", "--show-capture=no"]
    out += to_pytest_args(lambda dest: getattr(args, dest),
                          (*COMMON, *SESSION, *spec_options()))
    if args.workers is not None:
        out += ["-n", str(args.workers)]
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
        except UserError as exc:
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
