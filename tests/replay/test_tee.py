"""`shadowtap replay tee` as a user runs it while debugging: a subprocess following a JSONL file
that is being written, a debug target that differs or hangs, dumps on disk."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import orjson
import pytest
from aiohttp import web

from replay.options import Match
from replay.tee import compile_match
from shadowtap.record import Record, Response, encode_record

SHADOWTAP = [sys.executable, "-m", "shadowtap"]
WAIT_S = 20.0
"""Longest wait for any one expected line (the subprocess starts in about a second)."""


def rec(i: int, target: str, status: int | None = 200, **kw) -> Record:
    response = None if status is None else Response(status=status, **kw)
    return Record(id=f"r{i}", ts=1_700_000_000.0 + i, method="GET", target=target, response=response)


def append(path, *records: Record) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(encode_record(r) + b"\n" for r in records))


class Tee:
    """A running `replay tee` subprocess whose stdout lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str) -> Tee:
        proc = await asyncio.create_subprocess_exec(*SHADOWTAP, "replay", "tee", *args,
                                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE)
        return cls(proc)

    async def until(self, count: int) -> list[str]:
        """Read stdout until it has `count` lines (at most WAIT_S per line)."""
        while len(self.lines) < count:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), WAIT_S)
            assert raw, f"tee ended early; got {self.lines}; stderr: {(await self.proc.stderr.read()).decode()}"
            self.lines.append(raw.decode().rstrip("\n"))
        return list(self.lines)

    async def stop(self) -> tuple[int, str]:
        """Ctrl-C, then the exit code and stderr."""
        self.proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(self.proc.communicate(), WAIT_S)
        self.lines += out.decode().splitlines()
        return self.proc.returncode, err.decode()


def fields(line: str) -> list[str]:
    """time, method, target, original, '->', new, latency, notes..."""
    return line.split()


async def test_follow_a_file_being_written_and_dump_what_differs(serve, tmp_path):
    async def debug_build(request, _server):
        if request.path.startswith("/broken"):
            return web.Response(status=500, text="boom", headers={"X-Debug": "trace-1"})
        return web.Response(text="fine")

    live, dumps = tmp_path / "live.jsonl", tmp_path / "dumps"
    append(live, rec(0, "/a?x=1"), rec(1, "/broken/1"))
    async with serve(debug_build) as srv:
        tee = await Tee.start("-i", str(live), "--target", srv.url, "--follow", "--dump", str(dumps))
        first = await tee.until(2)
        # The writer goes on: a record with the original's headers and body, a torn line, more.
        append(live, rec(2, "/broken/2", headers=(("Content-Type", "text/plain"),), body=b"all good"))
        tail = encode_record(rec(3, "/b")) + b"\n"
        with open(live, "ab") as f:
            f.write(tail[:15])
        await asyncio.sleep(0.2)
        with open(live, "ab") as f:
            f.write(tail[15:])
        append(live, rec(4, "/c", status=None))
        lines = await tee.until(5)
        code, err = await tee.stop()
    assert code == 130, err
    assert len(lines) == 5 and all(line[2] == ":" and line[12] == " " for line in lines)  # HH:MM:SS.mmm
    got = {fields(line)[2]: fields(line)[1:6] for line in lines}
    assert got == {"/a?x=1": ["GET", "/a?x=1", "200", "->", "200"],
                   "/broken/1": ["GET", "/broken/1", "200", "->", "500"],
                   "/broken/2": ["GET", "/broken/2", "200", "->", "500"],
                   "/b": ["GET", "/b", "200", "->", "200"], "/c": ["GET", "/c", "-", "->", "200"]}
    assert all(fields(line)[6].endswith("ms") and float(fields(line)[6][:-2]) >= 0 for line in lines)
    assert fields(first[1])[7:] == ["differs", "[dump", "000001-r1]"]
    assert not any("[dump" in line or "differs" in line for line in lines if "/broken" not in line)
    made = sorted(p.name for p in dumps.iterdir())
    assert made == ["000001-r1", "000002-r2"]
    one, two = dumps / "000001-r1", dumps / "000002-r2"
    request = (one / "request.http").read_bytes()
    assert request.startswith(b"GET /broken/1 HTTP/1.1\r\nHost: ") and b"X-Shadowtap: 1\r\n" in request
    response = (one / "response.http").read_bytes()
    assert response.startswith(b"HTTP/1.1 500 ") and b"X-Debug: trace-1\r\n" in response
    assert response.endswith(b"\r\n\r\nboom")
    meta = orjson.loads((one / "meta.json").read_bytes())
    assert meta["why"] == "status 200 -> 500" and meta["record"]["id"] == "r1" and meta["outcome"]["status"] == 500
    assert not (one / "original-response.http").exists()
    assert (two / "original-response.http").read_bytes() == (
        b"HTTP/1.1 200\r\nContent-Type: text/plain\r\n\r\nall good")
    assert "2 exchanges dumped" in err and "target" in err  # the summary table goes to stderr


