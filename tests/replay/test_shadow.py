"""run_shadow against real aiohttp, raw asyncio and nginx servers on 127.0.0.1.

Every behaviour a sender must have runs for both implementations (the `client` fixture:
lean and aiohttp); the few where they differ by design say so.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal

import orjson
import pytest
from aiohttp import web

from replay.observe import OutcomeWriter, ScheduleStats, StatsListener
from replay.options import PathRewrite, ReplayOptions, Target
from replay.schedule import Pacing
from replay.shadow import run_shadow
from scripts.local_nginx import LocalNginx
from scripts.procs import free_port
from shadowtap.errors import UsageError
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


async def replay(records, targets, client="auto", **options):
    """Run shadow mode over `records`; returns (summary, outcomes, stats listener, source)."""
    source = MemorySource(records)
    collect = Collect()
    stats = StatsListener((t.name, t.url) for t in targets)
    opts = ReplayOptions(**{"pacing": MAX, "client": client, **options})
    summary = await run_shadow(source, targets, opts, [stats, collect])
    assert collect.closed
    return summary, collect.outcomes, stats, source


async def test_every_get_reaches_every_target_with_marker_and_host(serve, records, client):
    headers = (("User-Agent", "curl/8.5"), ("X-Req", "a"), ("Connection", "keep-alive, X-Hop"),
               ("X-Hop", "1"), ("X-Req", "b"), ("Content-Length", "0"))
    recs = records(18, host="shop.example", headers=headers)
    recs += records(1, method="HEAD", prefix="h", host="shop.example", headers=headers)
    recs += records(1, method="OPTIONS", prefix="o", host="shop.example", headers=headers)
    async with serve() as a, serve() as b:
        targets = [Target("a", a.url), Target("b", b.url)]
        summary, outcomes, stats, source = await replay(recs, targets, client)
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
        assert (t.requests, t.responses, dict(t.status), dict(t.errors)) == (20, 20, {200: 20}, {})


async def test_marker_and_host_overrides(serve, records, client):
    async with serve() as srv:
        host = srv.url.removeprefix("http://")
        await replay(records(3), [Target("t1", srv.url)], client)
        await replay(records(3, host="orig.example"), [Target("t1", srv.url)], client,
                     marker=("X-Dark", "yes"), host_header="override.example")
    assert [s.header("Host") for s in srv.seen] == [host] * 3 + ["override.example"] * 3
    assert [s.header("X-Dark") for s in srv.seen[3:]] == ["yes"] * 3
    assert all(s.header("X-Shadowtap") is None for s in srv.seen[3:])


async def test_per_target_header_rules_and_path_rewrite(serve, client):
    """--set-header canary:X-Env=dark, --drop-header canary:Cookie, --rewrite-path, in wire order."""
    headers = (("User-Agent", "curl/8.5"), ("X-Env", "prod"), ("Cookie", "a=1"), ("X-Env", "prod2"))
    recs = [Record(id="r0", ts=1.0, method="GET", target="/api/v1/items/7?x=1", host="shop.example",
                   headers=headers)]
    async with serve() as srv:
        targets = [Target("stable", srv.url), Target("canary", srv.url + "/cand", set_headers=(("X-Env", "dark"),),
                                                     drop_headers=frozenset({"cookie"}))]
        rewrite = (PathRewrite(r"^/api/v1/", "/api/v2/"),)
        summary, _, _, _ = await replay(recs, targets, client, rewrite_paths=rewrite)
    assert summary.schedule.sent == 2
    seen = {s.target: s for s in srv.seen}
    stable, canary = seen["/api/v2/items/7?x=1"], seen["/cand/api/v2/items/7?x=1"]
    assert [(k, v) for k, v in stable.headers if k in ("X-Env", "Cookie")] == [
        ("X-Env", "prod"), ("Cookie", "a=1"), ("X-Env", "prod2")]
    assert [(k, v) for k, v in canary.headers if k in ("X-Env", "Cookie")] == [("X-Env", "dark")]
    assert canary.headers[0] == ("Host", "shop.example") and canary.headers[-1] == ("X-Shadowtap", "1")


async def test_targets_are_sent_byte_for_byte(serve_raw, read_head, client):
    """A raw server sees the request lines: aiohttp's own server would reject some of these.

    Target bytes that are not UTF-8 (`target_raw`) go out exactly with the lean sender; aiohttp
    writes request lines as text and reports such a record as a protocol error instead.
    """
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
        _, outcomes, stats, _ = await replay(recs, [Target("t1", url + "/")], client, pacing=Pacing(speed=1000))
    expected = [b"GET " + t.encode() + b" HTTP/1.1" for t in targets]
    raw = next(o for o in outcomes if o.id == "raw")
    if client == "lean":
        assert lines == [*expected, b"GET /x\xff HTTP/1.1"]
        assert raw.status == 204 and raw.url.endswith("/x%FF")
        assert stats.targets["t1"].status == {204: len(targets) + 1}
    else:
        assert lines == expected
        assert raw.error == "protocol" and raw.sent is None and "UTF-8" in (raw.reason or "")
        assert stats.targets["t1"].errors == {"protocol": 1}
        assert stats.targets["t1"].status == {204: len(targets)}


async def test_base_url_path_prefix(serve, records, client):
    async with serve() as srv:
        _, outcomes, _, _ = await replay(records(2), [Target("t1", srv.url + "/api/")], client)
    assert sorted(s.target for s in srv.seen) == ["/api/item/0?q=0", "/api/item/1?q=1"]
    assert sorted(o.url for o in outcomes) == [srv.url + "/api/item/0?q=0", srv.url + "/api/item/1?q=1"]


async def test_writes_are_skipped_unless_allowed(serve, records, client):
    post = records(1, method="POST", prefix="p", body=b"\x00{\"k\": 1}\xff",
                   headers=(("Content-Type", "application/json"),))
    recs = records(2) + post + records(1, method="DELETE", prefix="d")
    async with serve() as srv:
        summary, outcomes, _, source = await replay(recs, [Target("t1", srv.url)], client)
        assert [s.method for s in srv.seen] == ["GET", "GET"]
        assert summary.schedule.skipped == {"write_method": 2}
        assert summary.schedule.planned == 2 and len(outcomes) == 2
        assert sorted(source.acked) == ["d0", "p0", "r0", "r1"]
        srv.seen.clear()
        summary, outcomes, _, _ = await replay(recs, [Target("t1", srv.url)], client, allow_writes=True)
    assert sorted(s.method for s in srv.seen) == ["DELETE", "GET", "GET", "POST"]
    sent_post = next(s for s in srv.seen if s.method == "POST")
    assert sent_post.body == b"\x00{\"k\": 1}\xff"
    assert sent_post.header("Content-Type") == "application/json"
    assert sent_post.header("Content-Length") == str(len(sent_post.body))
    assert next(s for s in srv.seen if s.method == "DELETE").header("Content-Length") == "0"
    assert summary.schedule.skipped == {} and {o.status for o in outcomes} == {200}


async def test_max_inflight_drops_instead_of_queueing(serve, records, client):
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
        opts = ReplayOptions(pacing=Pacing(rate=2000), max_inflight=5, client=client)
        summary = await run_shadow(Releasing([]), [Target("slow", srv.url)], opts, [collect], stats=stats)
    s = summary.schedule
    assert s.planned == 50
    assert s.sent == len(srv.seen) == len(collect.outcomes) == 5
    assert s.sent + s.dropped == s.planned
    assert {o.status for o in collect.outcomes} == {200}


async def test_fewer_connections_than_inflight_queue_and_time_from_the_send(serve, records, client):
    """--connections 2: requests wait for a connection; `sent` is when they got one."""
    async def slowish(_request, _server):
        await asyncio.sleep(0.05)
        return web.Response(text="ok")

    async with serve(slowish) as srv:
        _, outcomes, _, _ = await replay(records(8), [Target("t1", srv.url)], client, connections=2,
                                         pacing=Pacing(rate=1000))
    assert len(outcomes) == 8 and {o.status for o in outcomes} == {200}
    last = max(outcomes, key=lambda o: o.done)
    assert last.corrected_ms >= 150  # four rounds of 50 ms on two connections
    assert last.latency_ms < last.corrected_ms - 80  # it waited for a connection before it was sent


async def test_timeout_is_classified_and_per_target(serve, records, client):
    async def stuck(_request, server):
        await server.release.wait()
        return web.Response(text="never in time")

    async with serve(stuck) as srv, serve() as fine:
        targets = [Target("t1", srv.url, timeout=0.2), Target("t2", fine.url)]
        _, outcomes, stats, _ = await replay(records(3), targets, client, timeout=30)
    stuck_ones = [o for o in outcomes if o.target == "t1"]
    assert {o.error for o in stuck_ones} == {"timeout"}
    assert all(o.status is None and "0.2 s" in (o.reason or "") for o in stuck_ones)
    assert all(150 <= (o.latency_ms or 0) < 2000 for o in stuck_ones)
    assert stats.targets["t1"].errors == {"timeout": 3} and stats.targets["t1"].responses == 0
    assert stats.targets["t2"].status == {200: 3}


async def test_target_not_listening_is_connect_error(records, client):
    url = f"http://127.0.0.1:{free_port()}"
    _, outcomes, stats, source = await replay(records(4), [Target("down", url)], client)
    assert {o.error for o in outcomes} == {"connect"}
    assert all(o.sent is None for o in outcomes)
    assert stats.targets["down"].errors == {"connect": 4}
    assert len(source.acked) == 4


async def test_connection_closed_mid_response_is_reset_or_protocol(serve_raw, read_head, records, client):
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
        _, outcomes, _, _ = await replay(records(5, method="POST"), targets, client, allow_writes=True)
    cut = [o for o in outcomes if o.target == "cut"]
    bad = [o for o in outcomes if o.target == "bad"]
    assert len(cut) == len(bad) == 5
    assert {o.error for o in cut} == {"reset"} and all(o.status is None for o in cut)
    assert {o.error for o in bad} == {"protocol"}


async def test_response_framings(serve_raw, read_head, client):
    """HEAD with a Content-Length and no body, a 100 Continue before the real response, a
    chunked body, and a body delimited by the connection's end, all on reused connections."""
    async def framings(reader, writer):
        while True:
            head = await read_head(reader)
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            elif b"/continue" in head:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew")
            elif b"/chunked" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
                await writer.drain()
                return
            await writer.drain()

    recs = [Record(id=f"r{i}", ts=float(i), method=m, target=t) for i, (m, t) in enumerate(
        [("HEAD", "/a"), ("GET", "/continue"), ("GET", "/chunked"), ("HEAD", "/b"), ("GET", "/eof")])]
    async with serve_raw(framings) as url:
        _, outcomes, _, _ = await replay(recs, [Target("t1", url)], client, pacing=Pacing(speed=100),
                                         connections=1)
    got = {o.id: (o.status, o.bytes, o.error) for o in outcomes}
    assert got == {"r0": (200, 0, None), "r1": (201, 3, None), "r2": (200, 6, None), "r3": (200, 0, None),
                   "r4": (200, 13, None)}


