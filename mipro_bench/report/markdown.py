"""The comparison as GitHub-flavoured Markdown (for a PR comment or a results README).

Every piece of text that came from a run (prompts are model output, errors are
exception text) is escaped: table cells get Markdown and HTML metacharacters
escaped, prompts go into code fences longer than any backtick run they hold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mipro_bench.compare import Comparison, IntentDelta, IntentPairDelta, Row
from mipro_bench.report import format as fmt
from mipro_bench.results import OptimizedPrompt

MISSING = "—"
TOP_INTENTS = 15
_CELL_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_CELL_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def cell(text: object) -> str:
    """One table cell: metacharacters escaped, newlines as <br>."""
    value = str(text)
    value = "".join(_CELL_ESCAPES.get(ch, ch) for ch in value)
    value = _CELL_SPECIAL.sub(r"\\\1", value)
    return "<br>".join(part.strip() for part in value.splitlines()) or MISSING


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def fence(text: str, info: str = "text") -> list[str]:
    """A code block no text can close early: the fence outruns its longest backtick run."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    marker = "`" * max(3, longest + 1)
    return [f"{marker}{info}", text, marker]


def prompt_text(prompt: OptimizedPrompt) -> str:
    parts = [prompt.instruction]
    if prompt.demos:
        parts.append("")
        parts.append(f"Demos ({len(prompt.demos)}):")
        for demo in prompt.demos:
            parts.append(f"- query: {demo.query}\n  intent: {demo.intent}")
    return "\n".join(parts)


def render_markdown(comparison: Comparison, *, top_intents: int = TOP_INTENTS) -> str:
    run = comparison.run
    conf = run.confidence * 100
    out = ["# mipro-bench: Banking77 prompt-optimizer comparison", ""]
    if comparison.simulated:
        out += [f"> **{fmt.SIMULATED_NOTE}**", ""]
    replayed = fmt.replayed_note(comparison.run.replayed_from)
    if replayed:
        out += [f"> **{replayed}**", ""]
    transport = fmt.transport_note(run.lm_transports)
    if transport:
        out += [f"> {transport}", ""]
    out += [
        f"Generated {cell(run.generated_at)}; models: {cell(', '.join(run.models) or MISSING)}; "
        f"{conf:g}% CIs from {run.n_resamples:,} bootstrap resamples (seed {run.bootstrap_seed}).",
        "",
    ]
    if not comparison.rows:
        out += ["No benchmark cases were recorded.", ""]
        return "\n".join(out)

    out += ["## Test accuracy", ""]
    out += _table(
        ["Optimizer", "Mode", "Model", "LM", "Seeds", "Baseline test accuracy",
         "Optimized test accuracy", "Improvement", "Optimized by executor (* native)",
         "Best val (optimizer's own score)", "Status"],
        [[r.optimizer, r.mode, r.model, fmt.lm_kind(r, MISSING), fmt.seeds(r, MISSING),
          fmt.estimate(r.baseline, missing=MISSING), fmt.estimate(r.optimized, missing=MISSING),
          fmt.estimate(r.improvement, signed=True, missing=MISSING),
          fmt.by_executor(r, MISSING), fmt.own_score(r.best_val_score, MISSING),
          fmt.status_with_flags(r, limit=None)]
         for r in comparison.rows],
    )
    out += ["", f"- {fmt.CI_NOTE.format(conf=conf)}", f"- {fmt.OWN_SCORE_NOTE}"]
    out += [f"- **{cell(r.label)}**: {cell(flag)}" for r in comparison.rows for flag in r.flags]
    out.append("")

    if any(r.by_executor for r in comparison.rows):
        out += ["## Per executor: test accuracy and answer parsing", "",
                f"{fmt.EXECUTOR_NOTE} {fmt.PARSE_NOTE}", ""]
        out += _table(
            ["Optimizer", "Mode", "Executor", "Baseline", "Optimized",
             "Parsed by step (baseline)", "Parsed by step (optimized)",
             "No intent (base / opt)", "LM calls per item (base / opt)"],
            [[r.optimizer, r.mode, fmt.executor_name(e),
              fmt.estimate(e.baseline, missing=MISSING), fmt.estimate(e.optimized, missing=MISSING),
              fmt.parse_steps(e.baseline_diagnostics, MISSING),
              fmt.parse_steps(e.optimized_diagnostics, MISSING)
              + (f" (error: {e.error})" if e.error else ""),
              f"{fmt.no_intent(e.baseline_diagnostics, MISSING)} / "
              f"{fmt.no_intent(e.optimized_diagnostics, MISSING)}",
              f"{fmt.calls_per_item(e.baseline_diagnostics, MISSING)} / "
              f"{fmt.calls_per_item(e.optimized_diagnostics, MISSING)}"]
             for r in comparison.rows for e in r.by_executor],
        )
        out.append("")

    out += ["## Budget per run", "", "Mean over each row's successful seeds.", ""]
    out += _table(
        ["Optimizer", "Mode", "Model", "Budget", "LM calls (baseline / optimize / test)",
         "Tokens", "Cost", "Time"],
        [[r.optimizer, r.mode, r.model, fmt.budget(r.budget, MISSING),
          fmt.calls_by_phase(r.usage, MISSING, r.optimize_calls_by_role),
          fmt.tokens(r.usage, MISSING),
          fmt.cost(r.cost_usd, r.kind == "measured" and r.n_succeeded > 0, MISSING,
                   r.cost_usd_estimate),
          fmt.seconds(r.elapsed_seconds, MISSING)]
         for r in comparison.rows],
    )
    out.append("")

    if comparison.pairs:
        out += ["## Optimizer vs optimizer", "", f"{fmt.PAIR_NOTE}", ""]
        out += _table(
            ["Mode", "Model", "Executor", "A vs B", "A", "B", f"A − B [{conf:g}% CI]",
             "McNemar p", "Verdict"],
            [[fmt.pair_mode(p), p.model, fmt.pair_executor(p, MISSING), fmt.pair_sides(p),
              fmt.pct(p.difference.mean_a if p.difference else None, MISSING),
              fmt.pct(p.difference.mean_b if p.difference else None, MISSING),
              fmt.pair_difference(p, MISSING), fmt.pair_mcnemar(p, MISSING),
              fmt.pair_verdict(p)]
             for p in comparison.pairs],
        )
        out.append("")

    if comparison.format_effects:
        out += ["## Format effect", "", fmt.FORMAT_NOTE, ""]
        out += _table(
            ["Prompt", "Model", "A vs B", "A", "B", f"A − B [{conf:g}% CI]", "Discordant",
             "McNemar p"],
            [[e.prompt, e.model, f"{e.executor_a} vs {e.executor_b}",
              fmt.pct(e.difference.mean_a if e.difference else None, MISSING),
              fmt.pct(e.difference.mean_b if e.difference else None, MISSING),
              fmt.format_difference(e, MISSING) if e.difference else e.status,
              MISSING if e.discordant is None else e.discordant, fmt.p_value(e.mcnemar_p, MISSING)]
             for e in comparison.format_effects],
        )
        out.append("")

    out += _intent_sections(comparison, top_intents)
    out += _prompt_sections(comparison.rows)
    out += _config_section(comparison)
    return "\n".join(out).rstrip() + "\n"


def _top(deltas: Sequence[IntentDelta] | Sequence[IntentPairDelta], n: int) -> list:
    changed = [d for d in deltas if d.difference != 0]
    return sorted(changed, key=lambda d: (-abs(d.difference), d.intent))[:n]


def _intent_sections(comparison: Comparison, n: int) -> list[str]:
    out = ["## Per-intent accuracy differences", "",
           f"Intents whose test accuracy changed, largest change first (up to {n}).", ""]
    any_rows = False
    for row in comparison.rows:
        if not row.per_intent:
            continue
        any_rows = True
        top = _top(row.per_intent, n)
        out += [f"### {cell(row.label)}: optimized − baseline", ""]
        if not top:
            out += ["No intent changed.", ""]
            continue
        out += _table(["Intent", "Items", "Baseline", "Optimized", "Difference"],
                      [[d.intent, d.n_items, fmt.pct(d.baseline), fmt.pct(d.optimized),
                        fmt.signed_points(d.difference)] for d in top])
        out.append("")
    for pair in comparison.pairs:
        if not pair.per_intent:
            continue
        any_rows = True
        top = _top(pair.per_intent, n)
        out += [f"### {cell(pair.label)}: A − B (optimized prompts)", ""]
        if not top:
            out += ["No intent differs.", ""]
            continue
        out += _table(["Intent", "Items", pair.optimizer_a, pair.optimizer_b, "Difference"],
                      [[d.intent, d.n_items, fmt.pct(d.accuracy_a), fmt.pct(d.accuracy_b),
                        fmt.signed_points(d.difference)] for d in top])
        out.append("")
    return out if any_rows else []


def _prompt_sections(rows: Sequence[Row]) -> list[str]:
    out = ["## Optimized prompts", ""]
    shown = False
    for row in rows:
        for seed in row.seeds:
            if seed.optimized_prompt is None:
                continue
            shown = True
            out += [f"### {cell(row.label)}, seed {seed.seed}", ""]
            out += fence(prompt_text(seed.optimized_prompt))
            out.append("")
    return out if shown else []


def _config_section(comparison: Comparison) -> list[str]:
    run = comparison.run

    def join(values: Sequence[object]) -> str:
        return cell(", ".join(str(v) for v in values) or MISSING)

    out = ["## Run configuration", ""]
    out += [
        f"- LM: {'SIMULATED' if run.simulated else 'real'} ({join(run.lm_backends)}); "
        f"models {join(run.models)}",
        f"- Data: {join(run.data_sources)}; sizes train {join(run.sizes.get('train', ()))}, "
        f"val {join(run.sizes.get('val', ()))}, test {join(run.sizes.get('test', ()))}; "
        f"data seed {join(run.data_seeds)}",
        f"- Test panel digest: {join([d[:16] for d in run.digests.get('test', ())])}",
        f"- Optimizer seeds: {join(run.seeds)}",
        f"- Versions: {join([f'{k} {v}' for k, v in sorted(run.versions.items())])}",
    ]
    for row in comparison.rows:
        if row.kind == "measured":
            out.append(f"- {cell(row.label)}: budget {cell(fmt.budget(row.budget, MISSING))}; "
                       f"optimizer backend {cell(row.backend or MISSING)}")
    if comparison.notes:
        out += ["", "## Notes", ""] + [f"- {cell(n)}" for n in comparison.notes]
    out.append("")
    return out
