"""The hosted Synth path refused (issue 18, item 6): every way ends as one line naming what
was refused and pointing at the local path, in a refused record, and the seed CLI exits 2
with that line, no traceback.

Synth's service is faked by a small HTTP server on 127.0.0.1 that answers the refusals
(the SDK's job calls use `requests`, its tunnel lease httpx: only a real server fakes both).
A loopback backend URL with SYNTH_API_KEY runs the hosted code path (kind "hosted") with
the Localhost tunnel; the tunnel tests force the Cloudflare lease against the same fake.
Nothing contacts a real host."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import run_synth_mipro_banking77 as script
from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.settings import LMSettings
from mipro_bench.optimizers import create_optimizer
from mipro_bench.optimizers.base import OptimizeRequest
from mipro_bench.optimizers.synth_job import SDK_AUTH_LOGGER
from mipro_bench.optimizers.synth_mipro import RolloutBudget
from mipro_bench.optimizers.synth_refusals import (
    LOCAL_PATH,
    HttpAnswer,
    refusal_line,
    sdk_http_answer,
)
from mipro_bench.runner import gateway_usage_reader, run_case
from mipro_bench.serving import serve_in_thread
from tests.cli_support import call_main
from tests.task_app_support import tiny_splits

FAST = {"lm_max_attempts": 1, "batch_size": 4, "num_candidates": 2, "examples_per_proposal": 8,
        "eval_concurrency": 4, "max_concurrent": 4, "poll_interval_s": 0.05}
KEY = "sk_fake_hosted"
SUBMIT = "/api/policy-optimization/online/jobs"
LEASE = "/api/v1/tunnels/lease"
TUNNEL_BODY = ('{"detail": "Cloudflare tunnel URLs are no longer accepted. Use SynthTunnel or '
               'a Synth-managed ngrok-compatible URL."}')


@dataclass
class FakeHosted:
    """What the fake Synth service answers: `submit` and `lease` are (status, body); the
    paths it was asked for are kept so a test can see how far the SDK got."""

    submit: tuple[int, str] = (404, '{"detail": "Not Found"}')
    lease: tuple[int, str] = (403, '{"detail": "forbidden"}')
    url: str = ""
    asked: list[str] = field(default_factory=list)


def _app(fake: FakeHosted) -> Starlette:
    def answer(status_body: tuple[int, str]) -> Response:
        status, body = status_body
        return Response(body, status_code=status, media_type="application/json")

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def submit(request: Request) -> Response:
        fake.asked.append(f"POST {request.url.path}")
        return answer(fake.submit)

    async def lease(request: Request) -> Response:
        fake.asked.append(f"POST {request.url.path}")
        return answer(fake.lease)

    async def other(request: Request) -> Response:  # env-key upload and anything else
        fake.asked.append(f"{request.method} {request.url.path}")
        return answer((404, '{"detail": "Not Found"}'))

    return Starlette(routes=[
        Route("/api/health", health), Route("/health", health),
        Route(SUBMIT, submit, methods=["POST"]), Route(LEASE, lease, methods=["POST"]),
        Route("/{path:path}", other, methods=["GET", "POST"]),
    ])


@contextlib.contextmanager
def fake_hosted(**answers: Any) -> Iterator[FakeHosted]:
    fake = FakeHosted(**answers)
    with serve_in_thread(_app(fake), name="fake hosted Synth") as running:
        fake.url = running.url
        yield fake


@pytest.fixture(scope="module")
def panel() -> Any:
    return tiny_splits()


@pytest.fixture
def hosted_env(synth_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    synth_sandbox.apply(monkeypatch)
    monkeypatch.setenv("SYNTH_API_KEY", KEY)
    monkeypatch.delenv("SYNTH_BACKEND_URL", raising=False)


def request(panel: Any, gw: GatewayHandle, tmp: Path, scope: str) -> OptimizeRequest:
    return OptimizeRequest(splits=panel, lm=gw.endpoint, mode="instruction_only",
                           budget=RolloutBudget(rollouts=8), seed=1, workdir=tmp / "w",
                           scope=scope, usage=gateway_usage_reader(gw, scope))


def run_hosted(panel: Any, tmp: Path, fake: FakeHosted, scope: str) -> Any:
    with start_gateway(LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None)) as gw:
        optimizer = create_optimizer("synth_mipro", backend="hosted", backend_url=fake.url,
                                     **FAST)
        record, path = run_case(optimizer, request(panel, gw, tmp, scope),
                                results_dir=tmp / "r")
    assert path.is_file()
    return record


def assert_refused(record: Any, *fragments: str) -> str:
    """A failed record whose error is `refused: <one line>` naming what was refused and the
    local path; returns the line."""
    assert record.status == "failed"
    assert record.error.startswith("refused: "), record.error
    line = record.details["refused"]
    assert record.error == f"refused: {line}" and "\n" not in line
    for fragment in (*fragments, LOCAL_PATH, "synth-optimizers"):
        assert fragment in line, line
    assert record.details["failed_phase"] == "optimize"
    return line


# --- the refusal lines themselves ----------------------------------------------------------


def test_the_sdks_error_texts_give_back_status_and_body() -> None:
    submit = RuntimeError('Job submission failed with status 410: {"detail": "gone"}\n\n'
                          "Possible causes:\n1. Backend route ... not registered")
    assert sdk_http_answer(submit) == HttpAnswer(410, '{"detail": "gone"}')
    cause = RuntimeError("Prompt learning status failed: HTTP 404 {\"detail\":\"x\"}")
    try:
        try:
            raise cause
        except RuntimeError as inner:
            raise RuntimeError("Polling failed after 5 consecutive errors.") from inner
    except RuntimeError as polled:
        assert sdk_http_answer(polled) == HttpAnswer(404, '{"detail":"x"}')
    assert sdk_http_answer(RuntimeError("Response missing job ID")) is None


def test_only_refusals_become_refusal_lines() -> None:
    url = "https://api.example/api/policy-optimization/online/jobs"
    for status, body in ((500, "boom"), (400, '{"detail": "bad batch_size"}'), (429, "")):
        assert refusal_line(HttpAnswer(status, body), method="POST", url=url) is None
    line = refusal_line(HttpAnswer(400, TUNNEL_BODY), method="POST", url=url,
                        tunnel_url="https://x.trycloudflare.com")
    assert line is not None and "https://x.trycloudflare.com" in line and "SynthTunnel" in line


# --- the hosted path against a fake service that refuses it ---------------------------------


@pytest.mark.parametrize(("status", "body", "fragments"), [
    (404, '{"detail": "Not Found"}', (f"POST {{url}}{SUBMIT} answered 404", "route gone",
                                      "/api/v1/offline/jobs")),
    (410, '{"detail": "Gone: use /api/v1/offline/jobs"}', ("answered 410", "route gone",
                                                          "/api/v1/offline/jobs")),
    (400, TUNNEL_BODY, ("refused the task app's Cloudflare tunnel URL", "answered 400",
                        "SynthTunnel or Synth-managed tunnels only")),
    (422, '{"detail": [{"msg": "task_app_url: cloudflare tunnels are not supported"}]}',
     ("Cloudflare tunnel URL", "answered 422")),
    (401, '{"detail": "Invalid API key"}', ("rejected SYNTH_API_KEY", "answered 401",
                                            "Invalid API key")),
    (403, '{"detail": "forbidden"}', ("rejected SYNTH_API_KEY", "answered 403")),
])
def test_a_refused_submit_is_one_line_in_a_refused_record(
        status: int, body: str, fragments: tuple[str, ...], panel: Any, tmp_path: Path,
        hosted_env: None) -> None:
    with fake_hosted(submit=(status, body)) as fake:
        record = run_hosted(panel, tmp_path, fake, f"refused-{status}")
        fragments = tuple(f.replace("{url}", fake.url) for f in fragments)
    assert f"POST {SUBMIT}" in fake.asked
    assert_refused(record, *fragments)
    assert record.results.baseline_test_accuracy is not None  # what finished is kept


def test_any_other_submit_failure_stays_an_ordinary_failure(panel: Any, tmp_path: Path,
                                                            hosted_env: None) -> None:
    with fake_hosted(submit=(500, '{"detail": "internal"}')) as fake:
        record = run_hosted(panel, tmp_path, fake, "submit-500")
    assert record.status == "failed" and "refused" not in record.details
    assert record.error.startswith("SynthJobFailed: submitting the Synth job")


@pytest.fixture
def cloudflare_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hosted path's real tunnel (a Cloudflare lease), even for the loopback fake, and a
    fresh synth-ai tunnel manager (a process-wide singleton bound to its first backend)."""
    from synth_ai.core.tunnels import manager

    from mipro_bench.optimizers import synth_job

    monkeypatch.setattr(synth_job, "tunnel_backend_name",
                        lambda kind, url: "CloudflareManagedLease")
    monkeypatch.setattr(manager, "_manager", None)


