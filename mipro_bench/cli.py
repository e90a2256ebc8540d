"""Shared plumbing of the seed CLIs (run_dspy_mipro_banking77.py, the Synth and comparison ones).

Every CLI takes the same data/LM/results options with the same defaults as
`pytest benchmarks/`, starts and stops the one LM gateway, shows progress,
ends with a summary table, and maps every outcome to one exit code:
0 ok; 1 a run failed (its record is still written); 2 bad usage or
configuration, reported in one line without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mipro_bench.argtypes import EXIT_USAGE, non_negative_int, positive_int, usable_results_dir
from mipro_bench.argtypes import OneLineParser as OneLineParser  # the scripts import it from here
from mipro_bench.data import DataError, Splits, load_banking77, make_splits
from mipro_bench.lm.knobs import KnobsError
from mipro_bench.lm.settings import (
    DEFAULT_MODEL,
    LMConfigError,
    LMSettings,
    load_dotenv,
    resolve_lm_settings,
)
from mipro_bench.matrix import MatrixError
from mipro_bench.optimizers import UnknownOptimizer, create_optimizer, get_spec
from mipro_bench.optimizers.base import Budget, NotSupported, OptimizeRequest, UsageError
from mipro_bench.options import (
    DEFAULT_RESULTS_DIR,
    DEFAULT_TEST_SIZE,
    DEFAULT_TRAIN_SIZE,
    DEFAULT_VAL_SIZE,
)
from mipro_bench.results import MODES, PHASES, RunRecord
from mipro_bench.runner import gateway_usage_reader, run_case

EXIT_OK = 0
EXIT_RUN_FAILED = 1

# Errors that mean "the command or its configuration cannot work": one line, exit 2.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    UsageError, DataError, LMConfigError, MatrixError, NotSupported, UnknownOptimizer, KnobsError,
)


class CLIError(Exception):
    """A usage or setup problem found by the CLI itself (one line, exit 2)."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every seed CLI shares, with the benchmark's defaults."""
    data = parser.add_argument_group("data")
    data.add_argument("--train-size", type=positive_int, default=DEFAULT_TRAIN_SIZE,
                      help=f"training examples, stratified (default {DEFAULT_TRAIN_SIZE})")
    data.add_argument("--val-size", type=positive_int, default=DEFAULT_VAL_SIZE,
                      help=f"validation examples, disjoint from train (default {DEFAULT_VAL_SIZE})")
    data.add_argument("--test-size", type=positive_int, default=DEFAULT_TEST_SIZE,
                      help="held-out test examples the suite scores both prompts on "
                           f"(default {DEFAULT_TEST_SIZE})")
    data.add_argument("--data-seed", type=non_negative_int, default=0,
                      help="seed of the train/val/test panel (default 0)")
    data.add_argument("--data-dir", default=None,
                      help="Banking77 folder (train.csv, test.csv, categories.json); "
                           "default $BANKING77_DIR, else the Hugging Face hub")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=non_negative_int, default=1,
                     help="optimizer seed (default 1, as in benchmarks/matrix.toml)")
    run.add_argument("--lm", choices=("sim", "openai", "local"), default=None,
                     help="LM backend; default sim unless OPENAI_API_KEY or --api-base is set")
    run.add_argument("--api-base", default=None,
                     help="any OpenAI-compatible server (vLLM, llama.cpp, Ollama)")
    run.add_argument("--model", default=DEFAULT_MODEL,
                     help=f"model for every phase and optimizer (default {DEFAULT_MODEL})")
    run.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR,
                     help=f"where result records go (default {DEFAULT_RESULTS_DIR}/)")


def load_splits(args: argparse.Namespace) -> Splits:
    return make_splits(
        load_banking77(args.data_dir),
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
        seed=args.data_seed,
    )


def resolve_lm(args: argparse.Namespace) -> tuple[LMSettings, str]:
    load_dotenv()  # a key in ./.env counts as set (fills only missing variables)
    return resolve_lm_settings(lm=args.lm, api_base=args.api_base, model=args.model)


