"""The packet capture fast path: decoded TCP segments straight to v1 JSON lines, no Record.

Why: following a connection through the general machinery (TcpTracker, HalfStream, the HTTP
readers, Message, Exchange, Record, scrubbing a Record, encoding it) costs several times
more than reading the packets; most connections in a capture are plain keep-alive traffic
that needs none of it.

`FastPath.packet` stands in for `TcpTracker.packet`. It follows a connection itself, from
its SYN, while the connection stays on the common path:

- segments come in order, none is cut short (snaplen), no ACK covers bytes the capture lacks;
- one exchange at a time: a request framed by Content-Length or without a body, then its
  response, likewise (no body for HEAD, 204, 304); a head may span segments where the general
  reader would wait for its end too; no byte beyond a message's end until the exchange is over;
- HTTP/1.0 or 1.1 only, and nothing that needs more than that: no interim (1xx) or 101
  response, Upgrade, CONNECT, `Expect: 100-continue`, transfer coding, body over `max_body`,
  bare line feeds that the general reader would read differently.

Anything else (and FIN, RST, a new SYN on the same ports, idle expiry, the end of the capture)
hands the connection over to the tracker, the general path: the tracker adopts it at its current
sequence numbers, and the segments of the exchange in progress are given again to the
general HTTP reader, which then stands exactly where it would be had it followed the
connection from the start. Connections first seen without their SYN go to the tracker
directly. A line is written when the general path would write its record, so lines and
records come out in the same order, and each line is what `encode_record` gives for the
general path's record (tests/capture/test_pcap_fast.py compares both paths).

What repeats on a connection is encoded once and cached: the request head's method, target,
version, host and headers, and the response head's status and headers, each from a Record
built, scrubbed and turned into its wire dict by the general code.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Callable

import orjson

from parsers.http1 import (
    MAX_HEAD,
    BadHead,
    Message,
    content_length,
    parse_request_head,
    parse_response_head,
    starts_request,
)
from parsers.pcap import ACK, SYN, endpoint_text, flow_endpoints, flow_ports, flow_reverse
from parsers.tcp import HALF, MASK, TcpTracker
from shadowtap.record import Record, Response, decode_target, record_to_dict

IDLE, REQUEST_HEAD, REQUEST_BODY, AWAIT_RESPONSE, RESPONSE_HEAD, RESPONSE_BODY = range(6)
MAX_CACHED_HEADS = 4096
"""Encoded heads kept per direction (the cache is emptied when full)."""
MAX_CACHED_HEAD_SIZE = 4 << 10
"""Longer heads are encoded each time, so that the caches stay small whatever the traffic (at
most MAX_CACHED_HEADS heads of this size per direction, with their encodings)."""
MAX_SHORT_TS = float(1 << 32)
"""Below this, doubles are closer together than 1e-6: a timestamp whose shortest form has at
most 6 decimals is its own `round(ts, 6)` (what the general path writes), so the costly
rounding is needed only for the others."""
_HANDSHAKE_FLAGS = 0x3F
"""FIN, SYN, RST, PSH, ACK, URG: the flags that tell a SYN from a SYN-ACK (ECN bits aside)."""

Scrub = Callable[[Record], Record]
NameOf = Callable[[int], tuple[str, int, str]]
"""name_of(frame) -> (origin name, position, id prefix), as HttpCapture has it."""


class _Flow:
    """One connection on the fast path: sequence numbers, and the exchange in progress."""

    __slots__ = ("client_json", "client_key", "client_next", "fields_json", "head", "last_ts", "packets", "parts",
                 "remaining", "replay", "req_body", "req_frame", "req_last", "req_ts", "request", "resp_length",
                 "resp_ts", "response", "seen_request", "serial", "server_key", "server_next", "state")

    def __init__(self, client_key: bytes, serial: int, client_next: int, ts: float) -> None:
        self.client_key = client_key
        self.server_key = flow_reverse(client_key)
        self.serial = serial
        self.client_next = client_next
        self.server_next: int | None = None
        """None until the server's SYN was seen."""
        self.packets = 1
        self.last_ts = ts
        self.state = IDLE
        self.head = b""
        """The start of a head whose end has not come yet."""
        self.seen_request = False
        """A request was read: the general path then counts the connection as HTTP."""
        self.replay: list[tuple[bool, bytes, float, int, int, int]] = []
        """The exchange in progress (when not IDLE) as segments: (from client, payload, ts, frame,
        seq, ack)."""
        self.parts: list[bytes] = []
        self.remaining = 0
        self.request: tuple = ()
        self.req_ts = self.req_last = self.resp_ts = 0.0
        self.req_frame = 0
        self.req_body: bytes | None = None
        self.response: tuple = ()
        self.resp_length = 0
        caddr, cport, saddr, sport = flow_endpoints(client_key)
        self.client_json = b',"client":' + orjson.dumps(endpoint_text(caddr, cport)) + b',"session":null'
        self.fields_json = b',"fields":{"server":' + orjson.dumps(endpoint_text(saddr, sport))


