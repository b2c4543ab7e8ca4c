"""Senders: one record to one target, always ending in exactly one Outcome.

One interface, two implementations. `LeanSender` (replay/send_lean.py) writes prebuilt
request bytes on asyncio protocols and parses responses with httptools: plain http only, but
close to wrk's speed and able to send a target's exact bytes. `AiohttpSender`
(replay/send_aiohttp.py) speaks https too. Both take a `Prepared` request (built once per
record, shared by all targets), apply the target's own header rules, and report every
failure as an Outcome with a short error class; nothing raises out of a sender.

A request is `submit`ted and completes through the `on_done` callback given at construction
(no task or future per request on the lean path). `inflight` counts submitted requests not yet
done: queued for a connection or on the wire.
"""

from __future__ import annotations

import dataclasses
import errno
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from replay.options import ReplayOptions, Target
from replay.schedule import Clock
from shadowtap.errors import UsageError
from shadowtap.record import Outcome, Record, decode_target

DROP_HEADERS = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "proxy-authenticate", "proxy-authorization", "content-length", "host",
    }
)
"""Hop-by-hop headers and those the sender computes itself (Content-Length, Host)."""

NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods that get no `Content-Length: 0` when they have no body (as aiohttp does)."""

RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})

CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL})


class Prepared:
    """The target-independent part of a request, built once per record.

    A plain slotted class rather than a frozen dataclass: one is made per record on the hot
    path. Its headers come in a `HeaderSet` shared by every record with the same original
    headers, which encodes them once for the lean sender.
    """

    __slots__ = ("_set", "body", "headers", "host", "method", "problem", "raw", "record", "target")

    def __init__(self, record: Record, target: str, raw: bytes, host: str | None,
                 header_set: HeaderSet, problem: str | None) -> None:
        self.record = record
        self.method = record.method
        self.target = target
        """The request target as text (after --rewrite-path); invalid UTF-8 bytes as `%HH`."""
        self.raw = raw
        """The exact request-target bytes to send."""
        self.host = host
        """Host header value; None: the target's host:port."""
        self.headers = header_set.headers
        """Original headers in order minus hop-by-hop ones, then the marker (never modified)."""
        self.body = record.body
        self.problem = problem
        """Why the request cannot be sent at all (it then becomes a `protocol` error)."""
        self._set = header_set

    def block(self) -> bytes:
        """`Name: value\\r\\n` lines of `headers`, UTF-8 (as aiohttp writes them)."""
        return self._set.block()


class HeaderSet:
    """Headers to send, and their encoded block once asked for (shared, never modified)."""

    __slots__ = ("_block", "headers")

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers
        self._block: bytes | None = None

    def block(self) -> bytes:
        """The header lines as bytes; ValueError (HEADER_CRLF) when one holds CR or LF."""
        if self._block is None:
            self._block = encode_headers(self.headers)
        return self._block


HEADER_CRLF = "a header contains CR or LF"


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """Header lines as bytes; ValueError when a name or value holds CR or LF (a header injection)."""
    block = "".join([f"{n}: {v}\r\n" for n, v in headers]).encode("utf-8", "surrogateescape")
    if block.count(b"\n") != len(headers) or block.count(b"\r") != len(headers):
        raise ValueError(HEADER_CRLF)
    return block


HEADER_CACHE_SIZE = 4096
"""Distinct header lists whose filtered form is kept (a proxy log repeats a few user agents)."""


