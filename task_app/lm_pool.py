"""The task app's LM connections: several small `ChatClient` pools used in turn.

Why not one client with 64 connections: httpcore 1.0's connection pool scans
every pooled connection (with a socket poll each) on every request start and
end, so its bookkeeping grows with connections x concurrent requests
(encode/httpcore PR 1035 and pydantic/httpx2 PR 974 describe and fix it
upstream). Profiled here at 32 concurrent rollouts, that scan was ~40 % of the
task app's CPU. Pools of 8 connections keep each scan short; calls go to the
pools round-robin, so a pool is never busier than its share. Retries, timeouts
and `LMCallError` are the shared client's (`mipro_bench.lm.client`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, Protocol

from mipro_bench.lm.client import DEFAULT_TIMEOUT_S, ChatClient
from mipro_bench.lm.retry import RetryPolicy

CONNECTIONS_PER_POOL = 8


class ChatCaller(Protocol):
    async def chat(self, base_url: str, api_key: str | None, body: Mapping[str, Any]
                   ) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class ChatClientPool:
    """`max_connections` spread over pools of `CONNECTIONS_PER_POOL` (same `chat` contract)."""

    def __init__(self, *, max_connections: int = 64, timeout_s: float = DEFAULT_TIMEOUT_S,
                 retry: RetryPolicy | None = None) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        count = math.ceil(max_connections / CONNECTIONS_PER_POOL)
        per_pool = math.ceil(max_connections / count)
        self.clients = [ChatClient(timeout_s=timeout_s, retry=retry, max_connections=per_pool)
                        for _ in range(count)]
        self._turn = itertools.cycle(self.clients)  # one event loop: no lock needed

    async def chat(self, base_url: str, api_key: str | None, body: Mapping[str, Any]
                   ) -> dict[str, Any]:
        return await next(self._turn).chat(base_url, api_key, body)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
