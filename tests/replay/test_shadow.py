"""run_shadow against real aiohttp and raw asyncio servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket

import orjson
import pytest
from aiohttp import web

from replay.observe import OutcomeWriter, ScheduleStats, StatsListener
from replay.options import ReplayOptions, Target
from replay.schedule import Pacing
from replay.shadow import run_shadow
from shadowtap.record import Outcome, Record
from shadowtap.stream import Delivery
from shadowtap.streams.memory import MemorySource

MAX = Pacing(rate=math.inf)


class Collect:
    """A listener keeping every Outcome."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.closed = False

    def on_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def close(self) -> None:
        self.closed = True


async def replay(records, targets, **options):
    """Run shadow mode over `records`; returns (summary, outcomes, stats listener, source)."""
    source = MemorySource(records)
    collect = Collect()
    stats = StatsListener((t.name, t.url) for t in targets)
    opts = ReplayOptions(**{"pacing": MAX, **options})
    summary = await run_shadow(source, targets, opts, [stats, collect])
    assert collect.closed
    return summary, collect.outcomes, stats, source


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_every_get_reaches_every_target_with_marker_and_host(serve, records):
    headers = (("User-Agent", "curl/8.5"), ("X-Req", "a"), ("Connection", "keep-alive, X-Hop"),
               ("X-Hop", "1"), ("X-Req", "b"), ("Content-Length", "0"))
    recs = records(18, host="shop.example", headers=headers)
    recs += records(1, method="HEAD", prefix="h", host="shop.example", headers=headers)
    recs += records(1, method="OPTIONS", prefix="o", host="shop.example", headers=headers)
    async with serve() as a, serve() as b:
        targets = [Target("a", a.url), Target("b", b.url)]
        summary, outcomes, stats, source = await replay(recs, targets)
    assert summary.exit_code == 0
    for server in (a, b):
        assert sorted((s.method, s.target) for s in server.seen) == sorted((r.method, r.target) for r in recs)
        for s in server.seen:
            names = [k.lower() for k, _ in s.headers]
            assert s.header("Host") == "shop.example"
            assert s.header("X-Shadowtap") == "1"
            assert s.header("User-Agent") == "curl/8.5"
            assert [v for k, v in s.headers if k == "X-Req"] == ["a", "b"]
            assert names.index("x-req") < names.index("x-shadowtap")
            assert "accept" not in names and "accept-encoding" not in names and "x-hop" not in names
    assert len(outcomes) == 40 and {o.status for o in outcomes} == {200}
    assert summary.schedule.planned == summary.schedule.sent == 40
    assert sorted(source.acked) == sorted(r.id for r in recs)
    for name in ("a", "b"):
        t = stats.targets[name]
        assert (t.requests, t.responses, dict(t.status), dict(t.errors)) == (20, 20, {"200": 20}, {})


async def test_marker_and_host_overrides(serve, records):
    async with serve() as srv:
        host = srv.url.removeprefix("http://")
        await replay(records(3), [Target("t1", srv.url)])
        await replay(records(3, host="orig.example"), [Target("t1", srv.url)],
                     marker=("X-Dark", "yes"), host_header="override.example")
    assert [s.header("Host") for s in srv.seen] == [host] * 3 + ["override.example"] * 3
    assert [s.header("X-Dark") for s in srv.seen[3:]] == ["yes"] * 3
    assert all(s.header("X-Shadowtap") is None for s in srv.seen[3:])


async def test_targets_are_sent_byte_for_byte(serve_raw, read_head):
    """A raw server sees the request lines: aiohttp's own server would reject some of these."""
    targets = ["/a%20b?x=1&y=%zz", "/p?", "/caf\u00e9?q=\u00fc", "/x/../y/./z", "//double//slash",
               "/q?a=b?c#frag", "/semi;p=1?k=%E9", "/raw space"]
    recs = [Record(id=f"r{i}", ts=1.0 + i, method="GET", target=t) for i, t in enumerate(targets)]
    recs.append(Record(id="raw", ts=10.0, method="GET", target="/x%FF", target_raw=b"/x\xff"))
    lines: list[bytes] = []

    async def record_line(reader, writer):
        while not reader.at_eof():
            lines.append((await read_head(reader)).split(b"\r\n", 1)[0])
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async with serve_raw(record_line) as url:
        _, outcomes, stats, _ = await replay(recs, [Target("t1", url + "/")], pacing=Pacing(speed=1000))
    assert lines == [b"GET " + t.encode() + b" HTTP/1.1" for t in targets]
    raw = next(o for o in outcomes if o.id == "raw")
    assert raw.error == "protocol" and raw.sent is None and "UTF-8" in (raw.reason or "")
    assert stats.targets["t1"].errors == {"protocol": 1}
    assert stats.targets["t1"].status == {"204": len(targets)}


async def test_base_url_path_prefix(serve, records):
    async with serve() as srv:
        _, outcomes, _, _ = await replay(records(2), [Target("t1", srv.url + "/api/")])
    assert sorted(s.target for s in srv.seen) == ["/api/item/0?q=0", "/api/item/1?q=1"]
    assert sorted(o.url for o in outcomes) == [srv.url + "/api/item/0?q=0", srv.url + "/api/item/1?q=1"]


