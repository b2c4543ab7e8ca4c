"""Replay test support: `async def` tests, a fake clock, records, loopback HTTP targets.

Targets are real servers on 127.0.0.1, port 0, started inside the test's event loop:
aiohttp.web apps that record what they received, or raw asyncio servers that misbehave.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from shadowtap.record import Record

TEST_TIMEOUT_S = 60.0
"""No async test may run longer than this: a hang fails instead of blocking the suite."""


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests on a fresh event loop, bounded in time."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), TEST_TIMEOUT_S))
    return True


class FakeClock:
    """A clock whose time moves only when something sleeps until a later time."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t: float) -> None:
        self.sleeps.append(t)
        self.t = max(self.t, t)

    def poke(self) -> None:
        return None


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


def make_records(n: int, *, method: str = "GET", ts0: float = 1_700_000_000.0, step: float = 0.001,
                 prefix: str = "r", **kw) -> list[Record]:
    """`n` records `/item/<i>` with ids `<prefix><i>`, `step` seconds apart."""
    return [
        Record(id=f"{prefix}{i}", ts=ts0 + i * step, method=method, target=f"/item/{i}?q={i}", **kw)
        for i in range(n)
    ]


@pytest.fixture
def records() -> Callable[..., list[Record]]:
    return make_records


@dataclass
class Seen:
    """One request as the target server received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Slow handlers wait on this; set on exit so the server can stop."""


Handler = Callable[[web.Request, Server], Awaitable[web.StreamResponse]]


async def _ok(_request: web.Request, _server: Server) -> web.StreamResponse:
    return web.Response(text="ok")


@asynccontextmanager
async def _serve(handler: Handler = _ok, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server("")

    async def entry(request: web.Request) -> web.StreamResponse:
        server.seen.append(Seen(
            request.method,
            request.raw_path,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            await request.read(),
        ))
        return await handler(request, server)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", entry)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


@pytest.fixture
def serve():
    """`async with serve(handler) as server:` an aiohttp target on 127.0.0.1 (handler optional;
    `tls=` an SSLContext makes it https)."""
    return _serve


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (made by openssl)."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


@pytest.fixture(params=["lean", "aiohttp"])
def client(request) -> str:
    """Both sender implementations, for tests that every sender must pass."""
    return request.param


@asynccontextmanager
async def _serve_raw(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.fixture
def serve_raw():
    """`async with serve_raw(handle) as url:` a raw TCP server calling handle(reader, writer)."""
    return _serve_raw


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    """The request line and headers (requests in these tests have no body)."""
    return await reader.readuntil(b"\r\n\r\n")


@pytest.fixture
def read_head():
    return read_request_head
