"""Helpers for the task-app tests: the tiny panel, rollout bodies, a recording relay.

The relay is a real HTTP server placed between the task app and the LM
gateway. It records every chat request exactly as the task app sent it (path,
query string, headers, body bytes), so tests can check what an interceptor
would see; in `strip_tools` mode it also drops `tools`/`tool_choice` before
forwarding, which is what an OpenAI-compatible server without tool support
amounts to: the same simulated LM then answers in plain text.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mipro_bench.data import Splits, load_banking77, make_splits
from mipro_bench.lm.settings import LMSettings

TINY_DIR = Path(__file__).resolve().parent / "data" / "tiny_banking77"
SIM_SETTINGS = LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None)
ENV_KEY = "test-env-key-0123456789"


def tiny_splits() -> Splits:
    """All 60 invented rows: train 24, val 12 (disjoint), test 18."""
    return make_splits(load_banking77(TINY_DIR), train_size=24, val_size=12, test_size=18,
                       seed=0)


def rollout_body(seed: int, inference_url: str, *, split: str | None = "train",
                 model: str = "gpt-4.1-nano", api_key: str | None = None,
                 trace_id: str = "trace-1") -> dict[str, Any]:
    env: dict[str, Any] = {"seed": seed, "config": {} if split is None else {"split": split}}
    config: dict[str, Any] = {"model": model, "inference_url": inference_url}
    if api_key is not None:
        config["api_key"] = api_key
    return {"trace_correlation_id": trace_id, "env": env, "policy": {"config": config}}


@dataclass
class RecordedCall:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Relay:
    """Forwards POST .../chat/completions to `upstream_base` (an OpenAI base URL ending /v1)."""

    upstream_base: str
    strip_tools: bool = False
    # The key sent upstream (e.g. the gateway's token); None relays the caller's own header.
    upstream_key: str | None = None
    calls: list[RecordedCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        client: dict[str, httpx.AsyncClient] = {}

        async def forward(request: Request) -> Response:
            raw = await request.body()
            with self._lock:
                self.calls.append(RecordedCall(request.url.path, request.url.query,
                                               dict(request.headers), raw))
            body = json.loads(raw)
            if self.strip_tools:
                body.pop("tools", None)
                body.pop("tool_choice", None)
            upstream = await client["http"].post(
                self.upstream_base + "/chat/completions", json=body,
                headers={"authorization": f"Bearer {self.upstream_key}" if self.upstream_key
                         else request.headers.get("authorization", "")})
            return Response(upstream.content, status_code=upstream.status_code,
                            media_type="application/json")

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            client["http"] = httpx.AsyncClient(timeout=30)
            try:
                yield
            finally:
                await client["http"].aclose()

        return Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])],
                         lifespan=lifespan)
