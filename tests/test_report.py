"""Terminal table, Markdown and HTML renderings of a comparison, and the files written."""

from __future__ import annotations

import json
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mipro_bench.compare import Comparison, UnsupportedCase, build_comparison
from mipro_bench.matrix import load_matrix
from mipro_bench.report import (
    ReportError,
    render_html,
    render_markdown,
    render_table,
    write_reports,
)
from tests.factories import record

STRONG = "1" * 36 + "0" * 4
WEAK = "1" * 20 + "0" * 20
BASE = "1" * 10 + "0" * 30
EVIL_PROMPT = 'Classify. <script>alert("x")</script> | ``` </pre> $x^2$ & done'
EVIL_ERROR = "backend said <b>502</b> | retry"
# The real "not supported" reason, from the real matrix: longer than the terminal table's
# 80-character status cell, so the tests below see the cut where it really happens.
UNSUPPORTED = load_matrix().case("synth_mipro-fewshot-gpt-4.1-nano-seed1")
REAL_REASON = str(UNSUPPORTED.unsupported)
FULL_STATUS = f"not supported: {REAL_REASON}"


def _records(simulated: bool = True) -> list:
    recs = []
    for seed in (0, 1):
        recs.append(record(optimizer="dspy_miprov2", seed=seed, baseline=BASE, optimized=STRONG,
                           simulated=simulated, cost=0.0005, instruction=EVIL_PROMPT,
                           trajectory=[(4, 0.4), (12, 0.6 + seed / 10), (30, 0.9)]))
        recs.append(record(optimizer="synth_mipro", seed=seed, baseline=BASE, optimized=WEAK,
                           simulated=simulated, trajectory=[(10, 0.5), (40, 0.7)]))
    recs.append(record(optimizer="dspy_miprov2", mode="fewshot", baseline=BASE, optimized=STRONG,
                       simulated=simulated, demos=[("Where is my <card>?", "card_arrival")]))
    recs.append(record(optimizer="gepa", status="failed", error=EVIL_ERROR, simulated=simulated))
    return recs


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    return build_comparison(
        _records(),
        unsupported=[UnsupportedCase("synth_mipro", "fewshot", "gpt-4.1-nano", REAL_REASON)],
        n_resamples=500, generated_at="2026-01-01T00:00:00+00:00",
    )


@pytest.fixture(scope="module")
def real_comparison() -> Comparison:
    return build_comparison(_records(simulated=False), n_resamples=200)


# ------------------------------------------------------------------ terminal table


def test_plain_table_has_every_row_and_no_escape_codes(comparison: Comparison) -> None:
    text = render_table(comparison, width=220)  # wide enough that no cell wraps
    assert "\x1b[" not in text
    assert text.isascii()
    assert "SIMULATED LM" in text
    for name in ("dspy_miprov2", "synth_mipro", "gepa"):
        assert name in text
    assert "failed: backend said <b>502</b> | retry" in text
    # The terminal cell holds 80 characters of a status; the full text is elsewhere (below).
    assert len(FULL_STATUS) > 80
    assert FULL_STATUS[:77] + "..." in text and FULL_STATUS not in text
    assert "Best val" in text and "own score" in text
    assert "90.0%" in text and "dspy_miprov2 better" in text


def test_narrow_table_wraps_but_never_truncates_names(comparison: Comparison) -> None:
    text = render_table(comparison, width=100)
    # The one "..." is the end of the long "not supported" status (cut at 80 characters on
    # purpose); no name and no other cell is cut, however narrow the terminal.
    assert text.replace("[..]", "").count("...") == 1 and "\u2026" not in text
    assert text.count("dspy_miprov2") >= 2 and "instruction_only" in text
    assert "synth_mipro" in text and "fewshot" in text and "gpt-4.1-nano" in text


