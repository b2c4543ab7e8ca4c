"""Incremental HTTP/1.x parsing of reassembled TCP streams, and request/response pairing.

A `MessageReader` reads one direction's bytes as they come (in any chunking) and finds the
message boundaries with the RFC 9112 rules (shared/reference/log-and-http-formats.md
section 3): Content-Length, chunked bodies with trailers, bodies that end at the close, no
body for HEAD, 1xx, 204 and 304, HTTP/1.0, and HTTP/0.9 simple requests with their
status-less responses. Bodies are kept up to `max_body` bytes, after removing the chunked
coding; `body_size` always says how large they were.

`HttpConnection` pairs the two directions: responses answer requests in order (pipelining
included), interim 1xx responses are skipped, `Expect: 100-continue` is followed, and after
`101 Switching Protocols` (or a 2xx to CONNECT) both directions are a tunnel that is not
parsed. Every request ends in `on_exchange(conn, exchange)`, complete or with `problem` set;
what cannot become an exchange goes to `on_drop(conn, reason, text, frame, sample)`.

Gaps. A gap inside a body whose length is known keeps the framing: the message is marked
incomplete and reading goes on after it. Any other gap (or a capture that starts in the
middle of a connection) makes the reader skip bytes until a segment starts with a message.
Pairing then uses TCP acknowledgements: a response answers a request the server had
received completely, i.e. whose end is at or before the response segment's ACK number.
A response found after a server-side gap answers the latest such waiting request (the
waiting requests before it lost their responses in the gap); after a client-side gap, a
response that does not acknowledge the next known request answers a request lost in the gap.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

MASK = 0xFFFFFFFF
HALF = 1 << 31
MAX_HEAD = 64 << 10
"""A head (start line and header fields) larger than this is not taken for HTTP."""
MAX_LINE = 8 << 10
"""Longest chunk-size line accepted."""

_HEAD_END = re.compile(rb"\n\r?\n")
"""The empty line ending a head; the match starts at the line feed of the last field line."""
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_START = re.compile(rb"[A-Z][A-Z0-9_-]{0,31} [^ \r\n]+ HTTP/1\.[01]\r?\n")
"""A request line, as looked for where a stream is entered in the middle."""
_REQUEST_PREFIX = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}(?: |\Z)")
"""What an unfinished request head must start with: a method (or a piece of one)."""
_RESPONSE_START = re.compile(rb"HTTP/1\.[01] [0-9]{3}[ \r\n]")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_CHUNK_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,15})[ \t]*(?:;.*)?")

# Reader states.
HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS, CLOSE, SYNC, TUNNEL, PAUSED, DEAD = range(11)



class Message:
    """One HTTP message as read from a stream, with when and where it started and ended.

    No __slots__: most attributes keep their class-level default, and a message is created for
    every request and response, so only what differs is stored per instance.
    """

    method = ""
    target = b""
    """Request-target bytes as on the wire."""
    version = ""
    status: int | None = None
    """Status code of a response; None for a request and for an HTTP/0.9 response."""
    reason = ""
    headers: tuple[tuple[str, str], ...] = ()
    host: str | None = None
    content_length: str | None = None
    te: str | None = None
    close = False
    expect_continue = False
    continued = False
    """A `100 Continue` answered this request's `Expect: 100-continue`."""
    upgrade = False
    chunked = False
    bad_lines = 0
    """Header lines that were not `name: value` (left out of `headers`)."""
    body: bytes | None = None
    """The kept body, None when the message had none."""
    body_size = 0
    """Body bytes the message had (after removing the chunked coding), kept or not."""
    truncated = False
    """True when the body is longer than what was kept (`max_body`)."""
    missing = 0
    """Body bytes that fell into capture gaps."""
    trailers: tuple[tuple[str, str], ...] | None = None
    problem: str | None = None
    """Why the message is incomplete (`gap`, `cut`, `bad_chunk`, ...); None when complete."""
    done = False
    end_seq: int | None = None
    """TCP sequence number just past the message's last byte, when known."""
    request: Message | None = None
    """For a response: the request it answers."""

    def __init__(self, first_ts: float, first_frame: int, index: int) -> None:
        self.first_ts = first_ts
        """Time of the packet holding the first byte."""
        self.first_frame = first_frame
        """Frame number (1-based) of that packet."""
        self.index = index
        """How many messages of the same direction started earlier in that frame (pipelining)."""
        self.last_ts = first_ts
        """Time of the packet that completed the message."""