@contextlib.contextmanager
def lm_gateway(settings: LMSettings) -> Iterator[Any]:
    """The run's LM gateway (simulated or forwarding) on a free local port."""
    from mipro_bench.lm.gateway import ServerStartError, start_gateway
    from mipro_bench.lm.sim_responder import PolicyUnavailable

    try:
        gateway = start_gateway(settings)
        handle = gateway.__enter__()
    except (ServerStartError, PolicyUnavailable) as exc:
        raise CLIError(f"the LM gateway could not start: {exc}") from None
    try:
        yield handle
    finally:
        gateway.__exit__(None, None, None)


def new_scope(slug: str, mode: str, seed: int) -> str:
    """A gateway scope unique to one case (URL-safe), so concurrent cases never mix usage."""
    return f"{slug}-{mode}-s{seed}-{uuid.uuid4().hex[:8]}"


# --- display -------------------------------------------------------------------------------


def stderr_console() -> Console:
    # Bind the stream now: adapters redirect sys.stdout/err around noisy library code.
    return Console(file=sys.stderr)


def stdout_console() -> Console:
    """The summary's console: the terminal's width, or 140 columns when piped (rich's 80
    would squeeze the table's columns to ellipses in CI logs)."""
    return Console(file=sys.stdout, width=shutil.get_terminal_size((140, 24)).columns)


@contextlib.contextmanager
def progress_line(console: Console, title: str) -> Iterator[Callable[[str], None]]:
    """A spinner line whose text each `say(message)` replaces (and logs above it)."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(title, total=None)

        def say(message: str) -> None:
            progress.console.print(f"  {message}", highlight=False)
            progress.update(task, description=f"{title}: {message}")

        yield say


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_table(rows: Sequence[tuple[RunRecord, Path]]) -> Table:
    """One line per case: test accuracies (baseline, optimized), own best val, LM calls, time.

    "best val" is the optimizer's own score on the val split, never test accuracy.
    """
    # The title says "simulated" too: a narrow terminal ellipsizes the model column's
    # "(simulated)", and a simulated number must never read as a real one.
    simulated = "; simulated LM" if any(record.lm.simulated for record, _ in rows) else ""
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
        model = f"{record.lm.model} (simulated)" if record.lm.simulated else record.lm.model
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
    budget: Budget,
    options: dict[str, Any] | None = None,
    out: Console | None = None,
) -> int:
    """Everything a seed CLI does after parsing: data, gateway, one case, record, table."""
    if mode not in MODES:
        raise CLIError(f"--mode must be one of {', '.join(MODES)}")
    spec = get_spec(optimizer_name)
    reason = spec.unsupported_reason(mode)
    if reason:
        raise NotSupported(reason)
    optimizer = create_optimizer(optimizer_name, **(options or {}))
    settings, lm_line = resolve_lm(args)  # cheap checks first: no data is read for a bad LM
    try:
        usable_results_dir(args.results_dir)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    splits = load_splits(args)
    err = stderr_console()
    err.print(lm_line, highlight=False)
    err.print(
        f"data: train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)} "
        f"(seed {splits.seed}, {splits.source})", highlight=False,
    )
    with lm_gateway(settings) as gateway, tempfile.TemporaryDirectory(
        prefix="mipro-bench-"
    ) as workdir, progress_line(err, f"{optimizer_name} {mode}") as say:
        scope = new_scope(spec.slug, mode, args.seed)
        request = OptimizeRequest(
            splits=splits, lm=gateway.endpoint, mode=mode, budget=budget, seed=args.seed,
            workdir=Path(workdir), scope=scope, progress=say, options=dict(options or {}),
            usage=gateway_usage_reader(gateway, scope),
        )
        record, path = run_case(optimizer, request, results_dir=args.results_dir)
    (out or stdout_console()).print(summary_table([(record, path)]))
    if record.status != "succeeded":
        err.print(f"[red]run failed[/red]: {record.error} (record: {path})", highlight=False)
        return EXIT_RUN_FAILED
    err.print(f"record: {path}", highlight=False)
    return EXIT_OK


def guarded(main: Callable[[], int], prog: str) -> int:
    """Run a CLI body: usage/config errors become one line and exit 2, never a traceback."""
    try:
        return main()
    except (CLIError, *USAGE_ERRORS) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