def test_the_full_not_supported_reason_is_in_the_skip_line_json_markdown_and_html(
        comparison: Comparison, tmp_path: Path) -> None:
    """docs/reading-the-report.md: the table cuts a long status at 80 characters; pytest's
    skip line, the comparison JSON, the Markdown and the HTML report carry the whole reason."""
    from mipro_bench.fixtures.cases import run_bench_case

    with pytest.raises(pytest.skip.Exception) as skipped:
        run_bench_case(UNSUPPORTED, item=None, engine=None, splits=None,  # type: ignore[arg-type]
                       workdir=tmp_path)  # skips before using them
    assert skipped.value.msg == FULL_STATUS
    rows = [r for r in comparison.to_dict()["rows"] if r["status"].startswith("not supported")]
    assert [r["status"] for r in rows] == [FULL_STATUS]
    assert FULL_STATUS in render_markdown(comparison).replace("\\", "")
    assert FULL_STATUS in render_html(comparison)


def test_colored_table_uses_ansi(comparison: Comparison) -> None:
    assert "\x1b[" in render_table(comparison, color=True, width=140)


def test_real_runs_carry_no_simulated_banner(real_comparison: Comparison) -> None:
    assert "SIMULATED" not in render_table(real_comparison)
    assert "SIMULATED" not in render_markdown(real_comparison)
    assert "SIMULATED" not in render_html(real_comparison)


def test_only_an_in_process_transport_is_named_in_every_rendering(
        comparison: Comparison) -> None:
    import dataclasses

    records = [dataclasses.replace(r, lm=dataclasses.replace(r.lm, transport="respx"))
               for r in comparison.records]
    in_process = build_comparison(records, n_resamples=10)
    assert in_process.run.lm_transports == ("respx",)
    for text in (render_table(in_process, width=200), render_markdown(in_process),
                 render_html(in_process)):
        assert "TRANSPORT respx" in text and "no LM socket" in text
    assert comparison.run.lm_transports == ("http",)
    for text in (render_table(comparison), render_markdown(comparison), render_html(comparison)):
        assert "TRANSPORT" not in text


def test_empty_comparison_renders_a_message() -> None:
    empty = build_comparison([], n_resamples=10)
    for text in (render_table(empty), render_markdown(empty), render_html(empty)):
        assert "No benchmark cases were recorded" in text


# ------------------------------------------------------------------ markdown


def _md_table_rows(markdown: str, heading: str) -> list[list[str]]:
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    return [re.split(r"(?<!\\)\|", ln)[1:-1] for ln in lines[1:]]


def test_markdown_tables(comparison: Comparison) -> None:
    md = render_markdown(comparison)
    assert md.startswith("# mipro-bench")
    assert "> **SIMULATED LM" in md
    rows = _md_table_rows(md, "Test accuracy")
    assert len(rows) == len(comparison.rows) == 5
    failed = next(r for r in rows if r[0].strip() == "gepa")
    # A failed case shows its error, never a zero accuracy.
    assert [c.strip() for c in failed[5:10]] == ["—"] * 5
    assert "failed: backend said &lt;b&gt;502&lt;/b&gt; \\| retry" in failed[10]
    unsupported = next(r for r in rows if "not supported" in r[10])
    assert unsupported[0].strip() == "synth\\_mipro"
    budget = _md_table_rows(md, "Budget per run")
    assert len(budget) == 5
    dspy = next(r for r in budget if r[0].strip() == "dspy\\_miprov2" and "instruction" in r[1])
    assert dspy[4].strip() == "4 / 30 / 4" and dspy[6].strip() == "$0.0190"
    synth = next(r for r in budget if r[0].strip() == "synth\\_mipro" and "instruction" in r[1])
    assert synth[6].strip() == "unknown"
    pairs = _md_table_rows(md, "Optimizer vs optimizer")
    assert any("dspy\\_miprov2 better" in r[8] for r in pairs)  # after the Executor column


