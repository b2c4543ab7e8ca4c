"""`capture pcap`: HTTP/1.x requests and their original responses from pcap/pcapng files.

The packet-to-record machinery here (`HttpCapture`) is shared with live sniffing
(capture/sniff.py): frames are decoded with `struct` (parsers/pcap.py), reassembled per TCP
connection (parsers/tcp.py) and read as HTTP/1.x (parsers/http1.py); each request becomes
one record carrying its response. When the output takes JSON lines, the fast path
(parsers/pcap_fast.py) takes the packets first and writes the same lines for plain keep-alive
exchanges without that machinery. Classic pcap files are read here with `struct`, decoded
where they lie; scapy is used only for the framing of pcapng files (RawPcapNgReader), never
to dissect a packet.

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
import gzip
import hashlib
import logging
import os
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from capture.ship import EncodedSink, open_dead_letters
from parsers.http1 import Exchange, HttpConnection, Message, guess_role
from parsers.pcap import IPV4_LINKS, LINKTYPE_NAMES, Decoder, decoder_for, endpoint_text, flow_endpoints, ipv4_segment
from parsers.pcap_fast import FastPath
from parsers.tcp import Connection, TcpTracker
from shadowtap.errors import EXIT_ERROR, EXIT_OK
from shadowtap.record import Origin, Record, Response, decode_target, encode_record
from shadowtap.stream import Sink

MAX_FRAME = 256 << 10
"""Largest frame read from a pcapng file, and the least record length a classic pcap file may
have whatever its snap length says (loopback frames reach 64 KiB plus headers)."""
BATCH = 8192
"""pcapng packets decoded between two hand-overs of records to the sink."""
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
                 dead_letters: PacketDeadLetters, encoded: bool = False) -> None:
        self.kind = kind
        self.options = options
        self.name_of = name_of
        self.dead_letters = dead_letters
        self.stats = CaptureStats()
        self.ready: list = []
        """Records not yet handed on to the sink; JSON lines when `encoded`."""
        self.encoded = encoded

        self.transform: Callable[[Record], Record] | None = None
        if options.scrub:
            from capture.scrub import scrub

            self.transform = scrub
        self.tracker = TcpTracker(self._open, guess_role, self._closed, options.ports, options.idle_timeout)
        self.fast: FastPath | None = None
        """With `encoded`, the fast path (parsers/pcap_fast.py) takes the packets first."""
        if encoded:
            self.fast = FastPath(self.tracker, kind, name_of, self.transform, options.max_body, self.ready)

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
        if self.transform is not None:
            record = self.transform(record)
        self.ready.append(encode_record(record) if self.encoded else record)
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
        _body_notes(req, fields)
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
        track = self.fast.packet if self.fast is not None else self.tracker.packet
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

    def feed_pcap(self, records: bytes, header: struct.Struct, scale: float, linktype: int, limit: int,
                  first_frame: int) -> tuple[int, float, int]:
        """`feed` for the packet records of a classic pcap file, read straight from its bytes:
        the common IPv4 frames are decoded where they lie, without a copy of each frame. Stops
        at a record cut by the end of `records` or longer than `limit`. Returns the next frame
        number, the time of the last packet and the bytes used."""
        skipped = self.stats.skipped
        track = self.fast.packet if self.fast is not None else self.tracker.packet
        decode = decoder_for(linktype)
        assert decode is not None
        e, o = IPV4_LINKS.get(linktype, (-1, 1 << 30))
        unpack = header.unpack_from
        frame = first_frame
        pos, n = 0, len(records)
        ts = 0.0
        while pos + 16 <= n:
            sec, frac, caplen, _ = unpack(records, pos)
            p = pos + 16
            end = p + caplen
            if end > n or caplen > limit:
                break
            pos = end
            ts = sec + frac * scale
            seg = None
            if caplen >= o + 40 and records[p + e] == 8 and records[p + e + 1] == 0:
                seg = ipv4_segment(records, p + o, end)
            if seg is None:
                seg = decode(records[p:end])
                if seg.__class__ is str:
                    skipped[seg] += 1  # type: ignore[index]
                    frame += 1
                    continue
            key, seq, ack, flags, payload, missing = seg  # type: ignore[misc]
            why = track(key, seq, ack, flags, payload, ts, frame, missing)
            if why is not None:
                skipped[why] += 1
            frame += 1
        self.stats.packets += frame - first_frame
        return frame, ts, pos

    def finish(self, ts: float) -> None:
        """End of the capture: flush every connection."""
        if self.fast is not None:
            self.fast.finish()
            self.stats.records += self.fast.records
            self.fast.records = 0
        self.tracker.close_all(ts)

    def summary(self) -> str:
        tcp = self.tracker.stats
        return self.stats.summary(tcp.gaps, tcp.gap_bytes)


def _body_notes(msg: Message, into: dict) -> None:
    """What a record says about a message's body beyond the bytes: cut at --max-body, bytes the
    capture missed, trailers (keys in this order: the fast path writes the same)."""
    if msg.truncated:
        into["body_truncated"] = True
        into["body_size"] = msg.body_size
    if msg.missing:
        into["body_missing"] = msg.missing
    if msg.trailers:
        into["trailers"] = [list(t) for t in msg.trailers]


def _response(msg: Message | None, request: Message) -> Response | None:
    if msg is None:
        return None
    extra: dict = {}
    _body_notes(msg, extra)
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


PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", False), b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True), b"\xa1\xb2\x3c\x4d": (">", True),
}
"""Classic pcap magic numbers: (byte order, nanosecond timestamps)."""
CHUNK = 1 << 20
"""Bytes of a classic pcap file read at a time: one batch of frames."""
MAX_RECORD = 16 << 20
"""Longest packet record believed whatever the file's snap length says (a corrupt header)."""


