"""The interceptor: the task app's inference_url, swapping the candidate instruction in.

A rollout's `inference_url` is `{backend}/v1/{route_id}/{cid}`. The task app
posts its baseline messages to `{inference_url}/chat/completions`; the route
names which job or evaluation the call belongs to, `cid` which candidate.
The messages must match the route's baseline pattern (the job's
`initial_prompt`); the candidate's pattern is rendered with the same
wildcards (query, intent list) and the request is forwarded, otherwise
unchanged (tools, tool_choice, temperature), to the route's upstream LM
(the gateway URL of this case and phase). Each call is counted per route and
candidate, and the last messages each candidate was sent are kept, so a test
can see what the LM really got.

Errors keep their meaning for the task app's retry rule: an upstream 429/5xx
comes back as that status (the task app retries), a mismatch with the
pattern is a 400 (a configuration error, never retried), an unknown route or
candidate a 404. The interceptor itself does not retry: one retry layer (the
task app's) keeps a dead LM from multiplying into minutes of waiting.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mipro_bench.lm.client import ChatClient, LMCallError
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.task_client.patterns import PatternError, PromptPattern

CANDIDATE_HEADER = "x-mipro-candidate-id"
MAX_BODY_BYTES = 4 * 1024 * 1024


def error_json(status: int, code: str, message: str,
               headers: Mapping[str, str] | None = None) -> JSONResponse:
    """Synth's error shape plus OpenAI's `error.message`, so every client can read it."""
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, "type": code}, "detail": message},
        headers=dict(headers or {}),
    )


@dataclass
class CandidateUsage:
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    last_messages: list[dict[str, str]] | None = None


@dataclass
class InterceptRoute:
    """One job's (or one evaluation's) candidates and where their calls go."""

    route_id: str
    baseline: PromptPattern
    candidates: dict[str, PromptPattern]
    upstream_url: str  # OpenAI-compatible base URL (ends in /v1)
    upstream_api_key: str | None
    usage: dict[str, CandidateUsage] = field(default_factory=dict)
    # Called with (cid, ok) after each forwarded call (the job's LM-call count).
    on_call: Callable[[str, bool], None] | None = None

    def inference_url(self, backend_url: str, cid: str) -> str:
        return f"{backend_url.rstrip('/')}/v1/{self.route_id}/{cid}"


class Interceptor:
    """Routes by id; safe to register from any thread, serves in the backend's loop."""

    def __init__(self, *, timeout_s: float = 60.0) -> None:
        self._routes: dict[str, InterceptRoute] = {}
        self._lock = threading.Lock()
        self._timeout_s = timeout_s
        self._clients: dict[asyncio.AbstractEventLoop, ChatClient] = {}

    def register(self, baseline: PromptPattern, candidates: Mapping[str, PromptPattern], *,
                 upstream_url: str, upstream_api_key: str | None,
                 on_call: Callable[[str, bool], None] | None = None,
                 route_id: str | None = None) -> InterceptRoute:
        route = InterceptRoute(
            route_id=route_id or f"r{secrets.token_hex(6)}",
            baseline=baseline,
            candidates=dict(candidates),
            upstream_url=upstream_url.rstrip("/"),
            upstream_api_key=upstream_api_key,
            on_call=on_call,
        )
        with self._lock:
            self._routes[route.route_id] = route
        return route

    def add_candidate(self, route_id: str, cid: str, pattern: PromptPattern) -> None:
        with self._lock:
            self._routes[route_id].candidates[cid] = pattern

    def unregister(self, route_id: str) -> None:
        with self._lock:
            self._routes.pop(route_id, None)

    def route(self, route_id: str) -> InterceptRoute | None:
        with self._lock:
            return self._routes.get(route_id)

    def _client(self) -> ChatClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = ChatClient(
                timeout_s=self._timeout_s, retry=RetryPolicy(max_attempts=1))
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def _note(self, route: InterceptRoute, cid: str, *, ok: bool,
              response: Mapping[str, Any] | None = None,
              messages: list[dict[str, str]] | None = None) -> None:
        with self._lock:
            usage = route.usage.setdefault(cid, CandidateUsage())
            if ok:
                usage.calls += 1
                tokens = (response or {}).get("usage") or {}
                usage.input_tokens += int(tokens.get("prompt_tokens") or 0)
                usage.output_tokens += int(tokens.get("completion_tokens") or 0)
            else:
                usage.errors += 1
            if messages is not None:
                usage.last_messages = messages
        if route.on_call is not None:
            route.on_call(cid, ok)

    async def forward(self, route: InterceptRoute, cid: str, body: Mapping[str, Any],
                      *, headers: Mapping[str, str] | None = None) -> JSONResponse:
        """Substitute `cid`'s pattern into `body`'s messages and forward upstream."""
        pattern = route.candidates.get(cid)
        if pattern is None:
            return error_json(404, "unknown_candidate",
                              f"route {route.route_id} has no candidate {cid!r}")
        messages = body.get("messages")
        if not isinstance(messages, list):
            return error_json(400, "invalid_request", "'messages' must be a list")
        try:
            swapped = pattern.substitute(route.baseline, messages)
        except PatternError as exc:
            return error_json(400, "prompt_mismatch", str(exc))
        outgoing = {**body, "messages": swapped}
        try:
            response = await self._client().chat(route.upstream_url, route.upstream_api_key,
                                                  outgoing)
        except LMCallError as exc:
            self._note(route, cid, ok=False, messages=swapped)
            status = exc.status if exc.status is not None and exc.status >= 400 else 502
            return error_json(status, "upstream_error", f"interceptor: {exc}",
                              {CANDIDATE_HEADER: cid})
        self._note(route, cid, ok=True, response=response, messages=swapped)
        return JSONResponse(response, headers={CANDIDATE_HEADER: cid, **dict(headers or {})})


async def read_json_body(request: Request) -> dict[str, Any] | JSONResponse:
    """The request's JSON object, or the 4xx answer to send instead."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return error_json(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error_json(400, "invalid_json", "request body is not valid JSON")
    if not isinstance(data, dict):
        return error_json(400, "invalid_request", "request body must be a JSON object")
    return data


def interceptor_router(interceptor: Interceptor) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/{route_id}/{cid}/chat/completions")
    async def intercepted_chat(route_id: str, cid: str, request: Request) -> Any:
        route = interceptor.route(route_id)
        if route is None:
            return error_json(404, "unknown_route",
                              f"no job or evaluation is registered under {route_id!r}")
        body = await read_json_body(request)
        if isinstance(body, JSONResponse):
            return body
        return await interceptor.forward(route, cid, body)

    return router


def interceptor_app(interceptor: Interceptor) -> Any:
    """The interceptor alone (with /health), for evaluations outside a Synth job."""
    import contextlib

    from fastapi import FastAPI

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        await interceptor.aclose()

    app = FastAPI(title="mipro-bench interceptor", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "service": "mipro-bench interceptor"}

    app.include_router(interceptor_router(interceptor))
    return app
