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
    for lines, torn in iter_line_blocks(f, name):
        for line in lines:
            yield offset, line, True
            offset += len(line) + 1
        if torn is not None:
            yield offset, torn, False


def iter_line_blocks(f: BinaryIO, name: str = "") -> Iterator[tuple[list[bytes], bytes | None]]:
    """`iter_lines` a read at a time, without offsets, for loops that cannot afford a step per
    line: (complete lines, None) per read, and last (lines, torn line) when the input ends
    without a newline or a compressed file is cut short (see `iter_lines`)."""
    rest = b""
    read = getattr(f, "read1", f.read)  # read1: a cut .gz still yields what came before the cut
    while True:
        try:
            chunk = read(CHUNK)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            yield [], rest
            return
        except OSError as e:
            raise InputError(f"cannot read {name or 'input'}: {e.strerror or e}") from e
        if not chunk:
            break
        lines = (rest + chunk if rest else chunk).split(b"\n")
        rest = lines.pop()
        yield lines, None
    if rest:
        yield [], rest


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
