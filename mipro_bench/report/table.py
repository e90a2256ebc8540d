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

from mipro_bench.compare import Comparison, PairRow, Row
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
    if not comparison.rows:
        console.print("No benchmark cases were recorded.")
        return out.getvalue()
    _print(console, _accuracy_table(comparison, style), width)
    _print(console, _budget_table(comparison, style), width)
    if comparison.pairs:
        _print(console, _pairs_table(comparison.pairs, style), width)
    notes = [fmt.CI_NOTE.format(conf=comparison.run.confidence * 100), fmt.OWN_SCORE_NOTE]
    if comparison.pairs:
        notes.append(fmt.PAIR_NOTE)
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
    text = fmt.status(row.status)
    if row.status == "succeeded":
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
    table.add_column("Best val\n(own score)", no_wrap=True)
    table.add_column("Status", overflow="fold", min_width=12)
    for row in comparison.rows:
        table.add_row(
            row.optimizer, _run(row),
            fmt.estimate(row.baseline, sep="\n"), fmt.estimate(row.optimized, sep="\n"),
            fmt.estimate(row.improvement, signed=True, sep="\n"),
            fmt.own_score(row.best_val_score, sep="\n"), _status_text(row),
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
            row.optimizer, _case(row), fmt.budget(row.budget), fmt.calls_by_phase(row.usage),
            fmt.tokens(row.usage, sep="\n"), fmt.cost(row.cost_usd, measured,
                                                        estimate=row.cost_usd_estimate),
            fmt.seconds(row.elapsed_seconds, sep="\n"),
        )
    return table


def _pairs_table(pairs: tuple[PairRow, ...], style: box.Box) -> Table:
    table = Table(title="Optimizer vs optimizer (paired, same test items)", box=style,
                  title_justify="left", show_lines=True, show_edge=False)
    table.add_column("Mode / model", no_wrap=True)
    table.add_column("A vs B", overflow="fold", min_width=14)
    table.add_column("A", no_wrap=True)
    table.add_column("B", no_wrap=True)
    table.add_column("A - B", no_wrap=True)
    table.add_column("McNemar p", overflow="fold", min_width=10)
    table.add_column("Verdict", overflow="fold", min_width=20)
    for pair in pairs:
        d = pair.difference
        verdict = pair.verdict if pair.status == "compared" else fmt.status(pair.status)
        table.add_row(
            f"{fmt.pair_mode(pair)}\n{pair.model}", fmt.pair_sides(pair).replace(" vs ", "\nvs "),
            fmt.pct(d.mean_a if d else None), fmt.pct(d.mean_b if d else None),
            fmt.pair_difference(pair, sep="\n"), fmt.pair_mcnemar(pair, sep="\n"),
            Text(verdict, style="bold" if pair.winner else ""),
        )
    return table
