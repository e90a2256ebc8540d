"""Synth MIPRO with models the SDK's list does not know, loopback Synth backends, and every
hosted payload shape (issue 11, items 1, 4, 5). Real SDK, real task app, real local backend
(served in-process, or as an external one answering in a hosted shape), simulated LM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.settings import LMSettings
from mipro_bench.offline.synth_backend.shapes import ANSWER_SHAPES
from mipro_bench.optimizers import create_optimizer
from mipro_bench.optimizers.base import OptimizeRequest
from mipro_bench.optimizers.synth_job import is_loopback_url, tunnel_backend_name
from mipro_bench.optimizers.synth_mipro import RolloutBudget
from mipro_bench.optimizers.synth_sdk import STAND_IN_MODEL, read_hosted_result
from mipro_bench.runner import gateway_usage_reader, run_case
from tests.task_app_support import tiny_splits

FAST = {"lm_max_attempts": 1, "batch_size": 4, "num_candidates": 2, "examples_per_proposal": 8,
        "eval_concurrency": 4, "max_concurrent": 4}
MODEL = "SmolLM2-135M-Instruct.Q4_1"  # what llama.cpp's server answers to


@pytest.fixture(scope="module")
def panel() -> Any:
    return tiny_splits()


@contextlib.contextmanager
def sandbox(synth_sandbox: Any, synth_key: str | None = None) -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        synth_sandbox.apply(mp)
        if synth_key is None:
            mp.delenv("SYNTH_API_KEY", raising=False)
        else:
            mp.setenv("SYNTH_API_KEY", synth_key)
        yield mp


def request(panel: Any, gw: GatewayHandle, tmp: Path, scope: str = "synth-any") -> OptimizeRequest:
    return OptimizeRequest(splits=panel, lm=gw.endpoint, mode="instruction_only",
                           budget=RolloutBudget(rollouts=8), seed=1, workdir=tmp / "w",
                           scope=scope, usage=gateway_usage_reader(gw, scope))


def test_synth_runs_on_a_model_the_sdk_does_not_list(panel: Any, tmp_path: Path,
                                                     synth_sandbox: Any) -> None:
    with sandbox(synth_sandbox), start_gateway(
            LMSettings(backend="sim", model=MODEL, base_url=None)) as gw:
        record, _ = run_case(create_optimizer("synth_mipro", **FAST),
                             request(panel, gw, tmp_path), results_dir=tmp_path / "r")
    assert record.status == "succeeded", record.error
    assert record.config.model == record.lm.model == MODEL
    assert record.details["synth"]["sdk_model"] == STAND_IN_MODEL
    # every LM call named the real model, never the SDK's stand-in
    assert record.usage["optimize"].calls > 0


def test_a_hosted_refusal_leaves_a_refused_record(panel: Any, tmp_path: Path,
                                                  synth_sandbox: Any) -> None:
    with sandbox(synth_sandbox, "sk_test_not_real"), start_gateway(
            LMSettings(backend="sim", model=MODEL, base_url=None)) as gw:
        record, path = run_case(create_optimizer("synth_mipro", backend="hosted", **FAST),
                                request(panel, gw, tmp_path), results_dir=tmp_path / "r")
        assert gw.usage() == {}
    assert record.status == "failed" and "does not offer model" in record.error
    assert record.details["refused"] and path.is_file()


def test_loopback_backends_get_the_localhost_tunnel() -> None:
    for url in ("http://127.0.0.1:8000", "http://localhost:9", "http://[::1]:80"):
        assert is_loopback_url(url) and tunnel_backend_name("hosted", url) == "Localhost"
    assert tunnel_backend_name("hosted", "https://api.usesynth.ai") == "CloudflareManagedLease"
    assert tunnel_backend_name("local", None) == "Localhost"


def test_synths_own_backend_on_localhost_runs_without_cloudflare(
        panel: Any, tmp_path: Path, synth_sandbox: Any) -> None:
    """--backend-url http://127.0.0.1:PORT + SYNTH_API_KEY (the hosted code path): the local
    backend served as an external one, reaching the LM through its own default URL."""
    from mipro_bench.offline.synth_backend import start_local_backend

    scope = "synth-loopback"
    with start_gateway(LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None)) as gw, \
            start_local_backend(api_key="sk_loop", lm_base_url=gw.endpoint.base_url(
                scope, "optimize"), lm_api_key=gw.token) as external, \
            sandbox(synth_sandbox, "sk_loop"):
        optimizer = create_optimizer("synth_mipro", backend="hosted",
                                     backend_url=external.url, poll_interval_s=0.2, **FAST)
        record, _ = run_case(optimizer, request(panel, gw, tmp_path, scope),
                             results_dir=tmp_path / "r")
    assert record.status == "succeeded", record.error
    synth = record.details["synth"]
    assert record.backend == "hosted" and synth["tunnel"] == "Localhost"
    assert synth["backend_url"] == external.url


@pytest.mark.parametrize("shape", ANSWER_SHAPES)
def test_the_adapter_reads_every_hosted_payload_shape(shape: str, panel: Any, tmp_path: Path,
                                                      synth_sandbox: Any) -> None:
    from mipro_bench.offline.synth_backend import start_local_backend

    with sandbox(synth_sandbox, "sk_shape"), \
            start_gateway(LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None)) as gw, \
            start_local_backend(api_key="sk_shape", answer_shape=shape) as external:
        optimizer = create_optimizer("synth_mipro", backend="local", backend_url=external.url,
                                     **FAST)
        record, _ = run_case(optimizer, request(panel, gw, tmp_path, f"shape-{shape}"),
                             results_dir=tmp_path / "r")
        (job,) = external.state.store.all()
    assert record.status == "succeeded", record.error
    synth = record.details["synth"]
    expected = {"local": ("best_prompt", "poll"), "best_reward": ("best_prompt", "poll"),
                "metadata": ("metadata.best_prompt", "poll"),
                "best_candidate": ("best_candidate", "poll"),
                "job_metadata": ("job_metadata.best_prompt", "poll"),
                "canonical": ("best_prompt", "canonical"),
                "system_state": ("system_state.candidates[best_candidate_id]",
                                 "system_state")}[shape]
    assert (synth["payload_shape"], synth["payload_route"]) == expected
    assert record.optimized_prompt is not None
    assert record.optimized_prompt.instruction == job.result["best_instruction"]
    assert record.results.best_val_score == job.result["best_score"]


def test_local_only_fields_never_decide_the_result() -> None:
    polled = {"status": "succeeded", "best_instruction": "LOCAL ONLY", "best_reward": 0.5,
              "best_score": 0.1,
              "metadata": {"best_prompt": {"messages": [{"role": "system", "pattern": "Hosted"}]}}}
    found = read_hosted_result("pl_x", polled)
    assert (found.instruction, found.shape) == ("Hosted", "metadata.best_prompt")
    assert (found.score, found.score_field) == (0.5, "best_reward")
    assert read_hosted_result("pl_x", {"best_instruction": "LOCAL ONLY"}).instruction is None
