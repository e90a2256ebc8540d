"""run_synth_mipro_banking77.py: offline end to end (SDK -> local backend -> task app ->
interceptor -> simulated LM), and one-line errors with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import run_synth_mipro_banking77 as script
from mipro_bench.serving import find_free_port
from tests.cli_support import call_main

ROOT = Path(__file__).resolve().parent.parent


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No real keys, a throwaway HOME: the run must be offline and leave the user alone."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "SYNTH_API_KEY", "ENVIRONMENT_API_KEY",
                        "SYNTH_BACKEND_URL")}
    env.update(HOME=str(home), SYNTH_LOCALAPI_AUTH_PERSIST="0", **extra)
    return env


def run_script(args: list[str], tmp_path: Path, **extra: str
               ) -> tuple[subprocess.CompletedProcess[str], dict]:
    results = tmp_path / "results"
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_synth_mipro_banking77.py"), *args,
         "--results-dir", str(results), "--task-app-port", "0"],
        capture_output=True, text=True, env=clean_env(home, **extra), cwd=tmp_path,
        timeout=600,
    )
    records = sorted(results.glob("banking77_synth_mipro_*[0-9].json"))
    return proc, json.loads(records[0].read_text()) if records else {}


def check_complete(record: dict, *, rollouts: int, train: int, val: int) -> None:
    assert record["status"] == "succeeded", record.get("error")
    assert record["optimizer"] == "synth_mipro" and record["backend"] == "local"
    assert record["lm"]["simulated"] is True
    assert record["config"]["budget"]["rollouts"] == rollouts
    assert (record["config"]["train_size"], record["config"]["val_size"]) == (train, val)
    results = record["results"]
    n = record["config"]["test_size"]
    assert len(results["per_item"]) == len(results["baseline_per_item"]) == n
    assert results["baseline_test_accuracy"] is not None
    assert results["optimized_test_accuracy"] is not None
    assert results["best_val_score"] is not None
    synth = record["details"]["synth"]
    # Online, the client spends the whole budget; offline, Synth's loop spends what the
    # backend planned from it (each candidate scored once), never more.
    used = synth["rollouts_used"]
    assert synth["job_id"].startswith("pl_") and 0 < used <= rollouts
    assert used == rollouts or used == synth["budget_plan"]["planned_rollouts"] or \
        synth["budget_spent"]["train_trials"] < synth["budget_plan"]["trials"] or \
        synth["budget_spent"]["heldout_evaluations"] < 2
    usage = record["usage"]
    assert usage["baseline_eval"]["calls"] == usage["test_eval"]["calls"] == n
    assert usage["optimize"]["calls"] == synth["lm_calls"]["proposer"] + used
    assert record["trajectory"] and record["optimized_prompt"]["demos"] == []


@pytest.mark.integration
def test_the_earlier_smoke_command_works_offline(real_data_dir: Path, tmp_path: Path) -> None:
    proc, record = run_script(["--rollouts", "3", "--train-size", "5", "--val-size", "3"],
                              tmp_path, BANKING77_DIR=str(real_data_dir))
    assert proc.returncode == 0, proc.stderr
    assert "local Synth-compatible backend" in proc.stderr and "no SYNTH_API_KEY" in proc.stderr
    assert "simulated" in proc.stderr
    check_complete(record, rollouts=3, train=5, val=3)
    assert not (tmp_path / "home" / ".synth-ai").exists()


def test_offline_and_online_runs_on_the_tiny_panel(tiny_data_dir: Path, tmp_path: Path) -> None:
    common = ["--train-size", "12", "--val-size", "6", "--test-size", "6",
              "--data-dir", str(tiny_data_dir)]
    proc, record = run_script(["--rollouts", "20", *common], tmp_path / "off")
    assert proc.returncode == 0, proc.stderr
    check_complete(record, rollouts=20, train=12, val=6)
    assert record["details"]["synth"]["mipro_mode"] == "offline"
    proc, record = run_script(["--rollouts", "10", "--mode", "online", *common],
                              tmp_path / "on")
    assert proc.returncode == 0, proc.stderr
    check_complete(record, rollouts=10, train=12, val=6)
    assert record["details"]["synth"]["online"]["client_rollouts"] == 10


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--rollouts", "0"], {}, "--rollouts: must be at least 1, got 0"),
        (["--mode", "sideways"], {}, "invalid choice: 'sideways'"),
        (["--val-size", "x"], {}, "expected a whole number, got 'x'"),
        (["--task-app-port", "99999"], {}, "--task-app-port: must be between 0 and 65535"),
        (["--local", "--backend-url", "http://127.0.0.1:9", "--data-dir", "{tiny}",
          "--train-size", "5", "--val-size", "3", "--test-size", "3"], {},
         "needs SYNTH_API_KEY"),
        (["--backend-url", "{dead}", "--data-dir", "{tiny}", "--train-size", "5",
          "--val-size", "3", "--test-size", "3"], {"SYNTH_API_KEY": "sk_test_fake"},
         "is unreachable"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], env: dict[str, str], message: str,
                                          tiny_data_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "SYNTH_API_KEY", "SYNTH_BACKEND_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env nearby
    dead = f"http://127.0.0.1:{find_free_port()}"
    argv = [a.replace("{tiny}", str(tiny_data_dir)).replace("{dead}", dead) for a in argv]
    code, err = call_main(script.main, [*argv, "--results-dir", str(tmp_path / "r")],
                          capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines()
             if line.startswith("run_synth_mipro_banking77.py")]
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err
    written = sorted((tmp_path / "r").iterdir()) if (tmp_path / "r").exists() else []
    if message in ("needs SYNTH_API_KEY", "is unreachable"):
        # The optimizer's check refused the case: it leaves exactly one failed record
        # saying so (the comparison keeps its row), and nothing else; no LM call was made.
        assert [p.name for p in written if p.name.startswith("banking77_synth_mipro_")] \
            == [p.name for p in written] and len(written) == 1, written
        record = json.loads(written[0].read_text())
        assert record["status"] == "failed"
        assert record["error"].startswith("refused: ") and message in record["error"]
        assert record["details"]["refused"] == record["error"].removeprefix("refused: ")
        assert all(u["calls"] == 0 for u in record["usage"].values()), record["usage"]
        assert record["results"]["baseline_test_accuracy"] is None
    else:  # refused by argument parsing, before any case: nothing written
        assert written == []
