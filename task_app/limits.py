"""A bound on request bodies, so one hostile request cannot exhaust the server.

A rollout request is about a kilobyte; uvicorn itself accepts bodies of any
size. The body is read here (up to the bound) before the app sees it and
replayed to the app, so both declared (Content-Length) and chunked bodies are
bounded, and the answer to an oversized one is a clean 413, not a 500 from a
half-read request.
"""

from __future__ import annotations

from typing import Any

from task_app.errors import error_response

DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024


class BodyLimitMiddleware:
    def __init__(self, app: Any, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        buffered = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": buffered, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as uvicorn does

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        response = error_response(
            413, "body_too_large", f"request body exceeds {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
