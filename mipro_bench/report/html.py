"""The comparison as one self-contained HTML file (jinja2 template + inline SVG charts).

No script, no stylesheet link, no font or CDN: the file opens the same offline,
in a CI artifact viewer, or years later. The template autoescapes everything;
the only markup inserted raw is the SVG matplotlib wrote (it escapes its text).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from mipro_bench.compare import Comparison, PairRow, Row
from mipro_bench.report import charts
from mipro_bench.report import format as fmt
from mipro_bench.report.markdown import prompt_text
from mipro_bench.serde import to_jsonable

MISSING = "—"
TEMPLATE = "report.html.j2"


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("mipro_bench.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _status_class(status: str) -> str:
    for prefix, name in (("succeeded", "ok"), ("failed", "failed"), ("partial", "partial"),
                         ("not supported", "unsupported"), ("compared", "ok"),
                         ("not comparable", "unsupported")):
        if status.startswith(prefix):
            return name
    return "other"


def _row_view(row: Row) -> dict[str, Any]:
    measured = row.kind == "measured" and row.n_succeeded > 0
    return {
        "optimizer": row.optimizer, "mode": row.mode, "model": row.model,
        "lm": fmt.lm_kind(row, MISSING), "seeds": fmt.seeds(row, MISSING),
        "simulated": bool(row.simulated),
        "baseline": fmt.estimate(row.baseline, missing=MISSING, sep="\n"),
        "optimized": fmt.estimate(row.optimized, missing=MISSING, sep="\n"),
        "improvement": fmt.estimate(row.improvement, signed=True, missing=MISSING, sep="\n"),
        "own_score": fmt.own_score(row.best_val_score, MISSING, sep="\n"),
        "status": row.status, "status_class": _status_class(row.status),
        "flags": list(row.flags),
        "by_executor": fmt.by_executor(row, MISSING),
        "executors": [{
            "name": fmt.executor_name(e),
            "baseline": fmt.estimate(e.baseline, missing=MISSING, sep="\n"),
            "optimized": fmt.estimate(e.optimized, missing=MISSING, sep="\n"),
            "steps_baseline": fmt.parse_steps(e.baseline_diagnostics, MISSING),
            "steps_optimized": fmt.parse_steps(e.optimized_diagnostics, MISSING),
            "no_intent": f"{fmt.no_intent(e.baseline_diagnostics, MISSING)} / "
                         f"{fmt.no_intent(e.optimized_diagnostics, MISSING)}",
            "calls_per_item": f"{fmt.calls_per_item(e.baseline_diagnostics, MISSING)} / "
                              f"{fmt.calls_per_item(e.optimized_diagnostics, MISSING)}",
            "error": e.error,
        } for e in row.by_executor],
        "budget": fmt.budget(row.budget, MISSING),
        "calls": fmt.calls_by_phase(row.usage, MISSING, row.optimize_calls_by_role),
        "tokens": fmt.tokens(row.usage, MISSING),
        "cost": fmt.cost(row.cost_usd, measured, MISSING, row.cost_usd_estimate),
        "time": fmt.seconds(row.elapsed_seconds, MISSING, sep="\n"),
    }


def _pair_view(pair: PairRow) -> dict[str, Any]:
    d = pair.difference
    return {
        "mode": fmt.pair_mode(pair), "model": pair.model, "sides": fmt.pair_sides(pair),
        "executor": fmt.pair_executor(pair, MISSING),
        "matched": pair.matched_mode,
        "a": fmt.pct(d.mean_a if d else None, MISSING),
        "b": fmt.pct(d.mean_b if d else None, MISSING),
        "difference": fmt.pair_difference(pair, MISSING, sep="\n"),
        "mcnemar": fmt.pair_mcnemar(pair, MISSING),
        "verdict": fmt.pair_verdict(pair),
        "winner": pair.winner,
        "status_class": _status_class(pair.status),
        "label": pair.label,
        "optimizer_a": pair.optimizer_a, "optimizer_b": pair.optimizer_b,
        "intents": [
            {"intent": x.intent, "n": x.n_items, "a": fmt.pct(x.accuracy_a),
             "b": fmt.pct(x.accuracy_b), "difference": fmt.signed_points(x.difference)}
            for x in sorted(pair.per_intent, key=lambda x: (-abs(x.difference), x.intent))
        ],
    }


def _prompt_groups(rows: tuple[Row, ...]) -> list[dict[str, Any]]:
    """Prompts side by side: one group per mode x model, one column per optimizer."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        prompts = [{"seed": s.seed, "text": prompt_text(s.optimized_prompt),
                    "demos": len(s.optimized_prompt.demos)}
                   for s in row.seeds if s.optimized_prompt is not None]
        groups[(row.mode, row.model)].append({
            "optimizer": row.optimizer, "status": row.status,
            "status_class": _status_class(row.status), "prompts": prompts,
        })
    return [{"mode": mode, "model": model, "columns": cols}
            for (mode, model), cols in groups.items()]


