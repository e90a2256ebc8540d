"""Start the local Synth backend: `with start_local_backend(...) as backend: backend.url`.

Served in-process on 127.0.0.1 (a free port by default) with the suite's
uvicorn-in-a-thread plumbing. The handle carries the URL, an API key the
backend accepts, and the state (jobs, interceptor) for tests that want to
look inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from mipro_bench.offline.synth_backend.app import BackendSettings, BackendState, create_app
from mipro_bench.offline.synth_backend.auth import new_api_key
from mipro_bench.serving import AppNetwork, RunningServer, serve_in_thread


@dataclass
class LocalBackend:
    server: RunningServer
    api_key: str
    state: BackendState

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.contextmanager
def start_local_backend(
    *,
    api_key: str | None = None,
    lm_base_url: str | None = None,
    lm_api_key: str | None = None,
    default_env_api_key: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    answer_shape: str = "local",
    network: AppNetwork | None = None,
) -> Iterator[LocalBackend]:
    """`answer_shape`: the payload shape job views answer in (synth_backend.shapes).

    `network` (`--lm respx`): the app is also mounted there, and jobs hand task apps the
    mount's URL for their inference calls, so a rollout's LM call reaches this backend's
    interceptor (and through it the LM) without a socket; the SDK, which speaks
    requests/aiohttp, still reaches the jobs API on the served port."""
    from mipro_bench.offline.synth_backend.shapes import ANSWER_SHAPES

    if answer_shape not in ANSWER_SHAPES:
        raise ValueError(f"answer_shape must be one of {', '.join(ANSWER_SHAPES)} "
                         f"(got {answer_shape!r})")
    key = api_key or new_api_key()
    settings = BackendSettings(api_keys=(key,), default_env_api_key=default_env_api_key,
                               lm_base_url=lm_base_url, lm_api_key=lm_api_key,
                               answer_shape=answer_shape)
    app = create_app(settings)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(serve_in_thread(
            app, host=host, port=port, health_path="/health", name="local-synth-backend",
            log_level=log_level))
        if network is not None:  # one app, two doors: its lifespan is the served one's
            mounted = stack.enter_context(network.mount(app, name="local-synth-backend",
                                                        lifespan=False))
            app.state.backend.inference_url = mounted.url
        yield LocalBackend(server=server, api_key=key, state=app.state.backend)
