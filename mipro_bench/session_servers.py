"""The servers a session shares: one task app, one interceptor, and what optimizers add.

Before, every Synth case and every task-app evaluation started its own task
app, interceptor, local backend and tunnel (about six servers a case). A
`SessionServers` starts each on first use and keeps it for the session (one per
pytest session or xdist worker, one per CLI run); every job and evaluation
keeps its own state in it (an interceptor route, a backend job, a gateway
scope), so sharing changes no result. Optimizer-specific servers (the local
Synth backend) come from `shared(key, factory)`, so this module never names an
optimizer. Closed in reverse order of starting when the session ends.

Beside them it holds the session's memo of baseline evaluations
(`baselines`, see `mipro_bench/shared_baselines.py`): both last one session and
travel to a case as one object (`OptimizeRequest.harness`).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mipro_bench.data import Splits
from mipro_bench.shared_baselines import SharedBaselines

if TYPE_CHECKING:
    from mipro_bench.serving import AppNetwork
    from mipro_bench.task_client.interceptor import Interceptor
    from task_app.server import TaskAppServer

T = TypeVar("T")
INTERCEPTOR_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class InterceptorServer:
    """The session's interceptor: register a route, send rollouts to `url`."""

    interceptor: Interceptor
    url: str


class SessionServers:
    """Lazily started, session-scoped servers; safe to ask for from any thread."""

    def __init__(self, splits: Splits, *, env_api_key: str | None = None,
                 network: AppNetwork | None = None) -> None:
        self.splits = splits
        # When the LM backend started an in-process network (`--lm respx`), the interceptor
        # is mounted on it too, so a task-app LM call never opens a socket after the task app.
        self.network = network
        # The task app's ENVIRONMENT_API_KEY: one per session, handed to the app directly.
        self.env_api_key = env_api_key or f"mipro-bench-env-{secrets.token_hex(16)}"
        self._stack = contextlib.ExitStack()
        self._lock = threading.RLock()
        self._items: dict[Hashable, Any] = {}
        self.started: list[str] = []  # what was started, in order (tests and perf read it)
        self.baselines = SharedBaselines()  # the session's baseline evaluations

    def shared(self, key: Hashable, factory: Callable[[], AbstractContextManager[T]]) -> T:
        """The value of `factory()` entered once per session under `key`."""
        with self._lock:
            if key not in self._items:
                self._items[key] = self._stack.enter_context(factory())
                self.started.append(str(key))
            return self._items[key]

    def task_app(self, *, port: int = 0, **options: Any) -> TaskAppServer:
        """The task app over the session's panel; one per distinct option set (e.g. a
        retry policy a test asks for), so a case's options still apply."""
        from task_app.server import serve_task_app

        key = ("task_app", port, tuple(sorted((k, repr(v)) for k, v in options.items())))
        return self.shared(key, lambda: serve_task_app(
            self.splits, env_api_key=self.env_api_key, port=port, **options))

    def interceptor(self) -> InterceptorServer:
        """The interceptor the suite's own task-app evaluations route through."""
        return self.shared("interceptor", lambda: _serve_interceptor(self.network))

    def close(self) -> None:
        with self._lock:
            self._items.clear()
            self._stack.close()

    def __enter__(self) -> SessionServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _serve_interceptor(network: AppNetwork | None) -> Iterator[InterceptorServer]:
    from mipro_bench.serving import serve_in_thread
    from mipro_bench.task_client.interceptor import Interceptor, interceptor_app

    interceptor = Interceptor(timeout_s=INTERCEPTOR_TIMEOUT_S)
    app = interceptor_app(interceptor)
    with (network.mount(app, name="interceptor") if network is not None
          else serve_in_thread(app, name="interceptor")) as served:
        yield InterceptorServer(interceptor=interceptor, url=served.url)


@contextlib.contextmanager
def private_servers(splits: Splits) -> Iterator[SessionServers]:
    """Servers for one call that was given none (a direct adapter call in a script)."""
    with SessionServers(splits) as servers:
        yield servers