def _configs(rows: tuple[Row, ...]) -> list[dict[str, str]]:
    out = []
    for row in rows:
        if row.kind != "measured":
            continue
        payload = [{"case_id": s.case_id, "status": s.status, "config": to_jsonable(s.config),
                    "lm": to_jsonable(s.lm), "backend": s.backend, "test_digest": s.test_digest,
                    "started_at": s.started_at} for s in row.seeds]
        out.append({"label": row.label, "json": json.dumps(payload, indent=2, default=str)})
    return out


SMALL_INTENT_ITEMS = 5  # below this many test items per intent the chart says so


def _fewest_items_per_intent(comparison: Comparison) -> int | None:
    counts = [d.n_items for r in comparison.rows for d in r.per_intent]
    fewest = min(counts, default=None)
    return fewest if fewest is not None and fewest < SMALL_INTENT_ITEMS else None


def render_html(comparison: Comparison) -> str:
    """The whole report as one HTML document (str)."""
    run = comparison.run
    # Raw markup only for the SVG matplotlib wrote (it escapes its own text).
    svgs = {k: Markup(v) for k, v in charts.all_charts(comparison).items()}
    conf = run.confidence * 100
    context = {
        "simulated": comparison.simulated,
        "simulated_note": fmt.SIMULATED_NOTE,
        "replayed_note": fmt.replayed_note(comparison.run.replayed_from),
        "transport_note": fmt.transport_note(comparison.run.lm_transports),
        "run": run,
        "conf": f"{conf:g}",
        "rows": [_row_view(r) for r in comparison.rows],
        "pairs": [_pair_view(p) for p in comparison.pairs],
        "format_effects": [{
            "prompt": e.prompt, "model": e.model, "sides": f"{e.executor_a} vs {e.executor_b}",
            "a": fmt.pct(e.difference.mean_a if e.difference else None, MISSING),
            "b": fmt.pct(e.difference.mean_b if e.difference else None, MISSING),
            "difference": fmt.format_difference(e, MISSING, sep="\n") if e.difference
            else e.status,
            "discordant": MISSING if e.discordant is None else e.discordant,
            "mcnemar": fmt.p_value(e.mcnemar_p, MISSING),
        } for e in comparison.format_effects],
        "executor_notes": [fmt.EXECUTOR_NOTE, fmt.PARSE_NOTE],
        "format_note": fmt.FORMAT_NOTE,
        "small_intents": _fewest_items_per_intent(comparison),
        "charts": svgs,
        "prompt_groups": _prompt_groups(comparison.rows),
        "configs": _configs(comparison.rows),
        "notes": [fmt.CI_NOTE.format(conf=conf), fmt.OWN_SCORE_NOTE, fmt.PAIR_NOTE],
        "run_notes": list(comparison.notes),
        "versions": sorted(run.versions.items()),
        "test_digests": [d[:16] for d in run.digests.get("test", ())],
    }
    return _environment().get_template(TEMPLATE).render(**context)