class Exchange:
    """A request and, once known, its response."""

    __slots__ = ("problem", "request", "response", "settled")

    def __init__(self, request: Message) -> None:
        self.request = request
        self.response: Message | None = None
        self.settled = False
        """True once the response is attached or known to be lost."""
        self.problem: str | None = None
        """Why the exchange is incomplete: `request_gap`, `response_gap`, `no_response`, ..."""

    @property
    def ready(self) -> bool:
        """Nothing more can happen to it: it can be handed on."""
        response = self.response
        return self.request.done and self.settled and (response is None or response.done)


class LostRequests:
    """A place in the waiting queue where a client-side gap may have swallowed requests."""

    __slots__ = ()


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_FIELD = re.compile(r"\n([^:\r\n \t][^:\r\n]*):[ \t]*((?:[^\r\n]*[^\r\n \t])?)")
"""One `name: value` field line (after a line feed), value without surrounding blanks."""


def parse_fields(lines: list[str]) -> tuple[list[tuple[str, str]], int]:
    """Field lines into (name, value) pairs in order, unfolding obsolete line folding; returns
    the pairs and how many lines were not `name: value`."""
    fields: list[tuple[str, str]] = []
    bad = 0
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name and name[0] not in " \t":
            fields.append((name, value.strip(" \t\r")))
        elif line[:1] in (" ", "\t") and fields:
            last_name, last_value = fields[-1]
            fields[-1] = (last_name, f"{last_value} {line.strip()}".strip())
        elif line.strip():
            bad += 1
    return fields, bad


_BLOCKS: dict[bytes, tuple] = {}
"""Parsed field blocks by their bytes: a client on a keep-alive connection sends the same
header fields again and again. Bounded by `MAX_CACHED_BLOCKS` (emptied when full)."""
MAX_CACHED_BLOCKS = 4096


def _read_fields(msg: Message, head: bytes) -> None:
    """The header section (after the start line) into the message, with the values that decide
    the framing."""
    nl = head.find(b"\n")
    block = head[nl:] if nl >= 0 else b""
    parsed = _BLOCKS.get(block)
    if parsed is None:
        parsed = _parse_block(block)
        if len(_BLOCKS) >= MAX_CACHED_BLOCKS:
            _BLOCKS.clear()
        _BLOCKS[block] = parsed
    msg.headers, msg.bad_lines, msg.host, msg.content_length, msg.te, tokens, msg.expect_continue = parsed
    if tokens:
        msg.close = msg.close or "close" in tokens
        msg.upgrade = "upgrade" in tokens
        if "keep-alive" in tokens and msg.version in ("HTTP/1.0", "HTTP/0.9"):
            msg.close = False


def _parse_block(block: bytes) -> tuple:
    """(headers, bad lines, host, content-length, transfer-encoding, connection tokens, expects
    100-continue) of a field block (each line after a line feed). One regex pass does the common
    case; folded or broken lines take the slow one. The framing fields are looked up by their
    usual spelling first, by any spelling when the lowered text shows another one or a repeat."""
    try:
        text = block.decode()
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    pairs = _FIELD.findall(text)
    bad = 0
    if len(pairs) != text.count("\n"):
        pairs, bad = parse_fields(text.replace("\r\n", "\n").split("\n")[1:])
    headers = tuple(pairs)
    by_name = dict(pairs)
    low = text.lower()
    host = _single(headers, by_name, low, "Host", "\nhost") if "\nhost" in low else None
    length = _joined(headers, by_name, low, "Content-Length", "\ncontent-length") if "\ncontent-length" in low \
        else None
    te = None
    if "\ntransfer-encoding" in low:
        te = _joined(headers, by_name, low, "Transfer-Encoding", "\ntransfer-encoding")
        te = te.lower() if te is not None else None
    tokens: frozenset[str] = frozenset()
    if "\nconnection" in low:
        value = _joined(headers, by_name, low, "Connection", "\nconnection")
        if value is not None:
            tokens = frozenset(t.strip() for t in value.lower().split(","))
    expect = False
    if "\nexpect" in low:
        value = _single(headers, by_name, low, "Expect", "\nexpect")
        expect = value is not None and value.lower() == "100-continue"
    return headers, bad, host, length, te, tokens, expect


def _single(headers: tuple[tuple[str, str], ...], by_name: dict[str, str], low: str, name: str, marker: str
            ) -> str | None:
    """The first value of field `name` (any letter case)."""
    if low.count(marker) == 1 and name in by_name:
        return by_name[name]
    key = name.lower()
    return next((v for n, v in headers if n.lower() == key), None)


