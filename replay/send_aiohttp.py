"""The aiohttp sender: https targets (and any target with `--client aiohttp`).

A request is rebuilt as close to the original as aiohttp allows: the exact target text,
headers in their original order, no client headers the original did not have. aiohttp writes
the request line as UTF-8 text, so a record whose target bytes are not valid UTF-8
(`target_raw`) cannot be sent exactly: it becomes a `protocol` error (the lean sender sends
such records exactly). Connections are pooled per target up to the pool size, and requests
beyond it wait inside aiohttp's connector; `sent` is when aiohttp wrote the request headers
and the timeout runs from when the request got its connection, as with the lean sender.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import partial
from typing import Any

import aiohttp
from yarl import URL

from replay.options import ReplayOptions, Target
from replay.schedule import Clock
from replay.send import Done, Exchange, OutcomeMaker, Prepared, TargetShape, classify_os_error, describe, ssl_context

AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
"""Headers aiohttp adds on its own; suppressed when the request does not have them."""


def classify(exc: BaseException) -> str:
    """The short error class of a failed aiohttp request."""
    if isinstance(exc, ssl.SSLError | aiohttp.ClientSSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return "tls"
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "reset"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.InvalidURL):
        return "protocol"
    return classify_os_error(exc)


class _Timing:
    """Per-request trace context: when the connection was acquired and the headers went out."""

    __slots__ = ("deadline_cm", "sent", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.sent: float | None = None
        self.deadline_cm: asyncio.Timeout | None = None


async def _connection_ready(_session: Any, ctx: Any, _params: Any) -> None:
    timing: _Timing = ctx.trace_request_ctx
    if timing.deadline_cm is not None:
        timing.deadline_cm.reschedule(asyncio.get_running_loop().time() + timing.timeout)


def _trace_config(clock: Clock) -> aiohttp.TraceConfig:
    async def headers_sent(_session: Any, ctx: Any, _params: Any) -> None:
        ctx.trace_request_ctx.sent = clock.now()

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_start.append(_connection_ready)
    trace.on_connection_reuseconn.append(_connection_ready)
    trace.on_request_headers_sent.append(headers_sent)
    return trace


class AiohttpSender:
    """Sends requests to one target through an aiohttp ClientSession (one task per request)."""

    def __init__(self, target: Target, options: ReplayOptions, clock: Clock, wall_offset: float,
                 on_done: Done) -> None:
        self.target = target
        self.inflight = 0
        self.clock = clock
        self.shape = TargetShape(target)
        self.timeout = options.timeout_for(target)
        self.capture = options.capture
        self._make = OutcomeMaker(target, self.shape, clock, wall_offset)
        self._on_done = on_done
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheme = self.shape.scheme
        self._authority = URL(target.url).raw_authority
        tls: ssl.SSLContext | bool = ssl_context(options.insecure) if target.tls else False
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=options.pool_size, limit_per_host=0, ssl=tls),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            trace_configs=[_trace_config(clock)],
        )

    def _url(self, path: bytes) -> URL:
        # The whole target goes in the path, already encoded: yarl then keeps every character
        # (a `?` with nothing after it, a `#`, `%zz`, `..`) and aiohttp writes raw_path_qs.
        return URL.build(scheme=self._scheme, authority=self._authority, path=path.decode(), encoded=True)

    def submit(self, prepared: Prepared, intended: float, token: Any) -> None:
        self.inflight += 1
        problem = prepared.problem
        if problem is None and prepared.record.target_raw is not None:
            problem = "target bytes are not valid UTF-8; aiohttp writes the request line as UTF-8"
        if problem is not None:
            self._done(prepared, intended, token, None, None, "protocol", problem, 0, None)
            return
        task = asyncio.get_running_loop().create_task(self._send(prepared, intended, token))
        self._tasks.add(task)
        task.add_done_callback(partial(self._task_done, prepared, intended, token))

    def _task_done(self, prepared: Prepared, intended: float, token: Any, task: asyncio.Task[None]) -> None:
        """A task cancelled before it ever ran never reached its own handler: its Outcome is made here."""
        self._tasks.discard(task)
        if task.cancelled():
            self._done(prepared, intended, token, None, None, "cancelled", "the run stopped before it was sent", 0,
                       None)

    async def _send(self, p: Prepared, intended: float, token: Any) -> None:
        status: int | None = None
        error: str | None = None
        reason: str | None = None
        size = 0
        body: list[bytes] = []
        head = b""
        timing = _Timing(self.timeout)
        headers = self.shape.headers(p)
        skip = frozenset(h for h in AUTO_HEADERS if h.lower() not in {n.lower() for n, _ in headers})
        try:
            async with asyncio.timeout(None) as cm:
                timing.deadline_cm = cm
                async with self._session.request(
                    p.method, self._url(self.shape.path(p)), headers=headers, skip_auto_headers=skip,
                    data=p.body, allow_redirects=False, trace_request_ctx=timing,
                ) as resp:
                    if self.capture:
                        head = _head(resp)
                    while chunk := await resp.content.readany():
                        size += len(chunk)
                        if self.capture:
                            body.append(chunk)
                    status = resp.status
        except asyncio.CancelledError:  # close(): still one Outcome; the task then ends normally
            error, reason = "cancelled", "the run stopped before the response ended"
        except Exception as e:
            error = classify(e)
            reason = f"no response within {self.timeout:g} s" if error == "timeout" else describe(e)
        exchange = None
        if self.capture and timing.sent is not None:
            exchange = Exchange(self.shape.request(p), head + b"".join(body) if head else None)
        self._done(p, intended, token, timing.sent, status, error, reason, size, exchange)

    def _done(self, p: Prepared, intended: float, token: Any, sent: float | None, status: int | None,
              error: str | None, reason: str | None, size: int, exchange: Exchange | None) -> None:
        self.inflight -= 1
        self._on_done(self._make(p, intended, sent, status, error, reason, size), token, exchange)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._session.close()


def _head(resp: aiohttp.ClientResponse) -> bytes:
    """The response's status line and headers as received (aiohttp keeps the raw header bytes)."""
    lines = [b"HTTP/%d.%d %d %s" % (resp.version.major, resp.version.minor, resp.status,
                                    (resp.reason or "").encode("latin-1", "replace"))]
    lines += [name + b": " + value for name, value in resp.raw_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"

