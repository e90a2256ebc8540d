"""Fail fast on a broken LM (issue 21, item 3): before any case, one one-token completion
straight to the upstream; a rejected key, an unknown model, a refused connection or a
server that does not answer is one line and exit 2, and no record claims a case ran.

The upstream is a tiny real HTTP server on 127.0.0.1 that answers as it is told.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import run_dspy_mipro_banking77 as dspy_script
from mipro_bench.lm.preflight import PreflightFailed, check_endpoint
from mipro_bench.lm.settings import LMSettings
from mipro_bench.serving import find_free_port
from tests.cli_support import call_main

OK = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
      "choices": [{"index": 0, "finish_reason": "length",
                   "message": {"role": "assistant", "content": "OK"}}],
      "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


@contextlib.contextmanager
def upstream(status: int, body: dict[str, Any], *, delay_s: float = 0.0
             ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(base URL, the requests it received) of a server answering every POST with
    `status`/`body` after `delay_s`."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append({"path": self.path, "auth": self.headers.get("authorization"),
                         "body": json.loads(raw or b"{}")})
            time.sleep(delay_s)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def settings(base_url: str, **kw: Any) -> LMSettings:
    return LMSettings(backend="compatible", model="gpt-4.1-nano", base_url=base_url,
                      api_key_env="OPENAI_API_KEY", **kw)


def test_a_working_server_passes_with_one_one_token_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with upstream(200, OK) as (url, seen):
        check_endpoint(settings(url))
    (request,) = seen
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    assert request["body"]["max_tokens"] == 1 and request["body"]["model"] == "gpt-4.1-nano"


@pytest.mark.parametrize(("status", "body", "expected"), [
    (401, {"error": {"message": "Incorrect API key provided: sk-te**"}},
     "rejected the API key ($OPENAI_API_KEY): HTTP 401: Incorrect API key"),
    (403, {"error": {"message": "forbidden"}}, "rejected the API key"),
    (404, {"error": {"message": "The model `gpt-4.1-nanoo` does not exist"}},
     "does not serve model 'gpt-4.1-nano': HTTP 404"),
    (400, {"error": {"message": "model 'x' not found, try pulling it first"}},
     "does not serve model"),
    (500, {"error": {"message": "boom"}}, "with HTTP 500: boom"),
])
def test_each_broken_answer_is_one_line_naming_the_cause(status: int, body: dict[str, Any],
                                                         expected: str) -> None:
    with upstream(status, body) as (url, _), pytest.raises(PreflightFailed) as caught:
        check_endpoint(settings(url))
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("status", "body"), [
    (429, {"error": {"message": "Rate limit reached"}}),  # up, key taken: the gateway waits
    (400, {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with "
                                "this model. Use 'max_completion_tokens' instead."}}),
])
def test_a_server_that_is_up_and_takes_the_key_passes(status: int,
                                                      body: dict[str, Any]) -> None:
    with upstream(status, body) as (url, _):
        check_endpoint(settings(url))


def test_a_refused_connection_and_a_silent_server_are_one_line() -> None:
    dead = f"http://127.0.0.1:{find_free_port()}/v1"
    with pytest.raises(PreflightFailed, match="refused the connection or cannot be reached"):
        check_endpoint(settings(dead))
    with upstream(200, OK, delay_s=3.0) as (url, _), \
            pytest.raises(PreflightFailed, match=r"did not answer .* within 0.5 s"):
        check_endpoint(settings(url), timeout_s=0.5)


def test_no_upstream_url_means_nothing_to_check() -> None:
    check_endpoint(LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None))


def test_a_rejected_key_ends_the_cli_before_any_case(
        tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed CLI with a key the upstream rejects: exit 2, one line naming the cause, no
    record, and the only request that reached the server is the one-token check."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    results = tmp_path / "results"
    with upstream(401, {"error": {"message": "Incorrect API key provided"}}) as (url, seen):
        code, err = call_main(dspy_script.main, [
            "--trials", "1", "--train-size", "6", "--val-size", "6", "--test-size", "6",
            "--data-dir", str(tiny_data_dir), "--api-base", url,
            "--results-dir", str(results)], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "rejected the API key" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert len(seen) == 1 and seen[0]["body"]["max_tokens"] == 1
    assert not results.exists() or not list(results.glob("banking77_*.json"))