def _joined(headers: tuple[tuple[str, str], ...], by_name: dict[str, str], low: str, name: str, marker: str
            ) -> str | None:
    """All values of field `name` (any letter case) joined with commas, as RFC 9110 5.3 allows."""
    if low.count(marker) == 1 and name in by_name:
        return by_name[name]
    key = name.lower()
    values = [v for n, v in headers if n.lower() == key]
    return ",".join(values) if values else None


def content_length(value: str) -> int | None:
    """The Content-Length, accepting a list of identical values (`42, 42`); None if invalid."""
    if value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1:
        return None
    (v,) = values
    return int(v) if v.isascii() and v.isdigit() and len(v) < 19 else None


def is_chunked(te: str) -> bool:
    """True when chunked is the final transfer coding."""
    return te.rsplit(",", 1)[-1].strip() == "chunked"


def starts_request(data: bytes) -> bool:
    """Whether `data` starts with a whole HTTP/1.x request line."""
    return _REQUEST_START.match(data) is not None


def guess_role(payload: bytes) -> bool | None:
    """For a connection seen without its handshake: True when `payload` starts like a request,
    False when it starts like a response, None when it says neither."""
    if _RESPONSE_START.match(payload):
        return False
    if _REQUEST_START.match(payload):
        return True
    return None


def _seq_le(a: int, b: int) -> bool:
    """a <= b in sequence-number space."""
    return ((b - a) & MASK) < HALF


class BadHead(Exception):
    """A start line that is not HTTP/1.x."""

    def __init__(self, line: bytes) -> None:
        super().__init__()
        self.line = line


def parse_request_head(msg: Message, head: bytes) -> bool:
    """Fill `msg` from a request head (up to its empty line): `METHOD SP TARGET SP VERSION`
    and the header fields. A version that is not `HTTP/d.d` but starts with `HTTP/` is kept
    as written. Without a version the request is HTTP/0.9: a simple request (RFC 1945 4.1:
    `GET`, the target, nothing else) when no header lines follow; True then. Raises BadHead."""
    nl = head.find(b"\n")
    line = head if nl < 0 else head[:nl]
    if line.endswith(b"\r"):
        line = line[:-1]
    parts = line.split(b" ")
    if len(parts) == 3 and (parts[2].startswith(b"HTTP/") or _VERSION.fullmatch(parts[2])):
        method, target, version = parts
    elif len(parts) == 2:
        (method, target), version = parts, b"HTTP/0.9"
    else:
        raise BadHead(line)
    simple = version == b"HTTP/0.9" and (nl < 0 or not head[nl + 1:].strip())
    if not target or _TOKEN.fullmatch(method) is None or (simple and method != b"GET"):
        raise BadHead(line)
    msg.method = method.decode("ascii")
    msg.target = target
    msg.version = version.decode("ascii", "replace")
    if simple:
        msg.close = True
    else:
        msg.close = msg.version in ("HTTP/1.0", "HTTP/0.9")
        _read_fields(msg, head)
    return simple


def parse_response_head(msg: Message, head: bytes) -> None:
    """Fill `msg` from a response head (up to its empty line): status line and header
    fields. Raises BadHead."""
    nl = head.find(b"\n")
    line = (head if nl < 0 else head[:nl]).rstrip(b"\r")
    version, _, rest = line.partition(b" ")
    status, _, reason = rest.partition(b" ")
    if _VERSION.fullmatch(version) is None or len(status) != 3 or not status.isdigit():
        raise BadHead(line)
    msg.version = version.decode("ascii")
    msg.status = int(status)
    msg.reason = _decode(reason)
    _read_fields(msg, head)


