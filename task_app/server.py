"""Serve the task app in-process for a run or a test session: `with serve_task_app(...) as ta`.

The session fixture, the Synth adapter's runner and anything else that needs
a live task app use this one function, so they all get the same port rule
(8015, the earlier benchmark's port, or the next free one: several pytest-xdist
workers each get their own) and the same health check (an authenticated GET
/health, so a wrong key fails at start, not at the first rollout).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mipro_bench.data import Splits
from mipro_bench.serving import DEFAULT_HOST, serve_in_thread
from task_app.app import build_task_app

DEFAULT_PORT = 8015
PORT_SEARCH = 100


@dataclass(frozen=True)
class TaskAppServer:
    url: str
    host: str
    port: int
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        """Authentication headers of the task-app contract."""
        return {"X-API-Key": self.api_key}


@contextmanager
def serve_task_app(
    splits: Splits,
    *,
    env_api_key: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    search: int = PORT_SEARCH,
    startup_timeout_s: float = 15.0,
    log_level: str = "warning",
    **app_options: Any,
) -> Iterator[TaskAppServer]:
    """Build the app over `splits` and serve it until the block ends (port released after).

    Raises mipro_bench.serving.ServerStartError when no port in
    [port, port+search) is free or the app is not healthy within the timeout.
    `app_options` go to `build_task_app` (default_policy, retry, lm_timeout_s...).
    """
    app = build_task_app(splits, env_api_key=env_api_key, **app_options)
    with serve_in_thread(
        app,
        host=host,
        port=port,
        search=search if port else 1,
        health_path="/health",
        health_headers={"X-API-Key": env_api_key},
        startup_timeout_s=startup_timeout_s,
        name="task app",
        log_level=log_level,
    ) as running:
        yield TaskAppServer(url=running.url, host=running.host, port=running.port,
                            api_key=env_api_key)
