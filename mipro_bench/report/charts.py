"""The HTML report's charts: matplotlib on the Agg canvas, written as inline SVG.

Figures are built with `matplotlib.figure.Figure` and an explicit Agg canvas,
never through pyplot, so no global backend state is touched (pytest may run
this inside a user's session). SVG text stays text (svg.fonttype "none"), which
matplotlib XML-escapes; label text is also stripped of mathtext "$" so an
optimizer or intent name cannot switch on TeX parsing. Ids are salted with a
constant so the same comparison always renders the same bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mipro_bench.compare import Comparison, Row
from mipro_bench.results import TrajectoryPoint

TOP_INTENTS = 30
_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "mipro-bench",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.DOTALL)


def _label(text: str) -> str:
    return text.replace("$", r"\$")


def _svg(fig: Figure, title: str) -> str:
    FigureCanvasAgg(fig)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = _PROLOGUE.sub("", buf.getvalue(), count=1)
    # An accessible name for the chart; matplotlib escaped nothing we add here, so escape.
    safe = (title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))
    return svg.replace("<svg ", f'<svg role="img" aria-label="{safe}" ', 1)


def _measured(comparison: Comparison) -> list[Row]:
    return [r for r in comparison.rows if r.kind == "measured" and r.optimized is not None]


def accuracy_chart(comparison: Comparison) -> str | None:
    """Baseline and optimized test accuracy per row, with their CIs as error bars."""
    rows = [r for r in comparison.rows if r.kind == "measured" and r.baseline is not None]
    if not rows:
        return None
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.5, 0.6 * len(rows) + 1.4))
        ax = fig.add_subplot()
        height = 0.38
        for i, row in enumerate(rows):
            for offset, est, color, name in (
                (-height / 2, row.baseline, "#9aa5b1", "baseline"),
                (height / 2, row.optimized, "#2f6fb0", "optimized"),
            ):
                if est is None:
                    continue
                err = None
                if est.ci_low is not None and est.ci_high is not None:
                    err = [[max(0.0, est.value - est.ci_low) * 100],
                           [max(0.0, est.ci_high - est.value) * 100]]
                ax.barh(i + offset, est.value * 100, height=height, color=color, xerr=err,
                        capsize=3, label=name if i == 0 else None)
        ax.set_yticks(range(len(rows)), [_label(r.label) for r in rows])
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("test accuracy (%), bars: 95% CI over test items")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(rows)), ncol=2,
                  frameon=False)
        ax.set_title("Test accuracy: baseline vs optimized prompt")
        return _svg(fig, "Test accuracy: baseline vs optimized prompt")


def point_kind(point: TrajectoryPoint) -> str:
    """"minibatch" for a score on a training minibatch (Synth MIPRO labels them
    "... (minibatch)"), "online" for an online reward, else "val" (a validation / full
    evaluation: MIPROv2's full evals, GEPA's val scores, Synth's "(val)" points)."""
    label = point.label.strip().lower()
    for kind in ("minibatch", "online"):
        if label.endswith(f"({kind})"):
            return kind
    return "val"


def best_so_far(points: Sequence[TrajectoryPoint]) -> list[tuple[int, float]]:
    """(LM calls, best validation score so far): only comparable points, never falling."""
    out: list[tuple[int, float]] = []
    best: float | None = None
    for p in sorted(points, key=lambda p: p.lm_calls):
        if point_kind(p) != "val":
            continue
        best = p.score if best is None else max(best, p.score)
        out.append((p.lm_calls, best))
    return out


MINIBATCH_LABEL = "training minibatch score (not validation)"


def trajectory_chart(comparison: Comparison) -> str | None:
    """Each optimizer's best validation score so far against the LM calls it had spent
    (every seed; a step line that never falls), with its training-minibatch scores drawn
    apart as hollow markers: a minibatch score is not a validation score."""
    with matplotlib.rc_context(_RC):
        fig = trajectory_figure(comparison)
        return None if fig is None else _svg(fig, "Score vs budget curves")


def trajectory_figure(comparison: Comparison) -> Figure | None:
    """The figure of `trajectory_chart` (tests read its lines and markers)."""
    rows = [r for r in comparison.rows if any(s.trajectory for s in r.seeds)]
    if not rows:
        return None
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.5, 4.2))
        ax = fig.add_subplot()
        colors = matplotlib.colormaps["tab10"]
        for i, row in enumerate(rows):
            color = colors(i % 10)
            first, first_mb = True, True
            for seed in row.seeds:
                if not seed.trajectory:
                    continue
                best = best_so_far(seed.trajectory)
                if best:
                    ax.step([x for x, _ in best], [y * 100 for _, y in best], where="post",
                            color=color, marker="o", markersize=3, linewidth=1.5,
                            alpha=0.9 if first else 0.5,
                            label=f"{_label(row.label)}: best validation so far"
                            if first else None)
                    first = False
                minibatch = [p for p in seed.trajectory if point_kind(p) == "minibatch"]
                if minibatch:
                    ax.scatter([p.lm_calls for p in minibatch], [p.score * 100 for p in minibatch],
                               marker="^", s=18, facecolors="none", edgecolors=color,
                               linewidths=0.9, alpha=0.8,
                               label=f"{_label(row.label)}: {MINIBATCH_LABEL}"
                               if first_mb else None)
                    first_mb = False
        ax.set_xlabel("LM calls spent by the optimizer")
        ax.set_ylabel("optimizer's own score (%)")
        ax.set_title("Score vs budget: each optimizer's own scores, not test accuracy")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
        ax.grid(alpha=0.3)
        return fig


def intent_chart(comparison: Comparison, top: int = TOP_INTENTS) -> str | None:
    """Optimized minus baseline test accuracy per intent, for the intents that moved most."""
    rows = [r for r in _measured(comparison) if r.per_intent]
    if not rows:
        return None
    biggest: dict[str, float] = {}
    for row in rows:
        for d in row.per_intent:
            biggest[d.intent] = max(biggest.get(d.intent, 0.0), abs(d.difference))
    intents = [k for k, v in sorted(biggest.items(), key=lambda kv: (-kv[1], kv[0])) if v > 0]
    intents = intents[:top]
    if not intents:
        return None
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.5, 0.22 * len(intents) * max(1, len(rows) / 2) + 1.6))
        ax = fig.add_subplot()
        colors = matplotlib.colormaps["tab10"]
        height = 0.8 / len(rows)
        for j, row in enumerate(rows):
            by_intent = {d.intent: d.difference for d in row.per_intent}
            ys = [i - 0.4 + height * (j + 0.5) for i in range(len(intents))]
            xs = [by_intent.get(name, 0.0) * 100 for name in intents]
            ax.barh(ys, xs, height=height, color=colors(j % 10), label=_label(row.label))
        ax.set_yticks(range(len(intents)), [_label(i) for i in intents])
        ax.invert_yaxis()
        ax.axvline(0, color="#333", linewidth=0.8)
        ax.set_xlabel("optimized minus baseline test accuracy (points)")
        ax.set_title(f"Per-intent change (top {len(intents)} intents by largest change)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
        return _svg(fig, "Per-intent accuracy differences")


def all_charts(comparison: Comparison) -> dict[str, str]:
    """Chart id -> SVG, for the charts that have data."""
    charts = {
        "accuracy": accuracy_chart(comparison),
        "trajectory": trajectory_chart(comparison),
        "intents": intent_chart(comparison),
    }
    return {k: v for k, v in charts.items() if v is not None}