async def test_writes_are_skipped_unless_allowed(serve, records):
    post = records(1, method="POST", prefix="p", body=b"\x00{\"k\": 1}\xff",
                   headers=(("Content-Type", "application/json"),))
    recs = records(2) + post + records(1, method="DELETE", prefix="d")
    async with serve() as srv:
        summary, outcomes, _, source = await replay(recs, [Target("t1", srv.url)])
        assert [s.method for s in srv.seen] == ["GET", "GET"]
        assert summary.schedule.skipped == {"write_method": 2}
        assert summary.schedule.planned == 2 and len(outcomes) == 2
        assert sorted(source.acked) == ["d0", "p0", "r0", "r1"]
        srv.seen.clear()
        summary, outcomes, _, _ = await replay(recs, [Target("t1", srv.url)], allow_writes=True)
    assert sorted(s.method for s in srv.seen) == ["DELETE", "GET", "GET", "POST"]
    sent_post = next(s for s in srv.seen if s.method == "POST")
    assert sent_post.body == b"\x00{\"k\": 1}\xff"
    assert sent_post.header("Content-Type") == "application/json"
    assert sent_post.header("Content-Length") == str(len(sent_post.body))
    assert summary.schedule.skipped == {} and {o.status for o in outcomes} == {200}


async def test_max_inflight_drops_instead_of_queueing(serve, records):
    async def slow(_request, server):
        await server.release.wait()
        return web.Response(text="late")

    async with serve(slow) as srv:
        recs = records(50)

        async def source_then_release():
            for delivery in [Delivery(r) for r in recs]:
                yield delivery
            srv.release.set()

        class Releasing(MemorySource):
            def __aiter__(self):
                return source_then_release()

        stats = ScheduleStats()
        collect = Collect()
        opts = ReplayOptions(pacing=Pacing(rate=2000), max_inflight=5)
        summary = await run_shadow(Releasing([]), [Target("slow", srv.url)], opts, [collect], stats=stats)
    s = summary.schedule
    assert s.planned == 50
    assert s.sent == len(srv.seen) == len(collect.outcomes) == 5
    assert s.sent + s.dropped == s.planned
    assert {o.status for o in collect.outcomes} == {200}


async def test_timeout_is_classified(serve, records):
    async def stuck(_request, server):
        await server.release.wait()
        return web.Response(text="never in time")

    async with serve(stuck) as srv:
        _, outcomes, stats, _ = await replay(records(3), [Target("t1", srv.url)], timeout=0.2)
    assert {o.error for o in outcomes} == {"timeout"}
    assert all(o.status is None and "0.2 s" in (o.reason or "") for o in outcomes)
    assert all(150 <= (o.latency_ms or 0) < 2000 for o in outcomes)
    assert stats.targets["t1"].errors == {"timeout": 3} and stats.targets["t1"].responses == 0


async def test_target_not_listening_is_connect_error(records):
    url = f"http://127.0.0.1:{free_port()}"
    _, outcomes, stats, source = await replay(records(4), [Target("down", url)])
    assert {o.error for o in outcomes} == {"connect"}
    assert stats.targets["down"].errors == {"connect": 4}
    assert len(source.acked) == 4


