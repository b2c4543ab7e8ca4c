"""Reading newline-terminated lines with their byte offsets, detecting a torn last line."""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from shadowtap.errors import InputError

CHUNK = 1 << 20


def open_input(path: str) -> BinaryIO:
    """Open a file (or `-` for stdin) for binary reading; `.gz` is decompressed."""
    if path == "-":
        return sys.stdin.buffer
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")
    except OSError as e:
        raise InputError(f"cannot read {path!r}: {e.strerror or e}") from e


def iter_lines(f: BinaryIO, name: str = "") -> Iterator[tuple[int, bytes, bool]]:
    """Yield (offset, line without newline, complete) for every line of `f`.

    The last line is yielded with complete=False when the file does not end in a newline
    (a writer was killed mid-line); a compressed file cut short ends the same way, even
    when the cut fell on a line boundary (the line is then empty).
    """
    offset = 0
    rest = b""
    read = getattr(f, "read1", f.read)  # read1: a cut .gz still yields what came before the cut
    while True:
        try:
            chunk = read(CHUNK)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            yield offset, rest, False
            return
        except OSError as e:
            raise InputError(f"cannot read {name or 'input'}: {e.strerror or e}") from e
        if not chunk:
            break
        buf = rest + chunk if rest else chunk
        lines = buf.split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield offset, line, True
            offset += len(line) + 1
    if rest:
        yield offset, rest, False


def ends_with_newline(path: str) -> bool:
    """True when a plain file is empty or its last byte is a newline."""
    try:
        with open(path, "rb") as f:
            f.seek(0, io.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, io.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True