class Preparer:
    """Builds `Prepared` requests from records under one run's options (rewrites, marker, Host).

    Records of one log share a handful of header lists (user agents, referrers), so the
    filtered list and its encoded block are built once per distinct list and reused.
    """

    def __init__(self, options: ReplayOptions) -> None:
        self._marker = options.marker
        self._host = options.host_header
        self._hop = DROP_HEADERS | {options.marker[0].lower()}
        self._rewrites = [(*r.compile(), r.replacement) for r in options.rewrite_paths]
        self._sets: dict[tuple[tuple[str, str], ...], HeaderSet] = {}

    def __call__(self, record: Record) -> Prepared:
        target, raw = record.target, record.target_raw
        for text_re, bytes_re, replacement in self._rewrites:
            if raw is None:
                target = text_re.sub(replacement, target)
            else:
                raw = bytes_re.sub(replacement.encode(), raw)
                target = decode_target(raw)[0]
        if raw is None:
            raw = target.encode("utf-8", "surrogateescape")
        header_set = self._sets.get(record.headers)
        if header_set is None:
            if len(self._sets) >= HEADER_CACHE_SIZE:
                self._sets.clear()
            header_set = self._sets[record.headers] = HeaderSet(self._filter(record.headers))
        problem = None
        if b"\r" in raw or b"\n" in raw:
            problem = "target contains CR or LF, which cannot go on a request line"
        return Prepared(record, target, raw, self._host or record.host, header_set, problem)

    def _filter(self, original: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
        """The headers to send: hop-by-hop ones (also those a Connection header names) dropped, the marker last."""
        hop = self._hop
        headers: list[tuple[str, str]] = []
        for header in original:
            lower = header[0].lower()
            if lower in hop:
                if lower == "connection":
                    hop = hop | {token.strip().lower() for token in header[1].split(",")}
                continue
            headers.append(header)
        if hop is not self._hop:  # a Connection header named more hop-by-hop headers
            headers = [(n, v) for n, v in headers if n.lower() not in hop]
        headers.append(self._marker)
        return headers


@dataclass(frozen=True, slots=True)
class Exchange:
    """The bytes of one exchange, kept only when the run captures them (tee --dump)."""

    request: bytes
    """The request as it went on the wire (aiohttp: as shadowtap asked aiohttp to send it)."""
    response: bytes | None
    """The response as received (aiohttp: status line and raw headers rebuilt, then the body)."""


Done = Callable[[Outcome, Any, Exchange | None], None]
"""A sender's completion callback: the Outcome, the token given to `submit`, the exchange."""


class Sender(Protocol):
    """Sends requests to one target; every `submit` ends in exactly one `on_done` call."""

    target: Target
    inflight: int
    """Submitted requests not yet done (queued for a connection or on the wire)."""

    def submit(self, prepared: Prepared, intended: float, token: Any) -> None: ...

    async def close(self) -> None:
        """Stop: requests still outstanding end as `cancelled` Outcomes."""


class TargetShape:
    """What a target changes in every request: its base URL, header rules, Host fallback."""

    def __init__(self, target: Target) -> None:
        parts = urlsplit(target.url)
        self.scheme = parts.scheme
        self.hostname = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        self.authority = parts.netloc if not default_port else parts.netloc.rsplit(":", 1)[0]
        self.prefix = parts.path.rstrip("/")
        self.base = f"{parts.scheme}://{parts.netloc}{self.prefix}"
        self._prefix_raw = self.prefix.encode()
        self._set = target.set_headers
        self._drop = target.drop_headers | {n.lower() for n, _ in target.set_headers}
        self.rewrites_headers = bool(self._set or target.drop_headers)

    def path(self, prepared: Prepared) -> bytes:
        """The request-target bytes for this target (its path prefix, then the record's)."""
        raw = prepared.raw
        return self._prefix_raw + raw if raw.startswith(b"/") else raw

    def url(self, prepared: Prepared) -> str:
        target = prepared.target
        return self.base + target if target.startswith("/") else self.base

    def headers(self, prepared: Prepared) -> list[tuple[str, str]]:
        """Host first, the prepared headers minus this target's dropped ones, its set ones before the marker."""
        host = prepared.host or self.authority
        headers = [(n, v) for n, v in prepared.headers[:-1] if n.lower() not in self._drop]
        headers.extend(self._set)
        marker = prepared.headers[-1]
        if marker[0].lower() not in self._drop:
            headers.append(marker)
        return [("Host", host), *headers]

    def request(self, prepared: Prepared) -> bytes:
        """The whole HTTP/1.1 request: request line, Host, headers, Content-Length, body.

        ValueError (HEADER_CRLF) when a header holds CR or LF.
        """
        method = prepared.method
        body = prepared.body
        parts = [method.encode(), b" ", self.path(prepared), b" HTTP/1.1\r\n"]
        if self.rewrites_headers:
            parts.append(encode_headers(self.headers(prepared)))
        else:
            host = prepared.host or self.authority
            if "\r" in host or "\n" in host:
                raise ValueError(HEADER_CRLF)
            parts += [b"Host: ", host.encode("utf-8", "surrogateescape"), b"\r\n", prepared.block()]
        if body is not None:
            parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
            parts.append(body)
        elif method not in NO_BODY_METHODS:
            parts.append(b"Content-Length: 0\r\n\r\n")
        else:
            parts.append(b"\r\n")
        return b"".join(parts)


def ssl_context(insecure: bool) -> ssl.SSLContext:
    """The TLS context of https targets: the system's trust store, or no verification at all."""
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def classify_os_error(exc: BaseException) -> str:
    """The error class of a socket-level failure (shared by both senders)."""
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return "tls"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno in RESET_ERRNOS:
        return "reset"
    if isinstance(exc, OSError) and exc.errno in CONNECT_ERRNOS:
        return "connect"
    if isinstance(exc, ValueError | UnicodeError):
        return "protocol"
    return "other"


def describe(exc: BaseException) -> str:
    """One line naming the exception, for the Outcome's reason."""
    text = " ".join((str(exc) or (str(exc.__cause__) if exc.__cause__ else "")).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


_OUTCOME_ORDER = ("id", "target", "url", "intended", "sent", "done", "status", "error", "bytes", "method", "path",
                  "reason")
if tuple(f.name for f in dataclasses.fields(Outcome)) != _OUTCOME_ORDER:  # pragma: no cover
    raise ImportError("shadowtap.record.Outcome changed its fields: update OutcomeMaker in replay/send.py")


class OutcomeMaker:
    """Builds a target's Outcomes; clock times are monotonic, Outcome times are wall-clock
    seconds obtained by adding `wall_offset` (taken once, so a clock step cannot distort latencies).

    Outcome is built with positional arguments, in the order checked above at import: keyword
    arguments cost a microsecond more per request, a tenth of the lean sender's budget.
    """

    def __init__(self, target: Target, shape: TargetShape, clock: Clock, wall_offset: float) -> None:
        self.name = target.name
        self.base = shape.base
        self.now = clock.now
        self.offset = wall_offset

    def __call__(self, p: Prepared, intended: float, sent: float | None, status: int | None,
                 error: str | None, reason: str | None, size: int) -> Outcome:
        offset = self.offset
        target = p.target
        return Outcome(
            p.record.id, self.name, self.base + target if target.startswith("/") else self.base,
            intended + offset, None if sent is None else sent + offset, self.now() + offset,
            status, error, size, p.method, target, reason,
        )


def make_sender(target: Target, options: ReplayOptions, clock: Clock, wall_offset: float, on_done: Done) -> Sender:
    """The sender `options.client` asks for: `auto` is lean for http:// and aiohttp for https://."""
    client = options.client
    if client == "auto":
        client = "aiohttp" if target.tls else "lean"
    if client == "lean":
        if target.tls:
            raise UsageError(f"--client lean speaks plain http only; target {target.name!r} is {target.url}")
        from replay.send_lean import LeanSender

        return LeanSender(target, options, clock, wall_offset, on_done)
    from replay.send_aiohttp import AiohttpSender

    return AiohttpSender(target, options, clock, wall_offset, on_done)