class MessageReader:
    """One direction of an HTTP connection: bytes in, `Message`s out through the connection."""

    is_request = True

    def __init__(self, conn: HttpConnection, max_body: int, sync: bool) -> None:
        self.conn = conn
        self.max_body = max_body
        self.state = SYNC if sync else HEAD
        self.buf = b""
        """Bytes of an unfinished head, chunk-size line or chunk ending."""
        self.start: tuple[float, int, int] = (0.0, 0, 0)
        """(ts, frame, seq) where the buffered head began."""
        self.msg: Message | None = None
        self.remaining = 0
        self.parts: list[bytes] = []
        self.kept = 0
        self.trailer_lines: list[bytes] = []
        self.last_frame = -1
        self.in_frame = 0
        self.skipped = 0
        """Bytes skipped while looking for a message start."""
        self.held: list[tuple] = []
        """What arrived while PAUSED (waiting to see whether an upgrade happens)."""

    # -- input from the TCP layer --------------------------------------------------------------

    def data(self, data: bytes, ts: float, frame: int, seq: int, ack: int) -> None:
        """The next bytes of this direction: `seq` numbers data[0], `ack` is its segment's ACK."""
        pos = 0
        n = len(data)
        while pos < n:
            state = self.state
            if state == HEAD:
                pos = self._head(data, pos, ts, frame, seq, ack)
            elif state in (LENGTH, CHUNK_DATA):
                take = n - pos
                if take > self.remaining:
                    take = self.remaining
                self._body(data[pos:pos + take] if take < n else data)
                pos += take
                self.remaining -= take
                if not self.remaining:
                    if state == LENGTH:
                        self._finish(ts, (seq + pos) & MASK)
                    else:
                        self.state = CHUNK_END
            elif state == CLOSE:
                self._body(data[pos:] if pos else data)
                return
            elif state == SYNC:
                if pos == 0 and self._starts_message(data, ack):
                    self.state = HEAD
                    continue
                self.skipped += n - pos
                return
            elif state == PAUSED:
                self.held.append((data[pos:], ts, frame, (seq + pos) & MASK, ack))
                return
            elif state in (TUNNEL, DEAD):
                return
            else:
                pos = self._framing_line(data, pos, ts, seq)

    def gap(self, size: int, ts: float) -> None:
        """`size` bytes of this direction were not captured."""
        state = self.state
        if state == PAUSED:
            self.held.append((None, size, ts))
            return
        if state in (SYNC, TUNNEL, DEAD):
            return
        if state == HEAD:
            if self.buf:
                self.buf = b""
                self._lost_head("gap", self.start[1])
            else:
                self.conn.lost_between(self, size)
            self.state = SYNC
            return
        msg = self.msg
        assert msg is not None
        if state == CLOSE or (state in (LENGTH, CHUNK_DATA) and size < self.remaining):
            # The body's end is still known: note the hole and read on.
            msg.missing += size
            msg.body_size += size
            if state != CLOSE:
                self.remaining -= size
            msg.problem = msg.problem or "gap"
            return
        msg.missing += self.remaining if state in (LENGTH, CHUNK_DATA) else 0
        msg.problem = "gap"
        self._finish(ts, None)
        self.state = SYNC

    def end(self, ts: float, cause: str) -> None:
        """The stream ended: `fin`, `reset`, `idle_timeout`, `capture_end`, `port_reused`."""
        if self.state == PAUSED:
            self.resume()
        state = self.state
        if state == HEAD and self.buf:
            self.buf = b""
            self._lost_head("cut", self.start[1])
        elif state == CLOSE:
            assert self.msg is not None
            if cause != "fin":
                self.msg.problem = self.msg.problem or "cut"
            self._finish(ts, None)
        elif state in (LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS):
            assert self.msg is not None
            self.msg.problem = self.msg.problem or "cut"
            self._finish(ts, None)
        self.state = DEAD
        self.conn.ended(self)

    def resume(self) -> None:
        """Leave PAUSED and read what was held back."""
        held, self.held = self.held, []
        self.state = HEAD
        for item in held:
            if item[0] is None:
                self.gap(item[1], item[2])
            else:
                self.data(*item)

    # -- heads ---------------------------------------------------------------------------------

    def _head(self, data: bytes, pos: int, ts: float, frame: int, seq: int, ack: int) -> int:
        """Read a head starting at `pos` (or continuing the buffered one): the position after
        it, or len(data) when all of `data` was used."""
        buf = self.buf
        if buf:
            before = len(buf)
            buf += data[pos:] if pos else data
            m = _HEAD_END.search(buf, max(0, before - 2))
            if m is None:
                return self._partial(buf, len(data))
            head = buf[:m.start()]
            after = pos + m.end() - before
            self.buf = b""
            first_ts, first_frame, _ = self.start
        else:
            if data[pos] in (13, 10):  # RFC 9112 2.2: empty lines before a message are ignored
                while pos < len(data) and data[pos] in (13, 10):
                    pos += 1
                if pos == len(data):
                    return pos
            m = _HEAD_END.search(data, pos)
            if m is None:
                self.start = (ts, frame, (seq + pos) & MASK)
                return self._partial(data[pos:] if pos else data, len(data))
            first_ts, first_frame = ts, frame
            head = data[pos:m.start()]
            after = m.end()
        msg = self._new_message(first_ts, first_frame)
        msg.last_ts = ts
        try:
            simple = self._parse_head(msg, head)
        except BadHead as e:
            self._bad(e.line, first_frame)
            return len(data)
        if simple:
            after = len(data)  # an HTTP/0.9 request is alone on its connection
        self._begin(msg, ts, (seq + after) & MASK, ack)
        return after

    def _new_message(self, ts: float, frame: int) -> Message:
        if frame == self.last_frame:
            self.in_frame += 1
        else:
            self.last_frame = frame
            self.in_frame = 0
        return Message(ts, frame, self.in_frame)

    def _partial(self, buf: bytes, used: int) -> int:
        """Keep an unfinished head, unless it is too long or cannot be the start of one."""
        if len(buf) > MAX_HEAD or not self._plausible(buf):
            self.buf = b""
            self._bad(buf[:200], self.start[1])
        else:
            self.buf = buf
            self._partial_head(buf)
        return used

    def _partial_head(self, buf: bytes) -> None:
        """Hook for heads complete without an empty line (HTTP/0.9 requests)."""

    def _plausible(self, buf: bytes) -> bool:
        """Whether `buf` can be the beginning of a head (so that other protocols are told
        apart without waiting for an empty line that never comes)."""
        raise NotImplementedError

    def _bad(self, line: bytes, frame: int) -> None:
        self.buf = b""
        self.state = SYNC
        self.conn.bad(self, line, frame)

    def _lost_head(self, how: str, frame: int) -> None:
        raise NotImplementedError

    # -- bodies --------------------------------------------------------------------------------

    def _begin(self, msg: Message, ts: float, end_seq: int, ack: int) -> None:
        """After the head: find the body framing, then read on or finish at once."""
        self.msg = msg
        self.parts = []
        self.kept = 0
        state = self._framing(msg, ack)
        if state == HEAD:
            self._finish(ts, end_seq)
        elif state is not None:
            self.state = state
            msg.chunked = state == CHUNK_SIZE

    def _body(self, piece: bytes) -> None:
        msg = self.msg
        assert msg is not None
        msg.body_size += len(piece)
        room = self.max_body - self.kept
        if room >= len(piece):
            self.parts.append(piece)
            self.kept += len(piece)
        else:
            msg.truncated = True
            if room > 0:
                self.parts.append(piece[:room])
                self.kept += room

    def _framing_line(self, data: bytes, pos: int, ts: float, seq: int) -> int:
        """CHUNK_SIZE, CHUNK_END and TRAILERS: the line-oriented parts of a chunked body."""
        nl = data.find(b"\n", pos)
        if nl < 0:
            self.buf += data[pos:]
            if len(self.buf) > (MAX_HEAD if self.state == TRAILERS else MAX_LINE):
                self._bad_chunk(ts)
            return len(data)
        line = self.buf + data[pos:nl] if self.buf else data[pos:nl]
        self.buf = b""
        after = nl + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        state = self.state
        if state == CHUNK_SIZE:
            m = _CHUNK_SIZE.fullmatch(line)
            if m is None:
                self._bad_chunk(ts)
                return len(data)
            size = int(m.group(1), 16)
            if size:
                self.remaining = size
                self.state = CHUNK_DATA
            else:
                self.state = TRAILERS
                self.trailer_lines = []
        elif state == CHUNK_END:
            if line:
                self._bad_chunk(ts)
                return len(data)
            self.state = CHUNK_SIZE
        elif line:  # TRAILERS
            self.trailer_lines.append(line)
        else:
            msg = self.msg
            assert msg is not None
            if self.trailer_lines:
                msg.trailers = tuple(parse_fields([_decode(x) for x in self.trailer_lines])[0])
                self.trailer_lines = []
            self._finish(ts, (seq + after) & MASK)
        return after

    def _bad_chunk(self, ts: float) -> None:
        msg = self.msg
        assert msg is not None
        msg.problem = "bad_chunk"
        self.buf = b""
        self._finish(ts, None)
        self.state = SYNC

    def _finish(self, ts: float, end_seq: int | None) -> None:
        msg = self.msg
        assert msg is not None
        self.msg = None
        msg.last_ts = ts
        msg.end_seq = end_seq
        if self.parts:
            parts = self.parts
            msg.body = parts[0] if len(parts) == 1 else b"".join(parts)
            self.parts = []
        elif msg.body_size:
            msg.body = b""
        msg.done = True
        self.state = HEAD
        self._done(msg)

    # -- what differs per direction ------------------------------------------------------------

    def _parse_head(self, msg: Message, head: bytes) -> bool:
        """Fill `msg` from its head; True for an HTTP/0.9 simple request. Raises BadHead."""
        raise NotImplementedError

    def _framing(self, msg: Message, ack: int) -> int | None:
        """The state that reads the body (HEAD: no body; None: already handled)."""
        raise NotImplementedError

    def _starts_message(self, data: bytes, ack: int) -> bool:
        raise NotImplementedError

    def _done(self, msg: Message) -> None:
        raise NotImplementedError


