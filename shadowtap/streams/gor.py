"""GoReplay `.gor` files as a Source and a Sink (address `gor:PATH`), for interoperability.

Format (shared/reference/goreplay-format.md): records of a meta line `TYPE ID TIMESTAMP_NS
LATENCY_NS`, the raw HTTP/1.x message, and the separator line `🐵🙈🙉` (the newline before it
belongs to the separator). Type 1 is a request, type 2 the original response (same ID),
type 3 a response from a replay target.

Reading: type 1 becomes a record (id = the gor ID, ts = its timestamp) and the type 2 with
the same ID becomes its `response`; `response.elapsed_ms` is the response's timestamp (its
first packet) minus the request's end (timestamp + latency, GoReplay's first-to-last packet
span), the same "last request byte to first response byte" that packet capture records.
Type 3 records, responses without a request and records that do not parse are counted in
`skipped`. Requests wait at most `WINDOW` records for their response.

Writing: each record is a type 1 record with latency 0 and, when it has a response with a
status, a type 2 record stamped `ts + elapsed_ms`, so a shadowtap reader gets the same
`elapsed_ms` back and GoReplay replays the requests as they were. Bodies are written in the
framing their headers announce (one chunk when `Transfer-Encoding: chunked`). What the format
cannot carry is lost: client, session, origin, fields (except body truncation, which the
Content-Length tells), and responses without a status.
"""

from __future__ import annotations

import dataclasses
import gzip
import sys
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO

from shadowtap.errors import StreamError
from shadowtap.record import Origin, Record, Response, decode_target
from shadowtap.stream import Delivery
from shadowtap.streams.jsonl import write_output

SEPARATOR = "\n🐵🙈🙉\n".encode()
REQUEST, RESPONSE, REPLAYED = b"1", b"2", b"3"
WINDOW = 10_000
"""Requests kept waiting (for their response, or for earlier ones) before the oldest goes on."""
PATIENCE_NS = 60 * 10**9
"""A request whose response has not come when a request 60 s younger is read goes on without."""
READ_CHUNK = 1 << 20


class GorFormatError(ValueError):
    """A gor record or its HTTP message that cannot be used."""


def _fields(block: bytes) -> list[tuple[str, str]]:
    text = block.decode("utf-8", "replace") if not block.isascii() else block.decode("ascii")
    out: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep and name and name[0] not in " \t":
            out.append((name, value.strip(" \t")))
        elif line[0] in " \t" and out:
            out[-1] = (out[-1][0], f"{out[-1][1]} {line.strip()}".strip())
        else:
            raise GorFormatError(f"header line {line[:60]!r} is not 'name: value'")
    return out


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for n, v in headers if n.lower() == name]
    return ",".join(values) if values else None


def _dechunk(data: bytes) -> tuple[bytes, list[tuple[str, str]], int, bool]:
    """(body, trailers, size the chunk headers announced, complete) of a chunked body."""
    parts: list[bytes] = []
    announced = 0
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return b"".join(parts), [], announced, False
        size_text = data[pos:nl].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as e:
            raise GorFormatError(f"bad chunk size {size_text[:20]!r}") from e
        pos = nl + 1
        if size == 0:
            end = data.find(b"\r\n\r\n", pos - 2) if data[pos:pos + 2] != b"\r\n" else pos - 2
            trailer_block = data[pos:end] if end >= pos else b""
            return b"".join(parts), _fields(trailer_block) if trailer_block.strip() else [], announced, True
        announced += size
        parts.append(data[pos:pos + size])
        if pos + size > len(data):
            return b"".join(parts), [], announced, False
        pos += size
        pos += 2 if data[pos:pos + 2] == b"\r\n" else 1


def parse_message(payload: bytes) -> tuple[list[bytes], list[tuple[str, str]], bytes | None, dict]:
    """A whole HTTP/1.x message: (start line parts, headers, body or None, notes).

    `notes` holds what the record says about the body beyond its bytes: `body_truncated` and
    `body_size` when a Content-Length announces more than the payload has, `trailers`.
    """
    end = payload.find(b"\r\n\r\n")
    sep = 4
    bare = payload.find(b"\n\n")
    if bare >= 0 and (end < 0 or bare < end):
        end, sep = bare, 2
    if end < 0:
        head, rest = payload.rstrip(b"\r\n"), b""
    else:
        head, rest = payload[:end], payload[end + sep:]
    line, _, block = head.partition(b"\n")
    parts = line.rstrip(b"\r").split(b" ", 2)
    if len(parts) < 2:
        raise GorFormatError(f"start line {line[:60]!r} is not HTTP")
    headers = _fields(block)
    notes: dict = {}
    te = _header(headers, "transfer-encoding")
    length = _header(headers, "content-length")
    if te is not None and te.lower().rsplit(",", 1)[-1].strip() == "chunked":
        body, trailers, announced, complete = _dechunk(rest)
        if trailers:
            notes["trailers"] = [list(t) for t in trailers]
        if not complete and announced > len(body):
            notes["body_truncated"] = True
            notes["body_size"] = announced
    elif length is not None and len({v.strip() for v in length.split(",")}) == 1 \
            and length.split(",")[0].strip().isdigit():
        size = int(length.split(",")[0].strip())
        body = rest[:size]
        if size > len(rest):
            notes["body_truncated"] = True
            notes["body_size"] = size
    else:
        body = rest
    return parts, headers, (body if body else None), notes


