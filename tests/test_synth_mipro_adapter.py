"""The SynthMIPRO adapter through the shared runner, offline (local backend, simulated LM).

Real adapter, real SDK, real task app, real local backend, real gateway, on
the invented tiny panel; the recorder around the LM sees what it answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mipro_bench.data import Splits
from mipro_bench.lm.gateway import GatewayHandle
from mipro_bench.optimizers import create_optimizer
from mipro_bench.optimizers.base import (
    BASELINE_PROMPT,
    NotSupported,
    OptimizeRequest,
    UsageError,
)
from mipro_bench.optimizers.synth_mipro import RolloutBudget, SynthMIPRO, validate_with_sdk
from mipro_bench.optimizers.synth_sdk import (
    JOB_SPLIT,
    JobSettings,
    job_config,
    outcome_from,
    sdk_environment,
)
from mipro_bench.prompt import BASELINE_INSTRUCTION
from mipro_bench.results import PHASES, OptimizedPrompt, PhaseUsage, RunRecord, read_record
from mipro_bench.runner import gateway_usage_reader, run_case, score
from mipro_bench.serving import find_free_port
from tests.lm_support import RecordingResponder, recording_gateway
from tests.task_app_support import tiny_splits

BUDGET = 24
FAST = {"lm_max_attempts": 1, "batch_size": 4, "num_candidates": 4, "examples_per_proposal": 8,
        "eval_concurrency": 4, "max_concurrent": 4}


@pytest.fixture(scope="module")
def panel() -> Splits:
    return tiny_splits()


@dataclass
class Run:
    record: RunRecord
    path: Path
    gateway: GatewayHandle
    recorder: RecordingResponder


def request_for(panel: Splits, gw: GatewayHandle, tmp: Path, *, budget: int = BUDGET,
                mode: str = "instruction_only", scope: str = "synth-adapter",
                progress: Callable[[str], None] | None = None) -> OptimizeRequest:
    return OptimizeRequest(
        splits=panel, lm=gw.endpoint, mode=mode, budget=RolloutBudget(rollouts=budget),  # type: ignore[arg-type]
        seed=1, workdir=tmp / "work", scope=scope, progress=progress,
        usage=gateway_usage_reader(gw, scope))


@contextlib.contextmanager
def _sdk_sandbox(sandbox: Any) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        sandbox.apply(mp)
        mp.delenv("SYNTH_API_KEY", raising=False)
        yield


def run(panel: Splits, tmp: Path, sandbox: Any, *, on_progress: Callable[[str, GatewayHandle],
        None] | None = None, **options: Any) -> Run:
    with _sdk_sandbox(sandbox), recording_gateway() as (gw, recorder):
        request = request_for(panel, gw, tmp, progress=(lambda m: on_progress(m, gw))
                              if on_progress else None)
        optimizer = create_optimizer("synth_mipro", **{**FAST, **options})
        record, path = run_case(optimizer, request, results_dir=tmp / "results")
        return Run(record, path, gw, recorder)


@pytest.fixture(scope="module")
def offline(panel: Splits, tmp_path_factory: pytest.TempPathFactory,
            synth_sandbox: Any) -> Run:
    return run(panel, tmp_path_factory.mktemp("offline"), synth_sandbox)


@pytest.fixture(scope="module")
def online(panel: Splits, tmp_path_factory: pytest.TempPathFactory, synth_sandbox: Any) -> Run:
    return run(panel, tmp_path_factory.mktemp("online"), synth_sandbox, mipro_mode="online")


# --- offline --------------------------------------------------------------------------------------


def test_offline_run_succeeds_on_the_local_backend(offline: Run) -> None:
    record = offline.record
    assert record.status == "succeeded", record.error
    assert record.backend == "local" and record.optimizer == "synth_mipro"
    synth = record.details["synth"]
    assert synth["job_id"].startswith("pl_") and synth["backend"] == "local"
    assert record.results.best_val_score == synth["best_score"] == synth["best_full_score"]
    # Synth's loop spends the budget as the backend planned it, never more.
    spent = synth["budget_spent"]
    assert synth["rollouts_used"] == spent["train_rollouts"] + spent["heldout_rollouts"] <= BUDGET
    assert synth["score_kind"] == "val"
    assert synth["optimizer_package"]["name"] == "synth-optimizers"
    assert record.optimized_prompt is not None and record.optimized_prompt.demos == ()
    assert record.optimized_prompt.instruction == next(
        c for c in synth["candidates"] if c["candidate_id"] == synth["best_candidate_id"]
    )["instruction"]


def test_usage_per_phase_adds_up(offline: Run, panel: Splits) -> None:
    usage, synth = offline.record.usage, offline.record.details["synth"]
    assert set(PHASES) <= set(usage)
    assert usage["baseline_eval"].calls == usage["test_eval"].calls == len(panel.test)
    calls = synth["lm_calls"]
    assert calls["policy"] == synth["rollouts_used"]  # one LM call per rollout (none failed)
    assert usage["optimize"].calls == calls["proposer"] + calls["policy"]
    assert sum(u.calls for u in usage.values()) == len(offline.recorder.bodies)
    assert all(u.errors == 0 for u in usage.values())


def test_evaluations_run_each_instruction_through_the_task_app(offline: Run,
                                                               panel: Splits) -> None:
    systems = offline.recorder.policy_systems()
    n = len(panel.test)
    # Phases run in order: baseline_eval first, test_eval last, both on the whole test split.
    assert systems[:n] == [BASELINE_INSTRUCTION] * n
    assert systems[-n:] == [offline.record.optimized_prompt.instruction] * n
    results = offline.record.results
    assert [i.id for i in results.per_item] == [e.id for e in panel.test.examples]
    assert [i.id for i in results.baseline_per_item] == [e.id for e in panel.test.examples]
    assert all(i.correct == (i.predicted == i.expected) and i.error is None
               for i in results.per_item)


def test_trajectory_is_ordered_and_ends_at_the_budget(offline: Run) -> None:
    points = offline.record.trajectory
    assert points, "no trajectory"
    rollouts = [p.rollouts for p in points]
    calls = [p.lm_calls for p in points]
    used = offline.record.details["synth"]["rollouts_used"]
    assert rollouts == sorted(rollouts) and rollouts[-1] == used
    assert calls == sorted(calls) and calls[-1] == offline.record.usage["optimize"].calls
    assert points[-1].score == pytest.approx(offline.record.results.best_val_score)


def test_the_record_file_round_trips(offline: Run) -> None:
    data = json.loads(offline.path.read_text())
    assert offline.path.name.startswith("banking77_synth_mipro_")
    assert data["backend"] == "local" and data["lm"]["simulated"] is True
    assert data["config"]["budget"]["rollouts"] == BUDGET
    assert read_record(offline.path) == offline.record


# --- online ---------------------------------------------------------------------------------------


def test_online_mode_end_to_end(online: Run, panel: Splits) -> None:
    record = online.record
    assert record.status == "succeeded", record.error
    synth = record.details["synth"]
    assert synth["mipro_mode"] == "online" and synth["score_kind"] == "online_reward"
    client = synth["online"]
    assert client["client_rollouts"] == BUDGET and client["client_failed"] == 0
    assert client["client_rewarded"] == BUDGET
    assert synth["rollouts_used"] == BUDGET
    assert record.usage["optimize"].calls == synth["lm_calls"]["proposer"] + BUDGET
    assert 0.0 <= record.results.best_val_score <= 1.0
    served = {c["instruction"] for c in synth["candidates"] if c["minibatch_rollouts"]}
    systems = online.recorder.policy_systems()
    n = len(panel.test)
    assert set(systems[n:-n]) == served  # the proxy's calls carried the chosen candidates
    assert systems[-n:] == [record.optimized_prompt.instruction] * n


# --- failures -------------------------------------------------------------------------------------


def test_an_lm_dead_from_the_start_leaves_a_failed_record(panel: Splits, tmp_path: Path,
                                                          synth_sandbox: Any) -> None:
    with _sdk_sandbox(synth_sandbox), recording_gateway() as (gw, _):
        gw.set_knobs(error_rate=1.0, error_status=500)
        request = request_for(panel, gw, tmp_path)
        record, path = run_case(create_optimizer("synth_mipro", **FAST), request,
                                results_dir=tmp_path / "results")
    assert record.status == "failed" and path.is_file()
    assert record.details["failed_phase"] == "baseline_eval"
    assert "rollouts failed (stopped early)" in record.error and "\n" not in record.error
    # Stopped early, counted rather than timed: some baseline items were tried (and failed),
    # not all of them, and nothing after the baseline ran.
    assert 0 < record.usage["baseline_eval"].errors < len(panel.test)
    assert record.usage["baseline_eval"].calls == 0
    assert all(record.usage[p] == PhaseUsage() for p in ("optimize", "test_eval"))


def test_an_lm_outage_during_the_job_fails_the_job_and_the_record(panel: Splits, tmp_path: Path,
                                                                  synth_sandbox: Any) -> None:
    def outage_after_baseline(message: str, gw: GatewayHandle) -> None:
        if message.startswith("baseline test accuracy"):
            gw.set_knobs(error_rate=1.0, error_status=500)

    result = run(panel, tmp_path, synth_sandbox, on_progress=outage_after_baseline)
    record = result.record
    assert record.status == "failed"
    assert record.details["failed_phase"] == "optimize"
    assert "SynthJobFailed" in record.error and "pl_" in record.error
    assert record.results.baseline_test_accuracy is not None  # what finished is kept
    # The outage ended the job in optimize: failed calls there, none answered, no test eval.
    assert record.usage["optimize"].calls == 0 and record.usage["optimize"].errors > 0
    assert record.usage["test_eval"] == PhaseUsage()


# --- checks before any LM call --------------------------------------------------------------------


def test_fewshot_is_not_supported(panel: Splits, tmp_path: Path) -> None:
    with recording_gateway() as (gw, _), pytest.raises(NotSupported, match="instructions only"):
        SynthMIPRO().check(request_for(panel, gw, tmp_path, mode="fewshot"))


def test_remote_backends_need_a_key_and_must_answer(panel: Splits, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTH_API_KEY", raising=False)
    with recording_gateway() as (gw, _):
        request = request_for(panel, gw, tmp_path)
        with pytest.raises(UsageError, match="needs SYNTH_API_KEY"):
            SynthMIPRO(backend="hosted").check(request)
        monkeypatch.setenv("SYNTH_API_KEY", "sk_test_not_real")
        dead = f"http://127.0.0.1:{find_free_port()}"
        expected = re.escape(f"Synth backend at {dead} is unreachable")
        with pytest.raises(UsageError, match=expected) as info:
            SynthMIPRO(backend="hosted", backend_url=dead).check(request)
        assert "\n" not in str(info.value)
        with pytest.raises(UsageError, match="rollout budget"):
            SynthMIPRO(backend="local").check(OptimizeRequest(
                splits=panel, lm=gw.endpoint, mode="instruction_only", budget=RolloutBudget(),
                seed=1, workdir=tmp_path, scope="x"))


def test_the_hosted_backend_refuses_a_model_it_does_not_offer_before_any_lm_call(
        panel: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mipro_bench.lm.gateway import start_gateway
    from mipro_bench.lm.settings import LMSettings

    monkeypatch.setenv("SYNTH_API_KEY", "sk_test_not_real")
    with start_gateway(LMSettings(backend="sim", model="SmolLM2-135M", base_url=None)) as gw:
        request = request_for(panel, gw, tmp_path)
        with pytest.raises(UsageError, match="does not offer model 'SmolLM2-135M'") as info:
            SynthMIPRO(backend="hosted").check(request)
        assert "gpt-4.1-nano" in str(info.value) and "\n" not in str(info.value)
        SynthMIPRO(backend="local").check(request)  # the local backend serves any model
        assert gw.usage() == {}


def test_job_config_is_what_the_sdk_accepts(panel: Splits, tmp_path: Path) -> None:
    config = job_config(panel, task_app_url="http://127.0.0.1:8015", model="gpt-4.1-nano",
                        job=JobSettings(rollouts=10))
    section = config["prompt_learning"]
    n, m = len(panel.train), len(panel.val)
    assert section["env_config"] == {"split": JOB_SPLIT}
    assert section["mipro"]["online_pool"] == list(range(n))
    assert section["mipro"]["val_seeds"] == list(range(n, n + m))
    assert "inference_url" not in section["policy"]  # the SDK refuses it there
    assert "meta_model" not in section["mipro"]  # the SDK refuses nano meta models
    with recording_gateway() as (gw, _):
        validate_with_sdk(JobSettings(rollouts=10), request_for(panel, gw, tmp_path))


def test_sdk_environment_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT_API_KEY", "mine")
    monkeypatch.delenv("DEV_ENVIRONMENT_API_KEY", raising=False)
    monkeypatch.delenv("SYNTH_LOCALAPI_AUTH_PERSIST", raising=False)
    with sdk_environment("task-app-key"):
        assert os.environ["ENVIRONMENT_API_KEY"] == "task-app-key"
        assert os.environ["SYNTH_LOCALAPI_AUTH_PERSIST"] == "0"
        os.environ["DEV_ENVIRONMENT_API_KEY"] = "leaked by the sdk"
    assert os.environ["ENVIRONMENT_API_KEY"] == "mine"
    assert "DEV_ENVIRONMENT_API_KEY" not in os.environ
    assert "SYNTH_LOCALAPI_AUTH_PERSIST" not in os.environ


def test_a_hosted_style_result_maps_to_an_outcome() -> None:
    from synth_ai.sdk.optimization.models import PolicyJobStatus, PolicyOptimizationResult

    result = PolicyOptimizationResult(
        job_id="pl_x", status=PolicyJobStatus.SUCCEEDED, best_score=0.7,
        best_prompt={"messages": [{"role": "system", "pattern": "Be precise."},
                                  {"role": "user", "pattern": "{query}"}]},
        raw={"status": "succeeded", "best_score": 0.7})
    outcome = outcome_from(result, backend="hosted", job_id="pl_x", extra={})
    assert outcome.prompt == OptimizedPrompt("Be precise.")
    assert outcome.best_val_score == 0.7 and outcome.backend == "hosted"
    assert outcome.trajectory == ()
    assert outcome.details["synth"]["score_kind"] == "minibatch"


async def test_optimize_and_evaluate_work_inside_a_running_event_loop(
        panel: Splits, tmp_path: Path, synth_sandbox: Any) -> None:
    with _sdk_sandbox(synth_sandbox), recording_gateway() as (gw, recorder):
        request = request_for(panel, gw, tmp_path, budget=6)
        optimizer = SynthMIPRO(**{**FAST, "num_candidates": 1})
        outcome = optimizer.optimize(request)  # the SDK's sync calls, off this loop
        items = score(BASELINE_PROMPT, panel.val, request, "baseline_eval",
                      executor=optimizer.spec.native_executor,
                      options=optimizer.executor_options())
    assert outcome.backend == "local" and 0 < outcome.details["synth"]["rollouts_used"] <= 6
    assert [i.id for i in items] == [e.id for e in panel.val.examples]
    assert recorder.policy_systems()[-len(items):] == [BASELINE_INSTRUCTION] * len(items)


def test_an_external_local_backend_is_used_through_its_url(panel: Splits, tmp_path: Path,
                                                           synth_sandbox: Any) -> None:
    from mipro_bench.offline.synth_backend import start_local_backend

    with (
        _sdk_sandbox(synth_sandbox),
        recording_gateway() as (gw, _),
        start_local_backend(api_key="sk_local_external") as external,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("SYNTH_API_KEY", "sk_local_external")
        optimizer = SynthMIPRO(**{**FAST, "backend": "local", "backend_url": external.url})
        request = request_for(panel, gw, tmp_path, budget=6)
        optimizer.check(request)
        outcome = optimizer.optimize(request)
        jobs = external.state.store.all()
    assert outcome.backend == "local"
    assert outcome.details["synth"]["backend_url"] == external.url
    assert [j.id for j in jobs] == [outcome.details["synth"]["job_id"]]
    assert jobs[0].status == "succeeded"
    # the job carried the gateway token to the external backend, which did not keep it
    assert gw.token not in json.dumps(jobs[0].config_body)


# --- one harness per session ------------------------------------------------------------------


def test_evaluations_and_a_job_share_the_sessions_servers(panel: Splits, tmp_path: Path,
                                                          synth_sandbox: Any) -> None:
    """Two task-app evaluations and a local Synth job in one harness: one task app, one
    interceptor, one local backend, each started once and each used."""
    from urllib.parse import urlparse

    from mipro_bench.session_servers import SessionServers

    with (
        _sdk_sandbox(synth_sandbox),
        recording_gateway() as (gw, recorder),
        SessionServers(panel, env_api_key=synth_sandbox.env_api_key) as harness,
    ):
        scope = "shared-harness"
        request = OptimizeRequest(
            splits=panel, lm=gw.endpoint, mode="instruction_only",
            budget=RolloutBudget(rollouts=6), seed=1, workdir=tmp_path / "work", scope=scope,
            usage=gateway_usage_reader(gw, scope), harness=harness)
        optimizer = SynthMIPRO(**{**FAST, "backend": "local", "num_candidates": 1})

        def evaluate(prompt: OptimizedPrompt, phase: str) -> tuple:
            return score(prompt, panel.test, request, phase, executor="task_app",
                         options=optimizer.executor_options())

        baseline = evaluate(BASELINE_PROMPT, "baseline_eval")
        started_after_eval = list(harness.started)
        outcome = optimizer.optimize(request)
        optimized = evaluate(outcome.prompt, "test_eval")
        started = list(harness.started)
        (task_app_key,) = [k for k in started if "task_app" in k]
        task_app = harness.task_app(**optimizer.task_app_options())
        usage = gw.usage(scope)[scope]
    assert len(started) == len(set(started)), started  # nothing started twice
    assert started_after_eval == [task_app_key, "interceptor"]
    assert started.count("interceptor") == 1
    assert [k for k in started if "synth_local_backend" in k] == ["synth_local_backend"]
    # The job ran its rollouts against the very task app the evaluations used.
    assert urlparse(outcome.details["synth"]["task_app_url"]).port == task_app.port
    assert 0 < outcome.details["synth"]["rollouts_used"] <= 6
    assert [i.id for i in baseline] == [i.id for i in optimized] == [
        e.id for e in panel.test.examples]
    assert not any(i.error for i in (*baseline, *optimized))
    assert usage["baseline_eval"].calls == usage["test_eval"].calls == len(panel.test)
    systems = recorder.policy_systems()
    assert systems[-len(panel.test):] == [outcome.prompt.instruction] * len(panel.test)
