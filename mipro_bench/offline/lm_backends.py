"""The simulated LM as two LM backends: `sim` (the gateway served on 127.0.0.1) and
`respx` (the same gateway mounted in-process behind a respx router, no LM socket).

Both answer with the deterministic policy (`sim_responder.SimResponder`), stand in
for the named model, and say so: records carry backend "sim" and simulated=true,
and `respx` runs add transport "respx". Registered in the
`mipro_bench.lm_backends` entry-point group like any third party's backend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from mipro_bench.lm.backends import LMBackend, LMChoice, StartedLM
from mipro_bench.lm.responders import Responder
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.lm.settings import LMConfigError, LMSettings


class SimBackend(LMBackend):
    """The deterministic simulated LM behind the gateway on 127.0.0.1."""

    name = "sim"
    simulated = True

    def settings(self, choice: LMChoice) -> LMSettings:
        return LMSettings(backend="sim", base_url=None, simulated=True, **choice.common)

    def describe(self, settings: LMSettings, choice: LMChoice) -> str:
        return (f"LM: simulated (deterministic, offline) standing in for {settings.model} "
                f"({choice.why}); numbers are labelled 'simulated'")

    def responder(self, settings: LMSettings, *, seed: int = 0,
                  retry: RetryPolicy | None = None) -> Responder:
        from mipro_bench.offline.sim_responder import SimResponder

        return SimResponder(model=settings.model, seed=seed)


class RespxBackend(SimBackend):
    """The simulated LM with the gateway (and the interceptors) mounted in-process."""

    name = "respx"

    def settings(self, choice: LMChoice) -> LMSettings:
        if choice.api_base:
            raise LMConfigError("--lm respx is the simulated LM answered in-process; it takes "
                                "no --api-base")
        return LMSettings(backend="sim", base_url=None, transport="respx", simulated=True,
                          **choice.common)

    def describe(self, settings: LMSettings, choice: LMChoice) -> str:
        return (f"LM: simulated (deterministic, offline) standing in for {settings.model}, "
                "answered in-process through respx (no LM socket); numbers are labelled "
                "'simulated'")

    @contextlib.contextmanager
    def start(self, settings: LMSettings, *, say: Callable[[str], None] | None = None,
              replaying: bool = False) -> Iterator[StartedLM]:
        # Also for a replay: `--lm respx --replay` mounts the gateway in-process.
        from mipro_bench.offline.inprocess import InProcessNetwork

        with InProcessNetwork() as network:
            yield StartedLM(settings, network=network)


SIM = SimBackend()
RESPX = RespxBackend()
