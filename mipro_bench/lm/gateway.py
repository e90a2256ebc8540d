"""Start the LM gateway for a run: `with start_gateway(settings) as gw: ...`.

One gateway per run (or per pytest session) carries every LM call: the
simulated policy when settings say "sim", else a forwarder to the configured
OpenAI-compatible server holding the real key. The handle gives the
`LMEndpoint` everyone else uses, and direct access to usage and knobs for
the process that started it (other processes use `LMEndpoint.usage()`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.lm.forwarder import ForwardResponder
from mipro_bench.lm.gateway_app import Gateway, build_app
from mipro_bench.lm.knobs import Knobs
from mipro_bench.lm.responders import Responder
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.lm.settings import LMSettings
from mipro_bench.lm.usage import UsageMap
from mipro_bench.serving import RunningServer, ServerStartError, serve_in_thread

__all__ = ["GatewayHandle", "ServerStartError", "make_responder", "start_gateway"]


def make_responder(settings: LMSettings, *, sim_seed: int = 0,
                   retry: RetryPolicy | None = None) -> Responder:
    if settings.simulated:
        from mipro_bench.lm.sim_responder import SimResponder

        return SimResponder(model=settings.model, seed=sim_seed)
    return ForwardResponder(settings, retry=retry)


@dataclass
class GatewayHandle:
    """A running gateway. `endpoint` is what optimizers, task app and evaluators get."""

    settings: LMSettings
    server: RunningServer
    gateway: Gateway

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def endpoint(self) -> LMEndpoint:
        return LMEndpoint(settings=self.settings, gateway_url=self.server.url)

    def usage(self, optimizer: str | None = None) -> UsageMap:
        """{optimizer: {phase: PhaseUsage}} so far (optionally one optimizer's only)."""
        return self.gateway.ledger.snapshot(optimizer)

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
) -> Iterator[GatewayHandle]:
    """Serve the gateway on host:port (0 = a free port) until the block ends.

    Raises ServerStartError (bind failure, startup timeout) and, for the
    simulated backend, PolicyUnavailable when the policy cannot be loaded.
    """
    responder = make_responder(settings, sim_seed=sim_seed, retry=retry)
    gateway = Gateway(responder, model=settings.model, knobs=knobs)
    with serve_in_thread(build_app(gateway), host=host, port=port,
                         startup_timeout_s=startup_timeout_s, name="lm-gateway",
                         log_level=log_level) as server:
        yield GatewayHandle(settings=settings, server=server, gateway=gateway)
