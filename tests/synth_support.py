"""Helpers for the Synth tests: a counting (or failing) task app, a local backend on the LM.

Nothing here fakes a component: the task app is the real one with an ASGI
wrapper that counts `POST /rollout` (or answers them 500, a broken task app),
and the backend is the real local backend. The recording LM is in
tests/lm_support.py.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mipro_bench.data import Splits
from mipro_bench.lm.gateway import GatewayHandle
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.offline.synth_backend import LocalBackend, start_local_backend
from mipro_bench.serving import serve_in_thread
from task_app.app import build_task_app

FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.02, jitter_s=0)
SCOPE = "synth-test"


@dataclass
class CountingTaskApp:
    url: str
    port: int
    api_key: str
    rollouts: int = 0
    fail_rollouts: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)


class _Counter:
    """ASGI wrapper around the task app: counts POST /rollout, or answers them 500."""

    def __init__(self, app: Any, state: CountingTaskApp) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/rollout" and scope["method"] == "POST":
            with self.state._lock:
                self.state.rollouts += 1
            if self.state.fail_rollouts:
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body",
                            "body": b'{"detail": "task app broken on purpose"}'})
                return
        await self.app(scope, receive, send)


@contextlib.contextmanager
def counting_task_app(splits: Splits, env_api_key: str, *, fail_rollouts: bool = False
                      ) -> Iterator[CountingTaskApp]:
    app = build_task_app(splits, env_api_key=env_api_key, retry=FAST_RETRY, lm_timeout_s=5.0)
    state = CountingTaskApp(url="", port=0, api_key=env_api_key, fail_rollouts=fail_rollouts)
    with serve_in_thread(_Counter(app, state), name="counting task app",
                         health_headers={"X-API-Key": env_api_key}) as running:
        state.url, state.port = running.url, running.port
        yield state


@contextlib.contextmanager
def local_backend_for(gateway: GatewayHandle, scope: str = SCOPE) -> Iterator[LocalBackend]:
    endpoint = gateway.endpoint
    with start_local_backend(lm_base_url=endpoint.base_url(scope, "optimize"),
                             lm_api_key=endpoint.api_key) as backend:
        yield backend
