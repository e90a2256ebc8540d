"""The plugin's regression gate in real pytest sessions (pytester, in-process), fed records.

A tiny test file hands the session records (as a benchmark case does, through
the `mipro_session` fixture), so each session takes a fraction of a second and
the gate's wiring is tested as users meet it: exit codes, messages, refusals.
The same gate against a real benchmark run, in a subprocess, is in
test_plugin_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import factories

pytest_plugins = ["pytester"]

CASE = "dspy_miprov2[instruction_only-gpt-4.1-nano-seed0]"
HAND_OVER = '''
import json
from pathlib import Path

from mipro_bench.results import RunRecord


def test_hand_over_records(mipro_session):
    Path("ran.txt").write_text("ran")
    for raw in json.loads(Path("records.json").read_text())["records"]:
        mipro_session.add_record(RunRecord.from_dict(raw))
'''


@dataclass
class Session:
    returncode: int
    stdout: str
    stderr: str
    ran: bool


@pytest.fixture(scope="module", autouse=True)
def _warm_imports() -> None:
    """pytester's in-process runs drop the modules first imported inside them, and numpy
    and matplotlib cannot be imported twice in one process: import the report stack here."""
    from mipro_bench.compare import build_comparison
    from mipro_bench.report import render_html

    render_html(build_comparison([factories.record()]))


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project whose first session saved its comparison as baseline.json (and results/)."""
    pytester.makepyfile(test_hand_over=HAND_OVER)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    records = [factories.record(optimized="1101"), factories.record(mode="fewshot")]
    root = pytester.path
    (root / "records.json").write_text(json.dumps({"records": [r.to_dict() for r in records]}))
    (root / "broken.json").write_text(json.dumps({"records": [{"schema_version": 1}]}))
    first = session(pytester, "--mipro-save-baseline", "baseline.json")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "mipro-bench baseline: baseline.json" in first.stdout
    return pytester


def session(pytester: pytest.Pytester, *args: str, results: str = "results") -> Session:
    ran = pytester.path / "ran.txt"
    ran.unlink(missing_ok=True)
    # hypothesis's plugin would re-import hypothesis (3 s) in every in-process run.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                                          "--mipro-results-dir", results, *args)
    return Session(int(result.ret), result.stdout.str(), result.stderr.str(), ran.exists())


def doctor(project: pytest.Pytester, name: str, change: Callable[[dict], None]) -> Path:
    data = json.loads((project.path / "baseline.json").read_text())
    for record in data["records"]:
        change(record)
    path = project.path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_an_unchanged_rerun_passes_against_the_latest_comparison(project: pytest.Pytester) -> None:
    # `latest` is the newest comparison before this run: the first session's.
    run = session(project, "--mipro-compare", "latest",
                  "--mipro-compare-fail=optimized_test_accuracy:0",
                  "--mipro-compare-fail=improvement:0%")
    assert run.returncode == 0, run.stdout
    assert "mipro-bench gate: no regressions (optimized_test_accuracy:0, improvement:0%)" \
        in run.stdout


def test_a_higher_baseline_fails_the_session_naming_case_metric_and_values(
        project: pytest.Pytester) -> None:
    def higher(record: dict) -> None:
        record["results"]["optimized_test_accuracy"] = 0.9

    run = session(project, "--mipro-compare", str(doctor(project, "higher", higher)),
                  "--mipro-compare-fail=optimized_test_accuracy:10", results="higher")
    assert run.returncode == 1, run.stdout
    assert "1 passed" in run.stdout  # the test passed; the gate failed the session
    assert (f"REGRESSION {CASE}: optimized_test_accuracy fell from 90.0 to 75.0 "
            "(allowed drop 10 points)") in run.stdout


def test_a_baseline_on_another_test_panel_is_refused(project: pytest.Pytester) -> None:
    def other_panel(record: dict) -> None:
        record["data"]["digests"]["test"] = "0123456789abcdef-another-panel"

    run = session(project, "--mipro-compare", str(doctor(project, "panel", other_panel)),
                  "--mipro-compare-fail=optimized_test_accuracy:5", results="panel")
    assert run.returncode == 1, run.stdout
    assert "mipro-bench gate: FAILED, cannot compare:" in run.stdout
    assert "the baseline used a different test panel (digest 0123456789ab vs " in run.stdout


