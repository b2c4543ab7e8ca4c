"""Reading log files as chunks of complete lines: once to the end (`read_once`), or following
them like `tail -F` (`Follower`) across rename-and-create and copytruncate rotation.

Files are identified by the fingerprint of their first line (capped at 1024 bytes), never by
path or inode, which get reused:

- rename + create (logrotate's default, then `nginx -s reopen`): the old file keeps its
  fingerprint under its new name; it is read to its end (the server may write to it until it
  reopens its log) while the new file at the old path starts with a new fingerprint. Files are
  read oldest first, so the old file is finished before the new one moves on.
- copytruncate: the copy has the old fingerprint and waits as a standby while the original is
  still being read; when the original shrinks below the read position (truncated) its
  fingerprint is released, the copy takes over at the same position, and the truncated
  original starts over as a new file.
- a file matched again after a restart resumes at its checkpointed position.

Two files whose first lines are the same (up to 1024 bytes) look like one file: access logs
start with a timestamped line, but a log with a constant header line is not told apart.

A file that no longer matches the patterns is closed once it is read to its end and has not
grown for ROTATE_GRACE seconds; an unterminated last line is then shipped as it is (a writer
died mid-line). Partial lines at the end of a live file wait for their newline.
"""

from __future__ import annotations

import glob
import gzip
import os
import stat
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from capture.checkpoint import Checkpoint
from capture.ship import fingerprint
from shadowtap.errors import InputError
from shadowtap.lines import open_input

CHUNK = 1 << 20
"""Bytes read at a time."""
MAX_LINE = 1 << 20
"""A line longer than this (no newline within it) is cut and dead-lettered as `line_too_long`."""
ROTATE_GRACE = 5.0
"""Seconds a file that no longer matches the patterns is kept open after it stopped growing."""
READ_BUDGET = 16 << 20
"""Bytes read from one file per poll before the others get a turn."""
FINGERPRINT_BYTES = 1024


@dataclass(frozen=True, slots=True)
class FileSource:
    """A file as records name it: its path and its fingerprint."""

    name: str
    fingerprint: str


@dataclass(slots=True)
class Chunk:
    """Complete lines of one file, from byte `offset`; `line` lines precede the first one.

    `partial` is a last piece without a newline that is shipped as it is: the end of a file
    that will not grow any more (`torn_line`), or a line cut at MAX_LINE (`line_too_long`).
    """

    source: FileSource
    offset: int
    line: int
    lines: list[bytes]
    partial: bytes | None = None
    partial_reason: str = ""


def first_line_fingerprint(head: bytes, at_end: bool) -> str | None:
    """The fingerprint of a file from its first bytes; None while the first line is still
    shorter than FINGERPRINT_BYTES and unterminated (unless the file ended)."""
    newline = head.find(b"\n", 0, FINGERPRINT_BYTES)
    if newline >= 0:
        return fingerprint(head[:newline + 1])
    if len(head) >= FINGERPRINT_BYTES:
        return fingerprint(head[:FINGERPRINT_BYTES])
    return fingerprint(head + b"\n") if at_end and head else None


def read_once(path: str, checkpoint: Checkpoint) -> Iterator[Chunk]:
    """Chunks of one file (or `-` for stdin; `.gz` decompressed) from its checkpointed position
    to its end. InputError when it cannot be read. The checkpoint's read position moves after
    each chunk is shipped (not past an unterminated last line, which may still be completed).

    Only the checkpoint file's positions are resumed from, not this run's: two files given
    together that start with the same line are both read whole.
    """
    name = "<stdin>" if path == "-" else path
    f = open_input(path)
    read = getattr(f, "read1", f.read)  # read1: a cut .gz still yields what came before the cut
    cut_short = False

    def more() -> bytes:
        nonlocal cut_short
        try:
            return read(CHUNK)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            cut_short = True
            return b""
        except OSError as e:
            raise InputError(f"cannot read {name!r}: {e.strerror or e}") from e

    try:
        buf, at_end = b"", False
        while not at_end and first_line_fingerprint(buf, False) is None:
            data = more()
            at_end, buf = not data, buf + data
        fp = first_line_fingerprint(buf, True)
        if fp is None:
            return
        source = FileSource(name, fp)
        resume = checkpoint.saved.get(fp)
        skip = resume.offset if resume else 0
        offset = line = 0
        while buf or not at_end:
            if not at_end and (len(buf) < CHUNK or (b"\n" not in buf and len(buf) < MAX_LINE)):
                data = more()
                at_end, buf = not data, buf + data
                continue
            if b"\n" not in buf:  # the unterminated end of the file, or a line longer than the maximum
                piece, reason = (buf[:MAX_LINE], "line_too_long") if len(buf) >= MAX_LINE else (buf, "torn_line")
                if offset >= skip:
                    yield Chunk(source, offset, line, [], piece, reason)
                offset, line, buf = offset + len(piece), line + 1, buf[len(piece):]
                continue
            lines = buf.split(b"\n")
            rest = lines.pop()
            end = offset + len(buf) - len(rest)
            if end > skip:
                if offset < skip:  # resume inside this chunk: drop the lines before the position
                    drop = len(buf[:skip - offset].split(b"\n")) - 1
                    lines, offset, line = lines[drop:], skip, line + drop
                yield Chunk(source, offset, line, lines)
                checkpoint.advance(fp, end, line + len(lines), name)
            offset, line, buf = end, line + len(lines), rest
        if cut_short:
            print(f"shadowtap: warning: {name} ends early (compressed stream cut short)", file=sys.stderr)
    finally:
        if f is not sys.stdin.buffer:
            f.close()