def parse_request(payload: bytes, rid: str, ts: float, name: str, pos: int) -> Record:
    """A type 1 payload into a Record."""
    parts, headers, body, notes = parse_message(payload)
    if len(parts) == 2:
        parts.append(b"HTTP/0.9")
    method, target, version = parts
    target_text, target_raw = decode_target(target)
    return Record(
        rid, ts, method.decode("latin-1"), target_text, version.decode("latin-1"), _header(headers, "host"),
        tuple(headers), body, None, None, Origin("gor", name, pos), None, notes, target_raw,
    )


def parse_response(payload: bytes) -> Response:
    """A type 2 payload into a Response (elapsed_ms is filled in by the pairing)."""
    parts, headers, body, notes = parse_message(payload)
    if len(parts) < 2 or not parts[1].isdigit():
        raise GorFormatError(f"status line {b' '.join(parts)[:60]!r} is not HTTP")
    size = notes.get("body_size", len(body) if body else 0)
    return Response(int(parts[1]), None, size, tuple(headers), body, notes)


def serialize_request(record: Record) -> bytes:
    """The request as HTTP/1.x bytes, body framed as its headers say."""
    lines = [b"%s %s %s" % (record.method.encode("latin-1"), record.target_bytes, record.version.encode("latin-1"))]
    lines.extend(f"{n}: {v}".encode() for n, v in record.headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + _framed(record.headers, record.body, record.fields)


def serialize_response(response: Response) -> bytes:
    """The response as HTTP/1.1 bytes (the reason phrase is the standard one: records do not
    keep the original)."""
    status = response.status or 0
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}".encode()]
    lines.extend(f"{n}: {v}".encode() for n, v in response.headers or ())
    return b"\r\n".join(lines) + b"\r\n\r\n" + _framed(response.headers or (), response.body, response.extra)


def _framed(headers, body: bytes | None, notes: dict) -> bytes:
    """The body as its headers frame it. A chunked body that was truncated is one chunk that
    announces the real size and stops short, as a Content-Length body does."""
    te = _header(list(headers), "transfer-encoding")
    if te is None or te.lower().rsplit(",", 1)[-1].strip() != "chunked":
        return body or b""
    body = body or b""
    if notes.get("body_truncated"):
        return b"%x\r\n%s" % (notes.get("body_size", len(body)), body)
    out = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
    tail = b"".join(f"{n}: {v}\r\n".encode() for n, v in notes.get("trailers") or ())
    return out + b"0\r\n" + tail + b"\r\n"


