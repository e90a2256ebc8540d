"""How the reports write numbers: one place, so the table, Markdown and HTML agree.

Plain ASCII on purpose (the terminal table must survive a dumb terminal);
`missing` lets a richer format use an em dash for "no value". A missing value
is never written as 0: a failed case has no accuracy, an unknown cost is
"unknown".
"""

from __future__ import annotations

from typing import Any

from mipro_bench.compare import (
    DiagnosticsSummary,
    Estimate,
    ExecutorEstimate,
    FormatEffect,
    PairRow,
    Row,
    UsageSummary,
)
from mipro_bench.results import PHASES
from mipro_bench.stats import SeedSummary

PHASE_SHORT = {"baseline_eval": "baseline", "optimize": "optimize", "test_eval": "test"}
OWN_SCORE_NOTE = ("Best val is the optimizer's own score on its validation split: "
                  "it is not a test accuracy and is not comparable across optimizers.")
CI_NOTE = ("Test accuracies are the suite's own held-out test split; [..] is the {conf:g}% "
           "bootstrap CI over test items; sd is the spread across optimizer seeds.")
PAIR_NOTE = ("Pairs: same mode, same model, same test items, both prompts run in the same "
             "executor (one row per executor; 'native' names the side whose format it is); "
             "difference = A - B with a paired bootstrap CI; a winner is named only when that "
             "CI excludes 0 in that executor.")
EXECUTOR_NOTE = ("Executors: the format a prompt runs in when scored (dspy_program: a DSPy "
                 "program; task_app: the task app's forced tool call through the interceptor). "
                 "Every prompt is scored in every executor; * marks the optimizer's native one, "
                 "whose numbers are the row's main ones.")
PARSE_NOTE = ("Parsing: share of answered items decided by each step of the label rule "
              "(exact / normalised / in a sentence / fuzzy / none = named no intent); LM "
              "calls per item above 1 are adapter retries and fallbacks.")
FORMAT_NOTE = ("Format effect: the same prompt in two executors on the same items (A - B, "
               "paired bootstrap CI; discordant = items only one format got right). A "
               "non-zero effect means optimizer pairs across formats would mix optimizer "
               "and format.")
SIMULATED_NOTE = ("SIMULATED LM: these numbers come from the deterministic simulated LM, "
                  "not a real model. They test the suite, not the optimizers.")


REPLAYED_NOTE = ("REPLAYED: every LM call was answered from the recording {files}; no LM was "
                 "called. The numbers are the recorded run's.")


def replayed_note(files: tuple[str, ...]) -> str | None:
    return REPLAYED_NOTE.format(files=", ".join(files)) if files else None


def transport_note(transports: tuple[str, ...]) -> str | None:
    """Said only when some LM calls did not go over a socket (`--lm respx`)."""
    if "respx" not in transports:
        return None
    return ("TRANSPORT respx: every LM call reached the gateway in-process through a respx "
            "router (no LM socket); the answers are those the gateway gives on a port.")


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


def calls_by_phase(usage: dict[str, UsageSummary], missing: str = "-",
                   optimize_by_role: dict[str, float] | None = None, role_sep: str = " ") -> str:
    """'4 / 30 / 4' in PHASES order (baseline / optimize / test), then the optimize calls
    split by LM role when the optimizer reports one: '(optimize: 554 task_model +
    9 reflection)'."""
    if not usage:
        return missing
    text = " / ".join(number(usage[p].calls) if p in usage else missing for p in PHASES)
    if optimize_by_role:
        split = " + ".join(f"{number(n)} {role}" for role, n in optimize_by_role.items())
        text += f"{role_sep}(optimize: {split})"
    return text


def tokens(usage: dict[str, UsageSummary], missing: str = "-", sep: str = " / ") -> str:
    """The native phases' tokens; the other executors' evaluations as their own line."""
    if not usage:
        return missing
    native = [u for p, u in usage.items() if p in PHASES]
    inp = sum(u.input_tokens for u in native)
    out = sum(u.output_tokens for u in native)
    text = f"{number(inp)} in{sep}{number(out)} out"
    cross = [u for p, u in usage.items() if p not in PHASES]
    if cross:
        text += f"{sep}+ {number(sum(u.calls for u in cross))} calls in other executors"
    return text


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


def executor_name(est: ExecutorEstimate) -> str:
    return f"{est.executor}*" if est.native else est.executor


def by_executor(row: Row, missing: str = "-", sep: str = "\n") -> str:
    """'dspy_program* 38.3%' then 'task_app 38.3%': optimized accuracy per executor."""
    if not row.by_executor:
        return missing
    parts = []
    for est in row.by_executor:
        value = "error" if est.optimized is None and est.error else pct(
            est.optimized.value if est.optimized else None, missing)
        parts.append(f"{executor_name(est)} {value}")
    return sep.join(parts)


STEP_SHORT = {"exact": "exact", "normalised": "norm", "sentence": "sent", "fuzzy": "fuzzy",
              "none": "none"}


def parse_steps(diag: DiagnosticsSummary | None, missing: str = "-") -> str:
    """'exact 98%, sent 1%, none 1%' (steps that decided no item are left out)."""
    if diag is None:
        return missing
    shown = [f"{STEP_SHORT[k]} {v * 100:.0f}%" for k, v in diag.shares.items() if v]
    return ", ".join(shown) or "no answers"


def calls_per_item(diag: DiagnosticsSummary | None, missing: str = "-") -> str:
    if diag is None or diag.calls_per_item is None:
        return missing
    return f"{diag.calls_per_item:.2f}"


def no_intent(diag: DiagnosticsSummary | None, missing: str = "-") -> str:
    if diag is None:
        return missing
    text = f"{diag.no_intent}/{diag.n_items}"
    return f"{text} ({diag.errors} LM errors)" if diag.errors else text


def flag_tags(row: Row) -> list[str]:
    """The short tags of a row's flags ('UNCHANGED PROMPT', 'PROPOSER FAILED', 'LOCAL
    BACKEND')."""
    return [flag.split(":", 1)[0] for flag in row.flags]


def status_with_flags(row: Row, limit: int | None = 80) -> str:
    text = status(row.status, limit)
    return "\n".join([text, *flag_tags(row)]) if row.flags else text


def pair_executor(pair: PairRow, missing: str = "-") -> str:
    if not pair.executor:
        return "each native"
    if pair.native_for:
        return f"{pair.executor}\n(native: {', '.join(pair.native_for)})"
    return pair.executor or missing


def pair_verdict(pair: PairRow) -> str:
    text = pair.verdict if pair.status == "compared" else status(pair.status, None)
    extra = [x for x in (pair.disagreement, pair.budget_note) if x]
    return "; ".join([text, *extra])


def format_difference(effect: FormatEffect, missing: str = "-", sep: str = " ") -> str:
    d = effect.difference
    if d is None:
        return missing
    return f"{signed_points(d.difference)}{sep}{ci(d.ci_low, d.ci_high, signed=True)}"
