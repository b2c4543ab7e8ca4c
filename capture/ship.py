"""Shipping parsed lines into a Sink with full accounting: every line is a record, a counted
skip, or a dead letter with its reason and position.

The Shipper takes chunks of complete lines (capture.follow) and, per line, either

- the fast path: the format's LineEncoder (parsers/encode.py) turns the line straight into a
  v1 JSON line, scrubbed, when the sink takes encoded lines (`send_encoded`); filters and
  sampling, when given, then read that line (`select_line`, cheaper than parsing the log line
  into a Record), which they can when the sampling key is not a secret that scrubbing
  replaced; or
- the general path: parse → Record → filters and sampling → scrubbing → `sink.send`.

A line the encoder declines goes the general path, so both give the same records.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

import orjson

from parsers.encode import LineEncoder
from shadowtap.errors import InputError, ParseError, ShadowtapError, SkipLine
from shadowtap.record import Record, encode_record
from shadowtap.stream import Sink

if TYPE_CHECKING:
    from capture.follow import Chunk, FileSource
    from capture.sample import LineSelector, Selector
    from capture.scrub import Scrubber

LineParser = Callable[..., Record]
"""parse(line, *, name, offset, fingerprint) -> Record, raising ParseError (SkipLine to skip)."""
EncoderFactory = Callable[[str, "str | None"], "LineEncoder | None"]
"""fast_encoder(fingerprint, name) -> LineEncoder, or None when the format has no fast path."""

BLANK = "blank_line"
_PARTIAL = {
    "line_too_long": "line is longer than the maximum (1 MiB) and was cut",
    "bad_frame": "syslog stream framing is broken (bad octet count); the connection was closed",
}


def fingerprint(first_line: bytes) -> str:
    """A short stable id for a file, from its first line: survives renames and growth."""
    return hashlib.blake2b(first_line[:1024], digest_size=6).hexdigest()


@runtime_checkable
class EncodedSink(Protocol):
    """A sink that also takes records already encoded as v1 JSON lines (the fast path)."""

    async def send_encoded(self, lines: list[bytes]) -> None: ...


@runtime_checkable
class DurableSink(Protocol):
    """A sink whose `sync` makes everything flushed so far survive power loss (fsync)."""

    async def sync(self) -> None: ...


@dataclass(slots=True)
class ShipStats:
    """Counters for one capture run: every line read is a record, a skip or a dead letter."""

    lines: int = 0
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The closing line: totals with the reasons of skips and dead letters."""
        parts = [f"{self.lines} lines read, {self.records} records written"]
        for label, counts in (("skipped", self.skipped), ("dead letters", self.dead)):
            total = sum(counts.values())
            detail = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
            parts.append(f"{label}: {total}" + (f" ({detail})" if detail else ""))
        if self.unreadable:
            parts.append(f"unreadable files: {len(self.unreadable)}")
        return "; ".join(parts)


def open_dead_letters(path: str | None) -> BinaryIO | None:
    """The dead-letter file opened for appending (None without a path); InputError when it cannot be."""
    if not path:
        return None
    try:
        return open(path, "ab")
    except OSError as e:
        raise InputError(f"cannot write dead letters to {path!r}: {e.strerror or e}") from e


class DeadLetters:
    """Writes lines that are not records, as JSONL: file, line number, byte offset, reason,
    message and the raw line.

    With a scrubber, nothing secret is written: the raw line and the message get the raw-line
    rules (`Scrubber.line`), and when `redact` says a line may hold secrets those rules cannot
    find (a cookie or credential header logged by the format), `raw` is null and `redacted`
    true: the position and reason still say which line it was.
    """

    def __init__(self, path: str | None, scrubber: Scrubber | None = None,
                 redact: Callable[[bytes], bytes | None] | None = None) -> None:
        self.path = path
        self.scrubber = scrubber
        self.redact = redact
        self.first: str | None = None
        self._file = open_dead_letters(path)

    def add(self, name: str, lineno: int, offset: int, error: ParseError, raw: bytes) -> None:
        """Record one dead letter (`lineno` counts from 1)."""
        message = self.scrubber.text(error.message) if self.scrubber else error.message
        if self.first is None:
            self.first = f"{name}:{lineno}: {message}"
        if self._file is None:
            return
        entry: dict = {"file": name, "line": lineno, "offset": offset, "reason": error.reason, "message": message}
        if self.scrubber is not None:
            cleaned = self.redact(raw) if self.redact is not None else raw
            if cleaned is None:
                entry.update(raw=None, redacted=True, length=len(raw))
                raw = b""
            else:
                raw = self.scrubber.line(cleaned)
        if raw or "raw" not in entry:
            entry["raw"] = raw.decode("utf-8", "backslashreplace")
            try:
                raw.decode()
            except UnicodeDecodeError:
                entry["raw_b64"] = base64.b64encode(raw).decode()
        self._file.write(orjson.dumps(entry) + b"\n")

    def flush(self, durable: bool = False) -> None:
        """Hand what was written to the OS (and to the disk when `durable`)."""
        if self._file is not None:
            self._file.flush()
            if durable:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass(slots=True)