async def test_a_hanging_debug_target_does_not_stop_the_stream(serve, tmp_path):
    async def debug_build(request, server):
        if request.path == "/hang":
            await server.release.wait()  # a breakpoint nobody continues
        return web.Response(text="ok")

    live = tmp_path / "live.jsonl"
    live.touch()
    async with serve(debug_build) as srv:
        tee = await Tee.start("-i", str(live), "--target", srv.url, "--follow", "--timeout", "1",
                              "--max-inflight", "2")
        await asyncio.sleep(0.5)
        append(live, rec(0, "/hang"), rec(1, "/hang"), rec(2, "/hang"))
        dropped = await tee.until(1)  # at once: two requests hang, the third one has no slot
        timed_out = await tee.until(3)
        started = time.monotonic()
        append(live, rec(3, "/ok/3"), rec(4, "/ok/4"))
        lines = await tee.until(5)
        waited = time.monotonic() - started
        code, err = await tee.stop()
    assert code == 130, err
    assert fields(dropped[0])[2:6] == ["/hang", "200", "->", "dropped"]
    assert dropped[0].endswith("(--max-inflight requests outstanding)")
    assert [fields(line)[5] for line in timed_out[1:]] == ["timeout", "timeout"]
    assert all("no response within 1 s" in line for line in timed_out[1:])
    assert sorted(fields(line)[2] for line in lines[3:]) == ["/ok/3", "/ok/4"]
    assert {fields(line)[5] for line in lines[3:]} == {"200"}
    assert waited < 10  # answered while the hanging requests are still stuck in the debug build


def test_match_filters():
    r = Record(id="r", ts=0.0, method="GET", target="/api/items/7?x=1",
               headers=(("X-Env", "canary"), ("User-Agent", "curl")), response=Response(status=503))
    cases = [
        (Match("method", "get,head"), True), (Match("method", "POST"), False),
        (Match("path", r"^/api/items/\d+"), True), (Match("path", "^/items"), False),
        (Match("header", "canary", "x-env"), True), (Match("header", "prod", "X-Env"), False),
        (Match("header", "", "User-Agent"), True), (Match("header", "", "Cookie"), False),
        (Match("status", "5xx"), True), (Match("status", "503,404"), True), (Match("status", "500"), False),
    ]
    assert [compile_match(m)(r) for m, _ in cases] == [want for _, want in cases]
    assert compile_match(Match("status", "5xx"))(Record(id="n", ts=0.0, method="GET", target="/")) is False