class RequestReader(MessageReader):
    """The client's direction: requests."""

    def _parse_head(self, msg: Message, head: bytes) -> bool:
        return parse_request_head(msg, head)

    def _partial_head(self, buf: bytes) -> None:
        nl = buf.find(b"\n")
        if nl < 0 or _VERSION.search(buf[max(0, nl - 9):nl]):
            return
        # A whole first line without a version, and no empty line: an HTTP/0.9 request.
        self.buf = b""
        ts, frame, seq = self.start
        msg = self._new_message(ts, frame)
        try:
            self._parse_head(msg, buf[:nl + 1])
        except BadHead as e:
            self._bad(e.line, frame)
            return
        self._begin(msg, ts, (seq + nl + 1) & MASK, 0)

    def _framing(self, msg: Message, ack: int) -> int | None:
        state: int | None = HEAD
        if msg.te is not None:
            if is_chunked(msg.te):
                state = CHUNK_SIZE
            else:
                msg.problem, state = "bad_transfer_encoding", None
        elif msg.content_length is not None:
            size = content_length(msg.content_length)
            if size is None:
                msg.problem, state = "bad_content_length", None
            elif size:
                self.remaining, state = size, LENGTH
        self.conn.request_head(msg)
        if state is None:  # the body's end cannot be found: the rest of this stream is unusable
            self._finish(msg.last_ts, None)
            self.state = SYNC
        return state

    def _starts_message(self, data: bytes, ack: int) -> bool:
        return starts_request(data)

    def _plausible(self, buf: bytes) -> bool:
        return _REQUEST_PREFIX.match(buf) is not None

    def _done(self, msg: Message) -> None:
        self.conn.request_done(msg)
        if msg.version == "HTTP/0.9" and not msg.headers:
            self.state = SYNC
        elif (msg.upgrade or msg.method == "CONNECT") and self.state == HEAD:
            self.state = PAUSED  # what follows is HTTP only if the server refuses the upgrade

    def _lost_head(self, how: str, frame: int) -> None:
        self.conn.lost_request(f"request_head_{how}", "a request head was cut by a "
                               + ("capture gap" if how == "gap" else "close"), frame, b"")


