"""Serving an ASGI app with uvicorn in a background thread: ports, readiness, teardown.

Every local server of the suite (the LM gateway, the task app, the local Synth
backend) runs in-process on 127.0.0.1. Why a thread and not a subprocess:
counters and knobs stay plain objects the test or runner can read and set
without HTTP, startup takes milliseconds, and nothing outlives the process.

The one tricky part is the port. Probing for a free port and binding it
later races with other processes (pytest-xdist workers all want 8015), so
the socket is bound here, while searching, and handed to uvicorn already
bound; the URL is known before uvicorn starts. Teardown joins the thread, so
the port is released when the `with` block ends.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import uvicorn

DEFAULT_HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server did not come up (no free port, app failed at startup, timeout)."""


@dataclass(frozen=True)
class RunningServer:
    url: str
    host: str
    port: int


class AppNetwork(Protocol):
    """Somewhere an ASGI app can be reached without a port of its own (an in-process
    transport such as the `respx` LM backend's): the gateway and the interceptor mount
    themselves on it when the LM backend started one, and serve on 127.0.0.1 otherwise."""

    def mount(self, app: Any, *, name: str, lifespan: bool = True,
              ) -> AbstractContextManager[RunningServer]:
        """`app` reachable at the returned server's URL until the block ends."""
        ...


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def bind_socket(host: str = DEFAULT_HOST, port: int = 0, *, search: int = 1) -> socket.socket:
    """A listening TCP socket on `port`, or on the first free one of the next `search` ports.

    `port=0` asks the OS for an ephemeral port. The socket stays bound, so
    nothing can take the port between the search and the server start.
    """
    if not 0 <= port <= 65535:
        raise ServerStartError(f"port must be between 0 and 65535, got {port}")
    candidates = [0] if port == 0 else list(range(port, min(port + max(search, 1), 65536)))
    last: OSError | None = None
    for candidate in candidates:
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and a proto-0 listener hands out proto-0 sockets -> Nagle + delayed
        # ACK put ~40 ms on every request.
        sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
        # Lets a port in TIME_WAIT (a server we just stopped) be reused; it never
        # allows binding a port another socket is listening on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES) and len(candidates) > 1:
                last = exc
                continue
            raise ServerStartError(
                f"cannot bind {host}:{candidate}: {exc.strerror or exc}") from exc
        sock.set_inheritable(True)
        return sock
    reason = last.strerror if last is not None and last.strerror else "in use"
    raise ServerStartError(
        f"no free port on {host} in {candidates[0]}-{candidates[-1]} ({reason})")


def find_free_port(host: str = DEFAULT_HOST, port: int = 0, *, search: int = 100) -> int:
    """A port that was free a moment ago, for a server in another process that binds itself.

    Prefer `serve_in_thread`, which keeps the socket bound; across processes a
    small race cannot be avoided.
    """
    sock = bind_socket(host, port, search=search)
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


@contextlib.contextmanager
def serve_in_thread(
    app: object,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    search: int = 1,
    health_path: str | None = "/health",
    health_headers: Mapping[str, str] | None = None,
    startup_timeout_s: float = 15.0,
    name: str = "asgi-server",
    log_level: str = "warning",
) -> Iterator[RunningServer]:
    """Serve `app` until the block ends.

    Binds `port` (0 = any free port; with `search` > 1 the next free port after
    it), waits until uvicorn has run the app's lifespan startup and
    `health_path` (if any) answers 200, and raises ServerStartError naming the
    cause otherwise. On exit: graceful shutdown, forced after a bound, thread
    joined, socket closed.
    """
    sock = bind_socket(host, port, search=search)
    bound_port = int(sock.getsockname()[1])
    url = url_for(host, bound_port)
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level=log_level,
        access_log=False,  # per-request logging costs more than a simulated call
        lifespan="on",
        loop="asyncio",
        # httptools is faster than h11 when installed; asyncio transports set TCP_NODELAY.
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from a failed lifespan, too
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"{name}:{bound_port}", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread, failure, startup_timeout_s, name, url)
        if health_path is not None:
            wait_until_healthy(url + health_path, headers=health_headers,
                               timeout_s=startup_timeout_s, name=name)
        yield RunningServer(url=url, host=host, port=bound_port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread,
                  failure: list[BaseException], timeout_s: float, name: str, url: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            why = f": {failure[0]!r}" if failure else " (see the log above)"
            raise ServerStartError(f"{name} exited during startup{why}")
        if time.monotonic() > deadline:
            raise ServerStartError(f"{name} did not start at {url} within {timeout_s:g} s")
        time.sleep(0.005)


def wait_until_healthy(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 15.0,
    interval_s: float = 0.02,
    name: str = "server",
) -> httpx.Response:
    """GET `url` until it answers 200; ServerStartError with the last answer on timeout."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=min(2.0, timeout_s), trust_env=False) as client:
        while True:
            try:
                response = client.get(url, headers=dict(headers or {}))
                if response.status_code == 200:
                    return response
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{name} not healthy at {url} within {timeout_s:g} s (last: {last})")
            time.sleep(interval_s)
