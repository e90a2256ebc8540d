"""`pytest benchmarks/` end to end, offline, as a subprocess: the table, the report files,
the records, "not supported" rows, xdist giving the same results, and the gate.

Small panel and budgets (tests/plugin_support.SMALL): the whole matrix in about ten
seconds; the floors, calibrated for the default panel, are then reported, not enforced.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.plugin_support import (
    DSPY_INSTRUCTION,
    ONE_CASE,
    Run,
    run_benchmarks,
    scores_of,
)

pytestmark = pytest.mark.integration

MEASURED = {
    "dspy_miprov2[instruction_only-gpt-4.1-nano-seed1]",
    "dspy_miprov2[fewshot-gpt-4.1-nano-seed1]",
    "synth_mipro[instruction_only-gpt-4.1-nano-seed1]",
    "dspy_gepa[instruction_only-gpt-4.1-nano-seed1]",
}
ZERO_TOLERANCE = [f"--mipro-compare-fail={m}:0" for m in (
    "optimized_test_accuracy", "baseline_test_accuracy", "improvement", "best_val_score")]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plugin-e2e")


@pytest.fixture(scope="module")
def plain(work: Path, real_data_dir: Path) -> Run:
    """The whole matrix, one process, saving its comparison as a baseline."""
    return run_benchmarks(work, real_data_dir, "--mipro-save-baseline",
                          str(work / "baseline.json"), name="plain")


@pytest.fixture(scope="module")
def spread(work: Path, real_data_dir: Path, plain: Run) -> Run:
    """The same matrix over two xdist workers, with other LM concurrency (DSPy threads,
    Synth rollouts in flight), gated against the first run with no tolerance."""
    return run_benchmarks(work, real_data_dir, "-n", "2", "--mipro-dspy-threads", "2",
                          "--mipro-synth-concurrency", "3", "--mipro-compare",
                          str(work / "baseline.json"), *ZERO_TOLERANCE, name="spread")


def test_prints_the_table_and_writes_json_markdown_html(plain: Run) -> None:
    assert plain.returncode == 0, plain.explain()
    out = plain.stdout
    section = out[out.index("mipro-bench comparison"):]
    assert "Test accuracy (held-out test split, scored by the suite)" in section
    assert "SIMULATED LM" in section
    for optimizer in ("dspy_miprov2", "synth_mipro"):
        assert re.search(rf"^ {optimizer}\s+\| instruction_only", section, re.M), section
    (json_path,) = plain.files("comparison_*.json")
    stamp = json_path.stem.removeprefix("comparison_")
    assert re.fullmatch(r"\d{8}_\d{6}", stamp)
    assert plain.files("comparison_*.md") == [plain.results_dir / f"comparison_{stamp}.md"]
    assert plain.files("report_*.html") == [plain.results_dir / f"report_{stamp}.html"]
    # The HTML report is the last file line of the summary, where the eye lands.
    file_lines = [line for line in out.splitlines() if line.startswith("mipro-bench ")
                  and ": /" in line]
    assert file_lines[-1] == f"mipro-bench html: {plain.results_dir / f'report_{stamp}.html'}"
    html = (plain.results_dir / f"report_{stamp}.html").read_text(encoding="utf-8")
    assert "synth_mipro" in html and "dspy_miprov2" in html and "<html" in html.lower()


def test_the_comparison_json_holds_every_measured_record(plain: Run) -> None:
    data = plain.comparison()
    records = {r["case_id"]: r for r in data["records"]}
    assert set(records) == MEASURED
    digests = {r["data"]["digests"]["test"] for r in records.values()}
    assert len(digests) == 1  # one test panel for every optimizer
    for record in records.values():
        assert record["status"] == "succeeded", record["error"]
        assert record["lm"]["simulated"] is True
        assert record["config"]["test_size"] == 40
        assert len(record["results"]["per_item"]) == 40
        assert len(record["results"]["baseline_per_item"]) == 40
        assert [i["id"] for i in record["results"]["per_item"]] == \
            [i["id"] for i in records[DSPY_INSTRUCTION]["results"]["per_item"]]
        busy = sum(u["lm_busy_seconds"] for u in record["usage"].values())
        assert 0 < busy <= record["timing"]["elapsed_seconds"]
    assert records["synth_mipro[instruction_only-gpt-4.1-nano-seed1]"]["backend"] == "local"
    assert records[DSPY_INSTRUCTION]["config"]["budget"]["trials"] == 3  # the override
    # Each record was also written on its own as soon as its case ended.
    record_file = re.compile(r"banking77_(?P<slug>[a-z_]+?)_\d{8}_\d{6}(_\d+)?\.json")
    slugs = sorted(m["slug"] for p in plain.files("banking77_*.json")
                   if (m := record_file.fullmatch(p.name)))
    assert slugs == ["dspy_gepa", "dspy_mipro", "dspy_mipro", "synth_mipro"]
    assert "ran" in plain.stdout and "the LM was busy" in plain.stdout


def test_unsupported_combination_is_a_not_supported_row(plain: Run) -> None:
    rows = plain.comparison()["rows"]
    synth_fewshot = [r for r in rows if (r["optimizer"], r["mode"]) == ("synth_mipro", "fewshot")]
    assert len(synth_fewshot) == 1
    row = synth_fewshot[0]
    assert row["kind"] == "not_supported"
    assert row["status"].startswith("not supported")
    assert "instructions only" in row["reason"]
    assert row["optimized"] is None and row["baseline"] is None  # no fake zeros
    markdown = plain.files("comparison_*.md")[0].read_text(encoding="utf-8")
    assert "not supported" in markdown
    table = plain.stdout[plain.stdout.index("mipro-bench comparison"):]
    # The status cell may wrap ("not" / "supported: ...") with the column's width.
    assert re.search(r"^ synth_mipro\s+\| fewshot\s+\|[^\n]*\| not\b", table, re.M), table
    assert re.search(r"SKIPPED \[1\] .*not supported: Synth MIPRO", plain.stdout)


def test_xdist_and_concurrency_give_the_same_results_and_pass_a_zero_tolerance_gate(
        plain: Run, spread: Run) -> None:
    assert spread.returncode == 0, spread.explain()
    assert "bringing up nodes" in spread.stdout  # xdist really ran
    knobs = {r["case_id"]: r["config"]["extra"] for r in spread.comparison()["records"]}
    assert knobs[DSPY_INSTRUCTION]["num_threads"] == 2  # the knobs really applied
    synth = knobs["synth_mipro[instruction_only-gpt-4.1-nano-seed1]"]
    assert (synth["max_concurrent"], synth["eval_concurrency"]) == (3, 3)
    assert "mipro-bench gate: no regressions" in spread.stdout
    one = {r["case_id"]: scores_of(r) for r in plain.comparison()["records"]}
    two = {r["case_id"]: scores_of(r) for r in spread.comparison()["records"]}
    assert set(one) == set(two) == MEASURED
    for case_id in MEASURED:
        assert one[case_id] == two[case_id], case_id
    rows = [{k: r[k] for k in ("optimizer", "mode", "kind", "status", "baseline", "optimized",
                                "improvement")} for r in plain.comparison()["rows"]]
    assert rows == [{k: r[k] for k in ("optimizer", "mode", "kind", "status", "baseline",
                                       "optimized", "improvement")}
                    for r in spread.comparison()["rows"]]


def test_gate_fails_on_a_baseline_that_scored_higher(work: Path, real_data_dir: Path,
                                                     plain: Run) -> None:
    baseline = json.loads((work / "baseline.json").read_text(encoding="utf-8"))
    (record,) = [r for r in baseline["records"] if r["case_id"] == DSPY_INSTRUCTION]
    new = record["results"]["optimized_test_accuracy"]
    record["results"]["optimized_test_accuracy"] = old = new + 0.2
    doctored = work / "doctored.json"
    doctored.write_text(json.dumps(baseline), encoding="utf-8")
    run = run_benchmarks(work, real_data_dir, *ONE_CASE, "--mipro-compare", str(doctored),
                         "--mipro-compare-fail=optimized_test_accuracy:5", name="doctored")
    assert run.returncode == 1, run.explain()
    assert "1 passed" in run.stdout  # the case itself passed: the gate failed the session
    assert "mipro-bench gate: FAILED, 1 regression(s):" in run.stdout
    assert (f"REGRESSION {DSPY_INSTRUCTION}: optimized_test_accuracy fell from "
            f"{old * 100:.1f} to {new * 100:.1f} (allowed drop 5 points)") in run.stdout


def test_bad_compare_fail_is_a_usage_error_before_any_case(work: Path,
                                                           real_data_dir: Path) -> None:
    run = run_benchmarks(work, real_data_dir, "--mipro-compare", "latest",
                         "--mipro-compare-fail=accuracy:five", name="bad-gate")
    assert run.returncode == 4, run.explain()
    assert "--mipro-compare-fail='accuracy:five': expected METRIC:POINTS" in run.stderr
    assert "passed" not in run.stdout and "failed" not in run.stdout
    assert not run.results_dir.exists()  # nothing ran, nothing was written