class ResponseReader(MessageReader):
    """The server's direction: responses, framed with the help of the requests they answer."""

    is_request = False

    def _head(self, data: bytes, pos: int, ts: float, frame: int, seq: int, ack: int) -> int:
        if not self.buf and data[pos:pos + 5] != b"HTTP/"[:len(data) - pos] and self.conn.awaits_simple_response():
            # The answer to an HTTP/0.9 request: no status line, the body runs to the close.
            msg = self._new_message(ts, frame)
            msg.version = "HTTP/0.9"
            self.msg = msg
            self.parts = []
            self.kept = 0
            self.conn.response_head(msg, ack)
            self.state = CLOSE
            return pos
        return super()._head(data, pos, ts, frame, seq, ack)

    def _parse_head(self, msg: Message, head: bytes) -> bool:
        parse_response_head(msg, head)
        return False

    def _framing(self, msg: Message, ack: int) -> int | None:
        status = msg.status
        assert status is not None
        if status < 200 and status != 101:
            self.msg = None
            self.conn.interim(msg)
            return None
        request = self.conn.response_head(msg, ack)
        if status == 101 or (request is not None and request.method == "CONNECT" and 200 <= status < 300):
            self.msg = None
            msg.done = True
            self.conn.tunnel(msg)
            return None
        if (request is not None and request.method == "HEAD") or status in (204, 304):
            return HEAD
        if msg.te is not None:
            return CHUNK_SIZE if is_chunked(msg.te) else CLOSE
        if msg.content_length is not None:
            size = content_length(msg.content_length)
            if size is None:
                msg.problem = "bad_content_length"
                return CLOSE
            self.remaining = size
            return LENGTH if size else HEAD
        return CLOSE

    def _starts_message(self, data: bytes, ack: int) -> bool:
        return _RESPONSE_START.match(data) is not None and self.conn.resync_response(ack)

    def _plausible(self, buf: bytes) -> bool:
        return buf[:5] == b"HTTP/"[:len(buf)]

    def _done(self, msg: Message) -> None:
        self.conn.response_done(msg)

    def _lost_head(self, how: str, frame: int) -> None:
        self.conn.response_lost(f"response_{how}")


