"""The terminal table (rich), as a string the pytest plugin can print in its summary.

Rendered through rich either way; `color=False` (the default) gives plain
ASCII boxes and no escape codes, which is what a dumb terminal, a CI log or
pytest's terminal summary can show. `color=None` decides from the
environment (NO_COLOR, TERM=dumb, a non-tty stdout).
"""

from __future__ import annotations

import io
import os
import shutil
import sys

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mipro_bench.compare import Comparison, FormatEffect, PairRow, Row
from mipro_bench.report import format as fmt

DEFAULT_WIDTH = 120
MIN_WIDTH = 100


def color_wanted() -> bool:
    """Whether the current terminal takes colors (NO_COLOR and TERM=dumb say no)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM", "") in ("", "dumb"):
        return False
    return sys.stdout.isatty()


def render_table(comparison: Comparison, *, color: bool | None = False,
                 width: int | None = None) -> str:
    """The comparison as terminal text: accuracy table, budget table, pairs, notes."""
    use_color = color_wanted() if color is None else color
    if width is None:
        width = max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)
    out = io.StringIO()
    console = Console(
        file=out, width=width, force_terminal=use_color, no_color=not use_color,
        color_system="standard" if use_color else None, highlight=False, emoji=False,
        legacy_windows=False, soft_wrap=False,
    )
    style = box.SIMPLE_HEAVY if use_color else box.ASCII
    title = "mipro-bench: Banking77 prompt-optimizer comparison"
    console.print(Text(title, style="bold"))
    if comparison.simulated:
        console.print(Text(fmt.SIMULATED_NOTE, style="bold yellow"))
    replayed = fmt.replayed_note(comparison.run.replayed_from)
    if replayed:
        console.print(Text(replayed, style="bold yellow"))
    transport = fmt.transport_note(comparison.run.lm_transports)
    if transport:
        console.print(Text(transport, style="yellow"))
    if not comparison.rows:
        console.print("No benchmark cases were recorded.")
        return out.getvalue()
    _print(console, _accuracy_table(comparison, style), width)
    if any(row.by_executor for row in comparison.rows):
        _print(console, _executor_table(comparison, style), width)
    _print(console, _budget_table(comparison, style), width)
    if comparison.pairs:
        _print(console, _pairs_table(comparison.pairs, style), width)
    if comparison.format_effects:
        _print(console, _format_table(comparison.format_effects, style), width)
    notes = [fmt.CI_NOTE.format(conf=comparison.run.confidence * 100), fmt.OWN_SCORE_NOTE]
    if any(row.by_executor for row in comparison.rows):
        notes += [fmt.EXECUTOR_NOTE, fmt.PARSE_NOTE]
    if comparison.pairs:
        notes.append(fmt.PAIR_NOTE)
    if comparison.format_effects:
        notes.append(fmt.FORMAT_NOTE)
    notes += [f"{row.label}: {flag}" for row in comparison.rows for flag in row.flags]
    notes.extend(comparison.notes)
    for note in notes:
        console.print(Text(f"* {note}", style="dim"))
    return out.getvalue()


def _print(console: Console, table: Table, width: int) -> None:
    """Print at the console width, or wider when the table cannot fit without cutting a
    number or a name short: a line the terminal wraps is better than a lost digit."""
    console.width = max(width, _unbreakable_width(table))
    console.print(table, crop=False)
    console.width = width


def _unbreakable_width(table: Table) -> int:
    """The width below which rich would cut a no_wrap cell short with an ellipsis."""
    total = 0
    for column in table.columns:
        if column.no_wrap:
            texts = [column.header, *column.cells]
            widest = max((cell_len(line) for t in texts for line in _plain(t).splitlines()),
                         default=0)
        else:
            widest = column.min_width or 1
        total += widest + 2  # padding (0, 1) on both sides
    return total + len(table.columns) - 1  # the column separators (no outer edge)


def _plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def _status_text(row: Row) -> Text:
    text = fmt.status_with_flags(row)
    if row.status == "succeeded" and not row.flags:
        return Text(text, style="green")
    if row.kind == "not_supported":
        return Text(text, style="dim")
    return Text(text, style="red" if row.status.startswith("failed") else "yellow")


def _case(row: Row) -> str:
    return f"{row.mode}\n{row.model}"


def _run(row: Row) -> str:
    if row.kind != "measured":
        return _case(row)
    return f"{_case(row)}\n{fmt.lm_kind(row)}, {fmt.seeds(row)}"


def _accuracy_table(comparison: Comparison, style: box.Box) -> Table:
    table = Table(title="Test accuracy (held-out test split, scored by the suite)", box=style,
                  title_justify="left", show_lines=True, show_edge=False)
    table.add_column("Optimizer", no_wrap=True)
    table.add_column("Mode / model / LM", no_wrap=True)
    for name in ("Baseline", "Optimized", "Improvement"):
        table.add_column(name, no_wrap=True)
    table.add_column("Optimized by\nexecutor", no_wrap=True)
    table.add_column("Best val\n(own score)", no_wrap=True)
    table.add_column("Status", overflow="fold", min_width=12)
    for row in comparison.rows:
        table.add_row(
            row.optimizer, _run(row),
            fmt.estimate(row.baseline, sep="\n"), fmt.estimate(row.optimized, sep="\n"),
            fmt.estimate(row.improvement, signed=True, sep="\n"), fmt.by_executor(row),
            fmt.own_score(row.best_val_score, sep="\n"), _status_text(row),
        )
    return table


def _executor_table(comparison: Comparison, style: box.Box) -> Table:
    table = Table(title="Per executor: test accuracy and answer parsing (* = native format)",
                  box=style, title_justify="left", show_lines=True, show_edge=False)
    table.add_column("Optimizer", no_wrap=True)
    table.add_column("Mode", no_wrap=True)
    table.add_column("Executor", no_wrap=True)
    table.add_column("Baseline", no_wrap=True)
    table.add_column("Optimized", no_wrap=True)
    table.add_column("Parsed by step\n(baseline / optimized)", overflow="fold", min_width=24)
    table.add_column("No intent\nbase / opt", no_wrap=True)
    table.add_column("LM calls/item\nbase / opt", no_wrap=True)
    for row in comparison.rows:
        for est in row.by_executor:
            steps = (f"{fmt.parse_steps(est.baseline_diagnostics)} /\n"
                     f"{fmt.parse_steps(est.optimized_diagnostics)}")
            if est.error:
                steps += f"\nerror: {fmt.status(est.error)}"
            table.add_row(
                row.optimizer, row.mode, fmt.executor_name(est),
                fmt.estimate(est.baseline, sep="\n"), fmt.estimate(est.optimized, sep="\n"),
                steps,
                f"{fmt.no_intent(est.baseline_diagnostics)} / "
                f"{fmt.no_intent(est.optimized_diagnostics)}",
                f"{fmt.calls_per_item(est.baseline_diagnostics)} / "
                f"{fmt.calls_per_item(est.optimized_diagnostics)}",
            )
    return table


def _format_table(effects: tuple[FormatEffect, ...], style: box.Box) -> Table:
    table = Table(title="Format effect (same prompt, two executors, same test items)",
                  box=style, title_justify="left", show_lines=True, show_edge=False)
    table.add_column("Prompt", overflow="fold", min_width=14)
    table.add_column("Model", no_wrap=True)
    table.add_column("A vs B", no_wrap=True)
    table.add_column("A", no_wrap=True)
    table.add_column("B", no_wrap=True)
    table.add_column("A - B", no_wrap=True)
    table.add_column("Discordant", no_wrap=True)
    table.add_column("McNemar p", no_wrap=True)
    for e in effects:
        d = e.difference
        table.add_row(
            Text(e.prompt), e.model, f"{e.executor_a}\nvs {e.executor_b}",
            fmt.pct(d.mean_a if d else None), fmt.pct(d.mean_b if d else None),
            fmt.format_difference(e, sep="\n") if d else fmt.status(e.status),
            "-" if e.discordant is None else str(e.discordant), fmt.p_value(e.mcnemar_p),
        )
    return table


def _budget_table(comparison: Comparison, style: box.Box) -> Table:
    table = Table(title="Budget per run (mean over successful seeds)", box=style,
                  title_justify="left", show_lines=True, show_edge=False)
    table.add_column("Optimizer", no_wrap=True)
    table.add_column("Mode / model", no_wrap=True)
    table.add_column("Budget", overflow="fold", min_width=10)
    table.add_column("LM calls\nbase / opt / test", no_wrap=True)
    table.add_column("Tokens", no_wrap=True)
    table.add_column("Cost", no_wrap=True)
    table.add_column("Time", no_wrap=True)
    for row in comparison.rows:
        measured = row.kind == "measured" and row.n_succeeded > 0
        table.add_row(
            row.optimizer, _case(row), fmt.budget(row.budget), fmt.calls_by_phase(
                row.usage, optimize_by_role=row.optimize_calls_by_role, role_sep="\n"),
            fmt.tokens(row.usage, sep="\n"), fmt.cost(row.cost_usd, measured,
                                                        estimate=row.cost_usd_estimate),
            fmt.seconds(row.elapsed_seconds, sep="\n"),
        )
    return table


def _pairs_table(pairs: tuple[PairRow, ...], style: box.Box) -> Table:
    table = Table(title="Optimizer vs optimizer (paired, same test items)", box=style,
                  title_justify="left", show_lines=True, show_edge=False)
    table.add_column("Mode / model", no_wrap=True)
    table.add_column("Executor", no_wrap=True)
    table.add_column("A vs B", overflow="fold", min_width=14)
    table.add_column("A", no_wrap=True)
    table.add_column("B", no_wrap=True)
    table.add_column("A - B", no_wrap=True)
    table.add_column("McNemar p", overflow="fold", min_width=10)
    table.add_column("Verdict", overflow="fold", min_width=20)
    for pair in pairs:
        d = pair.difference
        verdict = fmt.pair_verdict(pair)
        table.add_row(
            f"{fmt.pair_mode(pair)}\n{pair.model}", fmt.pair_executor(pair),
            fmt.pair_sides(pair).replace(" vs ", "\nvs "),
            fmt.pct(d.mean_a if d else None), fmt.pct(d.mean_b if d else None),
            fmt.pair_difference(pair, sep="\n"), fmt.pair_mcnemar(pair, sep="\n"),
            Text(verdict, style="bold" if pair.winner else ""),
        )
    return table
