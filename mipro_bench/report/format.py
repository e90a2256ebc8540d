"""How the reports write numbers: one place, so the table, Markdown and HTML agree.

Plain ASCII on purpose (the terminal table must survive a dumb terminal);
`missing` lets a richer format use an em dash for "no value". A missing value
is never written as 0: a failed case has no accuracy, an unknown cost is
"unknown".
"""

from __future__ import annotations

from typing import Any

from mipro_bench.compare import Estimate, PairRow, Row, UsageSummary
from mipro_bench.results import PHASES
from mipro_bench.stats import SeedSummary

PHASE_SHORT = {"baseline_eval": "baseline", "optimize": "optimize", "test_eval": "test"}
OWN_SCORE_NOTE = ("Best val is the optimizer's own score on its validation split: "
                  "it is not a test accuracy and is not comparable across optimizers.")
CI_NOTE = ("Test accuracies are the suite's own held-out test split; [..] is the {conf:g}% "
           "bootstrap CI over test items; sd is the spread across optimizer seeds.")
PAIR_NOTE = ("Pairs: same mode, same model, same test items; difference = A - B with a paired "
             "bootstrap CI; a winner is named only when that CI excludes 0.")
SIMULATED_NOTE = ("SIMULATED LM: these numbers come from the deterministic simulated LM, "
                  "not a real model. They test the suite, not the optimizers.")


REPLAYED_NOTE = ("REPLAYED: every LM call was answered from the recording {files}; no LM was "
                 "called. The numbers are the recorded run's.")


def replayed_note(files: tuple[str, ...]) -> str | None:
    return REPLAYED_NOTE.format(files=", ".join(files)) if files else None


def pct(value: float | None, missing: str = "-") -> str:
    return missing if value is None else f"{value * 100:.1f}%"


def signed_points(value: float | None, missing: str = "-") -> str:
    return missing if value is None else f"{value * 100:+.1f} pts"


def ci(low: float | None, high: float | None, *, signed: bool = False) -> str:
    if low is None or high is None:
        return ""
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return f"[{fmt.format(low * 100)}, {fmt.format(high * 100)}]"


def spread(seeds: SeedSummary | None) -> str:
    """'sd 2.1, n=3' (points across seeds), empty for a single seed."""
    if seeds is None or seeds.n < 2:
        return ""
    return f"sd {seeds.std * 100:.1f} n={seeds.n}"


def estimate(est: Estimate | None, *, signed: bool = False, missing: str = "-",
             sep: str = " ") -> str:
    """'61.0% [55.5, 66.4] (sd 2.1, n=3)'; `sep="\n"` stacks the parts for narrow cells."""
    if est is None:
        return missing
    parts = [signed_points(est.value) if signed else pct(est.value)]
    if interval := ci(est.ci_low, est.ci_high, signed=signed):
        parts.append(interval)
    if extra := spread(est.seeds):
        parts.append(f"({extra})")
    return sep.join(parts)


def own_score(seeds: SeedSummary | None, missing: str = "-", sep: str = " ") -> str:
    if seeds is None:
        return missing
    text = pct(seeds.mean)
    return f"{text}{sep}(sd {seeds.std * 100:.1f} n={seeds.n})" if seeds.n > 1 else text


def lm_kind(row: Row, missing: str = "-") -> str:
    if row.simulated is None:
        return missing
    kind = "SIMULATED" if row.simulated else f"real ({row.lm_backend or 'unknown'})"
    return f"{kind}, REPLAYED" if row.replayed else kind


def seeds(row: Row, missing: str = "-") -> str:
    """'3 seeds', or '2/3 seeds ok' when some failed."""
    if row.kind != "measured":
        return missing
    unit = "seed" if row.n_seeds == 1 else "seeds"
    if row.n_succeeded == row.n_seeds:
        return f"{row.n_seeds} {unit}"
    return f"{row.n_succeeded}/{row.n_seeds} {unit} ok"


def status(text: str, limit: int | None = 80) -> str:
    line = " ".join(text.split())
    if limit is not None and len(line) > limit:
        return line[: limit - 3] + "..."
    return line


def number(value: float | None, missing: str = "-") -> str:
    if value is None:
        return missing
    return f"{value:,.0f}" if abs(value - round(value)) < 1e-9 or value >= 100 else f"{value:,.1f}"


def calls_by_phase(usage: dict[str, UsageSummary], missing: str = "-") -> str:
    """'4 / 30 / 4' in PHASES order (baseline / optimize / test)."""
    if not usage:
        return missing
    return " / ".join(number(usage[p].calls) if p in usage else missing for p in PHASES)


def tokens(usage: dict[str, UsageSummary], missing: str = "-", sep: str = " / ") -> str:
    if not usage:
        return missing
    inp = sum(u.input_tokens for u in usage.values())
    out = sum(u.output_tokens for u in usage.values())
    return f"{number(inp)} in{sep}{number(out)} out"


def cost(value: float | None, row_measured: bool = True, missing: str = "-",
         estimate: float | None = None) -> str:
    """A real cost, else a labelled estimate (simulated runs: the named model's price),
    else "unknown" (a server with no price)."""
    if not row_measured:
        return missing
    if value is None:
        return "unknown" if estimate is None else f"${estimate:,.4f} est."
    return f"${value:,.4f}"


def seconds(summary: SeedSummary | None, missing: str = "-", sep: str = " ") -> str:
    if summary is None:
        return missing
    text = f"{summary.mean:,.1f} s"
    return f"{text}{sep}(sd {summary.std:.1f})" if summary.n > 1 else text


def budget(values: dict[str, Any], missing: str = "-") -> str:
    if not values:
        return missing
    return ", ".join(f"{k}={v}" for k, v in values.items())


def p_value(p: float | None, missing: str = "-") -> str:
    if p is None:
        return missing
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def pair_difference(pair: PairRow, missing: str = "-", sep: str = " ") -> str:
    d = pair.difference
    if d is None:
        return missing
    return f"{signed_points(d.difference)}{sep}{ci(d.ci_low, d.ci_high, signed=True)}"


def pair_mcnemar(pair: PairRow, missing: str = "-", sep: str = " ") -> str:
    if pair.mcnemar_p is not None:
        return p_value(pair.mcnemar_p)
    if pair.per_seed:
        return f"per seed:{sep}" + ", ".join(
            p_value(s.comparison.mcnemar_p) for s in pair.per_seed)
    return missing


def pair_sides(pair: PairRow) -> str:
    if pair.matched_mode:
        return f"{pair.optimizer_a} vs {pair.optimizer_b}"
    return f"{pair.optimizer_a} [{pair.mode_a}] vs {pair.optimizer_b} [{pair.mode_b}]"


def pair_mode(pair: PairRow) -> str:
    return pair.mode_a if pair.matched_mode else f"CROSS-MODE {pair.mode_a} / {pair.mode_b}"
