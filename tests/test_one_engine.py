"""One engine wires every run: a seed CLI, run_comparison.py and `pytest benchmarks/` all run
their cases through `Engine.run_case`, and the same case with the same options gives the same
record whichever of them ran it (apart from timings and file names).

Before, the seed CLIs had a second wiring of their own (cli.py: journal plan, LM, gateway,
servers, reuse, recording), which could drift from the plugin's without a test noticing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import run_comparison
import run_dspy_mipro_banking77
from mipro_bench import cli, engine
from mipro_bench.options import COMMON, SEED, seed_cli_options
from tests.cli_support import call_main

ROOT = Path(__file__).resolve().parent.parent
PANEL = ["--train-size", "8", "--val-size", "4", "--test-size", "6", "--progress", "off"]
# What varies between two runs of the same case: wall-clock times and where files went.
VOLATILE = {"started_at", "timing", "phase_seconds", "compile_seconds", "lm_seconds",
            "lm_busy_seconds", "artifacts"}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _record(results: Path) -> dict[str, Any]:
    [path] = [p for p in results.glob("banking77_dspy_mipro_*.json")
              if not p.name.endswith(".program.json")]
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every case label that went through `Engine.run_case` (which still runs the case)."""
    seen: list[str] = []
    real = engine.Engine.run_case

    def run_case(self: engine.Engine, **kwargs: Any) -> Any:
        seen.append(kwargs["label"])
        return real(self, **kwargs)

    monkeypatch.setattr(engine.Engine, "run_case", run_case)
    return seen


def test_seed_cli_run_comparison_and_pytest_share_the_engine_and_the_record(
        spy: list[str], tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env, nothing real nearby
    data = ["--data-dir", str(tiny_data_dir), *PANEL]

    code, err = call_main(run_dspy_mipro_banking77.main,
                          ["--trials", "2", *data, "--results-dir", str(tmp_path / "seed")],
                          capsys)
    assert code == 0, err
    assert spy == ["dspy_miprov2 instruction_only seed 1"]

    # The same case through the comparison CLI (the matrix's DSPy options plus the one the
    # seed CLI also sets), then through pytest itself.
    same_case = ["--modes", "instruction_only", "--seeds", "1",
                 "--budget", "dspy_miprov2.trials=2",
                 "--option", "dspy_miprov2.output_type=str", *data]
    assert run_comparison.main(["--dspy-only", *same_case,
                                "--results-dir", str(tmp_path / "cmp")]) == 0
    plugin_flags = [flag.replace("--", "--mipro-", 1) if flag.startswith("--") else flag
                    for flag in same_case]
    code = pytest.main([str(ROOT / "benchmarks"), "-q", "-p", "no:cacheprovider",
                        "--mipro-optimizers", "dspy_miprov2", *plugin_flags,
                        "--mipro-results-dir", str(tmp_path / "pytest")])
    assert code == 0
    case_id = "dspy_miprov2-instruction_only-gpt-4.1-nano-seed1"
    assert spy[1:] == [case_id, case_id]

    seed = _stable(_record(tmp_path / "seed"))
    assert seed["status"] == "succeeded" and seed["details"]["dspy"]["search_trials_run"] == 2
    assert _stable(_record(tmp_path / "cmp")) == seed
    assert _stable(_record(tmp_path / "pytest")) == seed


def test_the_seed_cli_has_no_wiring_of_its_own() -> None:
    """What cli.py may still do is a front-end's: parse, print, map an outcome to an exit
    code. Starting an LM, servers or a case is the engine's."""
    source = Path(cli.__file__).read_text(encoding="utf-8")
    for wiring in ("run_lm(", "SessionServers(", "run_or_reuse", "find_reusable(",
                   "runner", "gateway_kwargs(", "resolve("):
        assert wiring not in source, wiring


def test_every_seed_flag_is_declared_once_in_the_option_table() -> None:
    for optimizer in ("dspy_miprov2", "synth_mipro"):
        table = seed_cli_options(optimizer)
        names = [opt.name for opt in table]
        assert len(names) == len(set(names)), names
        assert table[-len(COMMON) - 1:] == (*COMMON, SEED)  # shared with every entry point
    threads = next(o for o in seed_cli_options("dspy_miprov2") if o.name == "threads")
    from mipro_bench.executors.dspy_program import DSPyProgramOptions

    assert threads.default == DSPyProgramOptions().num_threads  # one default, not a copy
