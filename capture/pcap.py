"""`capture pcap`: HTTP/1.x requests and their original responses from pcap/pcapng files.

The packet-to-record machinery here (`HttpCapture`) is shared with live sniffing
(capture/sniff.py): frames are decoded with `struct` (parsers/pcap.py), reassembled per TCP
connection (parsers/tcp.py) and read as HTTP/1.x (parsers/http1.py); each request becomes
one record carrying its response. scapy is used only for the file framing (its
RawPcapReader / RawPcapNgReader), never to dissect a packet.

Accounting: every packet read is either part of an HTTP connection, or skipped with a
counted reason (not IP, not TCP, IP fragment, other port, not HTTP, unknown connection,
tunnel after an upgrade), or malformed. Every request read becomes a record; records whose
request or response is incomplete say why in `fields["incomplete"]`. What cannot become a
record (a request head lost in a gap, a response with no request, bytes that are not HTTP)
is counted by reason and, with `--dead-letter`, written out with its file and frame.

Record times: `ts` is the time of the request's first packet. `response.elapsed_ms` is the
time of the packet carrying the first byte of the response's status line minus the time of
the packet that completed the request (its last byte), in milliseconds: the server's time to
first byte as seen at the capture point, without the response transfer time. Interim 1xx
responses do not count as the first response byte.
"""

from __future__ import annotations

import base64
import bisect
import gc
import hashlib
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from capture.ship import open_dead_letters
from parsers.http1 import Exchange, HttpConnection, Message, guess_role
from parsers.pcap import LINKTYPE_NAMES, Decoder, decoder_for, endpoint_text, flow_endpoints
from parsers.tcp import Connection, TcpTracker
from shadowtap.errors import EXIT_ERROR, EXIT_OK
from shadowtap.record import Origin, Record, Response, decode_target
from shadowtap.stream import Sink

MAX_FRAME = 256 << 10
"""Largest frame read from a file (loopback frames reach 64 KiB plus headers)."""
BATCH = 8192
"""Packets decoded between two hand-overs of records to the sink."""
GC_EVERY = 1 << 20
"""Packets between two garbage collections while the cyclic GC is off."""


@dataclass(frozen=True, slots=True)
class PacketCaptureOptions:
    """What `capture pcap` and `capture sniff` share; the CLI fills it in."""

    output: str
    ports: frozenset[int] | None = None
    """Server ports to read as HTTP; None: every TCP connection whose client speaks HTTP/1.x."""
    max_body: int = 1 << 20
    """Body bytes kept per message (request and response); longer bodies are marked truncated."""
    idle_timeout: float = 120.0
    """Seconds (capture time) after which a silent connection is flushed."""
    scrub: bool = True
    dead_letter: str | None = None


