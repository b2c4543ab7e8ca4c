"""Helpers for the packet-capture tests: the real tools (tshark, tcpdump) found or the test
fails, tshark's view of a capture, a pcap writer, and running `capture pcap` as a user would."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.conftest import run_cli


def tool(name: str) -> str:
    """The path of a Debian tool the test needs; the test FAILS (not skips) without it."""
    for path in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if path and Path(path).exists():
            return path
    pytest.fail(f"{name} is not installed (`make test` installs it: scripts/install_system_deps.sh)")


def tshark(path: Path, display_filter: str, fields: list[str], extra: tuple[str, ...] = (),
           damaged: bool = False) -> list[list[str]]:
    """tshark's rows for a display filter: one list of field values per packet (`damaged`: the
    file is known to be cut short, which tshark reports with exit status 2)."""
    args = [tool("tshark"), "-r", str(path), *extra, "-Y", display_filter, "-T", "fields",
            "-E", "separator=\t", "-E", "occurrence=f"]
    for f in fields:
        args += ["-e", f]
    res = subprocess.run(args, capture_output=True, timeout=120)
    assert res.returncode == (2 if damaged else 0), res.stderr.decode(errors="replace")
    return [line.split("\t") for line in res.stdout.decode("latin-1").splitlines()]


def follow(path: Path, streams: list[int]) -> dict[int, tuple[bytes, bytes]]:
    """tshark's reassembled bytes of TCP streams: {stream: (first sender's bytes, the other's)}."""
    if not streams:
        return {}
    args = [tool("tshark"), "-r", str(path), "-q"]
    for s in streams:
        args += ["-z", f"follow,tcp,raw,{s}"]
    res = subprocess.run(args, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    out: dict[int, tuple[bytes, bytes]] = {}
    current = None
    sides: list[bytearray] = [bytearray(), bytearray()]
    for line in res.stdout.decode().splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            current = int(line.rsplit(" ", 1)[1])
            sides = [bytearray(), bytearray()]
            out[current] = sides  # type: ignore[assignment]
        elif current is not None and line and not line.startswith(("=", "Follow:", "Node ")):
            side = 1 if line.startswith("\t") else 0
            sides[side] += bytes.fromhex(line.strip())
    return {k: (bytes(v[0]), bytes(v[1])) for k, v in out.items()}


def capture(paths, out: Path, *args: str, timeout: float = 120):
    """Run `shadowtap capture pcap PATHS -o OUT ARGS...`: (records, completed process)."""
    if isinstance(paths, str | Path):
        paths = [paths]
    res = run_cli("capture", "pcap", *map(str, paths), "-o", str(out), *args, timeout=timeout)
    records = [orjson.loads(line) for line in out.read_bytes().splitlines() if line] if out.exists() else []
    return records, res


def summary(res) -> str:
    """The one summary line a capture prints last on stderr."""
    lines = res.stderr.decode().strip().splitlines()
    return next(line for line in reversed(lines) if line.startswith("shadowtap capture "))


def write_pcap(path: Path, frames: list[tuple[float, bytes]], linktype: int, nano: bool = False,
               snaplen: int = 262144) -> None:
    """A classic pcap file (little-endian), written with struct."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    parts = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, frame in frames:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        kept = frame[:snaplen]
        parts.append(struct.pack("<IIII", sec, frac, len(kept), len(frame)) + kept)
    path.write_bytes(b"".join(parts))
