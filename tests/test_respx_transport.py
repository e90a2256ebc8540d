"""`--lm respx`: the gateway mounted in-process, reached by every httpx client without a
socket, and DSPy's litellm engine sending the very calls its lm15 engine sends over one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import httpx
import pytest

from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.client import chat_sync
from mipro_bench.lm.dspy_lm import isolated_dspy_cache, make_dspy_lm
from mipro_bench.lm.fingerprint import canonical_request
from mipro_bench.lm.gateway import GatewayHandle
from mipro_bench.lm.journal import read_journal_dir
from mipro_bench.lm.run_lm import run_lm
from mipro_bench.lm.settings import LMConfigError, LMSettings
from mipro_bench.offline.inprocess import HOST_SUFFIX
from mipro_bench.offline.sim import SimulatedLM

QUERY = "my new card still has not arrived"


class Classify(dspy.Signature):
    """Classify the customer's banking query into exactly one intent."""

    query: str = dspy.InputField()
    intent: str = dspy.OutputField()


def settings_for(lm: str) -> LMSettings:
    settings, _ = resolve_lm_settings(lm=lm, env={})
    return settings


@pytest.fixture
def respx_gateway(tmp_path: Path) -> Iterator[GatewayHandle]:
    with run_lm(settings_for("respx"), journal_dir=tmp_path / "respx") as handle:
        yield handle


def test_lm_respx_is_the_simulated_lm_labelled_with_its_transport() -> None:
    settings, line = resolve_lm_settings(lm="respx", env={"OPENAI_API_KEY": "sk-x" * 8})
    assert settings.backend == "sim" and settings.simulated and settings.transport == "respx"
    assert settings.label == "gpt-4.1-nano [simulated, respx]"
    assert "in-process through respx (no LM socket)" in line and "\n" not in line
    assert settings_for("sim").transport == "http"


def test_lm_respx_with_an_api_base_is_a_one_line_error() -> None:
    with pytest.raises(LMConfigError, match="takes no --api-base"):
        resolve_lm_settings(lm="respx", api_base="http://127.0.0.1:8000/v1", env={})


def test_the_mounted_gateway_counts_checks_its_token_and_serves_usage(
        respx_gateway: GatewayHandle) -> None:
    endpoint = respx_gateway.endpoint
    assert respx_gateway.network is not None
    assert httpx.URL(respx_gateway.url).host.endswith(HOST_SUFFIX)  # no port was bound
    body = {"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": QUERY}]}
    answer = chat_sync(endpoint.base_url("case-a", "optimize"), endpoint.token, body)
    assert answer["system_fingerprint"] == "mipro-bench-simulated"
    refused = httpx.post(f"{respx_gateway.url}/v1/chat/completions", json=body)
    assert refused.status_code == 401  # the token check is the served gateway's
    usage = endpoint.usage("case-a")  # read over (in-process) HTTP, as a worker reads it
    assert usage["case-a"]["optimize"].calls == 1
    assert respx_gateway.usage("case-a")["case-a"]["optimize"].calls == 1


def test_dspy_switches_to_its_litellm_engine_spelling_the_limit_as_lm15_does(
        respx_gateway: GatewayHandle) -> None:
    lm = make_dspy_lm(respx_gateway.endpoint, "case", "baseline_eval", max_tokens=99)
    assert lm.kwargs.get("max_completion_tokens") == 99 and lm.kwargs.get("max_tokens") is None
    assert lm.engine == "litellm"


def calls_through(handle: GatewayHandle, journal: Path, **lm_kw: Any) -> list[tuple[str, str]]:
    """A Predict and a proposer-style Predict (n=1, temperature 1) through `handle`: the
    fingerprints the gateway journaled and the answers DSPy got."""
    lm = make_dspy_lm(handle.endpoint, "case", "optimize", **lm_kw)
    with isolated_dspy_cache(None), dspy.context(lm=lm):
        first = dspy.Predict(Classify)(query=QUERY)
        second = dspy.Predict(Classify, n=1, temperature=1.0)(query="I lost my card")
    entries = read_journal_dir(journal).entries
    return [(e.fingerprint, e.response["choices"][0]["message"]["content"])
            for e in entries] + [("answers", f"{first.intent}|{second.intent}")]


def test_litellm_through_respx_sends_the_calls_lm15_sends_over_a_socket(
        tmp_path: Path) -> None:
    with run_lm(settings_for("sim"), journal_dir=tmp_path / "served") as served:
        over_socket = calls_through(served, tmp_path / "served")
    with run_lm(settings_for("respx"), journal_dir=tmp_path / "respx") as mounted:
        in_process = calls_through(mounted, tmp_path / "respx")
    assert len(over_socket) == 3
    assert in_process == over_socket  # same fingerprints (so replayable), same answers


def test_n_1_is_the_default_spelled_out_for_replay_and_for_the_simulated_lm() -> None:
    body = {"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": QUERY}],
            "temperature": 1.0}
    assert canonical_request({**body, "n": 1}) == canonical_request(body)
    assert canonical_request({**body, "n": 2}) != canonical_request(body)
    lm = SimulatedLM()
    assert lm.complete({**body, "n": 1})["choices"] == lm.complete(body)["choices"]


def test_the_local_synth_backend_also_mounted_gives_jobs_an_in_process_inference_url(
        ) -> None:
    """The SDK reaches the backend's jobs API on its port (requests/aiohttp); a rollout's
    inference call goes to the same app mounted in-process: jobs are handed that URL."""
    from mipro_bench.offline.inprocess import InProcessNetwork
    from mipro_bench.offline.synth_backend import start_local_backend

    with InProcessNetwork() as network, start_local_backend(network=network) as backend:
        inference = backend.state.inference_url
        assert inference is not None and httpx.URL(inference).host.endswith(HOST_SUFFIX)
        assert httpx.get(f"{backend.url}/health", timeout=5).status_code == 200  # served
        # The interceptor behind the mount is this backend's: an unknown route is its 404.
        answer = httpx.post(f"{inference}/v1/r-none/c0/chat/completions", json={})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_route"
        assert network.requests == 1
    with start_local_backend() as served_only:
        assert served_only.state.inference_url is None  # jobs use the backend's own URL