@dataclass(slots=True)
class CaptureStats:
    """Counters for one capture: packets by fate, records, incomplete records and drops."""

    packets: int = 0
    http_packets: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Packets not read as HTTP, by reason."""
    records: int = 0
    incomplete: Counter[str] = field(default_factory=Counter)
    """Records written with `fields["incomplete"]`, by that reason."""
    dropped: Counter[str] = field(default_factory=Counter)
    """What could not become a record, by reason."""
    problems: list[str] = field(default_factory=list)
    """File-level problems (unreadable, truncated, corrupt), one sentence each."""

    def summary(self, gaps: int = 0, gap_bytes: int = 0) -> str:
        def counts(c: Counter[str]) -> str:
            total = sum(c.values())
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
            return f"{total}" + (f" ({detail})" if detail else "")

        return (f"{self.packets} packets read ({self.http_packets} in HTTP connections, "
                f"skipped {counts(self.skipped)}); {self.records} records written, "
                f"incomplete {counts(self.incomplete)}; dropped {counts(self.dropped)}; "
                f"tcp gaps: {gaps} ({gap_bytes} bytes)")


class PacketDeadLetters:
    """What could not become a record, as JSONL: source, frame, endpoints, reason, sample."""

    def __init__(self, path: str | None) -> None:
        self.first: str | None = None
        self._file = open_dead_letters(path)

    def add(self, entry: dict) -> None:
        if self.first is None:
            self.first = f"{entry['name']} frame {entry['frame']}: {entry['message']}"
        if self._file is not None:
            self._file.write(orjson.dumps(entry) + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Conn:
    """What the capture keeps per connection besides the HTTP state."""

    __slots__ = ("client", "server", "tcp", "upgraded_at")

    def __init__(self, tcp: Connection, client: str, server: str) -> None:
        self.tcp = tcp
        self.client = client
        self.server = server
        self.upgraded_at: int | None = None


class HttpCapture:
    """Decoded TCP segments in, records out: the part shared by files and live capture.

    `name_of(frame)` gives (origin name, position, id prefix) for a frame number; records wait
    in `ready` until the caller sends them on.
    """

    def __init__(self, kind: str, options: PacketCaptureOptions, name_of: Callable[[int], tuple[str, int, str]],
                 dead_letters: PacketDeadLetters) -> None:
        self.kind = kind
        self.options = options
        self.name_of = name_of
        self.dead_letters = dead_letters
        self.stats = CaptureStats()
        self.ready: list = []
        """Records not yet handed on to the sink."""

        self.transform: Callable[[Record], Record] | None = None
        if options.scrub:
            from capture.scrub import scrub

            self.transform = scrub
        self.tracker = TcpTracker(self._open, guess_role, self._closed, options.ports, options.idle_timeout)

    # -- connections ---------------------------------------------------------------------------

    def _open(self, tcp: Connection):
        caddr, cport, saddr, sport = flow_endpoints(tcp.client_key)
        info = _Conn(tcp, endpoint_text(caddr, cport), endpoint_text(saddr, sport))
        http = HttpConnection(self._exchange, self._drop, self.options.max_body, tcp.midstream, info)
        client, server = http.receivers()
        return http, client, server

    def _closed(self, tcp: Connection) -> None:
        http: HttpConnection = tcp.app  # type: ignore[assignment]
        info: _Conn = http.user  # type: ignore[assignment]
        stats = self.stats
        if http.state == "http":
            stats.http_packets += tcp.packets
        elif http.state == "upgraded":
            before = info.upgraded_at if info.upgraded_at is not None else tcp.packets
            stats.http_packets += before
            if tcp.packets > before:
                stats.skipped["upgraded"] += tcp.packets - before
        else:
            stats.skipped["not_http"] += tcp.packets

    # -- results -------------------------------------------------------------------------------

    def _exchange(self, http: HttpConnection, exchange: Exchange) -> None:
        info: _Conn = http.user  # type: ignore[assignment]
        if http.state == "upgraded" and info.upgraded_at is None:
            info.upgraded_at = info.tcp.packets
        record = self._record(exchange, info)
        self.ready.append(self.transform(record) if self.transform is not None else record)
        self.stats.records += 1
        if exchange.problem is not None:
            self.stats.incomplete[exchange.problem] += 1

    def _record(self, exchange: Exchange, info: _Conn) -> Record:
        req = exchange.request
        name, pos, prefix = self.name_of(req.first_frame)
        rid = f"{prefix}-{pos}" if not req.index else f"{prefix}-{pos}.{req.index}"
        fields: dict = {"server": info.server}
        if exchange.problem is not None:
            fields["incomplete"] = exchange.problem
        if req.truncated:
            fields["body_truncated"] = True
            fields["body_size"] = req.body_size
        if req.missing:
            fields["body_missing"] = req.missing
        if req.trailers:
            fields["trailers"] = [list(t) for t in req.trailers]
        if req.bad_lines:
            fields["bad_header_lines"] = req.bad_lines
        target, target_raw = decode_target(req.target)
        return Record(
            rid, req.first_ts, req.method, target, req.version, req.host, req.headers, req.body, info.client,
            None, Origin(self.kind, name, pos), _response(exchange.response, req), fields, target_raw,
        )

    def _drop(self, http: HttpConnection, reason: str, text: str, frame: int, sample: bytes) -> None:
        self.stats.dropped[reason] += 1
        info: _Conn = http.user  # type: ignore[assignment]
        name, pos, _ = self.name_of(frame or self.tracker.frame)
        entry = {"name": name, "frame": pos, "client": info.client, "server": info.server, "reason": reason,
                 "message": text}
        if sample:
            entry["sample"] = base64.b64encode(sample[:4096]).decode()
        self.dead_letters.add(entry)

    # -- packets -------------------------------------------------------------------------------

    def feed(self, frames: Iterable[tuple[float, bytes]], decode: Decoder, first_frame: int) -> int:
        """Decode and track frames numbered from `first_frame`; returns the next frame number."""
        skipped = self.stats.skipped
        track = self.tracker.packet
        frame = first_frame
        for ts, data in frames:
            seg = decode(data)
            if seg.__class__ is str:
                skipped[seg] += 1  # type: ignore[index]
            else:
                key, seq, ack, flags, payload, missing = seg  # type: ignore[misc]
                why = track(key, seq, ack, flags, payload, ts, frame, missing)
                if why is not None:
                    skipped[why] += 1
            frame += 1
        self.stats.packets += frame - first_frame
        return frame

    def finish(self, ts: float) -> None:
        """End of the capture: flush every connection."""
        self.tracker.close_all(ts)

    def summary(self) -> str:
        tcp = self.tracker.stats
        return self.stats.summary(tcp.gaps, tcp.gap_bytes)


def _response(msg: Message | None, request: Message) -> Response | None:
    if msg is None:
        return None
    extra: dict = {}
    if msg.truncated:
        extra["body_truncated"] = True
        extra["body_size"] = msg.body_size
    if msg.missing:
        extra["body_missing"] = msg.missing
    if msg.trailers:
        extra["trailers"] = [list(t) for t in msg.trailers]
    if msg.status is None:
        extra["version"] = msg.version
    elapsed = round((msg.first_ts - request.last_ts) * 1000.0, 3) if request.done else None
    return Response(msg.status, elapsed, msg.body_size, msg.headers, msg.body, extra)


# -- files ---------------------------------------------------------------------------------------


class _ScapyWarnings(logging.Handler):
    """Collects what scapy's readers warn about (corrupt blocks, truncation) instead of
    letting it print, so that each file ends with one clear sentence of ours."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def fingerprint(path: str) -> str:
    """A short stable id for a capture file, from its first 64 KiB: survives renames."""
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(64 << 10), digest_size=6).hexdigest()


