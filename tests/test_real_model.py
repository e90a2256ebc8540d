"""The real-model path end to end: every registered optimizer through llama.cpp + SmolLM2.

Two checks. With the `local` extra installed (CI installs it), a real comparison runs on a
tiny panel and every case must end in a record: succeeded, or failed with the LM's error
recorded, never a crash or a hang; usage must be counted and the report must render. And,
with no model at all, the committed recording of such a run is replayed and gated exactly
against the comparison it produced, so CI checks real-model behaviour even where no model
can run. SmolLM2-135M is near chance on Banking77: this tests the path, not the optimizers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mipro_bench.optimizers import registry
from tests.plugin_support import REPO, clean_env

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parent / "data" / "real_model"
MATRIX = DATA / "matrix.toml"
RECORDING = DATA / "smollm2.recording.gz"
RECORDED_COMPARISON = DATA / "smollm2.comparison.json"
REAL_PANEL = ["--train-size", "10", "--val-size", "5", "--test-size", "20"]
# SmolLM2 rambles to whatever limit it is given (~65 tokens/s on 2 cores): short limits keep
# the run in CI's budget; an intent name and DSPy's field markers fit in 48 tokens.
REAL_LIMITS = ["--max-tokens", "answer=48,tool_call=48,proposer=96,reflection=128"]


def comparison(*args: str, data_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "run_comparison.py"), "--all", "--matrix", str(MATRIX),
         *REAL_PANEL, *REAL_LIMITS, "--floors", "off", *args],
        cwd=REPO, env=clean_env(data_dir), capture_output=True, text=True, timeout=timeout)


def only_json(results: Path) -> dict:
    found = sorted(results.glob("comparison_*.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text(encoding="utf-8"))


@pytest.mark.local_llm
def test_a_real_model_comparison_ends_in_a_record_for_every_optimizer(
        local_model: Path, real_data_dir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = comparison("--lm", "local", "--results-dir", str(results),
                      data_dir=real_data_dir, timeout=1500)
    output = done.stdout + done.stderr
    assert done.returncode in (0, 1), output[-4000:]  # a failed case is a record, not a crash
    assert "Traceback" not in output, output[-4000:]
    data = only_json(results)
    records = {r["optimizer"]: r for r in data["records"]}
    expected = {name for name, spec in registry().items() if spec.supports("instruction_only")}
    assert set(records) == expected, output[-3000:]
    for name, record in records.items():
        assert record["lm"]["model"] == local_model.name.removesuffix(".gguf"), name
        assert not record["lm"]["simulated"], name
        if record["status"] == "succeeded":
            assert len(record["results"]["per_item"]) == 20, name
            assert all(record["usage"][p]["calls"] > 0 for p in ("baseline_eval", "test_eval"))
        else:
            assert record["error"], name  # the LM's error is recorded
    report = next(results.glob("report_*.html")).read_text(encoding="utf-8")
    assert "<table" in report and "SmolLM2" in report


def test_the_committed_real_model_recording_replays_exactly(real_data_dir: Path,
                                                            tmp_path: Path) -> None:
    """No LM at all: every call is answered from the recording, and the records equal the
    recorded run's (per item, prompts, usage counts). If this fails after a change to what
    the suite sends, re-record (docs/real-models.md: "The real-model run CI makes")."""
    if not RECORDING.is_file():
        pytest.skip(f"no committed recording at {RECORDING}")
    results = tmp_path / "results"
    done = comparison("--replay", str(RECORDING), "--results-dir", str(results),
                      "--compare", str(RECORDED_COMPARISON), "--compare-fail", "exact",
                      data_dir=real_data_dir, timeout=600)
    output = done.stdout + done.stderr
    # SmolLM2 junk makes MIPROv2's proposer fail in the recorded run: the replay fails that
    # case the same way (exit 1), and the exact gate finds nothing changed.
    assert done.returncode in (0, 1), output[-4000:]
    assert "no regressions (exact)" in output, output[-4000:]
    recorded = {r["case_id"]: r["status"] for r in
                json.loads(RECORDED_COMPARISON.read_text(encoding="utf-8"))["records"]}
    replayed = only_json(results)["records"]
    assert {r["case_id"]: r["status"] for r in replayed} == recorded
    for record in replayed:
        assert record["lm"]["replayed_from"]
        assert all(u["replayed_calls"] == u["calls"] for u in record["usage"].values())