async def test_connection_closed_mid_response_is_reset_or_protocol(serve_raw, read_head, records):
    async def truncate(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()

    async def garbage(reader, writer):
        await read_head(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async with serve_raw(truncate) as cut_url, serve_raw(garbage) as bad_url:
        targets = [Target("cut", cut_url), Target("bad", bad_url)]
        _, outcomes, _, _ = await replay(records(5, method="POST"), targets, allow_writes=True)
    cut = [o for o in outcomes if o.target == "cut"]
    bad = [o for o in outcomes if o.target == "bad"]
    assert len(cut) == len(bad) == 5
    assert {o.error for o in cut} <= {"reset", "protocol"} and all(o.status is None for o in cut)
    assert {o.error for o in bad} == {"protocol"}


async def test_tls_failure_is_classified(serve_raw, records):
    async def plain_http(reader, writer):
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with serve_raw(plain_http) as url:
        _, outcomes, _, _ = await replay(records(2), [Target("t1", url.replace("http://", "https://"))])
    assert {o.error for o in outcomes} == {"tls"}


async def test_server_closing_keepalive_connections_does_not_break_the_stream(serve_raw, read_head, records):
    """Like nginx's keepalive_requests: the server closes each connection after its response."""
    served = 0

    async def one_per_connection(reader, writer):
        nonlocal served
        await read_head(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with serve_raw(one_per_connection) as url:
        _, outcomes, stats, _ = await replay(records(300), [Target("t1", url)], max_inflight=4)
    assert len(outcomes) == 300
    assert stats.targets["t1"].status == {"200": 300}
    assert served == 300


async def test_outcomes_file_has_one_line_per_request_per_target(serve, records, tmp_path):
    path = tmp_path / "outcomes.jsonl"
    recs = records(25)
    async with serve() as a, serve() as b:
        targets = [Target("a", a.url), Target("b", b.url)]
        await run_shadow(MemorySource(recs), targets, ReplayOptions(pacing=Pacing(speed=100)),
                         [OutcomeWriter(str(path))])
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert len(lines) == 50
    assert sorted((o["id"], o["target"]) for o in lines) == sorted((r.id, t) for r in recs for t in "ab")
    for o in lines:
        assert o["status"] == 200 and o["error"] is None and o["bytes"] == 2
        assert o["intended"] <= o["sent"] <= o["done"]
        assert o["corrected_ms"] >= o["latency_ms"] >= 0


async def test_a_failing_listener_is_disabled_not_fatal(serve, records, capsys):
    class Broken:
        calls = 0

        def on_outcome(self, outcome):
            Broken.calls += 1
            raise RuntimeError("boom")

        def close(self):
            raise AssertionError("close after failure")

    async with serve() as srv:
        source = MemorySource(records(10))
        collect = Collect()
        summary = await run_shadow(source, [Target("t1", srv.url)], ReplayOptions(pacing=MAX),
                                   [Broken(), collect])
    assert summary.schedule.sent == 10 and len(collect.outcomes) == 10 and len(srv.seen) == 10
    assert Broken.calls == 1
    warnings = [x for x in capsys.readouterr().err.splitlines() if "Broken" in x]
    assert len(warnings) == 1 and "boom" in warnings[0]


async def test_intended_times_follow_the_schedule(serve, fake_clock):
    stamps = [50.0, 51.0, 53.0, 49.0]
    recs = [Record(id=f"r{i}", ts=ts, method="GET", target="/") for i, ts in enumerate(stamps)]
    async with serve() as srv:
        collect = Collect()
        opts = ReplayOptions(pacing=Pacing(speed=2.0))
        await run_shadow(MemorySource(recs), [Target("t1", srv.url)], opts, [collect], clock=fake_clock)
    intended = {o.id: o.intended for o in collect.outcomes}
    assert [intended[f"r{i}"] - intended["r0"] for i in range(3)] == [0.0, 0.5, 1.5]
    assert intended["r3"] == intended["r2"]  # out of order: due at once, i.e. when reached
    assert fake_clock.sleeps[:3] == [1000.0, 1000.5, 1001.5]


async def test_limit_and_duration_stop_the_run(serve, records):
    async with serve() as srv:
        summary, outcomes, _, source = await replay(records(100), [Target("t1", srv.url)], limit=7)
        assert summary.schedule.planned == 7 and len(outcomes) == 7 and len(source.acked) == 7
        summary, outcomes, _, _ = await replay(records(100, step=1.0), [Target("t1", srv.url)],
                                               pacing=Pacing(speed=10.0), duration=0.25)
    assert summary.schedule.planned == 3  # ts offsets 0, 0.1, 0.2 s are due within 0.25 s
    assert summary.schedule.window_s == 0.25


async def test_sigint_stops_scheduling_and_keeps_outcomes(serve, records):
    class Interrupt(Collect):
        def on_outcome(self, outcome):
            super().on_outcome(outcome)
            if len(self.outcomes) == 20:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    async with serve() as srv:
        source = MemorySource(records(5000))
        listener = Interrupt()
        summary = await run_shadow(source, [Target("t1", srv.url)], ReplayOptions(pacing=Pacing(rate=500)),
                                   [listener])
    assert summary.interrupted == signal.SIGINT and summary.exit_code == 130
    assert 20 <= summary.schedule.sent < 100
    assert len(listener.outcomes) == summary.schedule.sent == len(srv.seen) and listener.closed
    assert signal.getsignal(signal.SIGINT) is before


async def test_cancelling_the_run_drains_and_reraises(serve, records):
    async with serve() as srv:
        stats = ScheduleStats()
        collect = Collect()

        class CancelAfter(Collect):
            def on_outcome(self, outcome):
                super().on_outcome(outcome)
                if len(self.outcomes) == 5:
                    task.cancel()

        options = ReplayOptions(pacing=Pacing(rate=500), handle_signals=False)
        task = asyncio.create_task(
            run_shadow(MemorySource(records(5000)), [Target("t1", srv.url)], options,
                       [CancelAfter(), collect], stats=stats)
        )
        with pytest.raises(asyncio.CancelledError):
            await task
    assert collect.closed and 5 <= stats.sent < 100
    assert len(collect.outcomes) == stats.sent == len(srv.seen)


async def test_a_failing_source_still_delivers_outcomes_of_sent_requests(serve, records):
    recs = records(10)

    class Failing(MemorySource):
        async def __aiter__(self):
            for r in recs:
                yield Delivery(r)
            raise OSError("disk gone")

    async with serve() as srv:
        collect = Collect()
        stats = ScheduleStats()
        with pytest.raises(OSError, match="disk gone"):
            await run_shadow(Failing([]), [Target("t1", srv.url)], ReplayOptions(pacing=MAX), [collect],
                             stats=stats)
    assert stats.sent == len(collect.outcomes) == len(srv.seen) == 10 and collect.closed
