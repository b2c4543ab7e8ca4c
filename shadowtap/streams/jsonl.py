"""JSON Lines adapters: one file (plain or `.gz`), stdin/stdout (`-`), or a spool directory."""

from __future__ import annotations

import gzip
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from shadowtap.errors import RecordError, StreamError, VersionError
from shadowtap.lines import ends_with_newline, iter_lines, open_input
from shadowtap.record import Record, decode_record, encode_record
from shadowtap.stream import Delivery

WRITE_BATCH = 512
SEGMENT_BYTES = 64 << 20
SEGMENT_GLOB = "segment-*.jsonl"


def write_output(file: BinaryIO, data: bytes, path: str) -> None:
    """Write to an output file, turning OS failures into one-sentence StreamErrors."""
    try:
        file.write(data)
    except BrokenPipeError as e:
        raise StreamError("output closed by the reader (broken pipe)") from e
    except OSError as e:
        raise StreamError(f"cannot write {path!r}: {e.strerror or e}") from e


def read_records(paths: list[str], skipped: Counter[str]) -> Iterator[Record]:
    """Decode records from JSONL files in order, counting what cannot be used in `skipped`."""
    for path in paths:
        f = open_input(path)
        try:
            for _offset, line, complete in iter_lines(f, path):
                if not complete:
                    skipped["torn_line"] += 1
                    continue
                if not line.strip():
                    continue
                try:
                    yield decode_record(line)
                except VersionError:
                    raise
                except RecordError:
                    skipped["bad_record"] += 1
        finally:
            if f is not sys.stdin.buffer:
                f.close()


class JsonlSource:
    """Reads records from JSONL files, a spool directory's segments, or stdin."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.skipped: Counter[str] = Counter()

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        for rec in read_records(self.paths, self.skipped):
            yield Delivery(rec)

    async def close(self) -> None:
        return None


class JsonlSink:
    """Appends records to a JSONL file (or stdout), batching writes.

    A file left with a torn last line gets a newline first, so the next record starts a line
    of its own instead of gluing onto the fragment.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._buf: list[bytes] = []
        self._file = self._open(path)
        self.bytes_written = 0
        """Bytes this sink has written so far (for size-based rotation)."""

    @staticmethod
    def _open(path: str) -> BinaryIO:
        if path == "-":
            return sys.stdout.buffer
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if path.endswith(".gz"):
                return gzip.open(path, "ab")  # type: ignore[return-value]
            needs_newline = not ends_with_newline(path)
            f = open(path, "ab")
            if needs_newline:
                f.write(b"\n")
            return f
        except OSError as e:
            raise StreamError(f"cannot write {path!r}: {e.strerror or e}") from e

    async def send(self, record: Record) -> None:
        self._buf.append(encode_record(record))
        if len(self._buf) >= WRITE_BATCH:
            self._write_pending()

    async def send_encoded(self, lines: list[bytes]) -> None:
        """Append records already encoded as v1 JSON lines (without newlines), in order with
        `send`: the capture fast path, which builds them without Record objects."""
        self._buf.extend(lines)
        if len(self._buf) >= WRITE_BATCH:
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._buf:
            return
        self._buf.append(b"")  # the join then ends with a newline, without copying the data again
        data = b"\n".join(self._buf)
        self._buf.clear()
        write_output(self._file, data, self.path)
        self.bytes_written += len(data)

    async def flush(self) -> None:
        self._write_pending()
        try:
            self._file.flush()
        except BrokenPipeError as e:
            raise StreamError("output closed by the reader (broken pipe)") from e

    async def sync(self) -> None:
        """`flush`, then fsync the file, so that what was sent survives a power loss too
        (`flush` alone survives the process being killed). Nothing more for stdout."""
        await self.flush()
        if self._file is not sys.stdout.buffer:
            try:
                os.fsync(self._file.fileno())
            except OSError as e:
                raise StreamError(f"cannot sync {self.path!r}: {e.strerror or e}") from e

    async def close(self) -> None:
        await self.flush()
        if self._file is not sys.stdout.buffer:
            self._file.close()


def spool_segments(directory: str) -> list[str]:
    """The spool's segment files, oldest first."""
    return sorted(str(p) for p in Path(directory).glob(SEGMENT_GLOB))


class SpoolSink:
    """Appends records to a directory of size-rotated segments `segment-NNNNNNNN.jsonl`."""

    def __init__(self, directory: str, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise StreamError(f"cannot create spool directory {directory!r}: {e.strerror or e}") from e
        segments = spool_segments(directory)
        self._index = int(Path(segments[-1]).stem.split("-")[1]) if segments else 1
        self._open_segment()

    def _open_segment(self) -> None:
        path = os.path.join(self.directory, f"segment-{self._index:08d}.jsonl")
        self._base = os.path.getsize(path) if os.path.exists(path) else 0
        self._sink = JsonlSink(path)

    async def send(self, record: Record) -> None:
        await self._sink.send(record)
        await self._rotate()

    async def send_encoded(self, lines: list[bytes]) -> None:
        """Append already-encoded records (see JsonlSink.send_encoded)."""
        await self._sink.send_encoded(lines)
        await self._rotate()

    async def _rotate(self) -> None:
        if self._base + self._sink.bytes_written >= self.segment_bytes:
            await self._sink.sync()  # a finished segment is on disk before the next one starts
            await self._sink.close()
            self._index += 1
            self._open_segment()

    async def flush(self) -> None:
        await self._sink.flush()

    async def sync(self) -> None:
        """`flush`, then fsync the current segment (finished ones were synced when they closed)."""
        await self._sink.sync()

    async def close(self) -> None:
        await self._sink.close()
