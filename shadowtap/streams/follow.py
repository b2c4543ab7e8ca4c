"""Following a JSON Lines stream as it is written: a growing file (like `tail -F`), a spool
directory, or stdin.

A file is polled: complete lines are decoded as they appear, a line still being written
waits for its newline, a truncated file (copytruncate) is read again from its start, and a
file replaced under the same name (rename rotation) is finished and then the new one is
opened. A spool's segments are read oldest first, each to its end once a newer one exists
(the spool sink closes a segment before it starts the next). stdin is read without blocking
the event loop until it closes. Iteration ends only when the consumer stops (break,
cancellation) or stdin ends.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

from shadowtap.errors import InputError, RecordError, VersionError
from shadowtap.record import Record, decode_record
from shadowtap.stream import Delivery
from shadowtap.streams.jsonl import spool_segments

POLL_S = 0.05
"""How often a followed file is checked for new data when there was none."""

CHUNK = 1 << 16


class FollowSource:
    """Records appended to a JSONL file or spool directory (or written to stdin, `-`), as they
    arrive."""

    def __init__(self, path: str, *, from_end: bool = False, poll_s: float = POLL_S) -> None:
        self.path = path
        self.from_end = from_end
        self.poll_s = poll_s
        self.skipped: Counter[str] = Counter()
        if path != "-" and not os.path.isfile(path) and not os.path.isdir(path):
            raise InputError(f"cannot follow {path!r}: not a file or spool directory (--follow reads one "
                             "JSONL file, a spool or '-')")

    def _decode(self, line: bytes) -> Record | None:
        if not line.strip():
            return None
        try:
            return decode_record(line)
        except VersionError:
            raise
        except RecordError:
            self.skipped["bad_record"] += 1
            return None

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        if self.path == "-" and not stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode):
            lines = self._pipe_lines()
        elif self.path != "-" and os.path.isdir(self.path):
            lines = self._spool_lines()
        else:
            lines = self._file_lines()
        async for line in lines:
            record = self._decode(line)
            if record is not None:
                yield Delivery(record)

    async def _pipe_lines(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        try:
            while line := await reader.readline():
                if line.endswith(b"\n"):
                    yield line
                else:
                    self.skipped["torn_line"] += 1  # stdin closed in the middle of a line
        finally:
            transport.close()

    def _file_lines(self) -> AsyncIterator[bytes]:
        f = self._open()
        if self.from_end:
            self._skip_to_end(f)
        return self._lines(f, self._file_moved)

    def _file_moved(self, f: BinaryIO) -> BinaryIO | None:
        """At the end of `f`: `f` read again from its start when it was truncated, the file now at
        the path when `f` was renamed away (rotation), else None."""
        if self._truncated(f):
            f.seek(0)
            return f
        return self._rotated(f)

    async def _spool_lines(self) -> AsyncIterator[bytes]:
        while not (segments := spool_segments(self.path)):  # the writer has not started yet
            await asyncio.sleep(self.poll_s)
        f = self._open_segment(segments[-1] if self.from_end else segments[0])
        if self.from_end:
            self._skip_to_end(f)
        async for line in self._lines(f, self._spool_moved):
            yield line

    def _spool_moved(self, f: BinaryIO) -> BinaryIO | None:
        """At the end of segment `f`: the next segment once there is one and `f` has nothing
        more (its writer closed it before starting the next), else None."""
        newer = next((s for s in spool_segments(self.path) if s > f.name), None)
        if newer is None or os.fstat(f.fileno()).st_size > f.tell():
            return None
        return self._open_segment(newer)

    async def _lines(self, f: BinaryIO, moved: Callable[[BinaryIO], BinaryIO | None]) -> AsyncIterator[bytes]:
        """The lines of `f` as it grows. At each end of its data `moved(f)` gives the file to go
        on with: `f` itself (moved back to its start), the next file, or None to wait and look
        again. A last line the writer never finished is counted as `torn_line`."""
        rest = b""
        try:
            while True:
                chunk = f.read(CHUNK)
                if chunk:
                    lines = (rest + chunk).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        yield line
                    continue
                following = moved(f)
                if following is None:
                    await asyncio.sleep(self.poll_s)
                    continue
                if following is not f:
                    if rest:
                        self.skipped["torn_line"] += 1
                    f.close()
                    f = following
                rest = b""
        finally:
            f.close()

    @staticmethod
    def _open_segment(path: str) -> BinaryIO:
        try:
            return open(path, "rb")
        except OSError as e:
            raise InputError(f"cannot read spool segment {path!r}: {e.strerror or e}") from e

    def _open(self) -> BinaryIO:
        try:
            return open(sys.stdin.fileno() if self.path == "-" else self.path, "rb", closefd=self.path != "-")
        except OSError as e:
            raise InputError(f"cannot read {self.path!r}: {e.strerror or e}") from e

    @staticmethod
    def _skip_to_end(f: BinaryIO) -> None:
        """Start after the last complete line (a torn last line is left to its writer)."""
        size = f.seek(0, os.SEEK_END)
        back = min(size, CHUNK)
        f.seek(size - back)
        tail = f.read(back)
        cut = tail.rfind(b"\n")
        f.seek(size - back + cut + 1 if cut >= 0 else size - back)

    def _stat(self) -> os.stat_result | None:
        if self.path == "-":
            return None
        try:
            return os.stat(self.path)
        except FileNotFoundError:
            return None  # rotated away, its successor not created yet

    def _truncated(self, f: BinaryIO) -> bool:
        """The file at the path is ours and shorter than what was read (copytruncate)."""
        current = self._stat()
        mine = os.fstat(f.fileno())
        return (current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)
                and current.st_size < f.tell())

    def _rotated(self, f: BinaryIO) -> BinaryIO | None:
        """The file now at the path, when it is no longer the one being read (rename rotation)."""
        current = self._stat()
        mine = os.fstat(f.fileno())
        if current is None or (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            return None
        try:
            return open(self.path, "rb")
        except OSError:
            return None

    async def close(self) -> None:
        return None
