"""What a responder is: the part of the gateway that turns a chat request into an answer.

The gateway (routing, accounting, fault knobs) is the same whether answers
come from the simulated policy or from a real server; only this small
interface differs, so the accounting cannot drift between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

SIMULATED_FINGERPRINT = "mipro-bench-simulated"


class InvalidChatRequest(ValueError):
    """The client's request cannot be answered as sent (the gateway answers 4xx)."""

    def __init__(self, message: str, status: int = 400,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body  # an OpenAI-style error body to relay as is (from an upstream)


class UpstreamFailure(Exception):
    """The upstream server could not give an answer after the retry bound (answered 502)."""

    def __init__(self, message: str, *, status: int | None, attempts: int) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


@dataclass(frozen=True)
class Reply:
    """An answer for the client: an OpenAI-style JSON body with its HTTP status."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    # Upstream attempts it took (a forwarder's retries); never sent to the client.
    attempts: int = field(default=1, compare=False)


class Responder(Protocol):
    simulated: bool
    backend: str

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def complete(self, body: dict[str, Any]) -> Reply:
        """Answer one chat-completions body; raise InvalidChatRequest / UpstreamFailure."""
        ...

    def cost_of(self, response: dict[str, Any]) -> float | None:
        """Dollar cost of a successful response, None when no price is known."""
        ...

    def model_ids(self) -> list[str]: ...


class NoLMResponder:
    """The responder of a pure-replay gateway: every answer comes from the recording, so
    nothing is loaded (no simulated policy, no upstream client, no key). Reaching
    `complete` is a gateway bug: replay refuses unrecorded calls before asking."""

    def __init__(self, *, backend: str, model: str, simulated: bool) -> None:
        self.backend = backend
        self.simulated = simulated
        self._model = model

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def complete(self, body: dict[str, Any]) -> Reply:
        raise RuntimeError("a pure-replay gateway has no LM to ask")

    def cost_of(self, response: dict[str, Any]) -> float | None:
        return None

    def model_ids(self) -> list[str]:
        return [self._model]
