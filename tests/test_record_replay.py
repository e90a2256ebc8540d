"""`--record` then `--replay`: the replay reproduces the recorded comparison exactly with
no LM at all; a changed request fails its case with the gateway's 409 naming scope, phase
and what differed; the seed CLIs record, replay and resume through the same machinery."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.continuity_support import EXACT_OK, PHASES, SMALL, Done, calls, run
from tests.plugin_support import REPO, clean_env

pytestmark = pytest.mark.integration

NO_SIM = ["--", "-p", "tests.no_sim_plugin"]  # the simulated LM cannot load or answer


def baseline_phase(record: dict[str, Any], executor: str) -> str:
    """The usage phase a record shows an executor's baseline evaluation under."""
    native = record["details"].get("executor") == executor
    return "baseline_eval" if native else f"baseline_eval:{executor}"


def same_outcome(record: dict[str, Any]) -> dict[str, Any]:
    """What a replay must reproduce: per-item results, prompts, trajectory, usage counts."""
    return {
        "status": record["status"],
        "results": record["results"],
        "optimized_prompt": record["optimized_prompt"],
        "trajectory": record["trajectory"],
        "usage": {p: {k: u[k] for k in ("calls", "input_tokens", "output_tokens",
                                        "cost_usd", "errors")}
                  for p, u in record["usage"].items()},
        "model": record["lm"]["model"],
    }


@dataclass(frozen=True)
class Recorded:
    done: Done
    recording: Path

    @property
    def comparison(self) -> Path:
        return sorted(self.done.results_dir.glob("comparison_*.json"))[-1]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Recorded:
    tmp = tmp_path_factory.mktemp("recorded")
    recording = tmp / "session.recording.gz"
    done = run(tmp / "results", real_data_dir, "--all", *SMALL, "--record", str(recording))
    assert done.returncode == 0, done.explain()
    assert recording.is_file(), done.explain()
    return Recorded(done, recording)


def test_replay_reproduces_the_recorded_comparison_with_no_lm(recorded: Recorded,
                                                              tmp_path: Path,
                                                              real_data_dir: Path) -> None:
    originals = recorded.done.records()
    lines = gzip.decompress(recorded.recording.read_bytes()).splitlines()
    header = json.loads(lines[0])
    assert header["model"] == "gpt-4.1-nano" and header["lm"]["simulated"] is True
    # Every call of every case is in the recording, once (each call is its own key): a
    # case's own calls, and each shared baseline evaluation once (every case that used it
    # shows a copy of its usage; details.shared_baseline says under which scope it ran).
    shared = {info["counted_under"]["scope"]: (r, executor)
              for r in originals.values()
              for executor, info in (r["details"].get("shared_baseline") or {}).items()}
    copied = sum(r["usage"][baseline_phase(r, executor)]["calls"]
                 for r in originals.values()
                 for executor in (r["details"].get("shared_baseline") or {}))
    once = sum(r["usage"][baseline_phase(r, executor)]["calls"] for r, executor in shared.values())
    total = sum(calls(r) for r in originals.values()) - copied + once
    assert header["entries"] == len(lines) - 1 == total
    assert header["scopes"] == len(originals) + len(shared)

    # The knob works: with it, a live run cannot even start its LM.
    live = run(tmp_path / "live", real_data_dir, "--all", *SMALL, *NO_SIM)
    assert live.returncode == 2 and "no simulated LM in this run" in live.output, live.explain()

    replay = run(tmp_path / "replay", real_data_dir, "--all", *SMALL,
                 "--replay", str(recorded.recording), "--compare", str(recorded.comparison),
                 "--compare-fail", "exact", *NO_SIM)
    assert replay.returncode == 0, replay.explain()
    assert EXACT_OK in replay.output
    assert "REPLAYED" in replay.output
    records = replay.records()
    assert set(records) == set(originals)
    for case, record in records.items():
        assert same_outcome(record) == same_outcome(originals[case]), case
        assert record["lm"]["replayed_from"] == str(recorded.recording)
        assert originals[case]["lm"].get("replayed_from") is None
        for phase in PHASES:  # no call went live: every one came from the recording
            usage = record["usage"][phase]
            assert usage["replayed_calls"] == usage["calls"] > 0, (case, phase, usage)
    assert not (tmp_path / "replay" / "journal").exists()  # a pure replay journals nothing