def _general_head_end(head: bytes) -> bool:
    """Whether the general reader ends this head where `\\r\\n\\r\\n` follows it: it ends a
    head at the first `\\n\\n` or `\\n\\r\\n`."""
    return b"\n\n" not in head and b"\n\r\n" not in head and not head.endswith(b"\n")


class FastPath:
    """Takes TCP segments like `TcpTracker.packet`; appends finished records' JSON lines to `out`.

    `scrub` is the record transform of the general path (None: --no-scrub); `records` counts
    the lines written here.
    """

    def __init__(self, tracker: TcpTracker, kind: str, name_of: NameOf, scrub: Scrub | None, max_body: int,
                 out: list) -> None:
        self.tracker = tracker
        tracker.before_expire = self._expire
        self.kind = kind
        self.name_of = name_of
        self.scrub = scrub
        self.max_body = max_body
        self.out = out
        self.records = 0
        self.flows: dict[bytes, tuple[_Flow, bool]] = {}
        """Both directions' keys of every connection on the fast path: (flow, from client)."""
        self._requests: dict[bytes, tuple | bool] = {}
        self._responses: dict[bytes, tuple | bool] = {}
        self._files: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    # -- packets -------------------------------------------------------------------------------

    def packet(self, key: bytes, seq: int, ack: int, flags: int, payload: bytes, ts: float, frame: int,
               missing: int = 0) -> str | None:
        """Feed one decoded TCP segment; None when it was taken, else why it was not."""
        tracker = self.tracker
        entry = self.flows.get(key)
        if entry is None:
            if flags & _HANDSHAKE_FLAGS == SYN and not payload and not missing and key not in tracker.flows and (
                    tracker.ports is None or flow_ports(key)[1] in tracker.ports):
                flow = _Flow(key, tracker.new_serial(), (seq + 1) & MASK, ts)
                self.flows[key] = (flow, True)
                self.flows[flow.server_key] = (flow, False)
                tracker.frame = frame
                if ts >= tracker.next_expiry:
                    tracker.expire(ts)
                return None
            return tracker.packet(key, seq, ack, flags, payload, ts, frame, missing)
        flow, from_client = entry
        if from_client:
            peer, nxt = flow.server_next, flow.client_next
        else:
            peer, nxt = flow.client_next, flow.server_next
        if flags & 7 or missing:  # FIN, SYN or RST, or bytes the capture did not keep
            if payload or missing or not self._handshake(flow, from_client, flags, seq, ack):
                return self._leave(flow, key, seq, ack, flags, payload, ts, frame, missing)
        elif flags & ACK and peer is not None and ack != peer and (ack - peer) & MASK < HALF:
            # The peer has bytes the capture lacks: a gap, for the general path to report.
            return self._leave(flow, key, seq, ack, flags, payload, ts, frame, missing)
        elif payload and (seq != nxt or not (self._client if from_client else self._server)(
                flow, payload, ts, frame, seq, ack)):
            return self._leave(flow, key, seq, ack, flags, payload, ts, frame, missing)
        flow.packets += 1
        flow.last_ts = ts
        tracker.frame = frame
        if ts >= tracker.next_expiry:
            tracker.expire(ts)
        return None

    @staticmethod
    def _handshake(flow: _Flow, from_client: bool, flags: int, seq: int, ack: int) -> bool:
        """A SYN-ACK, or a SYN or SYN-ACK sent again, answering the client's SYN: taken (True)
        or left to the general path (FIN, RST, a SYN of a new connection on the same ports)."""
        flags &= _HANDSHAKE_FLAGS
        if from_client:
            return flags == SYN and (seq + 1) & MASK == flow.client_next
        server_next = (seq + 1) & MASK
        if flags != SYN | ACK or ack != flow.client_next or flow.server_next not in (None, server_next):
            return False
        flow.server_next = server_next
        return True

    def _client(self, flow: _Flow, payload: bytes, ts: float, frame: int, seq: int, ack: int) -> bool:
        """The client's next bytes; False (nothing changed) when the general path must read them."""
        state = flow.state
        if state in (IDLE, REQUEST_HEAD):
            if state == IDLE:
                buf = payload
                end = payload.find(b"\r\n\r\n")
            else:
                buf = flow.head + payload
                end = buf.find(b"\r\n\r\n", len(flow.head) - 3)
            if end < 0:
                if len(buf) > MAX_HEAD or not starts_request(buf):
                    return False  # the general reader would not wait for the rest of this head either
                if state == IDLE:
                    flow.req_ts = ts
                    flow.req_frame = frame
                    flow.replay = [(True, payload, ts, frame, seq, ack)]
                    flow.state = REQUEST_HEAD
                else:
                    flow.replay.append((True, payload, ts, frame, seq, ack))
                flow.head = buf
            else:
                head = buf[:end]
                info = self._requests.get(head)
                if info is None:
                    info = self._cache(self._requests, head, self._request_head(head))
                if not info:
                    return False
                size = len(buf) - end - 4
                length = info[2]
                if size > length:
                    return False
                if state == IDLE:
                    flow.req_ts = ts
                    flow.req_frame = frame
                    flow.replay = [(True, payload, ts, frame, seq, ack)]
                else:
                    flow.replay.append((True, payload, ts, frame, seq, ack))
                    flow.head = b""
                flow.seen_request = True
                flow.request = info
                if size == length:
                    flow.req_body = buf[end + 4:] if length else None
                    flow.req_last = ts
                    flow.state = AWAIT_RESPONSE
                else:
                    flow.parts = [buf[end + 4:]] if size else []
                    flow.remaining = length - size
                    flow.state = REQUEST_BODY
        elif state == REQUEST_BODY:
            if len(payload) > flow.remaining:
                return False
            flow.replay.append((True, payload, ts, frame, seq, ack))
            flow.parts.append(payload)
            flow.remaining -= len(payload)
            if not flow.remaining:
                flow.req_body = b"".join(flow.parts)
                flow.req_last = ts
                flow.state = AWAIT_RESPONSE
        else:
            return False
        flow.client_next = (seq + len(payload)) & MASK
        return True

    def _server(self, flow: _Flow, payload: bytes, ts: float, frame: int, seq: int, ack: int) -> bool:
        """The server's next bytes; False (nothing changed) when the general path must read them."""
        state = flow.state
        if state in (AWAIT_RESPONSE, RESPONSE_HEAD):
            if state == AWAIT_RESPONSE:
                buf = payload
                end = payload.find(b"\r\n\r\n")
                first_ts = ts
            else:
                buf = flow.head + payload
                end = buf.find(b"\r\n\r\n", len(flow.head) - 3)
                first_ts = flow.resp_ts
            if end < 0:
                if len(buf) > MAX_HEAD or buf[:5] != b"HTTP/":
                    return False
                flow.replay.append((False, payload, ts, frame, seq, ack))
                flow.resp_ts = first_ts
                flow.state = RESPONSE_HEAD
                flow.head = buf
                flow.server_next = (seq + len(payload)) & MASK
                return True
            head = buf[:end]
            info = self._responses.get(head)
            if info is None:
                info = self._cache(self._responses, head, self._response_head(head))
            if not info:
                return False
            if flow.request[3] or info[3]:  # the answer to HEAD, or 204/304: no body
                length = 0
            else:
                length = info[2]
                if length is None:
                    return False
            size = len(buf) - end - 4
            if size > length:
                return False
            if state == RESPONSE_HEAD:
                flow.head = b""
            if size == length:
                self._emit(flow, info, first_ts, length, buf[end + 4:] if length else None)
            else:
                flow.replay.append((False, payload, ts, frame, seq, ack))
                flow.response = info
                flow.resp_ts = first_ts
                flow.resp_length = length
                flow.parts = [buf[end + 4:]] if size else []
                flow.remaining = length - size
                flow.state = RESPONSE_BODY
        elif state == RESPONSE_BODY:
            if len(payload) > flow.remaining:
                return False
            flow.parts.append(payload)
            flow.remaining -= len(payload)
            if flow.remaining:
                flow.replay.append((False, payload, ts, frame, seq, ack))
            else:
                self._emit(flow, flow.response, flow.resp_ts, flow.resp_length, b"".join(flow.parts))
        else:
            return False
        flow.server_next = (seq + len(payload)) & MASK
        return True

    # -- records -------------------------------------------------------------------------------

    def _emit(self, flow: _Flow, response: tuple, resp_ts: float, length: int, body: bytes | None) -> None:
        """The finished exchange as one JSON line; the connection is between exchanges again."""
        request = flow.request
        name, pos, prefix = self.name_of(flow.req_frame)
        origin = self._files.get((name, prefix))
        if origin is None:
            origin = self._files[name, prefix] = (
                b'{"v":1,"id":' + orjson.dumps(f"{prefix}-")[:-1],
                b',"origin":{"kind":' + orjson.dumps(self.kind) + b',"name":' + orjson.dumps(name) + b',"pos":')
        req_body = flow.req_body
        if req_body is None:
            req_json = b"null"
        else:
            if self.scrub is not None:  # form bodies lose their secret parameters
                req_body = self.scrub(Record("", 0.0, "", "", headers=request[4], body=req_body)).body
            req_json = b'"%b"' % b2a_base64(req_body, newline=False)  # type: ignore[arg-type]
        ts = flow.req_ts
        ts_json = orjson.dumps(ts)
        if not 0.0 < ts < MAX_SHORT_TS or len(ts_json) - ts_json.find(b".") > 7 or b"e" in ts_json:
            ts_json = orjson.dumps(round(ts, 6))
        p = b"%d" % pos
        self.out.append(b"".join((
            origin[0], p, b'","ts":', ts_json, request[0], req_json, flow.client_json,
            origin[1], p, response[0], orjson.dumps(round((resp_ts - flow.req_last) * 1000.0, 3)),
            b',"bytes":%d' % length, response[1],
            b"}" if body is None else b',"body":"%b"}' % b2a_base64(body, newline=False), flow.fields_json, request[1],
        )))
        self.records += 1
        flow.state = IDLE

    @staticmethod
    def _cache(cache: dict, head: bytes, info: tuple | bool) -> tuple | bool:
        """Remember what a head gave, unless the head is too long to be worth the memory."""
        if len(head) <= MAX_CACHED_HEAD_SIZE:
            if len(cache) >= MAX_CACHED_HEADS:
                cache.clear()
            cache[head] = info
        return info

    def _request_head(self, head: bytes) -> tuple | bool:
        """(JSON from "method" to "body":, JSON from the end of "fields" to the end of the line,
        body length, HEAD?, headers) for a request head the fast path can take; False for one
        it leaves to the general path."""
        if not _general_head_end(head):
            return False
        msg = Message(0.0, 0, 0)
        try:
            simple = parse_request_head(msg, head + b"\r")
        except BadHead:
            return False
        if simple or msg.version not in ("HTTP/1.1", "HTTP/1.0") or msg.te is not None or msg.expect_continue \
                or msg.upgrade or msg.method == "CONNECT":
            return False
        length: int | None = 0
        if msg.content_length is not None:
            length = content_length(msg.content_length)
            if length is None or length > self.max_body:
                return False
        target, target_raw = decode_target(msg.target)
        record = Record("", 0.0, msg.method, target, msg.version, msg.host, msg.headers, target_raw=target_raw)
        if self.scrub is not None:
            record = self.scrub(record)
        d = record_to_dict(record)
        dumps = orjson.dumps
        mid = b"".join((b',"method":', dumps(d["method"]), b',"target":', dumps(d["target"]), b',"version":',
                        dumps(d["version"]), b',"host":', dumps(d["host"]), b',"headers":', dumps(d["headers"]),
                        b',"body":'))
        end = b"".join((b',"bad_header_lines":%d' % msg.bad_lines if msg.bad_lines else b"", b"}",
                        b',"target_raw":' + dumps(d["target_raw"]) if "target_raw" in d else b"", b"}"))
        return mid, end, length, msg.method == "HEAD", msg.headers

    def _response_head(self, head: bytes) -> tuple | bool:
        """(JSON from the end of "origin" to "elapsed_ms":, JSON of the headers, body length or
        None when not framed by a usable Content-Length, 204/304?) for a response head the fast
        path can take; False for one it leaves to the general path."""
        if not _general_head_end(head):
            return False
        msg = Message(0.0, 0, 0)
        try:
            parse_response_head(msg, head + b"\r")
        except BadHead:
            return False
        status = msg.status
        assert status is not None
        if status < 200:
            return False
        length = None
        if msg.te is None and msg.content_length is not None:
            length = content_length(msg.content_length)
            if length is not None and length > self.max_body:
                length = None
        record = Record("", 0.0, "", "", response=Response(status, None, 0, msg.headers))
        if self.scrub is not None:
            record = self.scrub(record)
        headers = record_to_dict(record)["response"]["headers"]
        return (b'},"response":{"status":%d,"elapsed_ms":' % status, b',"headers":' + orjson.dumps(headers), length,
                status in (204, 304))

    # -- handing connections over -------------------------------------------------------------

    def _leave(self, flow: _Flow, key: bytes, seq: int, ack: int, flags: int, payload: bytes, ts: float,
               frame: int, missing: int) -> str | None:
        """The general path takes the connection, starting with this segment."""
        self._hand_over(flow)
        return self.tracker.packet(key, seq, ack, flags, payload, ts, frame, missing)

    def _hand_over(self, flow: _Flow) -> None:
        """The tracker adopts the connection; the exchange in progress is read again by the
        general HTTP reader, as the packets brought it."""
        del self.flows[flow.client_key], self.flows[flow.server_key]
        tracker = self.tracker
        conn = tracker.adopt(flow.client_key, flow.serial, flow.packets, flow.last_ts, flow.client_next,
                             flow.server_next)
        if flow.seen_request:
            conn.app.state = "http"  # type: ignore[attr-defined]
        current = tracker.frame
        for from_client, payload, ts, frame, seq, ack in flow.replay if flow.state != IDLE else ():
            tracker.frame = frame
            (conn.client if from_client else conn.server).on_data(payload, ts, frame, seq, ack)
        tracker.frame = current

    def _expire(self, now: float) -> None:
        """Before the tracker expires idle connections: hand over the idle ones followed here."""
        limit = now - self.tracker.idle_timeout
        for flow in [f for f, from_client in self.flows.values() if from_client and f.last_ts < limit]:
            self._hand_over(flow)

    def finish(self) -> None:
        """End of the capture: hand every connection over, for the tracker to close."""
        for flow in [f for f, from_client in self.flows.values() if from_client]:
            self._hand_over(flow)
