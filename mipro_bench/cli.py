"""The seed CLIs' front-end: the session engine with one optimizer's one case.

The earlier benchmark's one-optimizer scripts (`run_*_banking77.py` at the
repository root) are this module with an optimizer named. Their flags come from
the option table (the optimizer's own seed flags from its spec, then the
options every entry point shares, then `--seed`:
`mipro_bench.options.seed_cli_options`), the spec turns them into one case, and
`mipro_bench.engine.Engine` runs it exactly as it runs a pytest case: same LM
start, journal plan, servers, resume and recording. What is left here is the
front-end's own: where lines go (stderr; the table on stdout), and one exit
code per outcome: 0 ok; 1 a run failed (its record is still written); 2 bad
usage or configuration, reported in one line without a traceback.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mipro_bench.argtypes import EXIT_USAGE, OneLineParser, usable_results_dir
from mipro_bench.engine import Engine
from mipro_bench.errors import UserError
from mipro_bench.journal_plan import JournalPlan
from mipro_bench.optimizers import get_spec
from mipro_bench.optimizers.base import NotSupported
from mipro_bench.optimizers.spec import SeedCase
from mipro_bench.options import CLI_PREFIX, BenchOptions, add_options, seed_cli_options
from mipro_bench.progress import (
    CaseProgress,
    LineSink,
    RichSink,
    resolve_mode,
)
from mipro_bench.results import MODES, PHASES, RunRecord

EXIT_OK = 0
EXIT_RUN_FAILED = 1


class CLIError(UserError):
    """A usage or setup problem found by the CLI itself (one line, exit 2)."""


def build_parser(optimizer: str, prog: str, description: str) -> OneLineParser:
    """The seed CLI's parser: each flag registered from its one declaration."""
    parser = OneLineParser(prog=prog, description=description)
    groups: dict[str, Any] = {}
    for opt in seed_cli_options(optimizer):
        group = groups.setdefault(opt.group, parser.add_argument_group(opt.group))
        add_options(group.add_argument, CLI_PREFIX, [opt])
    return parser


def main(optimizer: str, prog: str, description: str, argv: list[str] | None = None) -> int:
    """Parse, map the flags to the optimizer's one case, run it on the engine."""
    args = build_parser(optimizer, prog, description).parse_args(argv)
    seed_cli = get_spec(optimizer).seed_cli
    assert seed_cli is not None  # seed_cli_options checked it

    def run() -> int:
        err = stderr_console()
        case = seed_cli.to_case(lambda dest: getattr(args, dest),
                                lambda line: err.print(line, highlight=False, soft_wrap=True))
        return run_seed_case(optimizer, args, case)

    return guarded(run, prog)


# --- display -------------------------------------------------------------------------------


def stderr_console() -> Console:
    # Bind the stream now: adapters redirect sys.stdout/err around noisy library code.
    return Console(file=sys.stderr)


def stdout_console() -> Console:
    """The summary's console: the terminal's width, or 140 columns when piped (rich's 80
    would squeeze the table's columns to ellipses in CI logs)."""
    return Console(file=sys.stdout, width=shutil.get_terminal_size((140, 24)).columns)


