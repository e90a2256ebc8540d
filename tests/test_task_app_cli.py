"""`python -m task_app` / `mipro-task-app`: one-line errors, and a real start-serve-stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from task_app.cli import main
from tests.task_app_support import TINY_DIR, rollout_body

TINY_SIZES = ["--train-size", "24", "--val-size", "12", "--test-size", "18"]
REPO = Path(__file__).resolve().parent.parent


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("mipro-task-app: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("argv", "says"), [
    (["--port", "99999"], "between 0 and 65535"),
    (["--port", "http"], "expected a port number"),
    (["--train-size", "0"], "at least 1"),
    (["--val-size", "many"], "whole number"),
    (["--lm", "gpt"], "invalid choice"),
    (["--no-such-option"], "unrecognized arguments"),
])
def test_bad_options_are_one_line(argv: list[str], says: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert says in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(("argv", "says"), [
    (["--data-dir", "/no/such/dir"], "no such directory"),
    (["--data-dir", str(TINY_DIR), "--train-size", "1000"], "larger than"),
    (["--data-dir", str(TINY_DIR), "--host", " "], "--host"),
    (["--data-dir", str(TINY_DIR), *TINY_SIZES, "--lm", "openai"], "OPENAI_API_KEY"),
])
def test_unusable_setup_is_one_line(argv: list[str], says: str,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(argv) == 2
    assert says in _one_error_line(capsys.readouterr().err)


def test_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT_API_KEY", "cli-key")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--data-dir", str(TINY_DIR), *TINY_SIZES, "--port", str(port)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(port) in line and "--port" in line


def test_serves_until_interrupted(tmp_path: Path) -> None:
    """A real process: starts, answers the contract with its default (simulated) LM, stops."""
    env = {**os.environ, "ENVIRONMENT_API_KEY": "cli-key", "HOME": str(tmp_path),
           "SYNTH_LOCALAPI_AUTH_PERSIST": "0", "PYTHONPATH": str(REPO)}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "task_app", "--port", "0", "--data-dir", str(TINY_DIR),
         *TINY_SIZES], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        seen = []
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline() if proc.stderr else ""
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            match = re.search(r"task app on (http://\S+)", line)
            url = match.group(1) if match else None
        assert url, "".join(seen)
        assert any("simulated" in line for line in seen)  # the LM line says what it is
        headers = {"X-API-Key": "cli-key"}
        assert httpx.get(url + "/", trust_env=False).json()["service"] == "banking77"
        body = rollout_body(4, "unused")
        body["policy"]["config"] = {}  # no inference_url: the CLI's default LM answers
        response = httpx.post(url + "/rollout", json=body, headers=headers, timeout=30,
                              trust_env=False)
        assert response.status_code == 200, response.text
        details = response.json()["reward_info"]["details"]
        # The default (simulated) LM answered: an answer and the rule's verdict on it, no
        # error. It may be prose the rule cannot parse (the simulated LM drifts unless the
        # instruction pins the format), so the prediction itself may be None.
        assert details["error"] is None and details["raw_answer"]
        assert details["match"] in ("exact", "normalised", "sentence", "fuzzy", "none")
        assert (details["prediction"] is None) == (details["match"] == "none")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code in (0, 130, -signal.SIGINT)
