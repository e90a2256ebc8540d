"""The chat client the task app and the local Synth backend call the LM with.

A rollout must end in a score even when the LM misbehaves, so a call either
returns the chat.completion dict or raises `LMCallError` (with the last
status and the number of attempts) after a bounded number of retries: the
caller scores the rollout as failed instead of hanging or crashing. Retries
follow the shared policy in `mipro_bench.lm.retry` (429/5xx/connection
errors, Retry-After honoured, exponential backoff with jitter).

One `ChatClient` holds one connection pool; the module-level `chat()` keeps
one shared client per event loop, since an httpx pool cannot cross loops.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import AsyncRetrying, Retrying

from mipro_bench.lm.retry import (
    RetryableStatus,
    RetryPolicy,
    raise_if_retryable,
    retrying_kwargs,
)
from mipro_bench.lm.transport import json_headers, pool_options

DEFAULT_TIMEOUT_S = 60.0


class LMCallError(Exception):
    """An LM call that failed for good. `status` is None when no HTTP answer came back."""

    def __init__(self, message: str, *, status: int | None, attempts: int, url: str) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.url = url


def _completions_url(base_url: str) -> str:
    """{base_url}/chat/completions. A URL that already ends in /chat/completions is kept, and
    a query string stays at the end (Synth interceptor URLs can carry one, e.g. ?cid=...)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit(parts._replace(path=path))


def _check(response: httpx.Response, url: str) -> dict[str, Any]:
    """The JSON of a good answer; RetryableStatus to retry; LMCallError to give up now."""
    raise_if_retryable(response)
    status = response.status_code
    if status != 200:
        raise LMCallError(f"LM call to {url} failed with HTTP {status}: "
                          f"{_error_message(response.content)}", status=status, attempts=1,
                          url=url)
    try:
        data = json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LMCallError(f"LM call to {url} answered 200 with a body that is not JSON",
                          status=status, attempts=1, url=url) from None
    if not isinstance(data, dict):
        raise LMCallError(f"LM call to {url} answered 200 with JSON that is not an object",
                          status=status, attempts=1, url=url)
    return data


def _error_message(content: bytes, limit: int = 300) -> str:
    try:
        data = json.loads(content)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
        message = content.decode("utf-8", "replace")
    return str(message)[:limit]


def _final_error(exc: BaseException, attempts: int, url: str) -> LMCallError:
    if isinstance(exc, LMCallError):
        exc.attempts = attempts
        return exc
    if isinstance(exc, RetryableStatus):
        return LMCallError(f"LM call to {url} failed with HTTP {exc.status} on all {attempts} "
                           f"attempts: {_error_message(exc.body)}", status=exc.status,
                           attempts=attempts, url=url)
    return LMCallError(f"LM call to {url} failed after {attempts} attempts: "
                       f"{type(exc).__name__}: {exc}", status=None, attempts=attempts, url=url)


class ChatClient:
    """Async chat-completions client with a shared pool, a timeout and bounded retries."""

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy | None = None,
                 max_connections: int = 64) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(**pool_options(timeout_s, max_connections))

    async def chat(self, base_url: str, api_key: str | None, body: Mapping[str, Any],
                   ) -> dict[str, Any]:
        """POST {base_url}/chat/completions; the chat.completion dict, or LMCallError."""
        url = _completions_url(base_url)
        payload = json.dumps(body).encode()
        headers = json_headers(api_key)
        attempts = 0
        try:
            async for attempt in AsyncRetrying(**retrying_kwargs(self.retry)):
                with attempt:
                    attempts += 1
                    response = await self._http.post(url, content=payload, headers=headers)
                    return _check(response, url)
        except (LMCallError, RetryableStatus, httpx.HTTPError) as exc:
            raise _final_error(exc, attempts, url) from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ChatClient] = (
    weakref.WeakKeyDictionary())


async def chat(base_url: str, api_key: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
    """One chat call through this event loop's shared `ChatClient` (default timeout/retries)."""
    loop = asyncio.get_running_loop()
    client = _shared.get(loop)
    if client is None:
        client = _shared[loop] = ChatClient()
    return await client.chat(base_url, api_key, body)


class SyncChatClient:
    """The same contract for synchronous callers (CLIs, scripts, threads)."""

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy | None = None,
                 max_connections: int = 16) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(**pool_options(timeout_s, max_connections))

    def chat(self, base_url: str, api_key: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        url = _completions_url(base_url)
        payload = json.dumps(body).encode()
        headers = json_headers(api_key)
        attempts = 0
        try:
            for attempt in Retrying(**retrying_kwargs(self.retry)):
                with attempt:
                    attempts += 1
                    response = self._http.post(url, content=payload, headers=headers)
                    return _check(response, url)
        except (LMCallError, RetryableStatus, httpx.HTTPError) as exc:
            raise _final_error(exc, attempts, url) from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SyncChatClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_sync_lock = threading.Lock()
_sync_shared: SyncChatClient | None = None


def chat_sync(base_url: str, api_key: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
    """One chat call through the process-wide `SyncChatClient` (httpx.Client is thread-safe)."""
    global _sync_shared
    with _sync_lock:
        if _sync_shared is None:
            _sync_shared = SyncChatClient()
        client = _sync_shared
    return client.chat(base_url, api_key, body)