def case_progress(console: Console, label: str, gateway: Any, mode: str | None,
                  interval_s: float) -> CaseProgress | None:
    """A seed CLI's live progress on stderr: a rich line on a terminal, a plain line every
    `interval_s` elsewhere, or None (`--progress off`)."""
    chosen = resolve_mode(mode, is_terminal=console.is_terminal)

    def retries(scope: str) -> dict[str, int]:
        return gateway.retries(scope).get(scope, {})

    def usage(scope: str) -> dict[str, Any]:
        return gateway.usage(scope).get(scope, {})

    if chosen == "off":
        return None
    if chosen == "rich":
        return CaseProgress(label, RichSink(console),
                        retries=retries, usage=usage)
    return CaseProgress(label, LineSink(lambda line: console.print(
        line, highlight=False, markup=False, soft_wrap=True), interval_s),
                        retries=retries, usage=usage)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_table(rows: Sequence[tuple[RunRecord, Path]]) -> Table:
    """One line per case: test accuracies (baseline, optimized), own best val, LM calls, time.

    "best val" is the optimizer's own score on the val split, never test accuracy.
    """
    # The title says "simulated" too: a narrow terminal ellipsizes the model column's
    # "(simulated)", and a simulated number must never read as a real one.
    simulated = "; simulated LM" if any(record.lm.simulated for record, _ in rows) else ""
    if any(record.lm.replayed_from for record, _ in rows):
        simulated += "; REPLAYED from a recording"
    if any(record.lm.transport == "respx" for record, _ in rows):
        simulated += "; LM answered in-process (respx)"
    table = Table(title=f"mipro-bench: Banking77 (test accuracy scored by the suite{simulated})",
                  title_justify="left")
    for name, justify in (("optimizer", "left"), ("mode", "left"), ("model", "left"),
                          ("status", "left"), ("baseline", "right"), ("optimized", "right"),
                          ("Δ pts", "right"), ("best val", "right"),
                          ("LM calls b/o/t", "right"), ("opt s", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for record, _path in rows:
        res = record.results
        delta = res.improvement
        tags = [t for t, on in (("simulated", record.lm.simulated),
                                (record.lm.transport, record.lm.transport != "http"),
                                ("replayed", bool(record.lm.replayed_from))) if on]
        model = f"{record.lm.model} ({', '.join(tags)})" if tags else record.lm.model
        status = record.status if record.status == "succeeded" else f"[red]{record.status}[/red]"
        calls = "/".join(str(record.usage[p].calls) if p in record.usage else "-" for p in PHASES)
        table.add_row(
            record.optimizer, record.config.mode, model, status,
            _pct(res.baseline_test_accuracy), _pct(res.optimized_test_accuracy),
            "-" if delta is None else f"{100 * delta:+.1f}",
            _pct(res.best_val_score), calls,
            "-" if record.timing.optimize_seconds is None
            else f"{record.timing.optimize_seconds:.1f}",
        )
    return table


# --- running ---------------------------------------------------------------------------------


def run_seed_case(optimizer: str, args: argparse.Namespace, case: SeedCase, *,
                  out: Console | None = None) -> int:
    """The one case on the session engine, then its record, the table and the exit code."""
    mode = case.mode
    if mode not in MODES:
        raise CLIError(f"--mode must be one of {', '.join(MODES)}")
    spec = get_spec(optimizer)
    reason = spec.unsupported_reason(mode)
    if reason:
        raise NotSupported(reason)
    budget = spec.parse_budget(case.budget).for_mode(mode)
    spec.parse_options(case.options)  # a bad option is one line before anything starts
    err = stderr_console()

    def to_stderr(line: str) -> None:
        # soft_wrap: a piped line is never cut at 80 columns (file names in two halves)
        err.print(line, highlight=False, soft_wrap=True)

    # cheap checks first: no data is read for a bad LM or a bad recording
    plan = JournalPlan.from_options(resume=args.resume, record=args.record, replay=args.replay)
    engine = Engine(BenchOptions.from_values(lambda dest: getattr(args, dest, None)), plan,
                    say=to_stderr)
    lm = engine.lm
    try:
        usable_results_dir(args.results_dir)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    splits = engine.splits
    to_stderr(lm.line)
    to_stderr(f"data: train {len(splits.train)}, val {len(splits.val)}, test "
              f"{len(splits.test)} (seed {splits.seed}, {splits.source})")
    with engine, tempfile.TemporaryDirectory(prefix="mipro-bench-") as workdir:
        label = f"{optimizer} {mode} seed {args.seed}"
        watch = case_progress(err, label, engine.gateway(), args.progress,
                              args.progress_interval)

        def say(message: str) -> None:
            line = f"  {message}"
            if watch is None:
                to_stderr(line)
            else:
                watch.say(line, to_stderr)

        record, path = engine.run_case(
            optimizer=optimizer, options=case.options, budget=budget, mode=mode,
            seed=args.seed, label=label, workdir=Path(workdir), progress=say, say=say,
            watch=watch)
    saved = engine.save_recording([record])  # after the gateway closed its journal
    if saved is not None:
        to_stderr(f"recording: {saved}")
    if record.details.get("refused"):
        # A refused case is a usage error (one line, exit 2); its record is still written.
        raise CLIError(f"{record.details['refused']} (record: {path})")
    (out or stdout_console()).print(summary_table([(record, path)]))
    if record.status != "succeeded":
        err.print(f"[red]run failed[/red]: {record.error} (record: {path})", highlight=False,
                  soft_wrap=True)
        return EXIT_RUN_FAILED
    to_stderr(f"record: {path}")
    return EXIT_OK


def guarded(main: Callable[[], int], prog: str) -> int:
    """Run a CLI body: usage/config errors become one line and exit 2, never a traceback."""
    try:
        return main()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
