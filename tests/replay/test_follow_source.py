"""FollowSource: a JSONL file read as it is written (appends, torn lines, truncation, rotation),
and a spool directory whose writer moves on to new segments."""

from __future__ import annotations

import asyncio
import os

import pytest

from shadowtap.errors import InputError
from shadowtap.record import Record, encode_record
from shadowtap.streams.follow import FollowSource
from shadowtap.streams.jsonl import SpoolSink, spool_segments

WAIT_S = 5.0


def line(i: int) -> bytes:
    return encode_record(Record(id=f"r{i}", ts=float(i), method="GET", target=f"/{i}")) + b"\n"


async def take(it, n: int) -> list[str]:
    """The next `n` record ids, failing after WAIT_S."""
    async def go() -> list[str]:
        return [(await anext(it)).record.id for _ in range(n)]

    return await asyncio.wait_for(go(), WAIT_S)


async def nothing_yet(it) -> asyncio.Future:
    """Asks for the next record and checks that none arrives within a few polls; returns the
    pending request (cancelling it would close the iterator)."""
    pending = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0.3)
    assert not pending.done()
    return pending


async def test_appended_lines_arrive_and_a_torn_line_waits_for_its_newline(tmp_path):
    path = tmp_path / "live.jsonl"
    path.write_bytes(line(0) + line(1))
    source = FollowSource(str(path), poll_s=0.01)
    it = aiter(source)
    assert await take(it, 2) == ["r0", "r1"]
    with open(path, "ab") as f:
        whole = line(2)
        f.write(whole[:20])
        f.flush()
        await asyncio.sleep(0.05)
        f.write(whole[20:] + b"garbage\n" + line(3))
    assert await take(it, 2) == ["r2", "r3"]
    assert source.skipped == {"bad_record": 1}
    pending = await nothing_yet(it)
    pending.cancel()


async def test_from_end_skips_what_is_there(tmp_path):
    path = tmp_path / "live.jsonl"
    path.write_bytes(line(0) + line(1) + line(2)[:10])  # ends in a torn line its writer will finish
    it = aiter(FollowSource(str(path), from_end=True, poll_s=0.01))
    pending = await nothing_yet(it)
    with open(path, "ab") as f:
        f.write(line(2)[10:] + line(3))
    assert (await asyncio.wait_for(pending, WAIT_S)).record.id == "r2"  # finished after we started
    assert await take(it, 1) == ["r3"]
    await it.aclose()


async def test_copytruncate_and_rename_rotation(tmp_path):
    path = tmp_path / "live.jsonl"
    path.write_bytes(line(0) + line(1))
    it = aiter(FollowSource(str(path), poll_s=0.01))
    assert await take(it, 2) == ["r0", "r1"]
    with open(path, "r+b") as f:  # copytruncate: the same file starts over
        f.truncate(0)
    await asyncio.sleep(0.05)
    with open(path, "ab") as f:
        f.write(line(2))
    assert await take(it, 1) == ["r2"]
    with open(path, "ab") as f:  # rename rotation: the rest of the old file, then the new one
        f.write(line(3))
        os.rename(path, tmp_path / "live.jsonl.1")
        f.write(line(4))
    path.write_bytes(line(5))
    assert await take(it, 3) == ["r3", "r4", "r5"]
    await it.aclose()


def test_only_a_file_or_a_spool_can_be_followed(tmp_path):
    with pytest.raises(InputError, match="not a file or spool directory"):
        FollowSource(str(tmp_path / "missing.jsonl"))
    FollowSource(str(tmp_path))


async def test_a_spool_is_followed_across_its_segments_as_the_sink_writes_them(tmp_path):
    """The real SpoolSink with tiny segments: every record arrives once, in order, including
    the last lines of a segment written just before the sink moved on."""
    spool = tmp_path / "spool"
    spool.mkdir()
    it = aiter(FollowSource(str(spool), poll_s=0.01))
    pending = await nothing_yet(it)  # no segment yet: it waits for the writer
    sink = SpoolSink(str(spool), segment_bytes=300)
    await sink.send_encoded([line(0).rstrip(b"\n")])
    await sink.flush()
    assert (await asyncio.wait_for(pending, WAIT_S)).record.id == "r0"
    for i in range(1, 40):
        await sink.send_encoded([line(i).rstrip(b"\n")])
        if i % 7 == 0:
            await sink.flush()
            await asyncio.sleep(0.02)
    await sink.flush()
    assert len(spool_segments(str(spool))) > 5
    assert await take(it, 39) == [f"r{i}" for i in range(1, 40)]
    await sink.close()
    await it.aclose()


async def test_a_spool_from_its_end_starts_after_the_newest_segment(tmp_path):
    spool = tmp_path / "spool"
    sink = SpoolSink(str(spool), segment_bytes=300)
    await sink.send_encoded([line(i).rstrip(b"\n") for i in range(10)])
    await sink.flush()
    it = aiter(FollowSource(str(spool), from_end=True, poll_s=0.01))
    pending = await nothing_yet(it)
    await sink.send_encoded([line(10).rstrip(b"\n")])
    await sink.flush()
    assert (await asyncio.wait_for(pending, WAIT_S)).record.id == "r10"
    await sink.close()
    await it.aclose()
