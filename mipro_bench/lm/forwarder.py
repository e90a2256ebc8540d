"""The gateway's forwarding responder: relays chat calls to a real OpenAI-compatible server.

Clients only ever hold the gateway's per-run token; the real key is read here,
from the environment variable LMSettings names, and put on the upstream
request only. It is scrubbed from anything that comes back (OpenAI echoes a
masked key in 401 messages), and never logged. Transient upstream failures
are retried with the shared policy; when the bound is spent the client gets
a 502 with a JSON error, so its own retry (if any) can still apply.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import httpx
from tenacity import AsyncRetrying

from mipro_bench.lm.pricing import cost_usd
from mipro_bench.lm.responders import (
    SIMULATED_FINGERPRINT,
    InvalidChatRequest,
    Reply,
    UpstreamFailure,
)
from mipro_bench.lm.retry import (
    RetryableStatus,
    RetryPolicy,
    raise_if_retryable,
    retrying_kwargs,
)
from mipro_bench.lm.settings import LMSettings
from mipro_bench.lm.transport import json_headers, pool_options

log = logging.getLogger(__name__)

REDACTED = "[redacted]"


class ForwardResponder:
    simulated = False

    def __init__(self, settings: LMSettings, *, retry: RetryPolicy | None = None,
                 max_connections: int = 64) -> None:
        if not settings.base_url:
            raise ValueError(f"forwarding needs an upstream base_url (backend {settings.backend})")
        self.backend = settings.backend
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._key = settings.api_key() or None
        self._retry = retry or RetryPolicy.from_max_retries(settings.max_retries)
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None

    async def startup(self) -> None:
        # Created inside the serving loop: an httpx pool belongs to one event loop.
        self._client = httpx.AsyncClient(
            **pool_options(self._settings.timeout_s, self._max_connections),
            follow_redirects=False,
        )

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def scrub(self, text: str) -> str:
        """Remove the real key from text coming back (401/403 bodies are never relayed at all)."""
        return text.replace(self._key, REDACTED) if self._key else text

    async def _post_once(self, payload: bytes) -> httpx.Response:
        assert self._client is not None, "ForwardResponder used before startup()"
        response = await self._client.post(self._url, content=payload,
                                           headers=json_headers(self._key))
        raise_if_retryable(response)
        return response

    async def complete(self, body: dict[str, Any]) -> Reply:
        payload = json.dumps(body).encode()
        attempts = 0
        try:
            async for attempt in AsyncRetrying(**retrying_kwargs(self._retry)):
                with attempt:
                    attempts += 1
                    response = await self._post_once(payload)
        except RetryableStatus as exc:
            log.warning("upstream %s answered %s on all %d attempts", self._url, exc.status,
                        attempts)
            raise UpstreamFailure(
                f"upstream LM answered HTTP {exc.status} on all {attempts} attempts",
                status=exc.status, attempts=attempts) from None
        except httpx.TransportError as exc:
            log.warning("upstream %s unreachable after %d attempts: %s", self._url, attempts,
                        type(exc).__name__)
            raise UpstreamFailure(
                f"upstream LM unreachable after {attempts} attempts ({type(exc).__name__})",
                status=None, attempts=attempts) from None
        reply = self._reply(response)
        return replace(reply, attempts=attempts) if attempts > 1 else reply

    def _reply(self, response: httpx.Response) -> Reply:
        status = response.status_code
        if status in (401, 403):
            # Never relay the upstream's words here: they quote (part of) the key.
            raise UpstreamFailure(
                f"upstream LM rejected the configured API key (HTTP {status}); "
                f"check {self._settings.api_key_env or 'the key variable'}",
                status=status, attempts=1)
        text = self.scrub(response.text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if 400 <= status < 500:
            # The request itself was wrong (unknown model, bad params): the client's mistake,
            # relayed with its status so it is not retried.
            message = f"upstream LM answered HTTP {status}: {text[:500]}"
            if not isinstance(data, dict) or "error" not in data:
                data = {"error": {"message": message, "type": "invalid_request_error"}}
            raise InvalidChatRequest(message, status=status, body=data)
        if status != 200 or not isinstance(data, dict):
            raise UpstreamFailure(
                f"upstream LM answered HTTP {status} with "
                f"{'a non-JSON body' if data is None else 'an unexpected body'}",
                status=status, attempts=1)
        return Reply(200, data)

    def cost_of(self, response: dict[str, Any]) -> float | None:
        if response.get("system_fingerprint") == SIMULATED_FINGERPRINT:
            return None
        usage = response.get("usage") or {}
        return cost_usd(response.get("model") or self._settings.model,
                        int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0))

    def model_ids(self) -> list[str]:
        return [self._settings.model]