def test_match_on_a_static_file_from_the_command_line(tmp_path, recording_server):
    path = tmp_path / "in.jsonl"
    append(path, rec(0, "/api/1", status=500), rec(1, "/api/2", status=200), rec(2, "/web/3", status=500))
    proc = subprocess.run(
        [*SHADOWTAP, "replay", "tee", "-i", str(path), "--target", recording_server.url,
         "--match", "path=^/api/", "--match", "status=5xx"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert [fields(line)[2] for line in proc.stdout.splitlines()] == ["/api/1"]
    assert [r.target for r in recording_server.requests] == [b"/api/1"]
    assert "skipped: no_match 2" in proc.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--match", "colour=red"], "'colour=red'"),
        (["--match", "status=200ish"], "'status=200ish'"),
        (["--match", "path=("], "bad regular expression"),
        (["--dump-all"], "--dump-all needs --dump"),
        (["--from-end"], "--from-end needs --follow"),
    ],
)
def test_bad_tee_options_are_one_sentence(tmp_path, args, named):
    path = tmp_path / "in.jsonl"
    path.touch()
    proc = subprocess.run([*SHADOWTAP, "replay", "tee", "-i", str(path), "--target", "http://127.0.0.1:1", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("shadowtap: error:")]
    assert len(errors) == 1 and named in errors[0], proc.stderr


async def test_stdin_is_streamed_not_read_to_the_end_first(serve, tmp_path):
    async with serve() as srv:
        tee = await Tee.start("-i", "-", "--target", srv.url)
        tee.proc.stdin.write(encode_record(rec(0, "/first")) + b"\n")
        await tee.proc.stdin.drain()
        first = await tee.until(1)  # answered while stdin is still open
        tee.proc.stdin.write(encode_record(rec(1, "/second")) + b"\n")
        tee.proc.stdin.close()
        out, err = await asyncio.wait_for(tee.proc.communicate(), WAIT_S)
    assert tee.proc.returncode == 0, err
    assert fields(first[0])[2] == "/first" and fields(out.decode().splitlines()[0])[2] == "/second"


async def test_follow_a_kafka_topic_as_records_arrive(serve, kafka):
    """`tee --follow` on a topic: what is there, then what a shipper produces while tee runs."""
    from shadowtap.streams.kafka import KafkaSink
    from shadowtap.streams.kafka_admin import create_topic

    topic = f"kafka://{kafka.bootstrap}/tee-follow-{time.time_ns()}"
    create_topic(topic, partitions=1, retention_ms=None)

    async def produce(*records: Record) -> None:
        sink = KafkaSink(topic)
        for r in records:
            await sink.send(r)
        await sink.flush()
        await sink.close()

    await produce(rec(0, "/before/0"), rec(1, "/before/1", status=404))
    async with serve() as srv:
        tee = await Tee.start("-i", topic, "--target", srv.url, "--follow", "--from", "earliest",
                              "--group", f"tee-{time.time_ns()}")
        first = await tee.until(2)
        await produce(rec(2, "/after/2"))
        lines = await tee.until(3)
        code, err = await tee.stop()
    assert code == 130, err
    assert [fields(line)[2] for line in first] == ["/before/0", "/before/1"]
    assert [fields(line)[2:6] for line in lines] == [["/before/0", "200", "->", "200"],
                                                      ["/before/1", "404", "->", "200"],
                                                      ["/after/2", "200", "->", "200"]]


async def test_follow_the_spool_a_live_capture_writes(serve, tmp_path):
    """The no-broker pipeline: `capture nginx --follow -o spool/` beside `tee --follow -i spool/`;
    lines appended to the access log come out of the debug target."""
    seen: list[str] = []

    async def debug_build(request, _server):
        seen.append(request.path_qs)
        return web.Response(text="ok")

    log, spool = tmp_path / "access.log", tmp_path / "spool"
    entry = ('127.0.0.1 - - [27/Nov/2026:20:20:52 +0000] "GET /item/{n}?token=s3cret HTTP/1.1" 200 3 "-" "curl/8"\n')
    log.write_text(entry.format(n=0))
    capture = await asyncio.create_subprocess_exec(
        *SHADOWTAP, "capture", "nginx", str(log), "--follow", "--checkpoint-interval", "0.1", "-o", f"{spool}/",
        stderr=subprocess.PIPE)
    try:
        async with serve(debug_build) as srv:
            deadline = time.monotonic() + WAIT_S
            while not spool.is_dir() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            tee = await Tee.start("-i", f"{spool}/", "--target", srv.url, "--follow")
            await tee.until(1)
            with open(log, "a") as f:
                f.write(entry.format(n=1) + entry.format(n=2))
            lines = await tee.until(3)
            code, err = await tee.stop()
    finally:
        capture.send_signal(signal.SIGTERM)
        await asyncio.wait_for(capture.communicate(), WAIT_S)
    assert code == 130, err
    assert [fields(line)[2] for line in lines] == [f"/item/{n}?token=SCRUBBED" for n in range(3)]
    assert seen == [f"/item/{n}?token=SCRUBBED" for n in range(3)]