ExchangeFn = Callable[["HttpConnection", Exchange], None]
DropFn = Callable[["HttpConnection", str, str, int, bytes], None]
"""on_drop(conn, reason, text, frame, sample): something that cannot become a record."""


class HttpConnection:
    """Both directions of one HTTP/1.x connection, pairing requests with their responses.

    `state` is `new` until a request was read, then `http`; `not_http` when the client's first
    bytes are no HTTP at all; `upgraded` after a protocol switch.
    """

    def __init__(self, on_exchange: ExchangeFn, on_drop: DropFn, max_body: int, midstream: bool = False,
                 user: object = None) -> None:
        self.on_exchange = on_exchange
        self.on_drop = on_drop
        self.user = user
        """Whatever the caller wants to find again in its callbacks."""
        self.client = RequestReader(self, max_body, midstream)
        self.server = ResponseReader(self, max_body, midstream)
        self.queue: deque[Exchange] = deque()
        """Exchanges not yet handed on, in request order."""
        self.awaiting: deque[Exchange | LostRequests] = deque()
        """Exchanges whose response has not started, and places where requests may be lost."""
        self.state = "new"
        self.interim_responses = 0

    def receivers(self):
        """((data, gap, end) of the client direction, (data, gap, end) of the server direction)."""
        c, s = self.client, self.server
        return (c.data, c.gap, c.end), (s.data, s.gap, s.end)

    # -- requests ------------------------------------------------------------------------------

    def request_head(self, msg: Message) -> None:
        if self.state == "new":
            self.state = "http"
        exchange = Exchange(msg)
        self.queue.append(exchange)
        self.awaiting.append(exchange)

    def request_done(self, msg: Message) -> None:
        if msg.problem is not None:
            for exchange in reversed(self.queue):
                if exchange.request is msg:
                    exchange.problem = exchange.problem or f"request_{msg.problem}"
                    break
        self._emit_ready()

    # -- responses -----------------------------------------------------------------------------

    def awaits_simple_response(self) -> bool:
        front = self.awaiting[0] if self.awaiting else None
        return isinstance(front, Exchange) and front.request.version == "HTTP/0.9"

    def interim(self, msg: Message) -> None:
        """A 1xx response: nothing to pair; a 100 lets the waiting request's body come."""
        self.interim_responses += 1
        front = self.awaiting[0] if self.awaiting else None
        if msg.status == 100 and isinstance(front, Exchange):
            front.request.continued = True

    def response_head(self, msg: Message, ack: int) -> Message | None:
        """A final response's head: attach it to the request it answers (None: an orphan)."""
        exchange = self._answered(ack)
        if exchange is None:
            if self.awaiting:
                reason, text = "response_to_lost_request", "a response to a request that was not captured"
            else:
                reason, text = "response_without_request", "a response arrived with no request waiting for it"
            self.on_drop(self, reason, text, msg.first_frame, b"")
            return None
        exchange.response = msg
        exchange.settled = True
        msg.request = request = exchange.request
        if not request.done and request.expect_continue and not request.continued and request.body_size == 0 \
                and msg.status != 101:
            # A final answer before the body that `Expect: 100-continue` held back: none will come.
            request.problem = request.problem or "body_not_sent"
            if self.client.msg is request:
                self.client._finish(msg.first_ts, None)
        return request

    def _answered(self, ack: int) -> Exchange | None:
        """The waiting exchange a response answers, popped from the queue."""
        awaiting = self.awaiting
        if not awaiting:
            return None
        if isinstance(awaiting[0], Exchange):
            return awaiting.popleft()  # type: ignore[return-value]
        # Requests may have been lost in a client-side gap. The response answers the next known
        # request only if the server had that one completely (ACK at or past its end).
        following = next((x for x in awaiting if isinstance(x, Exchange)), None)
        end = following.request.end_seq if following is not None else None
        if end is None or not _seq_le(end, ack):
            return None
        while not isinstance(awaiting[0], Exchange):
            awaiting.popleft()
        return awaiting.popleft()  # type: ignore[return-value]

    def response_done(self, msg: Message) -> None:
        if msg.request is not None and msg.problem is not None:
            for exchange in self.queue:
                if exchange.response is msg:
                    exchange.problem = exchange.problem or f"response_{msg.problem}"
                    break
        request = msg.request
        if request is not None and (request.upgrade or request.method == "CONNECT") and self.client.state == PAUSED:
            self.client.resume()  # the upgrade was refused: the client speaks HTTP on
        self._emit_ready()

    def response_lost(self, reason: str) -> None:
        """A response head was cut (by a gap or the close): its request has lost its response."""
        awaiting = self.awaiting
        while awaiting and not isinstance(awaiting[0], Exchange):
            awaiting.popleft()
        if awaiting:
            exchange = awaiting.popleft()
            exchange.problem = exchange.problem or reason  # type: ignore[union-attr]
            exchange.settled = True  # type: ignore[union-attr]
            self._emit_ready()
        else:
            self.on_drop(self, reason, "a response head with no request waiting for it was cut", 0, b"")

    def resync_response(self, ack: int) -> bool:
        """After a server-side gap a response starts: pair it with the latest waiting request the
        server had received completely; the waiting requests before that lost their responses.
        False (skip these bytes) when no waiting request qualifies."""
        awaiting = self.awaiting
        chosen = None
        for i, item in enumerate(awaiting):
            if isinstance(item, Exchange):
                end = item.request.end_seq
                if item.request.done and end is not None and _seq_le(end, ack):
                    chosen = i
        if chosen is None:
            return False
        for _ in range(chosen):
            item = awaiting.popleft()
            if isinstance(item, Exchange):
                item.problem = item.problem or "response_gap"
                item.settled = True
        self._emit_ready()
        return True

    # -- the connection as a whole -------------------------------------------------------------

    def lost_between(self, reader: MessageReader, size: int) -> None:
        """A gap fell between messages: whole messages may have been lost in it."""
        side = "request" if reader.is_request else "response"
        if reader.is_request:
            self.awaiting.append(LostRequests())
        self.on_drop(self, f"{side}_stream_gap", f"{size} bytes between {side}s were not captured", 0, b"")

    def tunnel(self, response: Message) -> None:
        """After 101 Switching Protocols (or a 2xx to CONNECT) both directions carry another
        protocol: stop parsing them."""
        self.state = "upgraded"
        for reader in (self.client, self.server):
            reader.held = []
            if reader.msg is not None:
                reader.msg.problem = reader.msg.problem or "cut"
                reader._finish(reader.msg.last_ts, None)
            reader.state = TUNNEL
        self.response_done(response)

    def bad(self, reader: MessageReader, line: bytes, frame: int) -> None:
        """Bytes that are not HTTP where a message should start."""
        text = f"not an HTTP/1.x {'request' if reader.is_request else 'response'}: {line[:80].decode('latin-1')!r}"
        if reader.is_request:
            if self.state == "new":
                # The connection's first bytes: not HTTP (TLS, SSH, ...), or a broken attempt at it.
                self.state = "not_http"
                self.client.state = self.server.state = DEAD
                if _looks_like_http(line):
                    self.on_drop(self, "bad_request", text, frame, line)
                return
            self.lost_request("bad_request", text, frame, line)
        elif any(isinstance(item, Exchange) for item in self.awaiting):
            self.response_lost("response_unparseable")
        else:
            self.on_drop(self, "bad_response", text, frame, line)

    def lost_request(self, reason: str, text: str, frame: int, sample: bytes) -> None:
        """A request that cannot be read: its response, when it comes, must not be given to the
        next request."""
        self.awaiting.append(LostRequests())
        self.on_drop(self, reason, text, frame, sample)

    def ended(self, reader: MessageReader) -> None:
        """One direction ended; when it is the server's, waiting requests get no response."""
        if reader is self.server:
            while self.awaiting:
                item = self.awaiting.popleft()
                if isinstance(item, Exchange):
                    item.problem = item.problem or "no_response"
                    item.settled = True
        self._emit_ready()

    def _emit_ready(self) -> None:
        queue = self.queue
        while queue and queue[0].ready:
            self.on_exchange(self, queue.popleft())


def _looks_like_http(line: bytes) -> bool:
    """A first client line that tries to be HTTP (an upper-case word where a method goes), as
    opposed to TLS, SSH or another protocol on the same port."""
    return _ATTEMPT.match(line) is not None


_ATTEMPT = re.compile(rb"[A-Z][A-Z_-]*(?:[ /].*|HTTP/.*)?\Z", re.DOTALL)
