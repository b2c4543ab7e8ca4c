"""The aiohttp sender: one record to one target, always ending in exactly one Outcome.

A request is rebuilt as close to the original as aiohttp allows: the exact target bytes,
headers in their original order, no client headers the original did not have. Every
failure (refused, reset, timeout, malformed response, unsendable target) becomes an
Outcome with a short error class and a reason; nothing raises out of `Sender.send`.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from dataclasses import dataclass

import aiohttp
from yarl import URL

from replay.options import ReplayOptions, Target
from replay.schedule import Clock
from shadowtap.record import Outcome, Record

DROP_HEADERS = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "proxy-authenticate", "proxy-authorization", "content-length", "host",
    }
)
"""Hop-by-hop headers and those aiohttp computes itself (Content-Length, Host)."""

AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
"""Headers aiohttp adds on its own; suppressed when the original request did not have them."""

RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


@dataclass(frozen=True, slots=True)
class Prepared:
    """The target-independent part of a request, built once per record."""

    record: Record
    headers: tuple[tuple[str, str], ...]
    skip_auto: frozenset[str]
    problem: str | None
    """Why the request cannot be sent as recorded (it then becomes a `protocol` error)."""


def prepare(record: Record, options: ReplayOptions) -> Prepared:
    """Headers in original order minus hop-by-hop ones, then Host first and the marker last."""
    marker_name, marker_value = options.marker
    present = {name.lower() for name, _ in record.headers}
    hop = set(DROP_HEADERS)
    hop.add(marker_name.lower())
    for name, value in record.headers:
        if name.lower() == "connection":
            hop.update(token.strip().lower() for token in value.split(","))
    headers: list[tuple[str, str]] = []
    host = options.host_header or record.host
    if host:
        headers.append(("Host", host))
    headers.extend((n, v) for n, v in record.headers if n.lower() not in hop)
    headers.append((marker_name, marker_value))
    skip = frozenset(h for h in AUTO_HEADERS if h.lower() not in present)
    problem = None
    if record.target_raw is not None:
        problem = "target bytes are not valid UTF-8; aiohttp writes the request line as UTF-8"
    elif "\r" in record.target or "\n" in record.target:
        problem = "target contains CR or LF, which cannot go on a request line"
    return Prepared(record, tuple(headers), skip, problem)


def classify(exc: BaseException) -> str:
    """The short error class of a failed request."""
    cause = exc.__cause__
    if isinstance(exc, ssl.SSLError | aiohttp.ClientSSLError) or isinstance(cause, ssl.SSLError):
        return "tls"
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | ConnectionResetError
        | BrokenPipeError | ConnectionAbortedError,
    ):
        return "reset"
    if isinstance(exc, OSError) and exc.errno in RESET_ERRNOS:
        return "reset"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.InvalidURL | ValueError | UnicodeError):
        return "protocol"
    return "other"


class Sender:
    """Sends requests to one target over its own keep-alive connection pool.

    `clock` gives monotonic seconds; Outcome times are wall-clock seconds obtained by adding
    `wall_offset` (taken once at the start, so a wall-clock step cannot distort latencies).
    """

    def __init__(self, target: Target, options: ReplayOptions, clock: Clock, wall_offset: float) -> None:
        self.target = target
        self.inflight = 0
        self._clock = clock
        self._offset = wall_offset
        self._timeout = options.timeout
        base = URL(target.url)
        self._scheme = base.scheme
        self._authority = base.raw_authority
        self._prefix = base.raw_path.rstrip("/")
        self._base = str(base.with_path(self._prefix, encoded=True))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=options.max_inflight, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=options.timeout),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    def _url(self, target: str) -> URL:
        # The whole target goes in the path, already encoded: yarl then keeps every byte
        # (a `?` with nothing after it, a `#`, `%zz`, `..`) and aiohttp writes raw_path_qs.
        path = self._prefix + target if target.startswith("/") else target
        return URL.build(scheme=self._scheme, authority=self._authority, path=path, encoded=True)

    async def send(self, p: Prepared, intended: float) -> Outcome:
        """Send one request and read the whole response; every failure becomes the Outcome's error."""
        if p.problem is not None:
            return self.unsent(p, intended, "protocol", p.problem)
        record = p.record
        status: int | None = None
        error: str | None = None
        reason: str | None = None
        size = 0
        sent = self._clock.now()
        try:
            async with self._session.request(
                record.method,
                self._url(record.target),
                headers=p.headers,
                skip_auto_headers=p.skip_auto,
                data=record.body,
                allow_redirects=False,
            ) as resp:
                while chunk := await resp.content.readany():
                    size += len(chunk)
                status = resp.status
        except asyncio.CancelledError:
            error, reason = "cancelled", "the run stopped before the response ended"
        except Exception as e:
            error = classify(e)
            reason = f"no response within {self._timeout:g} s" if error == "timeout" else _describe(e)
        return self._outcome(record, intended, sent, status, error, reason, size)

    def unsent(self, p: Prepared, intended: float, error: str, reason: str) -> Outcome:
        """The Outcome of a request that never went out."""
        return self._outcome(p.record, intended, None, None, error, reason, 0)

    def _outcome(self, record: Record, intended: float, sent: float | None, status: int | None,
                 error: str | None, reason: str | None, size: int) -> Outcome:
        done = self._clock.now()
        return Outcome(
            id=record.id,
            target=self.target.name,
            url=self._base + record.target if record.target.startswith("/") else self._base,
            intended=intended + self._offset,
            sent=None if sent is None else sent + self._offset,
            done=done + self._offset,
            status=status,
            error=error,
            bytes=size,
            method=record.method,
            path=record.target,
            reason=reason,
        )

    async def close(self) -> None:
        await self._session.close()


def _describe(exc: BaseException) -> str:
    """One line naming the exception, for the Outcome's reason."""
    text = " ".join((str(exc) or (str(exc.__cause__) if exc.__cause__ else "")).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
