"""One retry policy for every LM hop (gateway -> upstream, task app -> gateway).

Both hops fail the same ways (429 with Retry-After, 5xx, refused or reset
connections, timeouts), so they share one rule: retry those, wait what the
server asked for when it said (Retry-After / retry-after-ms), else back off
exponentially with jitter, and stop after a bounded number of attempts so a
run never hangs on a dead server. Anything else (400, 401, 404...) is the
caller's mistake and is not retried.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

# Connection-level failures worth another attempt: the server is restarting, the
# pool handed out a connection the server already closed, or the call timed out.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    httpx.TransportError,  # ConnectError, ReadError, RemoteProtocolError, timeouts...
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one LM call tries. `max_attempts` counts the first try."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    jitter_s: float = 0.5
    # A server asking for a longer pause than this gets this; a run should not
    # sleep for minutes on one call because a proxy said so.
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 (got {self.max_attempts})")
        if min(self.initial_backoff_s, self.max_backoff_s, self.jitter_s,
               self.max_retry_after_s) < 0:
            raise ValueError("backoff times must be >= 0")

    @classmethod
    def from_max_retries(cls, max_retries: int, **kw: float) -> RetryPolicy:
        """LMSettings speaks in retries (after the first try); tenacity in attempts."""
        return cls(max_attempts=max(0, max_retries) + 1, **kw)  # type: ignore[arg-type]


class RetryableStatus(Exception):
    """A response worth retrying; carries the server's requested pause, if any."""

    def __init__(self, status: int, retry_after_s: float | None, body: bytes = b"") -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after_s = retry_after_s
        self.body = body


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from retry-after-ms or Retry-After.

    Retry-After may be delta-seconds (we also accept fractions, as some
    OpenAI-compatible servers send) or an HTTP date. Unparseable -> None.
    """
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class WaitRetryAfterOrBackoff:
    """tenacity wait: the server's Retry-After when given (capped), else exp backoff + jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RetryableStatus) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.policy.max_retry_after_s)
        return self.backoff(retry_state.attempt_number)

    def backoff(self, attempt: int) -> float:
        """initial * 2^(attempt-1), capped, plus uniform jitter (spreads synchronized clients)."""
        p = self.policy
        base = min(p.max_backoff_s, p.initial_backoff_s * 2 ** max(0, attempt - 1))
        return base + random.uniform(0.0, p.jitter_s)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.UnsupportedProtocol):  # a wrong URL does not heal by waiting
        return False
    return isinstance(exc, (RetryableStatus, *RETRYABLE_ERRORS))


def raise_if_retryable(response: httpx.Response) -> None:
    """RetryableStatus (with the server's requested pause) for a 429/5xx-style answer."""
    if response.status_code in RETRYABLE_STATUS:
        raise RetryableStatus(response.status_code, parse_retry_after(response.headers),
                              response.content)


def retrying_kwargs(policy: RetryPolicy) -> dict[str, Any]:
    """Arguments for tenacity's (Async)Retrying that apply `policy`; the last error is re-raised
    so each hop can turn it into its own failure (LMCallError, a 502...)."""
    return {
        "stop": stop_after_attempt(policy.max_attempts),
        "wait": WaitRetryAfterOrBackoff(policy),
        "retry": retry_if_exception(is_retryable),
        "reraise": True,
    }