def test_lm_respx_reproduces_the_served_comparison_in_process(
        recorded: Recorded, tmp_path: Path, real_data_dir: Path) -> None:
    """`--lm respx`: the gateway has no socket (DSPy through litellm, the task app and the
    interceptor through httpx, all answered in-process), and the comparison is the served
    one exactly; a strict replay of the served recording over respx finds every request in
    it, so the two transports send the very same calls."""
    originals = recorded.done.records()
    live = run(tmp_path / "respx", real_data_dir, "--all", *SMALL, "--lm", "respx",
               "--compare", str(recorded.comparison), "--compare-fail", "exact")
    assert live.returncode == 0, live.explain()
    assert EXACT_OK in live.output and "TRANSPORT respx" in live.output
    assert "answered in-process through respx (no LM socket)" in live.output
    replay = run(tmp_path / "respx-replay", real_data_dir, "--all", *SMALL, "--lm", "respx",
                 "--replay", str(recorded.recording), "--compare", str(recorded.comparison),
                 "--compare-fail", "exact", *NO_SIM)
    assert replay.returncode == 0, replay.explain()
    assert EXACT_OK in replay.output
    for done in (live, replay):
        records = done.records()
        assert set(records) == set(originals)
        for case, record in records.items():
            assert same_outcome(record) == same_outcome(originals[case]), case
            assert record["lm"]["transport"] == "respx"
            assert originals[case]["lm"]["transport"] == "http"
        assert done.comparison()["run"]["lm_transports"] == ["respx"]


def test_a_changed_request_fails_its_case_naming_scope_phase_and_change(
        recorded: Recorded, tmp_path: Path, real_data_dir: Path) -> None:
    """--trials 3 against a recording of --trials 2: MIPROv2's third trial sends requests
    the recording does not have; the other optimizers' cases still replay."""
    done = run(tmp_path / "changed", real_data_dir, "--all", *SMALL, "--trials", "3",
               "--replay", str(recorded.recording), *NO_SIM)
    assert done.returncode == 1, done.explain()
    assert "run_comparison.py: FAILED: a case failed" in done.output
    records = done.records()
    scopes = {case: r["details"]["scope"] for case, r in recorded.done.records().items()}
    failed = {case: r for case, r in records.items() if r["status"] != "succeeded"}
    assert failed and all(case.startswith("dspy_miprov2[") for case in failed), sorted(failed)
    for case, record in failed.items():
        error = record["error"]
        assert f"replay: scope '{scopes[case]}', phase 'optimize'" in error, error
        # What changed, in a few words: a request the recording has not got (and how it
        # differs from the nearest one), or one sent more often than recorded.
        assert ("has no recorded call with this fingerprint; nearest recorded request in "
                "phase 'optimize' differs in: messages" in error
                or "but this is call" in error), error
        assert "re-record it" in error and "--record PATH" in error and "(409)" in error
    assert all(r["status"] == "succeeded" for c, r in records.items() if c not in failed)


SEED_CLIS = {
    "run_dspy_mipro_banking77.py": ["--trials", "2"],
    "run_synth_mipro_banking77.py": ["--rollouts", "40"],
}


def seed(script: str, results: Path, data_dir: Path, *args: str) -> tuple[int, str]:
    cmd = [sys.executable, str(REPO / script), "--train-size", "20", "--val-size", "10",
           "--test-size", "40", *SEED_CLIS[script], "--results-dir", str(results), *args]
    done = subprocess.run(cmd, cwd=REPO, env=clean_env(data_dir), capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def only_record(results: Path) -> dict[str, Any]:
    found = [p for p in results.glob("banking77_*.json") if not p.name.endswith(".program.json")]
    assert len(found) == 1, found
    return json.loads(found[0].read_text(encoding="utf-8"))


@pytest.mark.parametrize("script", sorted(SEED_CLIS))
def test_seed_cli_records_replays_and_resumes(script: str, tmp_path: Path,
                                             real_data_dir: Path) -> None:
    recording = tmp_path / "seed.recording.gz"
    code, out = seed(script, tmp_path / "live", real_data_dir, "--record", str(recording))
    assert code == 0, out
    assert recording.is_file() and "recording: " in out, out
    live = only_record(tmp_path / "live")

    code, out = seed(script, tmp_path / "replay", real_data_dir, "--replay", str(recording))
    assert code == 0, out
    assert "REPLAYED" in out
    replayed = only_record(tmp_path / "replay")
    assert same_outcome(replayed) == same_outcome(live)
    assert replayed["lm"]["replayed_from"] == str(recording)
    assert all(u["replayed_calls"] == u["calls"] for u in replayed["usage"].values())

    before = sorted(p.name for p in (tmp_path / "live").iterdir())
    code, out = seed(script, tmp_path / "live", real_data_dir, "--resume")
    assert code == 0, out
    assert "reusing" in out and "(not run again)" in out, out
    assert sorted(p.name for p in (tmp_path / "live").iterdir()) == before  # nothing new