class CaptureFile:
    """One pcap or pcapng file read with scapy's raw readers: (ts, frame) pairs in order.

    Problems end the file early with one sentence in `problem`: not a capture, empty,
    an unsupported link type, a truncated last packet, a corrupt record.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.problem: str | None = None
        self.frames = 0

    def open(self):
        """The scapy reader, or None with `problem` set."""
        from scapy.error import Scapy_Exception
        from scapy.utils import RawPcapReader

        try:
            if os.path.isdir(self.path):
                raise IsADirectoryError(21, "is a directory")
            size = os.path.getsize(self.path)
        except OSError as e:
            self.problem = f"cannot read {self.path!r}: {e.strerror or e}"
            return None
        if size == 0:
            self.problem = f"{self.path!r} is empty: not a pcap or pcapng capture"
            return None
        try:
            return RawPcapReader(self.path)
        except Scapy_Exception:
            with open(self.path, "rb") as f:
                head = f.read(4)
            self.problem = (f"{self.path!r} is not a pcap or pcapng capture (it starts with 0x{head.hex()})"
                            if len(head) == 4 else f"{self.path!r} is too short to be a pcap or pcapng capture")
        except (OSError, EOFError) as e:
            self.problem = f"cannot read {self.path!r}: {getattr(e, 'strerror', None) or e}"
        return None

    def pcap_frames(self, reader, warnings: _ScapyWarnings) -> Iterator[tuple[float, bytes]]:
        """Frames of a classic pcap file (one link type, fixed timestamp unit)."""
        read = reader._read_packet
        scale = 1e-9 if reader.nano else 1e-6
        limit = max(reader.snaplen, MAX_FRAME)
        offset = 24
        while True:
            try:
                data, meta = read(MAX_FRAME)
            except EOFError:
                break
            caplen = meta.caplen
            if caplen > limit:
                self.problem = (f"{self.path!r}: packet {self.frames + 1} has a corrupt record header "
                                f"(length {caplen} at byte {offset}); the rest of the file was not read")
                return
            self.frames += 1
            offset += 16 + caplen
            yield meta.sec + meta.usec * scale, data
            if len(data) < caplen:
                self.problem = (f"{self.path!r} is truncated: it ends inside packet {self.frames} "
                                f"({len(data)} of {caplen} bytes)")
                return
        if not self.path.endswith(".gz"):
            size = os.path.getsize(self.path)
            if size > offset:
                self.problem = (f"{self.path!r} is truncated: {size - offset} bytes after packet {self.frames} "
                                "are not a whole packet record")
        if warnings.messages and self.problem is None:
            self.problem = f"{self.path!r}: {warnings.messages[0]}"

    def pcapng_frames(self, reader, warnings: _ScapyWarnings, decoders: dict[int, Decoder | None]
                      ) -> Iterator[tuple[float, bytes, Decoder | None, int]]:
        """Frames of a pcapng file, with the decoder of each frame's interface link type."""
        read = reader._read_packet
        while True:
            try:
                data, meta = read(MAX_FRAME)
            except EOFError:
                break
            self.frames += 1
            linktype = meta.linktype
            if linktype not in decoders:
                decoders[linktype] = decoder_for(linktype)
            yield ((meta.tshigh << 32) | meta.tslow) / meta.tsresol, data, decoders[linktype], linktype
        if warnings.messages:
            self.problem = (f"{self.path!r} is truncated or corrupt after packet {self.frames}: "
                            f"{warnings.messages[0].removeprefix('PcapNg: ')}")