async def test_tls_targets(serve, self_signed, records, client):
    """https: a self-signed certificate fails verification (`tls`) unless --insecure."""
    if client == "lean":
        with pytest.raises(UsageError, match="plain http"):
            await replay(records(1), [Target("t1", "https://127.0.0.1:1")], client)
        return
    async with serve(tls=self_signed) as srv:
        _, refused, _, _ = await replay(records(2), [Target("t1", srv.url)], client)
        _, accepted, stats, _ = await replay(records(2), [Target("t1", srv.url)], client, insecure=True)
    assert {o.error for o in refused} == {"tls"} and "certificate" in (refused[0].reason or "").lower()
    assert {o.status for o in accepted} == {200} and stats.targets["t1"].status == {200: 2}


async def test_tls_handshake_with_a_plain_http_server_is_a_tls_error(serve_raw, records):
    async def plain_http(reader, writer):
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with serve_raw(plain_http) as url:
        _, outcomes, _, _ = await replay(records(2), [Target("t1", url.replace("http://", "https://"))])
    assert {o.error for o in outcomes} == {"tls"}


async def test_server_closing_keepalive_connections_does_not_break_the_stream(serve_raw, read_head, records,
                                                                               client):
    """The server closes each connection after its response, without saying so beforehand."""
    served = 0

    async def one_per_connection(reader, writer):
        nonlocal served
        await read_head(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with serve_raw(one_per_connection) as url:
        _, outcomes, stats, _ = await replay(records(300), [Target("t1", url)], client, max_inflight=4)
    assert len(outcomes) == 300
    assert stats.targets["t1"].status == {200: 300}
    assert served == 300


@pytest.mark.integration
async def test_nginx_keepalive_requests_limit_does_not_hang(records, client):
    """nginx closes a keep-alive connection after keepalive_requests (1000) responses."""
    with LocalNginx("$status") as nginx:
        _, outcomes, stats, _ = await replay(records(2600), [Target("t1", nginx.base_url)], client,
                                             connections=2, max_inflight=2)
    assert len(outcomes) == 2600 and stats.targets["t1"].status == {200: 2600}


async def test_circuit_breaker_trips_on_500s(serve, records, client):
    calls = 0

    async def broken(_request, _server):
        nonlocal calls
        calls += 1
        return web.Response(status=500 if calls > 30 else 200, text="x")

    async with serve(broken) as srv, serve() as healthy:
        targets = [Target("healthy", healthy.url), Target("candidate", srv.url)]
        summary, _, stats, _ = await replay(records(5000), targets, client, pacing=Pacing(rate=2000),
                                            abort_error_rate=0.5, error_window=40)
    assert summary.aborted is not None and summary.exit_code == 3
    assert "'candidate'" in summary.aborted and "500" in summary.aborted and "50%" in summary.aborted
    assert summary.schedule.stopped == "aborted"
    assert summary.schedule.sent < 2000  # of 10,000: stopped soon after the failures began
    assert stats.targets["candidate"].status[500] >= 20


async def test_outcomes_file_has_one_line_per_request_per_target(serve, records, tmp_path, client):
    path = tmp_path / "outcomes.jsonl"
    recs = records(25)
    async with serve() as a, serve() as b:
        targets = [Target("a", a.url), Target("b", b.url)]
        await run_shadow(MemorySource(recs), targets, ReplayOptions(pacing=Pacing(speed=100), client=client),
                         [OutcomeWriter(str(path))])
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert len(lines) == 50
    assert sorted((o["id"], o["target"]) for o in lines) == sorted((r.id, t) for r in recs for t in "ab")
    for o in lines:
        assert o["status"] == 200 and o["error"] is None and o["bytes"] == 2
        assert o["intended"] <= o["sent"] <= o["done"]
        assert o["corrected_ms"] >= o["latency_ms"] >= 0


async def test_a_failing_listener_is_disabled_not_fatal(serve, records, capsys, client):
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
        summary = await run_shadow(source, [Target("t1", srv.url)], ReplayOptions(pacing=MAX, client=client),
                                   [Broken(), collect])
    assert summary.schedule.sent == 10 and len(collect.outcomes) == 10 and len(srv.seen) == 10
    assert Broken.calls == 1
    warnings = [x for x in capsys.readouterr().err.splitlines() if "Broken" in x]
    assert len(warnings) == 1 and "boom" in warnings[0]
    assert summary.exit_code == 1 and summary.listener_failures == (warnings[0].removeprefix("shadowtap: warning: "),)


async def test_intended_times_follow_the_schedule(serve, fake_clock, client):
    stamps = [50.0, 51.0, 53.0, 49.0]
    recs = [Record(id=f"r{i}", ts=ts, method="GET", target="/") for i, ts in enumerate(stamps)]
    async with serve() as srv:
        collect = Collect()
        opts = ReplayOptions(pacing=Pacing(speed=2.0), client=client)
        await run_shadow(MemorySource(recs), [Target("t1", srv.url)], opts, [collect], clock=fake_clock)
    intended = {o.id: o.intended for o in collect.outcomes}
    assert [intended[f"r{i}"] - intended["r0"] for i in range(3)] == [0.0, 0.5, 1.5]
    assert intended["r3"] == intended["r2"]  # out of order: due at once, i.e. when reached
    assert fake_clock.sleeps == [1000.5, 1001.5]  # the first record was due at once


async def test_limit_and_duration_stop_the_run(serve, records, client):
    async with serve() as srv:
        summary, outcomes, _, source = await replay(records(100), [Target("t1", srv.url)], client, limit=7)
        assert summary.schedule.planned == 7 and len(outcomes) == 7 and len(source.acked) == 7
        assert summary.schedule.stopped == "limit"
        summary, outcomes, _, _ = await replay(records(100, step=1.0), [Target("t1", srv.url)], client,
                                               pacing=Pacing(speed=10.0), duration=0.25)
    assert summary.schedule.planned == 3  # ts offsets 0, 0.1, 0.2 s are due within 0.25 s
    # --duration counts from the start of the run, the window from the first record's arrival
    assert 0.2 < summary.schedule.window_s <= 0.25 and summary.schedule.stopped == "duration"


async def test_sigint_stops_scheduling_and_keeps_outcomes(serve, records, client):
    class Interrupt(Collect):
        def on_outcome(self, outcome):
            super().on_outcome(outcome)
            if len(self.outcomes) == 20:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    async with serve() as srv:
        source = MemorySource(records(5000))
        listener = Interrupt()
        summary = await run_shadow(source, [Target("t1", srv.url)],
                                   ReplayOptions(pacing=Pacing(rate=500), client=client), [listener])
    assert summary.interrupted == signal.SIGINT and summary.exit_code == 130
    assert 20 <= summary.schedule.sent < 100 and summary.schedule.stopped == "interrupted"
    assert len(listener.outcomes) == summary.schedule.sent == len(srv.seen) and listener.closed
    assert signal.getsignal(signal.SIGINT) is before


async def test_cancelling_the_run_drains_and_reraises(serve, records, client):
    async with serve() as srv:
        stats = ScheduleStats()
        collect = Collect()

        class CancelAfter(Collect):
            def on_outcome(self, outcome):
                super().on_outcome(outcome)
                if len(self.outcomes) == 5:
                    task.cancel()

        options = ReplayOptions(pacing=Pacing(rate=500), handle_signals=False, client=client)
        task = asyncio.create_task(
            run_shadow(MemorySource(records(5000)), [Target("t1", srv.url)], options,
                       [CancelAfter(), collect], stats=stats)
        )
        with pytest.raises(asyncio.CancelledError):
            await task
    assert collect.closed and 5 <= stats.sent < 100
    assert len(collect.outcomes) == stats.sent == len(srv.seen)


async def test_closing_mid_request_still_gives_every_request_an_outcome(serve, records, client):
    """Requests still on the wire or waiting for a connection when the run is cancelled end as
    `cancelled` outcomes."""
    async def stuck(_request, server):
        await server.release.wait()
        return web.Response(text="late")

    async with serve(stuck) as srv:
        collect = Collect()
        stats = ScheduleStats()
        options = ReplayOptions(pacing=MAX, max_inflight=6, connections=2, handle_signals=False, client=client)
        task = asyncio.create_task(run_shadow(MemorySource(records(6)), [Target("t1", srv.url)], options,
                                              [collect], stats=stats))
        for _ in range(500):  # until both connections carry a request, at most 5 s
            if len(srv.seen) == 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(collect.outcomes) == 6 and {o.error for o in collect.outcomes} == {"cancelled"}
    assert sum(o.sent is not None for o in collect.outcomes) == 2


async def test_a_failing_source_still_delivers_outcomes_of_sent_requests(serve, records, client):
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
            await run_shadow(Failing([]), [Target("t1", srv.url)], ReplayOptions(pacing=MAX, client=client),
                             [collect], stats=stats)
    assert stats.sent == len(collect.outcomes) == len(srv.seen) == 10 and collect.closed
