"""The lean sender: HTTP/1.1 on asyncio protocols, responses parsed by httptools (llhttp).

Per request the work is one prebuilt bytes object written to an idle keep-alive connection,
a few parser callbacks and one Outcome: no task, future or timer per request. A connection
that finishes a response takes the next queued request itself, and one sweeper per target
enforces timeouts. It sends a record's exact target bytes, also when they are not UTF-8.
Plain http only; https targets go to the aiohttp sender.

Connection loss is expected, not exceptional: nginx closes a keep-alive connection after
`keepalive_requests` (announced with `Connection: close`, then the connection is dropped),
and a server may close an idle one at any time. A request whose reused connection closed
before any response byte arrived is retried once on a fresh connection when its method is
idempotent (as aiohttp and browsers do); every other loss ends the request as `reset`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import httptools

from replay.options import ReplayOptions, Target
from replay.schedule import Clock
from replay.send import Done, Exchange, OutcomeMaker, Prepared, TargetShape, classify_os_error, describe

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods that may be retried once after a stale keep-alive connection (RFC 9110 9.2.2)."""

CAPTURE_MAX = 4 << 20
"""Bytes of one response kept for a dump; the rest is counted but not kept."""


class _Request:
    __slots__ = ("data", "intended", "prepared", "retried", "sent", "token")

    def __init__(self, prepared: Prepared, intended: float, token: Any, data: bytes) -> None:
        self.prepared = prepared
        self.intended = intended
        self.token = token
        self.data = data
        self.sent: float | None = None
        self.retried = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries at most one request at a time (no pipelining)."""

    __slots__ = ("alive", "capture", "chunks", "deadline", "eof_body", "got", "head_only", "interim", "keep_alive",
                 "last", "parser", "request", "reused", "sender", "size", "stale", "status", "transport", "written")

    def __init__(self, sender: LeanSender) -> None:
        self.sender = sender
        self.capture = sender.capture
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.request: _Request | None = None
        self.written = False
        """The request's bytes went out (see LeanSender.write_soon)."""
        self.alive = True
        self.reused = False
        self.deadline = 0.0
        self.status = 0
        self.size = 0
        self.got = False
        self.interim = False
        self.head_only = False
        self.eof_body = False
        self.keep_alive = True
        self.stale = False
        """The parser finished a HEAD response at its headers; it is replaced before the next one."""
        self.last = b""
        self.chunks: list[bytes] | None = None

    def start(self, req: _Request) -> None:
        """Make `req` this connection's request; its bytes go out at the sender's next flush."""
        self.request = req
        self.written = False
        self.status = 0
        self.size = 0
        self.got = False
        self.eof_body = False
        self.head_only = req.prepared.method == "HEAD"
        sender = self.sender
        self.deadline = sender.clock.now() + sender.timeout
        if self.capture:
            self.chunks = []
        sender.write_soon(self, req)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.written or self.request is None:  # bytes nobody asked for: the connection cannot be trusted
            self.sender.discard(self)
            return
        self.got = True
        self.last = data
        if self.chunks is not None and self.size < CAPTURE_MAX:
            self.chunks.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.sender.fail(self, "protocol", describe(e))
            return
        if self.stale:
            self.stale = False
            self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        if self.stale:
            return
        status = self.parser.get_status_code()
        if status < 200 and status != 101:  # 100 Continue, 103 Early Hints: the real one follows
            self.interim = True
            return
        self.status = status
        self.keep_alive = keep_alive = self.parser.should_keep_alive()
        if not keep_alive:
            # Closes after this response; when it has no length header its body ends at EOF.
            head = self.last.lower()
            self.eof_body = (b"\ncontent-length:" not in head and b"\ntransfer-encoding:" not in head
                             and status not in (204, 304))
        if self.head_only:  # a HEAD response has no body whatever its Content-Length says
            self.stale = True
            self.sender.complete(self, keep_alive)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
        elif not self.stale and self.request is not None:
            self.sender.complete(self, self.keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sender.lost(self, exc)
        # The parser refers back to this protocol: break the cycle so both go now, not at the
        # next GC (nginx makes a new connection every 1000 requests).
        self.parser = None  # type: ignore[assignment]


class LeanSender:
    """A keep-alive pool of up to `options.pool_size` connections to one plain-http target.

    Requests beyond the free connections wait in a FIFO queue; the run bounds queue plus wire
    with --max-inflight. `sent` is when a request's bytes were written, so waiting for a
    connection shows in corrected latency and not in latency (see DESIGN: coordinated omission).
    """

    def __init__(self, target: Target, options: ReplayOptions, clock: Clock, wall_offset: float,
                 on_done: Done) -> None:
        self.target = target
        self.inflight = 0
        self.clock = clock
        self.timeout = options.timeout_for(target)
        self.capture = options.capture
        self.shape = TargetShape(target)
        self._make = OutcomeMaker(target, self.shape, clock, wall_offset)
        self._on_done = on_done
        self._size = options.pool_size
        self._opening = 0
        self._conns: set[_Connection] = set()
        self._idle: list[_Connection] = []
        self._queue: deque[_Request] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._unsent: list[tuple[_Connection, _Request]] = []

    def write_soon(self, conn: _Connection, req: _Request) -> None:
        """Queue `req`'s bytes for `conn`; all queued writes go out together at the end of this
        turn of the event loop.

        On loopback a write costs about as much as the whole rest of a request: the kernel
        hands the bytes to the server and wakes it. Writes issued back to back, after the
        responses of this turn were read, find the server already awake and cost a third less.
        """
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unsent.append((conn, req))

    def _flush(self) -> None:
        """Write every queued request whose connection still carries it; `sent` is stamped per write."""
        unsent, self._unsent = self._unsent, []
        now = self.clock.now
        timeout = self.timeout
        for conn, req in unsent:
            if conn.request is req and conn.alive:
                req.sent = sent = now()
                conn.deadline = sent + timeout
                conn.written = True
                conn.transport.write(req.data)  # type: ignore[union-attr]

    def submit(self, prepared: Prepared, intended: float, token: Any) -> None:
        self.inflight += 1
        problem = prepared.problem
        if problem is None:
            try:
                data = self.shape.request(prepared)
            except ValueError as e:
                problem = str(e)
        if problem is not None:
            self._finish(prepared, intended, token, None, "protocol", problem, None)
            return
        req = _Request(prepared, intended, token, data)
        if self._idle:
            self._idle.pop().start(req)
            return
        self._queue.append(req)
        self._refill()
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def complete(self, conn: _Connection, keep_alive: bool) -> None:
        """A whole response arrived on `conn`: its Outcome, then the connection's next request."""
        req = conn.request
        conn.request = None
        conn.reused = True
        exchange = None if conn.chunks is None else Exchange(req.data, b"".join(conn.chunks))  # type: ignore[union-attr]
        outcome = self._make(req.prepared, req.intended, req.sent, conn.status, None, None, conn.size)  # type: ignore[union-attr]
        self.inflight -= 1
        if keep_alive and conn.alive:
            if self._queue:
                conn.start(self._queue.popleft())
            else:
                self._idle.append(conn)
        else:
            self.discard(conn, abort=False)
        self._on_done(outcome, req.token, exchange)  # type: ignore[union-attr]

    def fail(self, conn: _Connection, error: str, reason: str) -> None:
        """End `conn`'s request with `error` and drop the connection."""
        req = conn.request
        conn.request = None
        self.discard(conn)
        if req is not None:
            self._finish(req.prepared, req.intended, req.token, req.sent, error, reason, conn)

    def lost(self, conn: _Connection, exc: Exception | None) -> None:
        """The connection closed: complete, retry or fail the request it carried."""
        req = conn.request
        conn.request = None
        self.discard(conn)
        if req is None:
            return
        if conn.eof_body and conn.status and exc is None:  # a body delimited by the connection's end
            conn.request = req
            self.complete(conn, False)
        elif not conn.got and conn.reused and not req.retried and req.prepared.method in IDEMPOTENT \
                and not self._closed:
            req.retried = True
            self._queue.appendleft(req)
            self._refill()
        else:
            error = "reset" if exc is None else classify_os_error(exc)
            reason = "the connection closed before the response ended" if exc is None else describe(exc)
            self._finish(req.prepared, req.intended, req.token, req.sent, error, reason, conn)

    def discard(self, conn: _Connection, abort: bool = True) -> None:
        """Take `conn` out of the pool and close it, at once unless `abort` is False (idempotent)."""
        if not conn.alive:
            return
        conn.alive = False
        self._conns.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        if conn.transport is not None:
            if abort:
                conn.transport.abort()
            else:
                conn.transport.close()
        self._refill()

    def _refill(self) -> None:
        """Open a connection per queued request, within the pool size."""
        if self._closed:
            return
        while self._opening < len(self._queue) and len(self._conns) + self._opening < self._size:
            self._connect()

    def _connect(self) -> None:
        self._opening += 1
        task = asyncio.get_running_loop().create_task(self._open_one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_one(self) -> None:
        conn = _Connection(self)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                await loop.create_connection(lambda: conn, self.shape.hostname, self.shape.port)
        except asyncio.CancelledError:
            self._opening -= 1
            raise
        except Exception as e:
            self._opening -= 1
            if self._queue:
                req = self._queue.popleft()
                error = "tls" if classify_os_error(e) == "tls" else "connect"
                reason = f"no connection within {self.timeout:g} s" if isinstance(e, TimeoutError) else describe(e)
                self._finish(req.prepared, req.intended, req.token, None, error, reason, None)
            self._refill()
            return
        self._opening -= 1
        if self._closed:
            conn.alive = False
            conn.transport.abort()  # type: ignore[union-attr]
            return
        self._conns.add(conn)
        if self._queue:
            conn.start(self._queue.popleft())
        else:
            self._idle.append(conn)

    async def _sweep(self) -> None:
        """End requests that outlived their timeout (checked every tenth of the timeout, ≤ 50 ms)."""
        interval = min(0.05, max(0.002, self.timeout / 10))
        reason = f"no response within {self.timeout:g} s"
        while True:
            await asyncio.sleep(interval)
            now = self.clock.now()
            for conn in [c for c in self._conns if c.request is not None and c.deadline <= now]:
                self.fail(conn, "timeout", reason)

    def _finish(self, p: Prepared, intended: float, token: Any, sent: float | None, error: str,
                reason: str, conn: _Connection | None) -> None:
        self.inflight -= 1
        exchange = None
        if self.capture and sent is not None:
            response = b"".join(conn.chunks) if conn is not None and conn.chunks else None
            exchange = Exchange(self.shape.request(p), response)
        self._on_done(self._make(p, intended, sent, None, error, reason, 0), token, exchange)

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while self._queue:
            req = self._queue.popleft()
            self._finish(req.prepared, req.intended, req.token, None, "cancelled",
                         "the run stopped before it was sent", None)
        for conn in list(self._conns):
            if conn.request is not None:
                self.fail(conn, "cancelled", "the run stopped before the response ended")
            else:
                self.discard(conn)