async def capture_pcap(paths: tuple[str, ...], options: PacketCaptureOptions, sink: Sink | None = None) -> int:
    """Read every file (in the order given, as one capture: connections may cross files) into
    the output; print one summary line on stderr; return the exit code."""
    from shadowtap.streams import open_sink

    dead_letters = PacketDeadLetters(options.dead_letter)
    starts: list[int] = []
    names: list[tuple[str, str]] = []

    def name_of(frame: int) -> tuple[str, int, str]:
        i = bisect.bisect_right(starts, frame) - 1
        return names[i][0], frame - starts[i] + 1, names[i][1]

    capture = HttpCapture("pcap", options, name_of, dead_letters)
    out = sink if sink is not None else open_sink(options.output)
    stats = capture.stats
    frame = 1
    last_ts = 0.0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # many small acyclic objects: reference counting frees them; collect now and then
    try:
        for path in paths:
            f = CaptureFile(path)
            frame, last_ts = await _read_file(f, capture, out, frame, last_ts, starts, names)
            if f.problem:
                stats.problems.append(f.problem)
                print(f"shadowtap: error: {f.problem}", file=sys.stderr)
        capture.finish(last_ts)
        await _send(capture, out)
    finally:
        if gc_was_enabled:
            gc.enable()
        await out.close()
        dead_letters.close()
    print(f"shadowtap capture pcap: {capture.summary()}", file=sys.stderr)
    if stats.dropped and not options.dead_letter and dead_letters.first:
        print(f"shadowtap: first drop: {dead_letters.first} (keep them all with --dead-letter PATH)", file=sys.stderr)
    return EXIT_ERROR if stats.problems else EXIT_OK


async def _send(capture: HttpCapture, sink: Sink) -> None:
    ready = capture.ready
    if ready:
        capture.ready = []
        send = sink.send
        for record in ready:
            await send(record)


async def _read_file(f: CaptureFile, capture: HttpCapture, sink: Sink, frame: int, last_ts: float,
                     starts: list[int], names: list[tuple[str, str]]) -> tuple[int, float]:
    """Feed one file's frames to the capture; returns (next frame number, last timestamp)."""
    reader = f.open()
    if reader is None:
        return frame, last_ts
    starts.append(frame)
    names.append((f.path, fingerprint(f.path)))
    warnings = _ScapyWarnings()
    scapy_log = logging.getLogger("scapy.runtime")
    scapy_log.addHandler(warnings)
    propagate, scapy_log.propagate = scapy_log.propagate, False
    try:
        if hasattr(reader, "nano"):
            decode = decoder_for(reader.linktype)
            if decode is None:
                name = LINKTYPE_NAMES.get(reader.linktype, "unknown")
                f.problem = f"{f.path!r}: link type {reader.linktype} ({name}) is not supported"
                return frame, last_ts
            frames = f.pcap_frames(reader, warnings)
            while True:
                batch = _take(frames, BATCH)
                if not batch:
                    break
                frame = capture.feed(batch, decode, frame)
                last_ts = max(last_ts, batch[-1][0])
                await _send(capture, sink)
                _collect(frame)
        else:
            frame, last_ts = await _read_pcapng(f, reader, warnings, capture, sink, frame, last_ts)
    finally:
        scapy_log.removeHandler(warnings)
        scapy_log.propagate = propagate
        reader.close()
    return frame, last_ts


async def _read_pcapng(f: CaptureFile, reader, warnings: _ScapyWarnings, capture: HttpCapture,
                       sink: Sink,
                       frame: int, last_ts: float) -> tuple[int, float]:
    """pcapng frames may come from interfaces of different link types: feed runs of one."""
    decoders: dict[int, Decoder | None] = {}
    batch: list[tuple[float, bytes]] = []
    current: Decoder | None = None
    for ts, data, decode, linktype in f.pcapng_frames(reader, warnings, decoders):
        if batch and (decode is not current or len(batch) >= BATCH):
            frame = capture.feed(batch, current, frame)  # type: ignore[arg-type]
            batch = []
            await _send(capture, sink)
            _collect(frame)
        current = decode
        if decode is None:
            capture.stats.skipped[f"linktype_{linktype}"] += 1
            capture.stats.packets += 1
            frame += 1
            continue
        batch.append((ts, data))
        last_ts = max(last_ts, ts)
    if batch:
        frame = capture.feed(batch, current, frame)  # type: ignore[arg-type]
    await _send(capture, sink)
    return frame, last_ts


def _take(it: Iterator[tuple[float, bytes]], n: int) -> list[tuple[float, bytes]]:
    out = []
    for item in it:
        out.append(item)
        if len(out) >= n:
            break
    return out


def _collect(frame: int) -> None:
    """A full collection every GC_EVERY packets, for the reference cycles of closed connections."""
    if frame % GC_EVERY < BATCH:
        gc.collect()
