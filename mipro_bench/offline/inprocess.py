"""ASGI apps reached without a socket: respx routes their made-up hosts to the app itself.

`--lm respx` runs the comparison with the LM gateway (and the suite's interceptor and the
local Synth backend's interceptor) mounted here instead of served by uvicorn only: every
httpx request to a mounted app's URL, from any thread, sync or async client, is answered
by calling the ASGI app in-process on one event loop of its own (the same concurrency a
uvicorn server gives it), so the gateway's
routing, accounting, journal and token limits are exactly the served ones. Requests to
any other URL pass through to the network untouched.

Why respx and not a custom transport per client: the clients (litellm's OpenAI client,
the task app's pool, the local Synth backend's proposer, `LMEndpoint.usage`) each build
their own httpx client; respx patches them all at httpcore's connection pool. Clients
that do not use httpx cannot be routed (DSPy's default lm15 socket engine, the synth-ai
SDK's requests/aiohttp job calls): DSPy is switched to its litellm engine in this mode,
and the SDK only ever talks to the local Synth backend, which stays served as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import httpx
import respx
from respx.models import AllMockedAssertionError

from mipro_bench.serving import RunningServer, ServerStartError

HOST_SUFFIX = ".respx.invalid"  # .invalid never resolves: a request that escapes fails
CALL_TIMEOUT_S = 600.0

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]

# Which httpx side the current request came from: respx calls one side effect for both.
_ASYNC_CALLER: contextvars.ContextVar[bool] = contextvars.ContextVar("mipro_bench_async",
                                                                     default=False)


class _Router(respx.MockRouter):
    """A respx router that tells the side effect whether its caller awaits, and keeps no
    call log (respx records every request and response; a comparison makes thousands)."""

    def handler(self, request: httpx.Request) -> httpx.Response:
        token = _ASYNC_CALLER.set(False)
        try:
            return super().handler(request)
        finally:
            _ASYNC_CALLER.reset(token)

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        token = _ASYNC_CALLER.set(True)
        try:
            return await super().async_handler(request)
        finally:
            _ASYNC_CALLER.reset(token)

    def record(self, request: httpx.Request, *args: Any, **kwargs: Any) -> None:
        return None


class _Loop:
    """One event loop in a daemon thread: every mounted app runs on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="inprocess-asgi",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any], timeout_s: float = CALL_TIMEOUT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)  # type: ignore[arg-type]

    async def run_async(self, coro: Awaitable[Any]) -> Any:
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(coro, self.loop))  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class _Lifespan:
    """The ASGI lifespan protocol, driven as uvicorn's `lifespan="on"` drives it."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self._app = app
        self._name = name
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _step(self, event: str) -> None:
        await self._to_app.put({"type": f"lifespan.{event}"})
        assert self._task is not None
        getter = asyncio.ensure_future(self._from_app.get())
        done, _ = await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            error = self._task.exception()
            raise ServerStartError(f"{self._name} failed at lifespan {event}: {error!r}")
        message = getter.result()
        if message["type"] != f"lifespan.{event}.complete":
            # Starlette puts the whole traceback in the message: its last line is the error.
            lines = [line for line in str(message.get("message") or "").splitlines() if line]
            with contextlib.suppress(BaseException):
                await self._task  # the app re-raises after reporting; retrieve it here
            raise ServerStartError(f"{self._name} failed at lifespan {event}: "
                                   f"{lines[-1] if lines else message['type']}")

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": {}}
        self._task = asyncio.ensure_future(
            self._app(scope, self._to_app.get, self._from_app.put))
        await self._step("startup")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._step("shutdown")
        await self._task


class _Mount:
    """One app at one made-up URL."""

    def __init__(self, app: ASGIApp, loop: _Loop) -> None:
        self._loop = loop
        self._transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]

    async def _call(self, request: httpx.Request) -> httpx.Response:
        inner = httpx.Request(request.method, request.url, headers=request.headers,
                              content=request.content)
        response = await self._transport.handle_async_request(inner)
        content = await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    def answer(self, request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        request.read()
        if _ASYNC_CALLER.get():
            return self._loop.run_async(self._call(request))
        return self._loop.run(self._call(request))


class InProcessNetwork:
    """The respx router mounted apps are reached through (a context manager: while it is
    open, httpx requests to a mount's URL never touch a socket)."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self._mounts: dict[str, _Mount] = {}
        self._router = _Router(assert_all_called=False, assert_all_mocked=False)
        self._router.route().mock(side_effect=self._dispatch)
        self._loop: _Loop | None = None
        self._stack = contextlib.ExitStack()
        self.requests = 0  # requests answered in-process (tests and the perf bench read it)

    def _dispatch(self, request: httpx.Request) -> Any:
        mount = self._mounts.get(request.url.host)
        if mount is None:
            others = self._router.Mocker is not None and any(
                router is not self._router for router in self._router.Mocker.routers)
            if others:  # a user's own respx mock (a test's) decides, as if we were not here
                raise AllMockedAssertionError(f"not an in-process host: {request.url.host}")
            return request  # not ours: pass through to the network
        self.requests += 1
        return mount.answer(request)

    def __enter__(self) -> InProcessNetwork:
        self._loop = _Loop()
        self._stack.callback(self._loop.close)
        self._stack.enter_context(self._router)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @contextlib.contextmanager
    def mount(self, app: ASGIApp, *, name: str, lifespan: bool = True,
              ) -> Iterator[RunningServer]:
        """`app` at http://<name>-<n>.respx.invalid until the block ends, its lifespan run
        at start and end (ServerStartError when startup fails). `lifespan=False` for an app
        that is also served on a port, whose server runs its lifespan already."""
        if self._loop is None:
            raise RuntimeError("mount() needs the network open (use it as a context manager)")
        host = f"{name}-{next(self._ids)}{HOST_SUFFIX}"
        driver = _Lifespan(app, name) if lifespan else None
        if driver is not None:
            self._loop.run(driver.startup(), timeout_s=30)
        self._mounts[host] = _Mount(app, self._loop)
        try:
            yield RunningServer(url=f"http://{host}", host=host, port=80)
        finally:
            self._mounts.pop(host, None)
            if driver is not None:
                self._loop.run(driver.shutdown(), timeout_s=30)
