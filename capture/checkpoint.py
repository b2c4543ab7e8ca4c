"""Where each followed file was read up to, and what the sink has confirmed.

Files are identified by the fingerprint of their first bytes (capture.ship.fingerprint), not by
path or inode: a renamed file, or a copy made by copytruncate, keeps its fingerprint and so its
position, and a new file at an old path gets a new one.

Two positions per fingerprint: `read` (how far this process has read and handed lines to the
sink) and `confirmed` (what the sink confirmed with `flush()`, written to the checkpoint file).
Only `confirmed` is persisted, as versioned JSON written to a temporary file, fsynced, renamed
over the checkpoint and the directory fsynced, so a crash leaves the old or the new checkpoint,
never a torn one. After a restart reading resumes at `confirmed`: lines between it and where
the killed process had read are shipped again (at-least-once), never skipped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import orjson

from shadowtap.errors import InputError, ShadowtapError, UsageError

VERSION = 1
KIND = "shadowtap-checkpoint"
MAX_ENTRIES = 10_000
"""Fingerprints kept: the most recently read ones (a file rotated away long ago is forgotten)."""


@dataclass(slots=True)
class Position:
    """A place in a file: the byte offset of the next line to read and how many lines precede it."""

    offset: int = 0
    line: int = 0
    path: str = ""
    """The file's last known path (informational: files are found by fingerprint)."""
    seen: float = 0.0
    """Unix time the position last moved (for pruning)."""


class Checkpoint:
    """Read and confirmed positions per fingerprint, persisted to `path` (None: memory only)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.confirmed: dict[str, Position] = {}
        self.read: dict[str, Position] = {}
        self.writes = 0
        """How many times the checkpoint file was written."""
        self.saved: dict[str, Position] = {}
        """The positions the checkpoint file held when this run started."""
        if path:
            self._check_writable(path)
            self.saved = self._load(path)
            self.confirmed = {fp: Position(p.offset, p.line, p.path, p.seen) for fp, p in self.saved.items()}
            self.read = {fp: Position(p.offset, p.line, p.path, p.seen) for fp, p in self.saved.items()}

    @staticmethod
    def _check_writable(path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise UsageError(f"cannot write --checkpoint {path!r}: its directory does not exist or is not writable")

    @staticmethod
    def _load(path: str) -> dict[str, Position]:
        try:
            with open(path, "rb") as f:
                data = orjson.loads(f.read())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as e:
            raise InputError(f"cannot read checkpoint {path!r}: {e}; move it away to start over") from e
        if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("files"), dict):
            raise InputError(f"{path!r} is not a shadowtap checkpoint; move it away to start over")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise InputError(f"checkpoint {path!r} has version {version!r}, newer than this shadowtap "
                             f"reads ({VERSION}): upgrade shadowtap")
        positions = {}
        for fp, entry in data["files"].items():
            try:
                positions[fp] = Position(int(entry["offset"]), int(entry.get("line", 0)),
                                         str(entry.get("path", "")), float(entry.get("seen", 0.0)))
            except (KeyError, TypeError, ValueError) as e:
                raise InputError(f"checkpoint {path!r} has a malformed entry for {fp!r}; move it away "
                                 "to start over") from e
        return positions

    def resume(self, fp: str) -> Position | None:
        """Where to continue a file with this fingerprint: how far this run read it (a renamed
        file or a copy), else where the checkpoint file says; None when it is new."""
        return self.read.get(fp)

    def advance(self, fp: str, offset: int, line: int, path: str) -> None:
        """Lines up to `offset` of file `fp` were handed to the sink."""
        position = self.read.get(fp)
        if position is None:
            position = self.read[fp] = Position()
        position.offset, position.line, position.path = offset, line, path
        position.seen = time.time()

    def confirm(self) -> bool:
        """The sink confirmed everything handed to it: confirmed := read. True when it moved."""
        moved = False
        for fp, position in self.read.items():
            old = self.confirmed.get(fp)
            if old is None or old.offset != position.offset or old.path != position.path:
                self.confirmed[fp] = Position(position.offset, position.line, position.path, position.seen)
                moved = True
        if len(self.read) > MAX_ENTRIES:
            keep = sorted(self.read, key=lambda k: self.read[k].seen)[-MAX_ENTRIES:]
            self.read = {fp: self.read[fp] for fp in keep}
            self.confirmed = {fp: p for fp, p in self.confirmed.items() if fp in self.read}
        return moved

    def lag(self) -> int:
        """Bytes read but not yet confirmed, over all files."""
        total = 0
        for fp, position in self.read.items():
            confirmed = self.confirmed.get(fp)
            total += position.offset - (confirmed.offset if confirmed else 0)
        return max(total, 0)

    def save(self) -> None:
        """Write the confirmed positions: tmp file, fsync, rename, fsync the directory."""
        if not self.path:
            return
        data = {
            "kind": KIND,
            "version": VERSION,
            "updated": time.time(),
            "files": {fp: {"offset": p.offset, "line": p.line, "path": p.path, "seen": round(p.seen, 3)}
                      for fp, p in self.confirmed.items()},
        }
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as e:
            raise ShadowtapError(f"cannot write checkpoint {self.path!r}: {e.strerror or e}") from e
        self.writes += 1
