"""The httpx settings every chat hop shares (the task app's client, the gateway's forwarder).

Both talk to an OpenAI-compatible server with one JSON POST per call, so they
want the same pool shape (keep-alive for every connection the pool may open)
and the same timeout rule: the whole call may take `timeout_s`, but a server
that does not even accept the connection within 10 s is treated as down.
"""

from __future__ import annotations

from typing import Any

import httpx

MAX_CONNECT_S = 10.0


def pool_options(timeout_s: float, max_connections: int) -> dict[str, Any]:
    """Keyword arguments for httpx.Client / httpx.AsyncClient: timeout and pool limits."""
    return {
        "timeout": httpx.Timeout(timeout_s, connect=min(MAX_CONNECT_S, timeout_s)),
        "limits": httpx.Limits(max_connections=max_connections,
                               max_keepalive_connections=max_connections),
    }


def json_headers(api_key: str | None) -> dict[str, str]:
    """Headers of a JSON chat call; a bearer token only when there is a key."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers
