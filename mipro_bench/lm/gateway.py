"""Start the LM gateway for a run: `with start_gateway(settings) as gw: ...`.

One gateway per run (or per pytest session) carries every LM call; what answers
behind it is the LM backend plugin's responder (`mipro_bench.lm.backends`: the
simulated policy, or a forwarder to the configured OpenAI-compatible server
holding the real key). The handle gives the
`LMEndpoint` everyone else uses (it carries the run's token), and direct
access to usage and knobs for the process that started it (other processes
use `LMEndpoint.usage()`).

Optionally the gateway journals every call (`journal_dir`) and answers from
a recording (`replay`, with `replay_mode` "resume" to continue live where the
recording ends, or "replay" to refuse anything not recorded; a pure replay
needs no LM at all).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipro_bench.lm.auth import new_token
from mipro_bench.lm.backends import get_backend
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.lm.gateway_app import Gateway, build_app
from mipro_bench.lm.journal import JournalWriter
from mipro_bench.lm.knobs import Knobs
from mipro_bench.lm.recording import Recording, write_session_meta
from mipro_bench.lm.replay import ReplayMode
from mipro_bench.lm.responders import NoLMResponder, Responder
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.lm.settings import LMSettings
from mipro_bench.lm.usage import UsageMap
from mipro_bench.serving import AppNetwork, RunningServer, ServerStartError, serve_in_thread

__all__ = ["GatewayHandle", "ServerStartError", "make_responder", "start_gateway"]


def make_responder(settings: LMSettings, *, sim_seed: int = 0,
                   retry: RetryPolicy | None = None) -> Responder:
    """What answers behind the gateway: the responder of the backend that resolved
    `settings` (`settings.plugin`, an `mipro_bench.lm_backends` entry point)."""
    return get_backend(settings.plugin).responder(settings, seed=sim_seed, retry=retry)


@dataclass
class GatewayHandle:
    """A running gateway. `endpoint` is what optimizers, task app and evaluators get."""

    settings: LMSettings
    server: RunningServer
    gateway: Gateway
    journal_dir: Path | None = field(default=None)
    # The in-process network the gateway is mounted on (the LM backend started one, e.g.
    # `--lm respx`); None when served on a port.
    network: AppNetwork | None = field(default=None)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        """The run's gateway token: every route wants it (`auth_headers` for raw HTTP)."""
        return self.gateway.token

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.gateway.token}"}

    @property
    def endpoint(self) -> LMEndpoint:
        return LMEndpoint(settings=self.settings, gateway_url=self.server.url,
                          token=self.gateway.token)

    def usage(self, optimizer: str | None = None) -> UsageMap:
        """{optimizer: {phase: PhaseUsage}} so far (optionally one optimizer's only)."""
        return self.gateway.ledger.snapshot(optimizer)

    def diagnostics(self) -> dict[str, Any]:
        """Token limits applied and request shapes downgraded so far (GET /diagnostics)."""
        return self.gateway.diagnostics()

    def retries(self, optimizer: str | None = None) -> dict[str, dict[str, int]]:
        """{optimizer: {phase: upstream retries}} the gateway made so far (forwarding only)."""
        return self.gateway.ledger.retries(optimizer)

    def reset_usage(self, optimizer: str | None = None) -> None:
        self.gateway.ledger.reset(optimizer)

    def set_knobs(self, **changes: Any) -> Knobs:
        """Change fault/latency knobs (see mipro_bench.lm.knobs.Knobs); returns the new knobs."""
        return self.gateway.set_knobs(changes)

    @property
    def knobs(self) -> Knobs:
        return self.gateway.faults.knobs


@contextlib.contextmanager
def start_gateway(
    settings: LMSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    knobs: Knobs | None = None,
    sim_seed: int = 0,
    retry: RetryPolicy | None = None,
    startup_timeout_s: float = 15.0,
    log_level: str = "warning",
    testing: bool = False,
    journal_dir: Path | None = None,
    replay: Recording | None = None,
    replay_mode: ReplayMode = "resume",
    network: AppNetwork | None = None,
) -> Iterator[GatewayHandle]:
    """Serve the gateway on host:port (0 = a free port) until the block ends; with
    `network`, mount it there instead (no socket: every httpx client reaches it in-process).

    `testing=True` lets `POST /admin/knobs` change fault injection (otherwise 403; the
    handle's `set_knobs` works either way). `journal_dir`: append every chat call to
    `<journal_dir>/<scope>.journal.jsonl`. `replay`: answer recorded calls from it, under
    `replay_mode` ("resume": the rest live; "replay": the rest refused with a 409, and no
    LM is started at all).

    Raises ServerStartError (bind failure, startup timeout) and LMBackendUnavailable when
    the backend cannot answer (e.g. the simulated policy cannot be loaded).
    """
    token = new_token()
    if replay is not None and replay_mode == "replay":
        responder: Responder = NoLMResponder(backend=replay.lm.backend, model=replay.model,
                                             simulated=replay.lm.simulated)
    else:
        responder = make_responder(settings, sim_seed=sim_seed, retry=retry)
    journal = None
    if journal_dir is not None:
        journal = JournalWriter(Path(journal_dir), secrets=(token, settings.api_key() or ""))
        write_session_meta(Path(journal_dir), settings)
    gateway = Gateway(responder, model=settings.model, token=token, knobs=knobs,
                      testing=testing, journal=journal,
                      replay=None if replay is None else replay.index(), replay_mode=replay_mode,
                      token_limits=settings.limits)
    app = build_app(gateway)
    served: contextlib.AbstractContextManager[RunningServer] = (
        network.mount(app, name="lm-gateway") if network is not None else serve_in_thread(
            app, host=host, port=port, health_headers={"Authorization": f"Bearer {token}"},
            startup_timeout_s=startup_timeout_s, name="lm-gateway", log_level=log_level))
    try:
        with served as server:
            yield GatewayHandle(settings=settings, server=server, gateway=gateway,
                                journal_dir=None if journal_dir is None else Path(journal_dir),
                                network=network)
    finally:
        if journal is not None:
            journal.close()  # also closed by the app's shutdown; idempotent
