"""The session fixtures, exercised the way users get them: in a pytest run of their own.

An inner pytest session (a subprocess, two xdist workers, the tiny data set,
the simulated LM, no conftest: the installed plugin brings the fixtures) uses
`task_app_server` (the `harness`'s task app), `tunnel`, `lm_endpoint` and
`synth_env`, and writes down the ports it got; the outer test then checks
that each worker had its own port, that the ports were released, and that
the synth-ai environment never leaked into tests that did not ask for it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.task_app_support import TINY_DIR

REPO = Path(__file__).resolve().parent.parent

INNER = '''
import json
import os
import httpx
import pytest

RECORD = os.environ["FIXTURE_RECORD"]
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def _record(**values):
    with open(RECORD, "a") as fh:
        fh.write(json.dumps({"worker": WORKER, **values}) + "\\n")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rollout_through_the_session_servers(task_app_server, lm_endpoint, splits, seed):
    assert 8015 <= task_app_server.port < 8115
    health = httpx.get(task_app_server.url + "/health", headers=task_app_server.headers)
    assert health.status_code == 200
    body = {"trace_correlation_id": f"fx-{seed}",
            "env": {"seed": seed, "config": {"split": "test"}},
            "policy": {"config": {"model": "gpt-4.1-nano",
                                  "inference_url": lm_endpoint.base_url("fixtures", "test_eval"),
                                  "api_key": lm_endpoint.api_key}}}
    out = httpx.post(task_app_server.url + "/rollout", json=body, headers=task_app_server.headers,
                     timeout=30).json()
    assert out["reward_info"]["details"]["example_id"] == splits.test[seed].id
    assert out["success_status"] == "success"
    assert "ENVIRONMENT_API_KEY" not in os.environ  # not leaked to tests that did not ask
    _record(port=task_app_server.port, gateway=lm_endpoint.gateway_url)


def test_task_app_server_is_the_harness_task_app(task_app_server, harness):
    from task_app.server import DEFAULT_PORT

    assert harness.task_app(port=DEFAULT_PORT) is task_app_server
    assert [s for s in harness.started if "task_app" in s] == [f"('task_app', {DEFAULT_PORT}, ())"]
    _record(harness=len(harness.started))


def test_tunnel_is_localhost_offline(tunnel, task_app_server):
    assert tunnel.backend.name == "Localhost"
    assert tunnel.url == f"http://localhost:{task_app_server.port}"
    assert httpx.get(tunnel.url + "/").json()["service"] == "banking77"
    _record(tunnel=tunnel.url)


def test_synth_env_is_scoped_to_the_test(synth_env, task_app_server):
    assert os.environ["ENVIRONMENT_API_KEY"] == task_app_server.api_key
    assert os.environ["SYNTH_LOCALAPI_AUTH_PERSIST"] == "0"
    assert os.environ["HOME"] == str(synth_env.home) and "synth-home" in os.environ["HOME"]
    _record(home=os.environ["HOME"])
'''


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_session_fixtures_per_worker(tmp_path: Path) -> None:
    import json

    (tmp_path / "test_inner.py").write_text(INNER)
    record = tmp_path / "record.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIXTURE_RECORD": str(record)}
    for name in ("ENVIRONMENT_API_KEY", "OPENAI_API_KEY", "BANKING77_DIR"):
        env.pop(name, None)
    home_before = env.get("HOME")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path / "test_inner.py"), "-q",
         "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path),
         "-o", "asyncio_default_fixture_loop_scope=function", "--durations=5",
         "-n", "2", "--mipro-lm", "sim", "--mipro-data-dir", str(TINY_DIR),
         "--mipro-train-size", "24", "--mipro-val-size", "12", "--mipro-test-size", "18"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    ports = {row["worker"]: set() for row in rows if "port" in row}
    for row in rows:
        if "port" in row:
            ports[row["worker"]].add(row["port"])
    # one task app per worker (same port within a worker, different ports across workers)
    assert all(len(p) == 1 for p in ports.values()), ports
    per_worker = [next(iter(p)) for p in ports.values()]
    assert len(set(per_worker)) == len(per_worker), ports
    assert sum(1 for row in rows if "port" in row) == 4
    assert any("tunnel" in row for row in rows) and any("home" in row for row in rows)
    assert any("harness" in row for row in rows)
    # every server was stopped: the ports are free again
    assert all(_free(port) for port in per_worker), per_worker
    assert os.environ.get("HOME") == home_before
