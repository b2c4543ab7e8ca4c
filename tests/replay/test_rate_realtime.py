"""Pacing on the real clock against a real nginx (a separate process, so the target does not
compete with the generator for the event loop): rates, recorded timing, and a stalled target.

Tolerances are the issue's; what can jitter on a loaded machine (schedule lag) is checked
only loosely, and never decides a count.
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections import Counter

import pytest

from replay.observe import StatsListener
from replay.options import ReplayOptions, Target
from replay.schedule import Pacing
from replay.shadow import run_shadow
from scripts.local_nginx import LocalNginx
from shadowtap.record import Record
from shadowtap.streams.memory import MemorySource

pytestmark = [pytest.mark.realtime, pytest.mark.integration]


class Times:
    """Keeps (intended, sent, status) of every Outcome."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float | None, int | None]] = []

    def on_outcome(self, o) -> None:
        self.rows.append((o.intended, o.sent, o.status))

    def close(self) -> None:
        return None


def uniform(n: int) -> list[Record]:
    return [Record(id=f"r{i}", ts=1_700_000_000.0, method="GET", target=f"/item/{i}") for i in range(n)]


async def test_rate_1000_for_5_seconds_sends_5000():
    times = Times()
    with LocalNginx("$msec") as nginx:
        options = ReplayOptions(pacing=Pacing(rate=1000.0), duration=5.0, connections=32)
        summary = await run_shadow(MemorySource(uniform(6000)), [Target("t1", nginx.base_url)], options, [times])
    s = summary.schedule
    assert s.stopped == "duration" and s.dropped == 0
    assert abs(s.sent - 5000) <= 50
    t0 = min(i for i, _, _ in times.rows)
    sent_in_window = sum(1 for _, sent, status in times.rows if status == 200 and sent is not None
                         and t0 <= sent < t0 + 5.0)
    assert abs(sent_in_window - 5000) <= 50  # really on the wire within those 5 s of wall time
    assert abs(s.achieved_rps - 1000.0) <= 10.0
    (lag_p99,) = s.lag.percentiles([99.0])
    assert lag_p99 < 100.0  # generous: shared, loaded machines


async def test_speed_2_reproduces_the_recorded_per_second_counts():
    """A recorded minute's shape (millisecond timestamps, uneven seconds) at twice the speed."""
    per_second = [120, 240, 60, 180, 300, 150]
    base = 1_700_000_000.0
    recs = [Record(id=f"s{sec}-{j}", ts=base + sec + (j + 0.5) / n, method="GET", target=f"/s/{sec}/{j}")
            for sec, n in enumerate(per_second) for j in range(n)]
    ts0 = recs[0].ts
    times = Times()
    with LocalNginx("$msec") as nginx:
        options = ReplayOptions(pacing=Pacing(speed=2.0), connections=32)
        summary = await run_shadow(MemorySource(recs), [Target("t1", nginx.base_url)], options, [times])
    assert summary.schedule.sent == len(recs) and summary.schedule.dropped == 0
    t0 = min(i for i, _, _ in times.rows)
    # Which recorded second each request was actually sent in, on the replay's (2× faster) clock.
    seconds = Counter(math.floor((sent - t0) * 2.0 + (ts0 - base)) for _, sent, _ in times.rows)
    for sec, n in enumerate(per_second):
        assert abs(seconds[sec] - n) <= 0.02 * n, (sec, seconds[sec], n)


async def test_a_stalled_target_shows_in_corrected_latency_not_in_latency_or_the_schedule():
    """wrk2's coordinated-omission demonstration: nginx is frozen (SIGSTOP) for 2 s of a 4 s
    run at 500 requests/s over 4 connections. The generator keeps its schedule (requests wait
    for a connection instead); the few requests caught on the wire show the stall in latency,
    but its p99 does not; latency from the intended send (corrected) does."""
    stats = StatsListener([("t1", "")])
    with LocalNginx("$msec") as nginx:
        loop = asyncio.get_running_loop()
        pid = nginx.process.pid
        loop.call_later(1.0, nginx.process.send_signal, signal.SIGSTOP)
        loop.call_later(3.0, nginx.process.send_signal, signal.SIGCONT)
        try:
            options = ReplayOptions(pacing=Pacing(rate=500.0), duration=4.0, connections=4, max_inflight=5000,
                                    timeout=30)
            summary = await run_shadow(MemorySource(uniform(3000)), [Target("t1", nginx.base_url)], options,
                                       [stats])
        finally:
            nginx.process.send_signal(signal.SIGCONT)
        assert pid == nginx.process.pid
    s = summary.schedule
    assert s.sent == 2000 and s.dropped == 0  # the schedule was not slowed by the stall
    (lag_p99,) = s.lag.percentiles([99.0])
    assert lag_p99 < 100.0
    t = stats.targets["t1"]
    assert t.status == {200: 2000}
    latency_p99, latency_max = t.latency.percentiles([99.0, 100.0])
    corrected_p99, corrected_max = t.corrected.percentiles([99.0, 100.0])
    assert latency_max > 1500.0  # the requests on the wire when nginx froze waited it out
    assert latency_p99 < 200.0  # but they are 4 of 2000
    assert corrected_p99 > 1500.0  # every request due during the stall was delayed by it
    assert corrected_max > 1800.0
