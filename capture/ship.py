"""Shipping parsed lines into a Sink with full accounting: every line is a record, a counted
skip, or a dead letter with its reason and position."""

from __future__ import annotations

import base64
import hashlib
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from shadowtap.errors import InputError, ParseError, ShadowtapError
from shadowtap.lines import iter_lines, open_input
from shadowtap.record import Record
from shadowtap.stream import Sink

LineParser = Callable[..., Record]
"""parse(line, *, name, offset, fingerprint) -> Record, raising ParseError."""

FLUSH_EVERY = 4096


def fingerprint(first_line: bytes) -> str:
    """A short stable id for a file, from its first line: survives renames and growth."""
    return hashlib.blake2b(first_line[:1024], digest_size=6).hexdigest()


@dataclass(slots=True)
class ShipStats:
    """Counters for one capture run."""

    lines: int = 0
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.lines} lines read, {self.records} records written"]
        for label, counts in (("skipped", self.skipped), ("dead letters", self.dead)):
            total = sum(counts.values())
            detail = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
            parts.append(f"{label}: {total}" + (f" ({detail})" if detail else ""))
        if self.unreadable:
            parts.append(f"unreadable files: {len(self.unreadable)}")
        return "; ".join(parts)


class DeadLetters:
    """Writes unparseable lines as JSONL: file, line number, byte offset, reason, raw line."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.first: str | None = None
        self._file: BinaryIO | None = None
        if path:
            try:
                self._file = open(path, "ab")
            except OSError as e:
                raise InputError(f"cannot write dead letters to {path!r}: {e.strerror or e}") from e

    def add(self, name: str, lineno: int, offset: int, error: ParseError, raw: bytes) -> None:
        if self.first is None:
            self.first = f"{name}:{lineno}: {error.message}"
        if self._file is None:
            return
        entry = {"file": name, "line": lineno, "offset": offset, "reason": error.reason,
                 "message": error.message, "raw": raw.decode("utf-8", "backslashreplace")}
        try:
            raw.decode()
        except UnicodeDecodeError:
            entry["raw_b64"] = base64.b64encode(raw).decode()
        self._file.write(orjson.dumps(entry) + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass(slots=True)
class Shipper:
    """Parses lines from files, transforms records, and sends them into a sink."""

    parse: LineParser
    sink: Sink
    transform: Callable[[Record], Record] | None = None
    dead_letters: DeadLetters = field(default_factory=lambda: DeadLetters(None))
    strict: bool = False
    stats: ShipStats = field(default_factory=ShipStats)

    async def ship_file(self, path: str) -> None:
        """Ship every line of one file (or `-` for stdin).

        A last line without a newline is kept when it parses (many files simply lack the final
        newline) and is a `torn_line` dead letter when it does not.
        """
        name = "<stdin>" if path == "-" else path
        try:
            f = open_input(path)
        except InputError as e:
            self.stats.unreadable.append(path)
            print(f"shadowtap: error: {e.message}", file=sys.stderr)
            return
        try:
            await self._ship_lines(iter_lines(f, name), name)
        finally:
            if f is not sys.stdin.buffer:
                f.close()

    async def _ship_lines(self, lines: Iterable[tuple[int, bytes, bool]], name: str) -> None:
        stats, parse, send, transform = self.stats, self.parse, self.sink.send, self.transform
        fp = None
        lineno = 0
        for offset, line, complete in lines:
            lineno += 1
            if fp is None:
                fp = fingerprint(line + b"\n")
            if not line or line.isspace():
                continue
            stats.lines += 1
            try:
                record = parse(line, name=name, offset=offset, fingerprint=fp)
            except ParseError as e:
                if not complete:
                    e = ParseError("torn_line", f"last line has no newline and does not parse: {e.message}")
                self._dead(name, lineno, offset, e, line)
                continue
            if transform is not None:
                record = transform(record)
            await send(record)
            stats.records += 1
            if stats.records % FLUSH_EVERY == 0:
                await self.sink.flush()

    def _dead(self, name: str, lineno: int, offset: int, error: ParseError, raw: bytes) -> None:
        self.stats.dead[error.reason] += 1
        self.dead_letters.add(name, lineno, offset, error, raw)
        if self.strict:
            raise ShadowtapError(f"{name}:{lineno}: {error.message} (--on-error fail)")