class CaptureFile:
    """One pcap or pcapng file, gzip-compressed or not: batches of (ts, frame) pairs in order.

    Classic pcap is read here, with one `struct` unpack per packet record over big chunks of
    the file (about twice as fast as scapy's reader); pcapng with scapy's RawPcapNgReader.
    Problems end the file early with one sentence in `problem`: not a capture, empty, an
    unsupported link type, a truncated last packet, a corrupt record.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.problem: str | None = None
        self.frames = 0
        self.linktype = 0
        """Link type of a classic pcap file."""
        self.pcapng = None
        """scapy's reader when the file is pcapng."""
        self._raw: BinaryIO | None = None
        self._file: BinaryIO | None = None
        """The classic pcap file (decompressed), positioned after its header."""
        self.header = struct.Struct("<IIII")
        """A packet record header: seconds, fraction, captured length, original length."""
        self.scale = 1e-6
        """Seconds per unit of the timestamp fraction."""
        self.limit = MAX_FRAME
        """Longest packet record taken for one: a longer one is a corrupt record header."""
        self._rest = b""
        self._offset = 24
        """File offset of _rest[0]."""

    def open(self) -> bool:
        """Open the file and read its header; False with `problem` set when it cannot be read."""
        try:
            if os.path.isdir(self.path):
                raise IsADirectoryError(21, "is a directory")
            if os.path.getsize(self.path) == 0:
                self.problem = f"{self.path!r} is empty: not a pcap or pcapng capture"
                return False
            self._raw = raw = open(self.path, "rb")
            head = raw.read(4)
        except OSError as e:
            self.problem = f"cannot read {self.path!r}: {e.strerror or e}"
            self.close()
            return False
        f: BinaryIO = raw
        try:
            if head[:2] == b"\x1f\x8b":
                raw.seek(0)
                f = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
                magic = f.read(4)
            else:
                magic = head
            header = f.read(20) if magic in PCAP_MAGIC else b""
        except (OSError, EOFError, zlib.error):
            header = b""
        if len(header) == 20:
            endian, nano = PCAP_MAGIC[magic]
            self.header = struct.Struct(endian + "IIII")
            self.scale = 1e-9 if nano else 1e-6
            snaplen, self.linktype = struct.unpack(endian + "12xII", header)
            self.limit = max(min(snaplen, MAX_RECORD), MAX_FRAME)
            self._file = f
            return True
        self.close()
        return self._open_pcapng(head)

    def _open_pcapng(self, head: bytes) -> bool:
        from scapy.error import Scapy_Exception
        from scapy.utils import RawPcapNgReader

        try:
            self.pcapng = RawPcapNgReader(self.path)
            return True
        except Scapy_Exception:
            self.problem = (f"{self.path!r} is not a pcap or pcapng capture (it starts with 0x{head.hex()})"
                            if len(head) == 4 else f"{self.path!r} is too short to be a pcap or pcapng capture")
        except (OSError, EOFError) as e:
            self.problem = f"cannot read {self.path!r}: {getattr(e, 'strerror', None) or e}"
        return False

    def records(self) -> bytes:
        """The packet records not `used` yet, followed by the next chunk of the file; b"" when
        nothing more can be read (the end, a read error, a corrupt record header: see `tail`)."""
        rest = self._rest
        if self._file is None or (len(rest) >= 16 and self.header.unpack_from(rest, 0)[2] > self.limit):
            return b""
        try:
            chunk = self._file.read(CHUNK)
        except (OSError, EOFError, zlib.error) as e:
            self.problem = f"{self.path!r} is truncated or corrupt after packet {self.frames}: {e}"
            return b""
        if not chunk:
            return b""
        self._rest = rest + chunk if rest else chunk
        return self._rest

    def used(self, size: int, frames: int) -> None:
        """The first `size` bytes of what `records` gave were `frames` whole packet records."""
        self._rest = self._rest[size:]
        self._offset += size
        self.frames += frames

    def tail(self) -> list[tuple[float, bytes]]:
        """After the last whole packet record: the problem of what follows it, and a packet
        cut short as a frame (its bytes are still used)."""
        rest = self._rest
        if not rest or self.problem:
            return []
        if len(rest) < 16:
            self.problem = (f"{self.path!r} is truncated: {len(rest)} bytes after packet {self.frames} "
                            "are not a whole packet record")
            return []
        sec, frac, caplen, _ = self.header.unpack_from(rest, 0)
        if caplen > self.limit:
            self.problem = (f"{self.path!r}: packet {self.frames + 1} has a corrupt record header "
                            f"(length {caplen} at byte {self._offset}); the rest of the file was not read")
            return []
        self.frames += 1
        self.problem = (f"{self.path!r} is truncated: it ends inside packet {self.frames} "
                        f"({len(rest) - 16} of {caplen} bytes)")
        return [(sec + frac * self.scale, rest[16:])]

    def close(self) -> None:
        for f in (self._file, self._raw, self.pcapng):
            if f is not None:
                f.close()
        self._file = self._raw = self.pcapng = None

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
    the output; print one summary line on stderr; return the exit code.

    When the output takes encoded lines (JSONL files, spools, stdout), records are written
    by the fast path where it can (parsers/pcap_fast.py), as the same lines."""
    from shadowtap.streams import open_sink

    dead_letters = PacketDeadLetters(options.dead_letter)
    out = sink if sink is not None else open_sink(options.output)
    run = _Run(options, dead_letters, out)
    stats = run.capture.stats
    gc_was_enabled = gc.isenabled()
    gc.disable()  # many small acyclic objects: reference counting frees them; collect now and then
    try:
        for path in paths:
            f = CaptureFile(path)
            await run.read(f)
            if f.problem:
                stats.problems.append(f.problem)
                print(f"shadowtap: error: {f.problem}", file=sys.stderr)
        run.capture.finish(run.last_ts)
        await run.send()
    finally:
        if gc_was_enabled:
            gc.enable()
        await out.close()
        dead_letters.close()
    print(f"shadowtap capture pcap: {run.capture.summary()}", file=sys.stderr)
    if stats.dropped and not options.dead_letter and dead_letters.first:
        print(f"shadowtap: first drop: {dead_letters.first} (keep them all with --dead-letter PATH)", file=sys.stderr)
    return EXIT_ERROR if stats.problems else EXIT_OK


class _Run:
    """The files of one `capture pcap` run, read as one capture into one sink."""

    def __init__(self, options: PacketCaptureOptions, dead_letters: PacketDeadLetters, sink: Sink) -> None:
        self.starts: list[int] = []
        """The first frame number of each file read."""
        self.names: list[tuple[str, str]] = []
        """(path, fingerprint) of each file read."""
        self.capture = HttpCapture("pcap", options, self.name_of, dead_letters, isinstance(sink, EncodedSink))
        self.sink = sink
        self.frame = 1
        """The next frame number."""
        self.last_ts = 0.0
        self._collect_at = GC_EVERY

    def name_of(self, frame: int) -> tuple[str, int, str]:
        i = bisect.bisect_right(self.starts, frame) - 1
        return self.names[i][0], frame - self.starts[i] + 1, self.names[i][1]

    async def send(self) -> None:
        """Hand the records ready so far to the sink."""
        capture = self.capture
        ready = capture.ready
        if not ready:
            return
        batch = ready[:]  # the same list object stays: the fast path appends to it
        ready.clear()
        if capture.encoded:
            await self.sink.send_encoded(batch)  # type: ignore[attr-defined]
        else:
            send = self.sink.send
            for record in batch:
                await send(record)

    async def feed(self, batch: list[tuple[float, bytes]], decode: Decoder) -> None:
        """Frames of one link type to the capture, then what they finished to the sink."""
        self.frame = self.capture.feed(batch, decode, self.frame)
        await self.fed(batch[-1][0])

    async def fed(self, ts: float) -> None:
        """After a batch of packets (the last one at `ts`): what they finished to the sink."""
        self.last_ts = max(self.last_ts, ts)
        await self.send()
        if self.frame >= self._collect_at:  # the reference cycles of closed connections
            gc.collect()
            self._collect_at = self.frame + GC_EVERY

    async def read(self, f: CaptureFile) -> None:
        """Feed one file's frames to the capture."""
        if not f.open():
            return
        self.starts.append(self.frame)
        self.names.append((f.path, fingerprint(f.path)))
        try:
            if f.pcapng is not None:
                await self._read_pcapng(f, f.pcapng)
                return
            decode = decoder_for(f.linktype)
            if decode is None:
                f.problem = f"{f.path!r}: link type {f.linktype} ({LINKTYPE_NAMES.get(f.linktype, 'unknown')}) " \
                            "is not supported"
                return
            while buf := f.records():
                frame, ts, size = self.capture.feed_pcap(buf, f.header, f.scale, f.linktype, f.limit, self.frame)
                f.used(size, frame - self.frame)
                if frame > self.frame:
                    self.frame = frame
                    await self.fed(ts)
            tail = f.tail()
            if tail:
                await self.feed(tail, decode)
        finally:
            f.close()

    async def _read_pcapng(self, f: CaptureFile, reader) -> None:
        """pcapng frames may come from interfaces of different link types: feed runs of one."""
        warnings = _ScapyWarnings()
        scapy_log = logging.getLogger("scapy.runtime")
        scapy_log.addHandler(warnings)
        propagate, scapy_log.propagate = scapy_log.propagate, False
        stats = self.capture.stats
        try:
            decoders: dict[int, Decoder | None] = {}
            batch: list[tuple[float, bytes]] = []
            current: Decoder | None = None
            for ts, data, decode, linktype in f.pcapng_frames(reader, warnings, decoders):
                if batch and (decode is not current or len(batch) >= BATCH):
                    await self.feed(batch, current)  # type: ignore[arg-type]
                    batch = []
                current = decode
                if decode is None:
                    stats.skipped[f"linktype_{linktype}"] += 1
                    stats.packets += 1
                    self.frame += 1
                    continue
                batch.append((ts, data))
            if batch:
                await self.feed(batch, current)  # type: ignore[arg-type]
        finally:
            scapy_log.removeHandler(warnings)
            scapy_log.propagate = propagate
