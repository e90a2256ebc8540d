"""The local Synth backend driven by the real synth-ai 0.7.3 SDK, over real HTTP.

Invented tiny panel (6 intents), the simulated LM behind a real gateway, the
real task app, the real backend; the only wrappers record what the LM
received or count the task app's rollouts. Each test builds its own stack so
knobs and counts cannot leak.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from synth_ai.sdk.optimization import PolicyOptimizationJob

from mipro_bench.data import Splits
from mipro_bench.offline.synth_backend import LocalBackend
from mipro_bench.optimizers.synth_sdk import JobSettings, job_config, quiet_unknown_fields
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, classify_tool, tool_choice
from mipro_bench.serving import find_free_port
from tests.lm_support import recording_gateway
from tests.synth_support import (
    CountingTaskApp,
    counting_task_app,
    local_backend_for,
)
from tests.task_app_support import tiny_splits

MODEL = "gpt-4.1-nano"
POLL_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def panel() -> Splits:
    return tiny_splits()  # train 24, val 12, test 18


def submit_and_poll(config: dict[str, Any], backend: LocalBackend, *,
                    skip_health_check: bool = False) -> Any:
    with quiet_unknown_fields():
        job = PolicyOptimizationJob.from_dict(config, backend_url=backend.url,
                                              api_key=backend.api_key, algorithm="mipro",
                                              skip_health_check=skip_health_check)
        job.submit()
    return job, job.poll_until_complete(timeout=POLL_TIMEOUT_S, interval=0.05)


def settings(**kw: Any) -> JobSettings:
    base: dict[str, Any] = {"rollouts": 40, "batch_size": 4, "num_candidates": 4,
                            "proposal_rounds": 2, "examples_per_proposal": 8}
    return JobSettings(**{**base, **kw})


class Stack:
    def __init__(self, gateway: Any, recorder: Any, task_app: CountingTaskApp,
                 backend: LocalBackend) -> None:
        self.gateway, self.recorder, self.task_app, self.backend = (
            gateway, recorder, task_app, backend)


@pytest.fixture
def stack(panel: Splits, synth_env: Any) -> Iterator[Stack]:
    with (
        recording_gateway() as (gateway, recorder),
        counting_task_app(panel, synth_env.env_api_key) as task_app,
        local_backend_for(gateway) as backend,
    ):
        yield Stack(gateway, recorder, task_app, backend)


# --- the SDK's own job client against the local backend -------------------------------------------


def test_sdk_submits_polls_and_reads_the_result(stack: Stack, panel: Splits,
                                                synth_env: Any) -> None:
    config = job_config(panel, task_app_url=stack.task_app.url, model=MODEL, job=settings())
    job, result = submit_and_poll(config, stack.backend)
    assert job.job_id.startswith("pl_")
    assert result.succeeded, result.error
    assert 0.0 <= result.best_score <= 1.0
    raw = result.raw
    assert result.best_score == raw["best_full_score"]  # the job ran a full val evaluation
    system = next(m for m in result.best_prompt["messages"] if m["role"] == "system")
    assert system["pattern"] == raw["best_instruction"]
    # The SDK uploaded the task app's key sealed to the backend; rollouts used it.
    assert stack.backend.state.keys.env_key(stack.backend.api_key) == synth_env.env_api_key
    # Its events route (aiohttp) reads MIPRO's completion event with the three scores.
    from synth_ai.sdk.optimization.internal.learning.prompt_learning_client import (
        PromptLearningClient,
    )

    client = PromptLearningClient(stack.backend.url, stack.backend.api_key)
    events = asyncio.run(client.get_events(job.job_id))
    completed = [e for e in events if e["type"] == "learning.policy.mipro.job.completed"]
    assert len(completed) == 1
    data = completed[0]["data"]
    assert data["best_score"] == result.best_score
    assert {"best_full_score", "best_minibatch_score"} <= set(data)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    later = asyncio.run(client.get_events(job.job_id, since_seq=events[-2]["seq"]))
    assert [e["seq"] for e in later] == [events[-1]["seq"]]


def test_the_lm_sees_the_candidates_not_the_baseline(stack: Stack, panel: Splits) -> None:
    config = job_config(panel, task_app_url=stack.task_app.url, model=MODEL, job=settings())
    _, result = submit_and_poll(config, stack.backend)
    assert result.succeeded, result.error
    tried = {c["instruction"] for c in result.raw["candidates"]
             if c["minibatch_rollouts"] or c["full_score"] is not None}
    proposals = {c["instruction"] for c in result.raw["candidates"] if c["source"] == "proposal"}
    seen = stack.recorder.policy_systems()
    # Checked where the LM is: exactly the instructions of the candidates that were rolled
    # out reached it, proposals among them, though the task app only ever sent the baseline.
    assert set(seen) == tried
    assert tried & proposals
    assert seen.count(BASELINE_INSTRUCTION) < len(seen)
    users = {b["messages"][1]["content"] for b in stack.recorder.bodies
             if b.get("tools") and b not in stack.recorder.proposer_turns()}
    expected = {build_messages(BASELINE_INSTRUCTION, e.text, panel.labels)[1]["content"]
                for e in (*panel.train.examples, *panel.val.examples)}
    assert users <= expected  # the rest of the task app's request is passed through as is


@pytest.mark.parametrize("budget", [7, 23, 40])
def test_the_rollout_budget_is_spent_as_planned_and_never_exceeded(stack: Stack, panel: Splits,
                                                                   budget: int) -> None:
    config = job_config(panel, task_app_url=stack.task_app.url, model=MODEL,
                        job=settings(rollouts=budget))
    _, result = submit_and_poll(config, stack.backend)
    assert result.succeeded, result.error
    plan, spent = result.raw["budget_plan"], result.raw["budget_spent"]
    used = result.raw["rollouts_used"]
    assert stack.task_app.rollouts == used <= budget
    # Synth's loop scores each candidate once: the plan's trials and held-out evaluations
    # are what ran (the final held-out one is skipped when the baseline stays best).
    assert used == spent["train_rollouts"] + spent["heldout_rollouts"]
    assert spent["train_trials"] <= plan["trials"]
    assert used == plan["planned_rollouts"] or spent["train_trials"] < plan["trials"] \
        or spent["heldout_evaluations"] < 2
    points = result.raw["trajectory"]
    assert [p["rollouts"] for p in points] == sorted(p["rollouts"] for p in points)
    assert points[-1]["rollouts"] == used
    # Proposals are LM calls, not rollouts: the job counts both, the gateway agrees.
    calls = result.raw["lm_calls"]
    assert calls["policy"] == used
    assert calls["proposer"] == len(stack.recorder.proposer_turns()) > 0
    usage = stack.gateway.usage("synth-test")["synth-test"]["optimize"]
    assert usage.calls == calls["proposer"] + calls["policy"] == points[-1]["lm_calls"]


def test_the_real_home_directory_is_left_alone(stack: Stack, panel: Splits) -> None:
    from synth_ai.core.utils.paths import SYNTH_USER_CONFIG_PATH

    before = SYNTH_USER_CONFIG_PATH.stat().st_mtime if SYNTH_USER_CONFIG_PATH.exists() else None
    config = job_config(panel, task_app_url=stack.task_app.url, model=MODEL,
                        job=settings(rollouts=6))
    _, result = submit_and_poll(config, stack.backend)
    assert result.succeeded
    after = SYNTH_USER_CONFIG_PATH.stat().st_mtime if SYNTH_USER_CONFIG_PATH.exists() else None
    assert before == after


# --- failures end as failed jobs, quickly ---------------------------------------------------------


def _failure(config: dict[str, Any], backend: LocalBackend, **kw: Any) -> Any:
    """The result of a job expected to fail. A job that hangs instead fails the test through
    the poller's timeout; how fast a failing job ends is counted (rollouts spent before it
    stopped), not timed: two shared cores make wall-clock limits fail for the wrong reason."""
    _, result = submit_and_poll(config, backend, **kw)
    return result


def test_an_unreachable_task_app_fails_the_job_with_a_clear_error(stack: Stack,
                                                                  panel: Splits) -> None:
    dead = f"http://127.0.0.1:{find_free_port()}"
    config = job_config(panel, task_app_url=dead, model=MODEL, job=settings())
    result = _failure(config, stack.backend, skip_health_check=True)
    assert result.failed
    assert "unreachable" in result.error and dead in result.error


def test_a_task_app_that_fails_every_rollout_fails_the_job(panel: Splits, synth_env: Any) -> None:
    with (
        recording_gateway() as (gateway, _),
        counting_task_app(panel, synth_env.env_api_key, fail_rollouts=True) as broken,
        local_backend_for(gateway) as backend,
    ):
        config = job_config(panel, task_app_url=broken.url, model=MODEL,
                            job=settings(rollouts=40))
        result = _failure(config, backend)
    assert result.failed
    assert "rollouts in a row failed" in result.error and "HTTP 500" in result.error
    assert 0 < broken.rollouts < 40  # stopped at the outage rule, not at the budget


def test_a_dead_lm_fails_the_job_not_the_poller(stack: Stack, panel: Splits) -> None:
    stack.gateway.set_knobs(error_rate=1.0, error_status=500)
    config = job_config(panel, task_app_url=stack.task_app.url, model=MODEL, job=settings())
    result = _failure(config, stack.backend)
    assert result.failed and "rollouts in a row failed" in result.error
    assert "HTTP 500" in result.error
    # Without proposals the rollouts themselves hit the dead LM: still a failed job.
    config = job_config(panel, task_app_url=stack.task_app.url, model=MODEL,
                        job=settings(num_candidates=0))
    result = _failure(config, stack.backend)
    assert result.failed and "rollouts in a row failed" in result.error
    assert stack.task_app.rollouts < 40  # stopped at the outage rule, not at the budget


def test_one_failing_rollout_costs_its_reward_not_the_job(stack: Stack, panel: Splits) -> None:
    # One rollout at a time and no proposals, so the two failing calls are the first
    # rollout's two attempts (the task app retries once): that rollout, and only it, fails.
    stack.gateway.set_knobs(fail_next=2, error_status=500)
    config = job_config(panel, task_app_url=stack.task_app.url, model=MODEL,
                        job=settings(rollouts=12, num_candidates=0, max_concurrent=1))
    _, result = submit_and_poll(config, stack.backend)
    assert result.succeeded, result.error
    # Baseline only: 3 held-out + one 6-seed train trial (the final held-out evaluation is
    # skipped because the baseline is the best candidate).
    assert stack.task_app.rollouts == result.raw["rollouts_used"] == 9
    assert result.raw["rollouts_failed"] == 1
    assert result.raw["lm_calls"]["policy_errors"] == 2


# --- online MIPRO, the protocol itself ------------------------------------------------------------


def test_online_protocol_over_the_older_route(stack: Stack, panel: Splits) -> None:
    config = job_config(panel, task_app_url=stack.task_app.url, model=MODEL,
                        job=settings(rollouts=3, mode="online"))
    headers = {"Authorization": f"Bearer {stack.backend.api_key}"}
    base = f"{stack.backend.url}/api/prompt-learning/online"
    with httpx.Client(headers=headers, timeout=30, trust_env=False) as http:
        created = http.post(f"{base}/jobs", json={"algorithm": "mipro", "config_body": config})
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        meta = http.get(f"{base}/jobs/{job_id}", params={"include_metadata": "true"}).json()
        system_id, proxy = meta["metadata"]["mipro_system_id"], meta["metadata"]["mipro_proxy_url"]
        status_url = f"{base}/mipro/systems/{system_id}/status"
        example = panel.train.examples[0]
        body = {"model": MODEL, "temperature": 0.0, "tool_choice": tool_choice(),
                "tools": [classify_tool(panel.labels)],
                "messages": build_messages(BASELINE_INSTRUCTION, example.text, panel.labels)}
        served = []
        for i in range(3):
            reply = http.post(f"{proxy}/r{i}/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
            cid = reply.headers["x-mipro-candidate-id"]
            served.append(cid)
            if i == 0:
                wrong = http.post(status_url, json={"rollout_id": "r0", "status": "reward",
                                                    "reward": 1.0, "candidate_id": "c999"})
                assert wrong.status_code == 409
            ok = http.post(status_url, json={"rollout_id": f"r{i}", "status": "reward",
                                             "reward": float(i % 2), "candidate_id": cid})
            assert ok.status_code == 200, ok.text
            assert http.post(status_url, json={"rollout_id": f"r{i}", "status": "reward",
                                               "reward": 1.0}).status_code == 409
            assert http.post(status_url, json={"rollout_id": f"r{i}",
                                               "status": "done"}).status_code == 200
        assert served[0] == "c0"  # the original instruction serves first
        over = http.post(f"{proxy}/r9/chat/completions", json=body)
        assert over.status_code == 409 and "budget" in over.json()["detail"]
        state = http.get(f"{base}/mipro/systems/{system_id}/state").json()
        assert state["rollouts_served"] == state["rollouts_done"] == 3
        assert state["best_candidate_id"] in state["candidates"]
        assert sum(c["rollouts"] for c in state["candidates"].values()) == 3
        final = http.get(f"{base}/jobs/{job_id}").json()
    assert final["status"] == "succeeded" and final["score_kind"] == "online_reward"
    assert set(stack.recorder.policy_systems()) == {
        state["candidates"][cid]["instruction"] for cid in set(served)}


# --- bad requests get 4xx JSON --------------------------------------------------------------------


def test_bad_requests_get_4xx_json_never_500(stack: Stack, panel: Splits) -> None:
    good = job_config(panel, task_app_url=stack.task_app.url, model=MODEL,
                      job=settings(rollouts=4))
    key = {"X-API-Key": stack.backend.api_key}
    url = stack.backend.url
    jobs = f"{url}/api/policy-optimization/online/jobs"
    from mipro_bench.prompt import initial_prompt
    from mipro_bench.task_client.patterns import PromptPattern

    pattern = PromptPattern.from_config(initial_prompt(panel.labels))
    route = stack.backend.state.interceptor.register(
        pattern, {"c0": pattern}, upstream_url=stack.gateway.endpoint.base_url("x", "optimize"),
        upstream_api_key=None)
    with httpx.Client(timeout=30, trust_env=False) as http:
        real = http.post(jobs, json={"config_body": good}, headers=key).json()["job_id"]
        cases: list[tuple[str, str, dict[str, Any], Any, int]] = [
            ("POST", jobs, {}, {"config_body": good}, 401),
            ("POST", jobs, {"X-API-Key": "sk_wrong"}, {"config_body": good}, 401),
            ("POST", jobs, key, b"{not json", 400),
            ("POST", jobs, key, [1, 2], 400),
            ("POST", jobs, key, {"config_body": {}}, 400),
            ("POST", jobs, key, {"config_body": {"prompt_learning": {"algorithm": "gepa"}}}, 400),
            ("POST", jobs, key, {"config_body": {"prompt_learning": {
                **good["prompt_learning"], "mipro": {"online_pool": "all"}}}}, 400),
            ("GET", f"{jobs}/pl_doesnotexist", key, None, 404),
            ("GET", f"{jobs}/{real}/events?since_seq=abc", key, None, 400),
            ("GET", f"{jobs}/{real}/events?limit=0", key, None, 400),
            ("GET", f"{url}/api/prompt-learning/online/jobs/{real}", {}, None, 401),
            ("POST", f"{url}/api/v1/env-keys", key, {"name": "ENVIRONMENT_API_KEY",
                                                     "ciphertext_b64": "@@@"}, 400),
            ("POST", f"{url}/api/v1/env-keys", key, {"name": 3}, 400),
            ("POST", f"{url}/v1/unknown-route/c0/chat/completions", {}, {"messages": []}, 404),
            ("POST", f"{url}/v1/{route.route_id}/c9/chat/completions", {}, {"messages": []}, 404),
            ("POST", f"{url}/v1/{route.route_id}/c0/chat/completions", {}, b"[", 400),
            ("POST", f"{url}/v1/{route.route_id}/c0/chat/completions", {}, {"messages": [
                {"role": "system", "content": "not the baseline"},
                {"role": "user", "content": "hi"}]}, 400),
            ("POST", f"{url}/api/prompt-learning/online/mipro/systems/nope/status", key,
             {"rollout_id": "r", "status": "reward", "reward": 1}, 404),
            ("GET", f"{url}/no/such/route", key, None, 404),
        ]
        for method, target, headers, body, status in cases:
            content = body if isinstance(body, bytes) else None
            payload = None if isinstance(body, bytes) or body is None else body
            response = http.request(method, target, headers=headers, json=payload,
                                    content=content)
            assert response.status_code == status, (method, target, response.text)
            assert response.json()["detail"], (method, target)
        # Another client's key cannot see the job (it looks absent).
        other = http.get(f"{jobs}/{real}", headers={"X-API-Key": "sk_wrong"})
        assert other.status_code == 401


def test_a_cancelled_job_stops_spending(stack: Stack, panel: Splits) -> None:
    stack.gateway.set_knobs(latency_s=0.05)
    config = job_config(panel, task_app_url=stack.task_app.url, model=MODEL,
                        job=settings(rollouts=400, num_candidates=0))
    with quiet_unknown_fields():
        job = PolicyOptimizationJob.from_dict(config, backend_url=stack.backend.url,
                                              api_key=stack.backend.api_key, algorithm="mipro")
        job.submit()
    deadline = time.monotonic() + 20
    while stack.task_app.rollouts < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.cancel(reason="test")["status"] == "cancelled"
    result = job.poll_until_complete(timeout=POLL_TIMEOUT_S, interval=0.05)
    assert result.status.value == "cancelled"
    time.sleep(0.3)
    spent = stack.task_app.rollouts
    time.sleep(0.3)
    assert stack.task_app.rollouts == spent < 400
