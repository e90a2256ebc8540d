"""The gateway's per-run token: nothing reaches a route (or the upstream) without it.

The gateway listens on a local port but holds the operator's real key and can
change its own fault injection, so "only 127.0.0.1" is not enough: any local
process could spend the key or read usage. Each gateway makes a random token
at start; `LMEndpoint.api_key` is that token, so every client the suite builds
already sends it (`Authorization: Bearer <token>`, or `X-API-Key: <token>`).
The check is a pure ASGI middleware in front of the whole app, so it runs
before any body is read and covers every route, unknown ones included.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

TOKEN_BYTES = 32

_UNAUTHORIZED = json.dumps({"error": {
    "message": "missing or wrong mipro-bench gateway token: send the run's token "
               "(LMEndpoint.api_key) as 'Authorization: Bearer <token>' or 'X-API-Key: <token>'",
    "type": "invalid_request_error",
    "code": "invalid_api_key",
}}, separators=(",", ":")).encode()


def new_token() -> str:
    """A fresh per-run gateway token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def presented_tokens(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The tokens a request presents: a Bearer Authorization and/or an X-API-Key."""
    found: list[bytes] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization" and value[:7].lower() == b"bearer ":
            found.append(value[7:].strip())
        elif lowered == b"x-api-key":
            found.append(value.strip())
    return found


class TokenAuth:
    """ASGI middleware: HTTP requests without the token get a 401 OpenAI-style JSON error."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *,
                 token: str) -> None:
        if len(token) < 16:
            raise ValueError("a gateway token must be at least 16 characters")
        self.app = app
        self._token = token.encode()

    def accepts(self, headers: list[tuple[bytes, bytes]]) -> bool:
        # compare_digest on every candidate: timing does not tell which one came close.
        results = [hmac.compare_digest(self._token, t) for t in presented_tokens(headers)]
        return any(results)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan" or self.accepts(list(scope.get("headers") or ())):
            await self.app(scope, receive, send)
            return
        if kind != "http":  # a websocket (no route takes one): refuse the handshake
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_UNAUTHORIZED)).encode()),
            (b"www-authenticate", b'Bearer realm="mipro-bench-gateway"'),
        ]})
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})