@dataclass(slots=True, eq=False)
class _Tracked:
    """One open file (an inode) under observation."""

    path: str
    fd: int
    key: tuple[int, int]
    order: int
    fp: str | None = None
    source: FileSource | None = None
    standby: bool = False
    offset: int = 0
    line: int = 0
    size: int = 0
    changed: float = 0.0
    present: bool = True


@dataclass(slots=True)
class Follower:
    """Follows the files matching `patterns` (paths or globs); `poll()` yields what is new.

    Read positions go into `checkpoint` as chunks are shipped; `events` counts what happened
    (`new`, `renamed`, `truncated`, `resumed`, `closed`, `standby`), and `report` receives one
    line per event worth telling an operator.
    """

    patterns: tuple[str, ...]
    checkpoint: Checkpoint
    report: Callable[[str], None] = lambda message: print(f"shadowtap: {message}", file=sys.stderr)
    grace: float = ROTATE_GRACE
    events: Counter[str] = field(default_factory=Counter)
    _files: dict[tuple[int, int], _Tracked] = field(default_factory=dict)
    _claims: dict[str, _Tracked] = field(default_factory=dict)
    _order: int = 0
    _ignored: set[str] = field(default_factory=set)

    def poll(self) -> Iterator[Chunk]:
        """Find new and rotated files, then yield their new complete lines, oldest file first."""
        self._discover()
        self._check_truncation()
        for tracked in sorted(self._files.values(), key=lambda t: t.order):
            yield from self._read(tracked)
        self._close_finished()

    def unread(self) -> int:
        """Bytes in the followed files that are not read yet (how far behind the shipper is)."""
        behind = 0
        for tracked in self._files.values():
            if tracked.fp is not None and not tracked.standby:
                behind += max(tracked.size - tracked.offset, 0)
        return behind

    def followed(self) -> int:
        """How many files are open."""
        return len(self._files)

    def close(self) -> None:
        """Close every file."""
        for tracked in self._files.values():
            os.close(tracked.fd)
        self._files.clear()
        self._claims.clear()

    # -- discovery -----------------------------------------------------------------------------

    def _paths(self) -> list[str]:
        paths: list[str] = []
        for pattern in self.patterns:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for path in matches:
                if path.endswith(".gz"):
                    if path not in self._ignored:
                        self._ignored.add(path)
                        self.report(f"not following {path}: compressed files are finished rotations")
                    continue
                paths.append(path)
        return paths

    def _discover(self) -> None:
        now = time.monotonic()
        seen: set[tuple[int, int]] = set()
        new: list[tuple[float, _Tracked]] = []
        for path in self._paths():
            try:
                st = os.stat(path)
            except OSError:
                if path not in self._ignored:
                    self._ignored.add(path)
                    self.report(f"waiting for {path} to appear")
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            key = (st.st_dev, st.st_ino)
            seen.add(key)
            tracked = self._files.get(key)
            if tracked is not None:
                if tracked.path != path:
                    self.events["renamed"] += 1
                    self.report(f"{tracked.path} was renamed to {path}")
                    tracked.path = path
                    if tracked.fp is not None:
                        tracked.source = FileSource(path, tracked.fp)
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                if path not in self._ignored:
                    self._ignored.add(path)
                    self.report(f"error: cannot read {path!r}: {e.strerror or e}")
                continue
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            if key in self._files:  # the path moved between stat and open
                os.close(fd)
                continue
            seen.add(key)
            tracked = _Tracked(path, fd, key, 0, size=st.st_size, changed=now)
            self._files[key] = tracked
            new.append((st.st_mtime, tracked))
        for _, tracked in sorted(new, key=lambda item: item[0]):
            self._order += 1
            tracked.order = self._order
            self.events["new"] += 1
        for tracked in self._files.values():
            tracked.present = tracked.key in seen

    # -- reading ---------------------------------------------------------------------------

    def _owner(self, fp: str) -> _Tracked | None:
        owner = self._claims.get(fp)
        return owner if owner is not None and owner.key in self._files and owner.fp == fp else None

    def _claim(self, tracked: _Tracked) -> bool:
        """Make `tracked` the reader of its fingerprint; False (standby) when another file is."""
        fp = tracked.fp
        owner = self._owner(fp)
        if owner is not None and owner is not tracked:
            if not tracked.standby:
                tracked.standby = True
                self.events["standby"] += 1
            return False
        self._claims[fp] = tracked
        position = self.checkpoint.resume(fp)
        if position is not None and position.offset > os.fstat(tracked.fd).st_size:
            position = None  # a file that starts like an earlier one (truncated, same first line)
        tracked.offset, tracked.line = (position.offset, position.line) if position else (0, 0)
        if tracked.standby:
            tracked.standby = False
            self.report(f"{tracked.path} takes over from offset {tracked.offset} (copy of a truncated file)")
        elif position and tracked.offset:
            self.events["resumed"] += 1
            self.report(f"resuming {tracked.path} at offset {tracked.offset} (line {tracked.line + 1})")
        tracked.source = FileSource(tracked.path, fp)
        return True

    def _check_truncation(self) -> None:
        """A file shorter than its read position, or whose first line changed, was truncated
        (copytruncate; the second case when it grew past the old position before this poll):
        its fingerprint is released (a copy may take over) and it starts over as the newest file."""
        now = time.monotonic()
        for tracked in self._files.values():
            size = os.fstat(tracked.fd).st_size
            if size != tracked.size:
                tracked.size, tracked.changed = size, now
            if tracked.fp is not None and not tracked.standby and (
                    size < tracked.offset
                    or first_line_fingerprint(os.pread(tracked.fd, FINGERPRINT_BYTES, 0), False) != tracked.fp):
                self.events["truncated"] += 1
                self.report(f"{tracked.path} was truncated at offset {tracked.offset} (copytruncate); "
                            "it starts over as a new file")
                if self._claims.get(tracked.fp) is tracked:
                    del self._claims[tracked.fp]
                tracked.fp, tracked.source, tracked.offset, tracked.line = None, None, 0, 0
                self._order += 1
                tracked.order = self._order

    def _read(self, tracked: _Tracked) -> Iterator[Chunk]:
        now = time.monotonic()
        if tracked.fp is None:
            tracked.fp = first_line_fingerprint(os.pread(tracked.fd, FINGERPRINT_BYTES, 0), False)
            if tracked.fp is None or not self._claim(tracked):
                return
        elif tracked.standby and not self._claim(tracked):
            return
        budget = READ_BUDGET
        while budget > 0:
            data = os.pread(tracked.fd, CHUNK, tracked.offset)
            if not data:
                return
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) >= MAX_LINE:
                    yield Chunk(tracked.source, tracked.offset, tracked.line, [], data[:MAX_LINE], "line_too_long")
                    self._advance(tracked, MAX_LINE, 1, now)
                    continue
                if not tracked.present and now - tracked.changed > self.grace:
                    yield Chunk(tracked.source, tracked.offset, tracked.line, [], data, "torn_line")
                    self._advance(tracked, len(data), 1, now)
                return
            lines = data[:cut].split(b"\n")
            yield Chunk(tracked.source, tracked.offset, tracked.line, lines)
            self._advance(tracked, cut + 1, len(lines), now)
            budget -= cut + 1

    def _advance(self, tracked: _Tracked, size: int, lines: int, now: float) -> None:
        tracked.offset += size
        tracked.line += lines
        tracked.changed = now
        self.checkpoint.advance(tracked.fp, tracked.offset, tracked.line, tracked.path)

    def _close_finished(self) -> None:
        now = time.monotonic()
        for key, tracked in list(self._files.items()):
            if tracked.present:
                continue
            finished = tracked.fp is None or tracked.standby or tracked.offset >= tracked.size
            if finished and now - tracked.changed > self.grace:
                os.close(tracked.fd)
                del self._files[key]
                if tracked.fp is not None and self._claims.get(tracked.fp) is tracked:
                    del self._claims[tracked.fp]
                self.events["closed"] += 1