def test_a_baseline_of_another_model_is_refused(project: pytest.Pytester) -> None:
    def other_model(record: dict) -> None:
        record["lm"]["model"] = record["config"]["model"] = "gpt-4o-mini"

    run = session(project, "--mipro-compare", str(doctor(project, "model", other_model)),
                  "--mipro-compare-fail=optimized_test_accuracy:5", results="model")
    assert run.returncode == 1, run.stdout
    assert "cannot compare: the baseline has none of this run's cases" in run.stdout
    assert "gpt-4o-mini (simulated)" in run.stdout and "gpt-4.1-nano (simulated)" in run.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--mipro-compare", "latest", "--mipro-compare-fail=optimized_test_accuracy"],
     "expected METRIC:POINTS, METRIC:PERCENT%"),
    (["--mipro-compare", "latest", "--mipro-compare-fail=accuracy:5"],
     "unknown metric 'accuracy'"),
    (["--mipro-compare-fail=optimized_test_accuracy:5"], "needs --mipro-compare"),
    (["--mipro-compare", "broken.json"], "broken.json: malformed result record"),
    (["--mipro-compare", "latest", "--mipro-compare-fail=optimized_test_accuracy:significant:x"],
     "expected METRIC:significant or METRIC:significant:POINTS"),
    (["--mipro-compare", "latest", "--mipro-compare-fail=improvement:significant"],
     "improvement has no per-item results"),
    (["--mipro-compare", "latest", "--mipro-compare-fail=optimized_test_accuracy:significant",
      "--mipro-compare-alpha", "0"], "--mipro-compare-alpha '0': expected a number between 0"),
    (["--mipro-compare", "latest", "--mipro-compare-fail=optimized_test_accuracy:significant",
      "--mipro-compare-alpha", "high"], "--mipro-compare-alpha 'high': expected a number"),
    (["--mipro-compare", "latest", "--mipro-compare-fail=exact", "--mipro-compare-alpha",
      "0.1"], "--mipro-compare-alpha applies only to --mipro-compare-fail=METRIC:significant"),
])
def test_bad_gate_options_are_usage_errors_before_any_test(
        project: pytest.Pytester, args: list[str], message: str) -> None:
    run = session(project, *args, results="bad")
    assert run.returncode == 4, run.stdout + run.stderr
    assert message in run.stderr
    assert not run.ran
    assert not (project.path / "bad").exists()


def test_exact_passes_an_unchanged_rerun_and_names_the_baseline(project: pytest.Pytester) -> None:
    run = session(project, "--mipro-compare", "latest", "--mipro-compare-fail=exact")
    assert run.returncode == 0, run.stdout
    assert "mipro-bench gate: baseline results/comparison_" in run.stdout
    assert "(the newest comparison_*.json by recorded time)" in run.stdout
    assert "mipro-bench gate: no regressions (exact)" in run.stdout


def test_exact_fails_on_one_changed_prediction(project: pytest.Pytester) -> None:
    def one_prediction(record: dict) -> None:
        if record["config"]["mode"] == "instruction_only":
            record["results"]["per_item"][2]["predicted"] = "card_arrival"

    run = session(project, "--mipro-compare", str(doctor(project, "pred", one_prediction)),
                  "--mipro-compare-fail=exact", results="pred")
    assert run.returncode == 1, run.stdout
    assert "pred.json" in run.stdout.split("mipro-bench gate: baseline ")[1].splitlines()[0]
    assert (f"CHANGED {CASE}: baseline predictions unchanged; optimized predictions changed on "
            "1 of 4 items (test:2); prompt changed: no; usage changed: no") in run.stdout
    assert "fewshot" not in run.stdout.split("regression(s):")[1]


def test_exact_against_a_real_lm_baseline_is_a_usage_error(project: pytest.Pytester) -> None:
    def real(record: dict) -> None:
        record["lm"]["simulated"] = False

    run = session(project, "--mipro-compare", str(doctor(project, "real", real)),
                  "--mipro-compare-fail=exact", results="real")
    assert run.returncode == 4 and not run.ran, run.stdout + run.stderr
    assert "--mipro-compare-fail=exact needs deterministic runs, but the baseline ran" \
        in run.stderr


def test_significance_prints_every_case(project: pytest.Pytester) -> None:
    run = session(project, "--mipro-compare", "latest",
                  "--mipro-compare-fail=optimized_test_accuracy:significant")
    assert run.returncode == 0, run.stdout
    assert "paired significance (two-sided exact McNemar on per-item correctness, " \
           "Holm-corrected over 2 test(s), alpha 0.05; CI unadjusted):" in run.stdout
    assert f"  {CASE}: optimized_test_accuracy 75.0 -> 75.0 (+0.0 points, 95% CI [+0.0, " \
           "+0.0], n=4), McNemar p=1.0000, Holm p=1.0000 (m=2): passes" in run.stdout
    alpha = session(project, "--mipro-compare", "latest", "--mipro-compare-alpha", "0.2",
                    "--mipro-compare-fail=optimized_test_accuracy:significant")
    assert "alpha 0.2; CI unadjusted" in alpha.stdout and "80% CI" in alpha.stdout


def test_a_vanished_case_fails_unless_the_run_deselected_its_optimizer(
        project: pytest.Pytester) -> None:
    data = json.loads((project.path / "baseline.json").read_text())
    synth = factories.record(optimizer="synth_mipro").to_dict()
    data["records"].append(synth)
    (project.path / "more.json").write_text(json.dumps(data))
    run = session(project, "--mipro-compare", "more.json", results="more")
    assert run.returncode == 1, run.stdout
    assert f"  case disappeared: {synth['case_id']}" in run.stdout
    dspy_only = session(project, "--mipro-compare", "more.json",
                        "--mipro-optimizers", "dspy_miprov2", results="more-dspy")
    assert dspy_only.returncode == 0, dspy_only.stdout
