"""The task-app contract's authentication, checked against the app's own key.

synth-ai's built-in check reads ENVIRONMENT_API_KEY from the process
environment on every request, so two task apps in one process (or a test that
changes the variable) would share or lose their key. Here the key is given to
the factory and checked by a small ASGI middleware that accepts exactly what
the contract accepts: `X-API-Key: <key>`, `X-API-Keys: <k1>,<k2>` or
`Authorization: Bearer <key>`; anything else gets the contract's 400.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from task_app.errors import error_response

PUBLIC_PATHS = frozenset({"/"})  # the contract's unauthenticated liveness probe

AUTH_HINT = (
    "API key missing or invalid: send the task app's ENVIRONMENT_API_KEY as "
    "X-API-Key, X-API-Keys (comma list) or Authorization: Bearer"
)


def presented_keys(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every key a request presents, in any of the three accepted headers."""
    keys: list[str] = []
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name == "x-api-key":
            keys.append(value.strip())
        elif name == "x-api-keys":
            keys.extend(part.strip() for part in value.split(","))
        elif name == "authorization" and value[:7].lower() == "bearer ":
            keys.append(value[7:].strip())
    return [key for key in keys if key]


def key_matches(expected: str, candidates: Iterable[str]) -> bool:
    expected_b = expected.encode()
    # compare_digest on every candidate: timing does not reveal which one was close.
    return any(hmac.compare_digest(expected_b, c.encode("utf-8", "replace")) for c in candidates)


class ApiKeyMiddleware:
    """Rejects requests without the app's key, except the public root probe."""

    def __init__(self, app: Any, *, api_key: str) -> None:
        if not api_key:
            raise ValueError("the task app needs a non-empty ENVIRONMENT_API_KEY")
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if key_matches(self.api_key, presented_keys(scope.get("headers") or ())):
            await self.app(scope, receive, send)
            return
        response = error_response(400, "unauthorised", AUTH_HINT)
        await response(scope, receive, send)
