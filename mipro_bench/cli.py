"""Shared plumbing of the earlier benchmark's one-optimizer CLIs (run_*_banking77.py).

Every CLI takes the same data/LM/results options with the same defaults as
`pytest benchmarks/`, starts and stops the one LM gateway, shows progress,
ends with a summary table, and maps every outcome to one exit code:
0 ok; 1 a run failed (its record is still written); 2 bad usage or
configuration, reported in one line without a traceback.
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

from mipro_bench.argtypes import (  # noqa: F401  (the scripts import these from here)
    EXIT_USAGE,
    non_negative_int,
    positive_int,
    usable_results_dir,
)
from mipro_bench.argtypes import OneLineParser as OneLineParser  # the scripts import it from here
from mipro_bench.continuity import Continuity, record_scopes, run_or_reuse
from mipro_bench.data import Splits, load_banking77, make_splits
from mipro_bench.errors import UserError
from mipro_bench.harness import Harness
from mipro_bench.lm.run_lm import resolve, run_lm
from mipro_bench.optimizers import get_spec
from mipro_bench.optimizers.base import NotSupported
from mipro_bench.options import (
    CLI_PREFIX,
    COMMON,
    add_options,
)
from mipro_bench.progress import (
    DEFAULT_INTERVAL_S,
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


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every entry point shares (`mipro_bench.options.COMMON`), plus the seed."""
    groups: dict[str, Any] = {}
    for opt in COMMON:
        group = groups.setdefault(opt.group, parser.add_argument_group(opt.group))
        add_options(group.add_argument, CLI_PREFIX, [opt])
    groups["lm"].add_argument("--seed", type=non_negative_int, default=1,
                              help="optimizer seed (default 1, as in benchmarks/matrix.toml)")


def load_splits(args: argparse.Namespace) -> Splits:
    return make_splits(
        load_banking77(args.data_dir),
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
        seed=args.data_seed,
    )


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


def run_optimizer(
    optimizer_name: str,
    args: argparse.Namespace,
    *,
    mode: str,
    budget: dict[str, Any],
    options: dict[str, Any] | None = None,
    out: Console | None = None,
) -> int:
    """Everything a seed CLI does after parsing: data, LM, harness, one case, record, table.

    The same pieces as `pytest benchmarks/` (the LM started by `run_lm`, so `--lm local`
    works here too; the session harness; the runner), for one case."""
    if mode not in MODES:
        raise CLIError(f"--mode must be one of {', '.join(MODES)}")
    spec = get_spec(optimizer_name)
    reason = spec.unsupported_reason(mode)
    if reason:
        raise NotSupported(reason)
    parsed_budget = spec.parse_budget(budget).for_mode(mode)
    spec.parse_options(options or {})  # a bad option is one line before anything starts
    # cheap checks first: no data is read for a bad LM or a bad recording
    continuity = Continuity.from_options(resume=args.resume, record=args.record,
                                         replay=args.replay)
    settings, lm_line = resolve(args.lm, args.api_base, args.model, max_tokens=args.max_tokens,
                                price_in=args.price_in, price_out=args.price_out)
    if continuity.replay is not None:
        settings = continuity.lm_settings(settings)
        lm_line = (f"LM: REPLAYED from {continuity.replay} (recorded {settings.model}); "
                   "no LM is called")
    try:
        usable_results_dir(args.results_dir)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    splits = load_splits(args)
    err = stderr_console()
    err.print(lm_line, highlight=False, soft_wrap=True)
    err.print(
        f"data: train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)} "
        f"(seed {splits.seed}, {splits.source})", highlight=False, soft_wrap=True,
    )
    with run_lm(settings, say=lambda line: err.print(line, highlight=False, soft_wrap=True),
                **continuity.gateway_kwargs(args.results_dir)) as gateway, \
            Harness(splits, network=gateway.network) as harness, tempfile.TemporaryDirectory(
                prefix="mipro-bench-") as workdir:
        label = f"{optimizer_name} {mode} seed {args.seed}"
        watch = case_progress(err, label, gateway, getattr(args, "progress", "auto"),
                              getattr(args, "progress_interval", DEFAULT_INTERVAL_S))

        def say(message: str) -> None:
            line = f"  {message}"
            # soft_wrap: a piped line is never cut at 80 columns (file names in two halves)
            if watch is None:
                err.print(line, highlight=False, soft_wrap=True)
            else:
                watch.say(line, lambda text: err.print(text, highlight=False, soft_wrap=True))

        record, path = run_or_reuse(
            spec=spec, options=dict(options or {}), budget=parsed_budget, mode=mode,
            seed=args.seed, label=label, splits=splits,
            endpoint=gateway.endpoint, results_dir=args.results_dir, workdir=Path(workdir),
            harness=harness, progress=say, resume=continuity.resume, say=say,
            usage=None, watch=watch)
    saved = continuity.save_recording(args.results_dir, record_scopes(record))
    if saved is not None:
        err.print(f"recording: {saved}", highlight=False, soft_wrap=True)
    if record.details.get("refused"):
        # A refused case is a usage error (one line, exit 2); its record is still written.
        raise CLIError(f"{record.details['refused']} (record: {path})")
    (out or stdout_console()).print(summary_table([(record, path)]))
    if record.status != "succeeded":
        err.print(f"[red]run failed[/red]: {record.error} (record: {path})", highlight=False,
                  soft_wrap=True)
        return EXIT_RUN_FAILED
    err.print(f"record: {path}", highlight=False, soft_wrap=True)
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