def test_markdown_fences_prompts_safely(comparison: Comparison) -> None:
    md = render_markdown(comparison)
    # The prompt holds ``` so its fence must be longer; the text inside stays verbatim.
    assert "````text\n" + EVIL_PROMPT in md
    assert "- query: Where is my <card>?" in md
    assert "## Run configuration" in md and "Test panel digest" in md


# ------------------------------------------------------------------ html


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.rows_in: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self.stack.append(attributes.get("id") or "")
        if tag == "tr" and self.stack:
            self.rows_in[self.stack[-1]] = self.rows_in.get(self.stack[-1], 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.stack:
            self.stack.pop()


def test_html_has_tables_charts_and_the_banner(comparison: Comparison) -> None:
    html = render_html(comparison)
    parsed = _Tags()
    parsed.feed(html)
    assert parsed.rows_in["results-table"] == 1 + len(comparison.rows)
    assert parsed.rows_in["budget-table"] == 1 + len(comparison.rows)
    assert parsed.rows_in["pairs-table"] == 1 + len(comparison.pairs)
    assert sum(1 for tag, _ in parsed.tags if tag == "svg") == 3
    for chart in ("chart-accuracy", "chart-trajectory", "chart-intents"):
        assert f'id="{chart}"' in html
    assert 'id="simulated-banner"' in html
    assert "SIMULATED LM" in html.split("<body>", 1)[1][:2000]
    assert "<title>mipro-bench comparison (SIMULATED LM)" in html


def test_html_escapes_run_text(comparison: Comparison) -> None:
    html = render_html(comparison)
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "<b>502</b>" not in html and "&lt;b&gt;502&lt;/b&gt;" in html
    assert "Where is my &lt;card&gt;?" in html


def test_html_is_self_contained(comparison: Comparison) -> None:
    html = render_html(comparison)
    parsed = _Tags()
    parsed.feed(html)
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "link", "iframe", "img", "object", "embed")
        assert "src" not in attrs
        for name in ("href", "xlink:href"):
            if attrs.get(name):
                assert attrs[name].startswith("#"), (tag, attrs)
    assert "@import" not in html and "url(http" not in html


def test_html_shows_prompts_side_by_side_and_the_config(comparison: Comparison) -> None:
    html = render_html(comparison)
    prompts = html.split('id="prompts"', 1)[1].split('id="config"', 1)[0]
    assert prompts.count('class="prompt-col"') == 5  # one column per row
    assert FULL_STATUS in prompts
    config = html.split('id="config"', 1)[1]
    assert "digest-test-pane" in config and "&#34;seed&#34;: 1" in config


def test_html_is_deterministic(comparison: Comparison) -> None:
    assert render_html(comparison) == render_html(comparison)


# ------------------------------------------------------------------ files


def test_write_reports_writes_three_files(tmp_path: Path, comparison: Comparison) -> None:
    out = tmp_path / "results"
    paths = write_reports(comparison, out, "20260101_120000")
    assert {k: p.name for k, p in paths.items()} == {
        "json": "comparison_20260101_120000.json",
        "markdown": "comparison_20260101_120000.md",
        "html": "report_20260101_120000.html",
    }
    assert Comparison.from_dict(json.loads(paths["json"].read_text())) == comparison
    assert paths["markdown"].read_text() == render_markdown(comparison)
    assert paths["html"].read_text() == render_html(comparison)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("stamp", ["", "../x", "a/b", ".hidden", "x y"])
def test_write_reports_refuses_bad_stamps(tmp_path: Path, comparison: Comparison,
                                          stamp: str) -> None:
    with pytest.raises(ReportError, match="stamp"):
        write_reports(comparison, tmp_path, stamp)
    assert list(tmp_path.iterdir()) == []


def test_write_reports_refuses_a_file_as_directory(tmp_path: Path,
                                                   comparison: Comparison) -> None:
    target = tmp_path / "results"
    target.write_text("not a dir")
    with pytest.raises(ReportError, match="not a directory"):
        write_reports(comparison, target, "s1")
