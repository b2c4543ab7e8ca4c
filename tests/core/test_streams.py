"""JSONL files, .gz, spools and torn lines through the stream adapters."""

import asyncio
import gzip

from shadowtap.record import Record, encode_record
from shadowtap.stream import StreamOptions
from shadowtap.streams import open_sink, open_source
from shadowtap.streams.copy import copy_addresses
from shadowtap.streams.jsonl import SpoolSink, spool_segments


def records(n: int, start: int = 0) -> list[Record]:
    return [Record(id=f"r{i}", ts=1000.0 + i, method="GET", target=f"/item/{i}")
            for i in range(start, start + n)]


async def write_all(address: str, recs: list[Record]) -> None:
    sink = open_sink(address)
    for rec in recs:
        await sink.send(rec)
    await sink.close()


async def read_all(address: str):
    source = open_source(address)
    out = [d.record async for d in source]
    return out, source.skipped


def test_jsonl_file_round_trip_and_append(tmp_path):
    path = str(tmp_path / "recs.jsonl")
    asyncio.run(write_all(path, records(3)))
    asyncio.run(write_all(path, records(2, start=3)))
    got, skipped = asyncio.run(read_all(path))
    assert [r.id for r in got] == ["r0", "r1", "r2", "r3", "r4"]
    assert not skipped


def test_gzip_file_round_trip(tmp_path):
    path = str(tmp_path / "recs.jsonl.gz")
    asyncio.run(write_all(path, records(1000)))
    with gzip.open(path, "rb") as f:
        assert f.read().count(b"\n") == 1000
    got, _ = asyncio.run(read_all(path))
    assert len(got) == 1000 and got[-1].id == "r999"


def test_torn_last_line_is_counted_and_a_later_append_does_not_glue_onto_it(tmp_path):
    path = tmp_path / "recs.jsonl"
    whole = b"".join(encode_record(r) + b"\n" for r in records(2))
    torn = encode_record(records(1, start=2)[0])[:30]
    path.write_bytes(whole + torn)
    got, skipped = asyncio.run(read_all(str(path)))
    assert [r.id for r in got] == ["r0", "r1"]
    assert skipped == {"torn_line": 1}
    asyncio.run(write_all(str(path), records(1, start=7)))
    got, skipped = asyncio.run(read_all(str(path)))
    assert [r.id for r in got] == ["r0", "r1", "r7"]
    assert skipped == {"bad_record": 1}


def test_truncated_gzip_is_a_torn_tail_not_a_crash(tmp_path):
    path = tmp_path / "recs.jsonl.gz"
    asyncio.run(write_all(str(path), records(5000)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    got, skipped = asyncio.run(read_all(str(path)))
    assert 0 < len(got) < 5000
    assert skipped["torn_line"] == 1


def test_spool_rotates_by_size_and_reads_back_in_order(tmp_path):
    spool = tmp_path / "spool"

    async def fill():
        sink = SpoolSink(str(spool), segment_bytes=20_000)
        for batch in range(6):
            for rec in records(512, start=batch * 512):
                await sink.send(rec)
            await sink.flush()
        await sink.close()

    asyncio.run(fill())
    segments = spool_segments(str(spool))
    assert len(segments) > 2
    got, _ = asyncio.run(read_all(str(spool) + "/"))
    assert [r.id for r in got] == [f"r{i}" for i in range(6 * 512)]


def test_copy_between_file_gz_and_spool(tmp_path):
    src = str(tmp_path / "a.jsonl")
    asyncio.run(write_all(src, records(50)))
    stats = asyncio.run(copy_addresses(src, str(tmp_path / "b.jsonl.gz"), StreamOptions()))
    assert stats.records == 50
    asyncio.run(copy_addresses(str(tmp_path / "b.jsonl.gz"), str(tmp_path / "spool") + "/", StreamOptions()))
    got, _ = asyncio.run(read_all(str(tmp_path / "spool")))
    assert [r.id for r in got] == [f"r{i}" for i in range(50)]