def iter_gor(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(byte offset, record without separator) for every record of a gor stream; a last
    record without separator is yielded too (GoReplay writes the separator after each one)."""
    offset = 0
    rest = b""
    while True:
        try:
            chunk = f.read(READ_CHUNK)
        except (EOFError, OSError, gzip.BadGzipFile) as e:
            raise StreamError(f"cannot read gor input: {e}") from e
        if not chunk:
            break
        buf = rest + chunk if rest else chunk
        start = 0
        while True:
            i = buf.find(SEPARATOR, start)
            if i < 0:
                break
            yield offset, buf[start:i]
            offset += i + len(SEPARATOR) - start
            start = i + len(SEPARATOR)
        rest = buf[start:]
    if rest.strip():
        yield offset, rest


def _open_read(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # type: ignore[return-value]
    except OSError as e:
        raise StreamError(f"cannot read {path!r}: {e.strerror or e}") from e


class GorSource:
    """Reads a `.gor` file (`-` is stdin, `.gz` is decompressed) as records."""

    def __init__(self, path: str) -> None:
        if path != "-" and not Path(path).exists():
            raise StreamError(f"gor input {path!r} does not exist")
        self.path = path
        self.skipped: Counter[str] = Counter()
        self.read = 0
        """gor records read (all types)."""

    def records(self) -> Iterator[Record]:
        """Records in request order, each with its response when the file has one.

        A request waits for its response until a request stamped `PATIENCE_NS` later is read,
        or `WINDOW` requests wait behind it; requests after it wait with it (order is kept).
        """
        f = _open_read(self.path)
        waiting: OrderedDict[int, list] = OrderedDict()
        """Offset of the request -> [record, its end (ns), response or None (False: none will come)]."""
        latest: dict[str, int] = {}
        """ID -> offset of the latest request with that ID (a response answers that one)."""
        try:
            for offset, raw in iter_gor(f):
                self.read += 1
                item = self._item(raw)
                if item is None:
                    continue
                kind, rid, ts_ns, latency_ns, payload = item
                if kind == REQUEST:
                    try:
                        record = parse_request(payload, rid, ts_ns / 1e9, self.path, offset)
                    except GorFormatError:
                        self.skipped["bad_request"] += 1
                        continue
                    earlier = waiting.get(latest.get(rid, -1))
                    if earlier is not None and earlier[2] is None:
                        earlier[2] = False  # the same ID again: the earlier request gets no response
                    latest[rid] = offset
                    waiting[offset] = [record, ts_ns + latency_ns, None]
                    yield from _ready(waiting, latest, ts_ns - PATIENCE_NS)
                elif kind == RESPONSE:
                    entry = waiting.get(latest.pop(rid, -1))
                    if entry is None or entry[2] is not None:
                        self.skipped["response_without_request"] += 1
                        continue
                    try:
                        response = parse_response(payload)
                    except GorFormatError:
                        self.skipped["bad_response"] += 1
                        entry[2] = False
                    else:
                        elapsed = round((ts_ns - entry[1]) / 1e6, 3)
                        entry[2] = dataclasses.replace(response, elapsed_ms=elapsed)
                    yield from _ready(waiting, latest, None)
                else:
                    self.skipped["replayed_response" if kind == REPLAYED else "unknown_type"] += 1
            yield from _ready(waiting, latest, None, everything=True)
        finally:
            if f is not sys.stdin.buffer:
                f.close()

    def _item(self, raw: bytes) -> tuple[bytes, str, int, int, bytes] | None:
        """(type, id, timestamp ns, latency ns, payload) of one gor record; None when its meta
        line is unusable (counted)."""
        nl = raw.find(b"\n")
        meta = raw[:nl].split(b" ") if nl >= 0 else []
        if len(meta) < 3:
            self.skipped["bad_meta"] += 1
            return None
        try:
            ts_ns = int(meta[2])
            latency_ns = int(meta[3]) if len(meta) > 3 and meta[3] else 0
        except ValueError:
            self.skipped["bad_meta"] += 1
            return None
        return meta[0], meta[1].decode("latin-1"), ts_ns, latency_ns, raw[nl + 1:]

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        for record in self.records():
            yield Delivery(record)

    async def close(self) -> None:
        return None


def _ready(waiting: OrderedDict[int, list], latest: dict[str, int], expired_before: int | None,
           everything: bool = False) -> Iterator[Record]:
    """Hand on the oldest waiting requests that are settled (response read, or given up on)."""
    while waiting:
        offset, (record, end_ns, response) = next(iter(waiting.items()))
        if response is None and not everything and len(waiting) <= WINDOW and (
                expired_before is None or end_ns >= expired_before):
            return
        waiting.popitem(last=False)
        if latest.get(record.id) == offset:
            del latest[record.id]
        yield dataclasses.replace(record, response=response) if response else record


class GorSink:
    """Writes records as a `.gor` file (`-` is stdout, `.gz` compresses)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._buf: list[bytes] = []
        try:
            if path == "-":
                self._file: BinaryIO = sys.stdout.buffer
            else:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._file = gzip.open(path, "ab") if path.endswith(".gz") else open(path, "ab")  # type: ignore
        except OSError as e:
            raise StreamError(f"cannot write {path!r}: {e.strerror or e}") from e

    async def send(self, record: Record) -> None:
        rid = record.id if record.id and not any(c.isspace() for c in record.id) else record.id.encode().hex()
        ts_ns = round(record.ts * 1e6) * 1000  # records keep microseconds
        self._buf.append(b"1 %s %d 0\n%s%s" % (rid.encode(), ts_ns, serialize_request(record), SEPARATOR))
        response = record.response
        if response is not None and response.status is not None:
            resp_ns = ts_ns + round((response.elapsed_ms or 0.0) * 1e6)
            self._buf.append(b"2 %s %d 0\n%s%s" % (rid.encode(), resp_ns, serialize_response(response), SEPARATOR))
        if len(self._buf) >= 512:
            self._write()

    def _write(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        write_output(self._file, data, self.path)

    async def flush(self) -> None:
        self._write()
        self._file.flush()

    async def close(self) -> None:
        await self.flush()
        if self._file is not sys.stdout.buffer:
            self._file.close()
