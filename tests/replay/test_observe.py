"""Histograms against exact percentiles; stats, fan-out and the report built from outcomes."""

from __future__ import annotations

import asyncio
import math
import random

from replay import report as report_module
from replay.observe import Fanout, Histogram, ScheduleStats, StatsListener
from replay.report import build_report, format_table
from shadowtap.record import Outcome

PS = [50.0, 90.0, 99.0, 99.9, 100.0]


def exact(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def assert_close(hist: Histogram, values: list[float]) -> None:
    for p, got in zip(PS, hist.percentiles(PS), strict=True):
        want = exact(values, p)
        assert abs(got - want) <= 0.01 * want, (p, got, want)


def test_histogram_relative_error_from_microseconds_to_minutes():
    rng = random.Random(1)
    # log-uniform from 1 µs to 10 min, in ms
    values = [10 ** rng.uniform(-3, math.log10(600_000)) for _ in range(50_000)]
    hist = Histogram()
    for v in values:
        hist.record(v)
    assert hist.count == len(values)
    assert_close(hist, values)
    assert abs(hist.percentiles([100.0])[0] - max(values)) <= 1e-6  # max is exact (to the ns)


def test_histogram_every_single_value_within_one_percent():
    for ms in (0.001, 0.0042, 0.5, 1.0, 7.77, 123.4, 9_999.0, 60_000.0, 3_600_000.0):
        hist = Histogram()
        hist.record(ms)
        hist.record(ms * 1.004)
        (p50,) = hist.percentiles([50.0])
        assert abs(p50 - ms) <= 0.01 * ms, ms


def test_histogram_merge_equals_recording_everything():
    rng = random.Random(2)
    a_vals = [rng.expovariate(1 / 5.0) for _ in range(20_000)]
    b_vals = [rng.lognormvariate(5, 1.5) for _ in range(5_000)]
    a, b, both = Histogram(), Histogram(), Histogram()
    for v in a_vals:
        a.record(v)
        both.record(v)
    for v in b_vals:
        b.record(v)
        both.record(v)
    a.merge(b)
    assert (a.counts, a.count, a.min, a.max) == (both.counts, both.count, both.min, both.max)
    assert_close(a, a_vals + b_vals)
    empty = Histogram()
    empty.merge(b)
    assert empty.percentiles(PS) == b.percentiles(PS)


def test_empty_histogram_has_no_percentiles():
    assert Histogram().summary() == {"p50": None, "p90": None, "p99": None, "p999": None, "max": None}


def outcome(target: str, i: int, status: int | None = 200, error: str | None = None) -> Outcome:
    return Outcome(id=f"r{i}", target=target, url="http://127.0.0.1:1/", intended=100.0 + i,
                   sent=100.0 + i + 0.001, done=100.0 + i + 0.011, status=status, error=error)


def test_stats_and_report_from_outcomes():
    stats = StatsListener([("a", "http://127.0.0.1:1"), ("b", "http://127.0.0.1:2")])
    schedule = ScheduleStats()
    fan = Fanout([schedule, stats])
    for i in range(8):
        fan.emit(outcome("a", i))
    fan.emit(outcome("a", 8, status=503))
    fan.emit(outcome("a", 9, status=None, error="timeout"))
    fan.emit(outcome("b", 0, status=None, error="connect"))
    schedule.planned, schedule.sent, schedule.dropped, schedule.window_s = 12, 11, 1, 2.0
    schedule.skipped["write_method"] = 3
    report = build_report(schedule, stats)
    assert report["schedule"] == {
        "planned": 12, "sent": 11, "dropped": 1, "skipped": {"write_method": 3}, "achieved_rps": 5.5,
        "lag_ms": {"p50": 1.0, "p99": 1.0, "max": 1.0},
    }
    a = report["targets"]["a"]
    assert (a["requests"], a["responses"], a["errors"]) == (10, 9, {"timeout": 1})
    assert a["status"] == {"200": 8, "503": 1}
    assert abs(a["latency_ms"]["p50"] - 10.0) < 0.1 and abs(a["corrected_ms"]["max"] - 11.0) < 0.1
    b = report["targets"]["b"]
    assert (b["requests"], b["responses"], b["errors"]) == (1, 0, {"connect": 1})
    assert b["latency_ms"]["p99"] is None
    table = format_table(report).splitlines()
    assert table[0].startswith("schedule: planned 12, sent 11, dropped 1")
    assert table[1].split()[:4] == ["target", "requests", "ok", "%"]
    assert table[2].split()[:4] == ["a", "10", "80.0", "1"]
    assert table[3].split()[:4] == ["b", "1", "0.0", "1"]
    assert len({len(line) for line in table[1:3]}) == 1  # aligned columns


async def test_progress_line_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(report_module, "PROGRESS_INTERVAL_S", 0.01)
    schedule = ScheduleStats()
    schedule.sent, schedule.dropped = 42, 3
    progress = report_module.Progress(schedule, lambda: 7)
    err = ""
    for _ in range(500):  # at most 5 s
        await asyncio.sleep(0.01)
        err += capsys.readouterr().err
        if "in flight" in err:
            break
    progress.stop()
    assert "\rsent 42  dropped 3" in err.replace("\x1b[K", "") and "in flight 7" in err
    assert capsys.readouterr().err.endswith("\r\x1b[K")
