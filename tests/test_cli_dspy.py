"""run_dspy_mipro_banking77.py: offline runs that really honour --trials, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import run_dspy_mipro_banking77 as script
from tests.cli_support import call_main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train-size", "-5"], "--train-size: must be at least 1, got -5"),
        (["--val-size", "0"], "--val-size: must be at least 1, got 0"),
        (["--test-size", "ten"], "expected a whole number, got 'ten'"),
        (["--trials", "5", "--auto", "light"], "give --trials or --auto, not both"),
        (["--auto", "extreme"], "invalid choice: 'extreme'"),
        (["--mode", "zeroshot"], "invalid choice: 'zeroshot'"),
        (["--seed", "-1"], "--seed: must be >= 0"),
        (["--data-dir", "/nonexistent/banking77"], "/nonexistent/banking77: no such directory"),
        (["--lm", "openai", "--data-dir", "{tiny}"], "--lm openai needs OPENAI_API_KEY"),
        (["--train-size", "999", "--data-dir", "{tiny}"], "larger than the"),
        (["--model", "", "--data-dir", "{tiny}"], "--model must name a model"),
        (["--api-base", "localhost:8000", "--data-dir", "{tiny}"], "--api-base must be an http"),
        (["--results-dir", "{tiny}/train.csv", "--data-dir", "{tiny}"],
         "train.csv is not a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, tiny_data_dir: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tiny_data_dir.parent)  # no .env, nothing real nearby
    argv = [a.replace("{tiny}", str(tiny_data_dir)) for a in argv]
    code, err = call_main(script.main, argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err


def run_script(args: list[str], tmp_path: Path, env_extra: dict[str, str] | None = None,
               ) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(env_extra or {})
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_dspy_mipro_banking77.py"), *args,
         "--results-dir", str(results)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    records = sorted(results.glob("banking77_dspy_mipro_*[0-9].json"))
    return proc, json.loads(records[0].read_text()) if records else {}


def test_offline_run_honours_trials_and_writes_a_complete_record(tiny_data_dir: Path,
                                                                 tmp_path: Path) -> None:
    proc, record = run_script(["--trials", "5", "--train-size", "5", "--val-size", "3",
                               "--test-size", "6", "--data-dir", str(tiny_data_dir)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "simulated" in proc.stderr and "simulated" in proc.stdout
    assert record["status"] == "succeeded" and record["lm"]["simulated"] is True
    dspy = record["details"]["dspy"]
    assert dspy["num_trials"] == 5 and dspy["search_trials_run"] == 5
    assert len(dspy["trials"]) == 5 + 1  # the default program's evaluation, then 5 trials
    assert record["config"]["budget"]["trials"] == 5
    assert (record["config"]["train_size"], record["config"]["val_size"]) == (5, 3)
    assert record["optimized_prompt"]["demos"] == []
    assert all(record["usage"][p]["calls"] > 0 for p in ("baseline_eval", "optimize", "test_eval"))
    program = tmp_path / "results" / record["details"]["artifacts"]["program"]
    assert program.is_file()


@pytest.mark.integration
def test_the_documented_command_on_the_real_data(real_data_dir: Path, tmp_path: Path) -> None:
    proc, record = run_script(["--trials", "5", "--train-size", "5", "--val-size", "3",
                               "--test-size", "40"], tmp_path,
                              {"BANKING77_DIR": str(real_data_dir)})
    assert proc.returncode == 0, proc.stderr
    assert record["details"]["dspy"]["search_trials_run"] == 5
    assert record["data"]["source"].startswith("local:")
    assert len(record["results"]["per_item"]) == 40


@pytest.mark.parametrize("simulated", [True, False])
def test_the_summary_says_simulated_even_when_the_terminal_is_narrow(simulated: bool) -> None:
    from rich.console import Console

    from mipro_bench.cli import summary_table
    from tests.factories import record

    console = Console(width=80, record=True)
    console.print(summary_table([(record(simulated=simulated), Path("r.json"))]))
    # At 80 columns the model cell's "(simulated)" is cut to an ellipsis; the title is not.
    assert ("simulated LM" in console.export_text()) is simulated


@pytest.mark.parametrize("transport", ["http", "respx"])
def test_the_summary_names_an_in_process_lm(transport: str) -> None:
    import dataclasses

    from rich.console import Console

    from mipro_bench.cli import summary_table
    from tests.factories import record

    done = record(simulated=True)
    done = dataclasses.replace(done, lm=dataclasses.replace(done.lm, transport=transport))
    console = Console(width=200, record=True)
    console.print(summary_table([(done, Path("r.json"))]))
    text = console.export_text()
    assert ("LM answered in-process (respx)" in text) is (transport == "respx")
    assert ("(simulated, respx)" in text) is (transport == "respx")
