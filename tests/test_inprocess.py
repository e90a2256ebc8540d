"""The in-process network behind `--lm respx`: an ASGI app reached by every httpx client
without a socket, its lifespan run as uvicorn runs it, other hosts left alone."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
import respx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mipro_bench.offline.inprocess import HOST_SUFFIX, InProcessNetwork
from mipro_bench.serving import ServerStartError, serve_in_thread


def echo_app(events: list[str], *, fail_startup: bool = False) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        if fail_startup:
            raise RuntimeError("no policy to load")
        yield
        events.append("shutdown")

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        await asyncio.sleep(0.005)  # concurrent calls interleave on the app's loop
        return JSONResponse({"path": request.url.path, "query": request.url.query,
                             "bytes": len(body), "auth": request.headers.get("authorization"),
                             "thread": threading.current_thread().name},
                            status_code=201 if request.method == "POST" else 200,
                            headers={"x-echo": "yes"})

    return Starlette(routes=[Route("/{rest:path}", echo, methods=["GET", "POST"])],
                     lifespan=lifespan)


@pytest.fixture
def network() -> Iterator[InProcessNetwork]:
    with InProcessNetwork() as net:
        yield net


def test_sync_and_async_clients_reach_the_app_with_no_socket(
        network: InProcessNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    connects: list[object] = []
    real_connect = socket.socket.connect

    def spy(self: socket.socket, address: object) -> None:
        connects.append(address)
        real_connect(self, address)

    with network.mount(echo_app(events), name="echo") as server:
        assert events == ["startup"]
        assert server.url.endswith(HOST_SUFFIX) and server.host.endswith(HOST_SUFFIX)
        monkeypatch.setattr(socket.socket, "connect", spy)
        sync = httpx.post(f"{server.url}/v1/chat?x=1", json={"a": 1},
                          headers={"Authorization": "Bearer t"})

        async def many() -> list[httpx.Response]:
            async with httpx.AsyncClient() as client:
                return await asyncio.gather(*(client.post(f"{server.url}/s/{i}", content=b"abc")
                                              for i in range(16)))

        answers = asyncio.run(many())
        monkeypatch.undo()
    assert events == ["startup", "shutdown"]
    assert connects == []  # not one socket was connected for these 17 calls
    assert sync.status_code == 201 and sync.headers["x-echo"] == "yes"
    assert sync.json() == {"path": "/v1/chat", "query": "x=1", "bytes": 7,
                           "auth": "Bearer t", "thread": "inprocess-asgi"}
    assert sorted(r.json()["path"] for r in answers) == sorted(f"/s/{i}" for i in range(16))
    assert network.requests == 17


def test_other_hosts_pass_through_to_the_network(network: InProcessNetwork) -> None:
    events: list[str] = []
    with serve_in_thread(echo_app(events), health_path=None, name="served") as served:
        answer = httpx.get(f"{served.url}/plain", timeout=5)
    assert answer.status_code == 200 and answer.json()["path"] == "/plain"
    assert answer.json()["thread"] != "inprocess-asgi"  # uvicorn's thread, over a socket
    assert network.requests == 0


def test_a_users_own_respx_mock_still_decides_for_its_hosts(network: InProcessNetwork) -> None:
    events: list[str] = []
    with network.mount(echo_app(events), name="echo") as server, \
            respx.mock(assert_all_called=True) as users:
        users.get("https://api.example.test/ping").respond(204)
        assert httpx.get("https://api.example.test/ping").status_code == 204
        assert httpx.get(f"{server.url}/still-ours").json()["path"] == "/still-ours"


def test_an_unmounted_made_up_host_fails_like_an_unknown_host(network: InProcessNetwork) -> None:
    with network.mount(echo_app([]), name="echo") as server:
        url = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/gone", timeout=2)


def test_a_failing_startup_is_a_server_start_error_and_mounts_nothing(
        network: InProcessNetwork) -> None:
    events: list[str] = []
    with pytest.raises(ServerStartError,
                       match=r"lifespan startup: RuntimeError: no policy to load$"), \
            network.mount(echo_app(events, fail_startup=True), name="broken"):
        pass
    assert events == ["startup"]


def test_mount_needs_the_network_open() -> None:
    with pytest.raises(RuntimeError, match="network open"), \
            InProcessNetwork().mount(echo_app([]), name="x"):
        pass


def test_an_app_served_elsewhere_can_be_mounted_without_running_its_lifespan_again(
        network: InProcessNetwork) -> None:
    events: list[str] = []
    with network.mount(echo_app(events), name="twice", lifespan=False) as server:
        assert httpx.get(f"{server.url}/x").json()["path"] == "/x"
    assert events == []
