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

from mipro_bench.lm.pricing import charge, price_for
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
# Words of a rejection that names the response_format feature (OpenAI-style 400s, vLLM's
# 400s, llama-cpp-python's 500 "validation error ... response_format").
_SHAPE_WORDS = ("response_format", "json_schema", "response format", "json schema")
# The fallbacks of `response_format`, strongest first: what a server that rejected one
# shape is asked for next (None = no response_format at all; DSPy parses plain text too).
RESPONSE_FORMAT_LADDER: tuple[str | None, ...] = ("json_schema", "json_object", None)


class ShapeRejected(Exception):
    """The server refused the request's response_format: try the next shape down."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.text = text


def response_format_type(body: dict[str, Any]) -> str | None:
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and isinstance(fmt.get("type"), str):
        return fmt["type"]
    return None


def names_response_format(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _SHAPE_WORDS)


def with_response_format(body: dict[str, Any], shape: str | None) -> dict[str, Any]:
    """`body` asking for `shape` instead (json_object keeps nothing of the schema)."""
    out = {k: v for k, v in body.items() if k != "response_format"}
    if shape is not None and shape != "text":
        out["response_format"] = {"type": shape}
    return out


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
        # Index into RESPONSE_FORMAT_LADDER of the strongest response_format this server has
        # not rejected; raised (for the session) when it rejects one.
        self._format_level = 0
        self._downgrades: list[dict[str, Any]] = []

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

    async def _post_once(self, payload: bytes, shaped: bool) -> httpx.Response:
        assert self._client is not None, "ForwardResponder used before startup()"
        response = await self._client.post(self._url, content=payload,
                                           headers=json_headers(self._key))
        status = response.status_code
        if shaped and status >= 400 and status not in (401, 403, 408, 409, 429) \
                and names_response_format(response.text):
            raise ShapeRejected(status, self.scrub(response.text))  # deterministic: no retry
        raise_if_retryable(response)
        return response

    def downgrades(self) -> list[dict[str, Any]]:
        """Request shapes this session stopped sending because the server rejected them."""
        return [dict(d) for d in self._downgrades]

    def _shaped(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body as this server takes it: response_format no stronger than the strongest
        shape it has not rejected so far."""
        wanted = response_format_type(body)
        if wanted is None or wanted not in RESPONSE_FORMAT_LADDER:
            return body
        if RESPONSE_FORMAT_LADDER.index(wanted) >= self._format_level:
            return body
        return with_response_format(body, RESPONSE_FORMAT_LADDER[self._format_level])

    def _downgrade(self, rejected: str, exc: ShapeRejected) -> bool:
        """Remember that `rejected` is refused; False when there is nothing left to drop."""
        index = RESPONSE_FORMAT_LADDER.index(rejected)
        if index + 1 >= len(RESPONSE_FORMAT_LADDER):
            return False
        if index + 1 > self._format_level:
            self._format_level = index + 1
            fallback = RESPONSE_FORMAT_LADDER[index + 1]
            self._downgrades.append({
                "feature": f"response_format:{rejected}",
                "fallback": f"response_format:{fallback}" if fallback else "no response_format",
                "status": exc.status, "reason": " ".join(exc.text.split())[:300]})
            log.warning("upstream %s rejected response_format %s (HTTP %s); sending %s from now "
                        "on", self._url, rejected, exc.status, fallback or "none")
        return True

    async def complete(self, body: dict[str, Any]) -> Reply:
        body = self._shaped(body)
        while True:
            shape = response_format_type(body)
            try:
                return await self._complete(body, shaped=shape in RESPONSE_FORMAT_LADDER)
            except ShapeRejected as exc:
                if shape is None or not self._downgrade(shape, exc):
                    message = f"upstream LM answered HTTP {exc.status}: {exc.text[:500]}"
                    raise InvalidChatRequest(message, status=400, body={"error": {
                        "message": message, "type": "invalid_request_error"}}) from None
                body = self._shaped(body)

    async def _complete(self, body: dict[str, Any], *, shaped: bool) -> Reply:
        payload = json.dumps(body).encode()
        attempts = 0
        try:
            async for attempt in AsyncRetrying(**retrying_kwargs(self._retry)):
                with attempt:
                    attempts += 1
                    response = await self._post_once(payload, shaped)
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
        """The call's real cost: OpenAI's table for OpenAI's API, the user's prices for any
        other server, else None (see mipro_bench.lm.pricing)."""
        if response.get("system_fingerprint") == SIMULATED_FINGERPRINT:
            return None
        usage = response.get("usage") or {}
        price = price_for(self._settings.backend, response.get("model") or self._settings.model,
                          self._settings.prices_per_mtok)
        return charge(price, int(usage.get("prompt_tokens") or 0),
                      int(usage.get("completion_tokens") or 0))

    def estimate_of(self, response: dict[str, Any]) -> float | None:
        return None

    def model_ids(self) -> list[str]:
        return [self._settings.model]