@pytest.mark.parametrize(("status", "fragments"), [
    (403, ("rejected SYNTH_API_KEY", f"{LEASE} answered 403")),
    (404, ("route gone", f"{LEASE} answered 404")),
])
def test_a_refused_tunnel_lease_is_one_line_before_any_submit(
        status: int, fragments: tuple[str, ...], panel: Any, tmp_path: Path,
        hosted_env: None, cloudflare_lease: None) -> None:
    with fake_hosted(lease=(status, '{"detail": "no"}')) as fake:
        record = run_hosted(panel, tmp_path, fake, f"lease-{status}")
    assert f"POST {LEASE}" in fake.asked and f"POST {SUBMIT}" not in fake.asked
    assert_refused(record, *fragments)


def test_cloudflared_missing_here_is_one_line(panel: Any, tmp_path: Path, hosted_env: None,
                                             cloudflare_lease: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What the lease path raises once the lease is granted and cloudflared is not on this
    machine (it cannot be downloaded offline): raised here without granting a real lease."""
    from synth_ai.core.tunnels import TunneledLocalAPI
    from synth_ai.core.tunnels.errors import ConnectorNotInstalledError

    async def no_cloudflared(*_args: Any, **_kwargs: Any) -> Any:
        raise ConnectorNotInstalledError()

    monkeypatch.setattr(TunneledLocalAPI, "create", no_cloudflared)
    with fake_hosted() as fake:
        record = run_hosted(panel, tmp_path, fake, "no-cloudflared")
    assert_refused(record, "could not open the CloudflareManagedLease tunnel",
                   "cloudflared is not installed")


# --- the seed CLI -----------------------------------------------------------------------------


def test_the_seed_cli_exits_2_with_the_one_line(tiny_data_dir: Path, tmp_path: Path,
                                                hosted_env: None,
                                                capsys: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake refuses the env-key upload too (404): synth-ai's warning about it is kept
    back, so the refusal is the only error line."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env nearby
    with fake_hosted(submit=(410, '{"detail": "Gone"}')) as fake:
        code, err = call_main(script.main, [
            "--backend-url", fake.url, "--rollouts", "4", "--data-dir", str(tiny_data_dir),
            "--train-size", "6", "--val-size", "3", "--test-size", "3", "--task-app-port", "0",
            "--results-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and "Traceback" not in err
    assert "GET /api/v1/crypto/public-key" in fake.asked
    assert not [r for r in caplog.records if r.name == SDK_AUTH_LOGGER]
    (line,) = [x for x in err.splitlines() if x.startswith("run_synth_mipro_banking77.py")]
    assert f"POST {fake.url}{SUBMIT} answered 410" in line and LOCAL_PATH in line
    (written,) = (tmp_path / "r").glob("banking77_synth_mipro_*.json")
    record = json.loads(written.read_text())
    assert record["status"] == "failed"
    assert line.startswith(f"run_synth_mipro_banking77.py: error: {record['details']['refused']}")
