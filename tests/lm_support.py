"""The simulated LM behind a real local gateway, and a recorder of what the LM itself answered.

Nothing here fakes the LM: the gateway and its simulated policy are the real
ones; `RecordingResponder` only wraps the responder so a test can see the
request bodies the LM answered (and how many), independent of the gateway's
own usage ledger.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.settings import resolve_lm_settings


def sim_gateway() -> contextlib.AbstractContextManager[GatewayHandle]:
    """A gateway on the simulated LM, with the settings a run without keys resolves to."""
    settings, _ = resolve_lm_settings(env={})
    return start_gateway(settings)


class RecordingResponder:
    """Wraps the gateway's responder: every request body the LM itself answered."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    async def complete(self, body: dict[str, Any]) -> Any:
        reply = await self.inner.complete(body)
        with self._lock:
            self.bodies.append(body)
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def calls(self) -> int:
        """How many calls the LM answered."""
        with self._lock:
            return len(self.bodies)

    def policy_systems(self) -> list[str]:
        """System messages of the classification calls (the ones with the forced tool)."""
        with self._lock:
            return [b["messages"][0]["content"] for b in self.bodies if b.get("tools")]


@contextlib.contextmanager
def recording_gateway() -> Iterator[tuple[GatewayHandle, RecordingResponder]]:
    """A simulated-LM gateway whose responder records what it answered."""
    with sim_gateway() as handle:
        recorder = RecordingResponder(handle.gateway.responder)
        handle.gateway.responder = recorder
        yield handle, recorder