class Shipper:
    """Turns chunks of log lines into records in a sink, accounting for every line."""

    parse: LineParser
    sink: Sink
    scrubber: Scrubber | None = None
    select: Selector | None = None
    select_line: LineSelector | None = None
    """`select` for the fast path's JSON lines (sharing its random source); None when the
    fast path must not be used with `select` (its sampling key is scrubbed)."""
    fast: EncoderFactory | None = None
    dead_letters: DeadLetters = field(default_factory=lambda: DeadLetters(None))
    strict: bool = False
    stats: ShipStats = field(default_factory=ShipStats)
    _encoders: dict[FileSource, LineEncoder | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.select is not None and self.select_line is None) or not isinstance(self.sink, EncodedSink):
            self.fast = None

    async def ship(self, chunk: Chunk) -> None:
        """Ship the lines of one chunk (and its unterminated last piece, if any)."""
        if chunk.lines:
            encode = self._encoder(chunk.source) if self.fast is not None else None
            if encode is not None:
                await self._ship_encoded(chunk, encode)
            else:
                await self._ship_records(chunk)
        if chunk.partial is not None:
            await self._ship_partial(chunk)

    def _encoder(self, source: FileSource) -> LineEncoder | None:
        try:
            return self._encoders[source]
        except KeyError:
            if len(self._encoders) > 64:
                self._encoders.clear()
            encode = self._encoders[source] = self.fast(source.fingerprint, source.name)
            return encode

    async def _ship_encoded(self, chunk: Chunk, encode: LineEncoder) -> None:
        select = self.select

        def general(index: int, line: bytes, offset: int) -> bytes | Record | None:
            record = self._record(chunk.source, line, offset, chunk.line + index + 1, selected=select is None)
            return record if record is None or select is not None else encode_record(record)

        out = encode(chunk.lines, chunk.offset, general)
        self.stats.lines += len(chunk.lines)
        if select is not None:
            out = self._selected(out, select, self.select_line)
        self.stats.records += len(out)
        await self.sink.send_encoded(out)

    def _selected(self, items: list[bytes | Record], select: Selector, select_line: LineSelector) -> list[bytes]:
        """The JSON lines of the records the selection keeps, in line order (so random draws are
        those of the general path); the others counted as skips. `items` are the encoder's
        lines and the general path's scrubbed Records."""
        kept = []
        for item in items:
            if isinstance(item, Record):
                record, reason = select(item)
                line = None if record is None else encode_record(record)
            else:
                line, reason = select_line(item)
            if line is None:
                self.stats.skipped[reason] += 1
            else:
                kept.append(line)
        return kept

    async def _ship_records(self, chunk: Chunk) -> None:
        send = self.sink.send
        offset, lineno = chunk.offset, chunk.line
        for line in chunk.lines:
            lineno += 1
            self.stats.lines += 1
            record = self._record(chunk.source, line, offset, lineno)
            if record is not None:
                await send(record)
                self.stats.records += 1
            offset += len(line) + 1

    async def _ship_partial(self, chunk: Chunk) -> None:
        """The unterminated end of a file (a record when it parses: many files lack the last
        newline) or a piece that cannot be a line (cut at the maximum length, a bad frame)."""
        line, lineno = chunk.partial, chunk.line + len(chunk.lines) + 1
        offset = chunk.offset + sum(len(x) + 1 for x in chunk.lines)
        self.stats.lines += 1
        if chunk.partial_reason != "torn_line":
            self._dead(chunk.source.name, lineno, offset, ParseError(
                chunk.partial_reason, _PARTIAL.get(chunk.partial_reason, chunk.partial_reason)), line)
            return
        record = self._record(chunk.source, line, offset, lineno, torn=True)
        if record is not None:
            await self.sink.send(record)
            self.stats.records += 1

    def _record(self, source: FileSource, line: bytes, offset: int, lineno: int,
                torn: bool = False, selected: bool = True) -> Record | None:
        """The general path for one line: a Record to send, or None (counted skip or dead letter).
        `selected=False` leaves filters and sampling to the caller."""
        if not line or line.isspace():
            self.stats.skipped[BLANK] += 1
            return None
        try:
            record = self.parse(line, name=source.name, offset=offset, fingerprint=source.fingerprint)
        except SkipLine as e:
            self.stats.skipped[e.reason] += 1
            return None
        except ParseError as e:
            if torn:
                e = ParseError("torn_line", f"last line has no newline and does not parse: {e.message}")
            self._dead(source.name, lineno, offset, e, line)
            return None
        if self.select is not None and selected:
            record, reason = self.select(record)
            if record is None:
                self.stats.skipped[reason] += 1
                return None
        return self.scrubber(record) if self.scrubber is not None else record

    def _dead(self, name: str, lineno: int, offset: int, error: ParseError, raw: bytes) -> None:
        self.stats.dead[error.reason] += 1
        self.dead_letters.add(name, lineno, offset, error, raw)
        if self.strict:
            message = self.scrubber.text(error.message) if self.scrubber else error.message
            raise ShadowtapError(f"{name}:{lineno}: {message} (--on-error fail)")

    def count_unreadable(self, path: str, error: InputError) -> None:
        """A file that could not be read at all: named on stderr, counted, and the run goes on."""
        self.stats.unreadable.append(path)
        print(f"shadowtap: error: {error.message}", file=sys.stderr)
