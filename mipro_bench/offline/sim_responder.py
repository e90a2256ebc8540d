"""The gateway's simulated responder: the deterministic policy behind HTTP.

The policy (mipro_bench.offline.sim) is plain synchronous Python; this adapter
makes its answers unmistakably simulated (system_fingerprint), turns its
request errors into 400s, and never prices them: a simulated call standing
in for gpt-4.1-nano costs nothing real and must not look like it did.
"""

from __future__ import annotations

import logging
from typing import Any

from mipro_bench.lm.backends import LMBackendUnavailable
from mipro_bench.lm.pricing import estimate_usd
from mipro_bench.lm.responders import SIMULATED_FINGERPRINT, InvalidChatRequest, Reply

log = logging.getLogger(__name__)


class PolicyUnavailable(LMBackendUnavailable):
    """The simulated LM policy is not importable (nothing can be simulated)."""


def _load_policy() -> tuple[type, type[Exception]]:
    try:
        from mipro_bench.offline.sim import policy
    except ImportError as exc:  # pragma: no cover - the package ships with the suite
        raise PolicyUnavailable(f"simulated LM policy cannot be imported: {exc}") from exc
    cls = getattr(policy, "SimulatedLM", None)
    err = getattr(policy, "SimRequestError", None)
    if cls is None:
        raise PolicyUnavailable(
            "mipro_bench.offline.sim.policy defines no SimulatedLM yet; the simulated LM is "
            "unavailable"
        )
    return cls, err if isinstance(err, type) and issubclass(err, Exception) else ValueError


class SimResponder:
    simulated = True
    backend = "sim"

    def __init__(self, *, model: str, seed: int = 0, malformed_rate: float = 0.0) -> None:
        self._cls, self._request_error = _load_policy()
        self._model = model
        self._seed = seed
        self._malformed_rate = malformed_rate
        self._policy = self._cls(seed=seed, malformed_rate=malformed_rate)

    def set_malformed_rate(self, rate: float) -> None:
        if rate != self._malformed_rate:
            self._policy = self._cls(seed=self._seed, malformed_rate=rate)
            self._malformed_rate = rate

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def complete(self, body: dict[str, Any]) -> Reply:
        # Inline on the event loop: the policy is fast pure Python, and a thread hop
        # would cost more than it saves on two cores.
        return self.complete_now(body)

    def complete_now(self, body: dict[str, Any]) -> Reply:
        """The same answer, synchronously (the respx router calls it from any client)."""
        try:
            response = self._policy.complete(body)
        except self._request_error as exc:
            raise InvalidChatRequest(f"invalid request for the simulated LM: {exc}") from exc
        if not isinstance(response, dict):
            raise TypeError(f"simulated policy returned {type(response).__name__}, not a dict")
        response["system_fingerprint"] = SIMULATED_FINGERPRINT
        return Reply(200, response, {"x-mipro-bench-simulated": "true"})

    def cost_of(self, response: dict[str, Any]) -> float | None:
        return None

    def estimate_of(self, response: dict[str, Any]) -> float | None:
        """What the call would have cost on the named model (an estimate, never a cost)."""
        usage = response.get("usage") or {}
        return estimate_usd(self._model, int(usage.get("prompt_tokens") or 0),
                            int(usage.get("completion_tokens") or 0))

    def model_ids(self) -> list[str]:
        return [self._model]
