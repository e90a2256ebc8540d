"""The local Synth backend runs Synth's published MIPROv2 (`synth-optimizers`), and only it.

Real stack (the simulated LM behind a real gateway, the real task app, the real local
backend, the real synth-ai SDK): checks that the package's own loop and proposer were the
ones called, that its run ledger and traces land in the case's working directory and
nowhere else, and that no request of the package leaves the machine.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from synth_optimizers.miprov2 import core as synth_core
from synth_optimizers.miprov2.core import phase3_runner
from synth_optimizers.miprov2.core import proposer_openenv as openenv

from mipro_bench.data import Splits
from mipro_bench.optimizers.synth_sdk import job_config
from tests.lm_support import recording_gateway
from tests.synth_support import counting_task_app, local_backend_for
from tests.task_app_support import tiny_splits
from tests.test_synth_local_backend import MODEL, settings, submit_and_poll

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = ("127.", "::1", "localhost")


@pytest.fixture(scope="module")
def panel() -> Splits:
    return tiny_splits()


@pytest.fixture
def outbound(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A socket guard for this process: a connect or name lookup anywhere but loopback is
    recorded and refused, so a hard-coded provider URL could not be reached even by mistake."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> Any:
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not host.startswith(LOOPBACK):
            attempts.append(f"connect {host}")
            raise OSError(f"mipro-bench test guard: no connection to {host}")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if host is not None and not name.startswith(LOOPBACK):
            attempts.append(f"resolve {name}")
            raise socket.gaierror(f"mipro-bench test guard: no lookup of {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts


def run_job(panel: Splits, synth_env: Any, workdir: Path, rollouts: int
            ) -> tuple[Any, Any, list[dict[str, Any]]]:
    """One offline job on the real stack: (the SDK's job, its result, Synth's proposer turns
    as the LM received them)."""
    with (
        recording_gateway() as (gateway, recorder),
        counting_task_app(panel, synth_env.env_api_key) as task_app,
        local_backend_for(gateway) as backend,
    ):
        config = job_config(panel, task_app_url=task_app.url, model=MODEL,
                            job=settings(rollouts=rollouts), workdir=str(workdir))
        job, result = submit_and_poll(config, backend)
        return job, result, recorder.proposer_turns()


def test_the_guard_notices_a_hard_coded_provider_url(outbound: list[str]) -> None:
    """Synth's own OpenAI agent posts to api.openai.com: the guard refuses and records it."""
    import asyncio

    agent = openenv.OpenAIOpenEnvReactAgent(api_key="sk-test", timeout_s=5.0)
    tools = [{"name": "finish", "description": "stop", "input_schema": {"type": "object"}}]
    with pytest.raises(Exception):  # noqa: B017 - whatever the package raises, it must fail
        asyncio.run(agent.next_turn(objective="o", runtime_tools=tools,
                                    messages=[{"role": "user", "content": "hi"}],
                                    proposer_state={},
                                    config=openenv.MiproOpenEnvProposerConfig(
                                        chat_retry_attempts=1)))
    assert any("openai.com" in a for a in outbound), outbound


def test_a_job_runs_synths_loop_and_proposer_keeps_files_in_the_workdir_and_the_machine(
        panel: Splits, synth_env: Any, tmp_path: Path, outbound: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {"run_phase3_loop": 0, "run_openenv_react_proposer": 0}

    def counted(module: Any, name: str) -> None:
        real = getattr(module, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(synth_core, "run_phase3_loop")  # what the backend calls
    counted(phase3_runner, "run_openenv_react_proposer")  # what Synth's loop calls
    cwd, workdir = tmp_path / "cwd", tmp_path / "case-work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    home = Path(synth_env.home)  # $HOME during the job (the session's throwaway one)
    home_before = sorted(str(p) for p in home.rglob("*"))
    repo_before = {p.name for p in REPO.iterdir()}
    job, result, turns = run_job(panel, synth_env, workdir, rollouts=40)
    proposer_turns = len(turns)
    assert result.succeeded, result.error
    assert calls == {"run_phase3_loop": 1, "run_openenv_react_proposer": 2}
    raw = result.raw
    assert raw["synth_optimizer"]["name"] == "synth-optimizers"
    assert raw["synth_optimizer"]["version"] == "0.1.1"
    assert raw["lm_calls"]["proposer"] == proposer_turns > 0
    # The package's ledger, in the case's working directory, holds the trials that ran.
    run_dir = workdir / "synth-optimizers" / job.job_id
    with sqlite3.connect(run_dir / "ledger.sqlite") as db:
        observations = db.execute("SELECT COUNT(*) FROM observations").fetchone()[0]
        rounds = db.execute("SELECT COUNT(*) FROM proposer_rounds").fetchone()[0]
    assert observations == raw["budget_spent"]["train_trials"] >= 2
    assert rounds == raw["budget_spent"]["proposer_rounds"] == 2
    assert len(list((run_dir / "proposer_traces").glob("*.json"))) == 2
    # Nothing anywhere else: not the working directory, not HOME, not the repository.
    assert not any(cwd.iterdir()), sorted(p.name for p in cwd.iterdir())
    assert sorted(str(p) for p in home.rglob("*")) == home_before
    assert {p.name for p in REPO.iterdir()} == repo_before and not (REPO / ".out").exists()
    # And nothing left the machine (every LM call went to the gateway on 127.0.0.1).
    assert outbound == []


def test_the_proposer_sees_no_real_path(panel: Splits, synth_env: Any, tmp_path: Path) -> None:
    """The case's directory differs between runs; the proposer's requests must not (replay,
    and the simulated LM seeds from the request), so no turn names it."""
    workdir = tmp_path / "a-unique-case-directory"
    _, result, turns = run_job(panel, synth_env, workdir, rollouts=24)
    assert result.succeeded, result.error
    assert turns and not any(str(workdir) in json.dumps(t) for t in turns)
    assert any("/mipro-bench/case" in json.dumps(t) for t in turns)


def test_the_default_comparison_matches_synths_budget_to_miprov2s() -> None:
    """Issue 18's bar, on the committed default comparison (exact-gated in CI): the Synth
    case's optimize-phase LM calls (rollouts and proposer turns) are within 15 % of DSPy
    MIPROv2's instruction-only case, and the record names the package that ran."""
    baseline = json.loads((REPO / "results" / "baseline.json").read_text(encoding="utf-8"))
    records = {(r["optimizer"], r["config"]["mode"]): r for r in baseline["records"]}
    synth = records[("synth_mipro", "instruction_only")]
    mipro = records[("dspy_miprov2", "instruction_only")]
    synth_calls = synth["usage"]["optimize"]["calls"]
    mipro_calls = mipro["usage"]["optimize"]["calls"]
    assert abs(synth_calls - mipro_calls) <= 0.15 * mipro_calls, (synth_calls, mipro_calls)
    package = synth["details"]["synth"]["optimizer_package"]
    assert package == {"name": "synth-optimizers", "version": "0.1.1",
                       "module": "synth_optimizers.miprov2"}
    roles = synth["details"]["lm_calls_by_role"]
    assert roles["task_model"] + roles["proposer"] == synth_calls and roles["proposer"] > 0
