"""Histograms against exact percentiles (≤1% relative error); per-target and per-endpoint stats,
the circuit breaker, fan-out, the report and the live line built from outcomes."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from replay import observe
from replay import report as report_module
from replay.observe import CircuitBreaker, Fanout, Histogram, ScheduleStats, StatsListener, TargetStats, path_template
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


def outcome(target: str, i: int, status: int | None = 200, error: str | None = None, path: str = "/") -> Outcome:
    return Outcome(id=f"r{i}", target=target, url="http://127.0.0.1:1/", intended=100.0 + i,
                   sent=100.0 + i + 0.001, done=100.0 + i + 0.011, status=status, error=error, path=path)


def test_stats_and_report_from_outcomes():
    stats = StatsListener([("a", "http://127.0.0.1:1"), ("b", "http://127.0.0.1:2")])
    schedule = ScheduleStats()
    fan = Fanout([stats])
    for i in range(8):
        fan.emit(outcome("a", i, path=f"/items/{i}?x=1"))
    fan.emit(outcome("a", 8, status=503, path="/health"))
    fan.emit(outcome("a", 9, status=None, error="timeout", path="/items/9"))
    fan.emit(outcome("b", 0, status=None, error="connect"))
    schedule.planned, schedule.sent, schedule.dropped, schedule.window_s = 12, 11, 1, 2.0
    schedule.skipped["write_method"] = 3
    schedule.stopped = "input ended"
    schedule.record_lag(1.0, 9)
    schedule.record_lag(25.0, 2)
    report = build_report(schedule, stats)
    s = report["schedule"]
    assert {k: v for k, v in s.items() if k != "lag_ms"} == {
        "planned": 12, "sent": 11, "dropped": 1, "skipped": {"write_method": 3}, "achieved_rps": 5.5,
        "late": 2, "late_ms": 10.0, "stopped": "input ended",
    }
    assert s["lag_ms"] == pytest.approx({"p50": 1.0, "p90": 25.0, "p99": 25.0, "p999": 25.0, "max": 25.0}, rel=0.01)
    a = report["targets"]["a"]
    assert (a["requests"], a["responses"], a["errors"]) == (10, 9, {"timeout": 1})
    assert a["status"] == {"200": 8, "503": 1}
    assert abs(a["latency_ms"]["p50"] - 10.0) < 0.1 and abs(a["corrected_ms"]["max"] - 11.0) < 0.1
    assert list(a["endpoints"]) == ["GET /items/{id}", "GET /health"]
    items = a["endpoints"]["GET /items/{id}"]
    assert (items["requests"], items["errors"], items["status"]) == (9, 1, {"200": 8})
    assert set(items["latency_ms"]) == {"p50", "p99", "max"} and abs(items["latency_ms"]["p99"] - 10.0) < 0.1
    b = report["targets"]["b"]
    assert (b["requests"], b["responses"], b["errors"]) == (1, 0, {"connect": 1})
    assert b["latency_ms"]["p99"] is None
    table = format_table(report).splitlines()
    assert table[0].startswith("schedule: planned 12, sent 11, dropped 1")
    assert table[1] == "schedule lag ms: p50 1.00, p99 24.97, max 25.00; late (> 10 ms) 2"
    assert table[2].split()[:4] == ["target", "requests", "ok", "%"]
    assert table[3].split()[:4] == ["a", "10", "80.0", "1"]
    assert table[4].split()[:4] == ["b", "1", "0.0", "1"]
    assert len({len(line) for line in table[2:4]}) == 1  # aligned columns
    assert "a: status 200 8, 503 1; errors timeout 1" in table
    assert any(line.split()[:4] == ["GET", "/items/{id}", "9", "1"] for line in table)


def test_path_templates():
    cases = {
        "/users/42/orders/6f1c9a2e-0d3b-4c1e-9a57-1F2E3D4C5B6A?x=1": "/users/{id}/orders/{id}",
        "/blobs/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08": "/blobs/{id}",
        "/v2/deadbeef/facade": "/v2/deadbeef/facade",  # hex-looking words without a digit stay
        "/a1b2c3d4/x": "/{id}/x",
        "/short/abc123": "/short/abc123",
        "/": "/",
        "/static/app.js?v=123": "/static/app.js",
        "//double/7": "//double/{id}",
    }
    assert {path: path_template(path) for path in cases} == cases


def test_endpoints_are_bounded(monkeypatch):
    monkeypatch.setattr(observe, "ENDPOINT_LIMIT", 3)
    t = TargetStats("a", "http://127.0.0.1:1")
    for name in ("alpha", "beta", "gamma", "delta", "epsilon"):
        t.add(outcome("a", 1, path=f"/{name}"))
    assert list(t.endpoints) == ["GET /alpha", "GET /beta", "GET /gamma", "(other)"]
    assert t.endpoints["(other)"].requests == 2


def test_circuit_breaker_needs_a_full_window_and_counts_5xx_and_errors():
    trips: list[str] = []
    breaker = CircuitBreaker(0.5, 10, trips.append)
    for i in range(9):
        breaker.on_outcome(outcome("c", i, status=500))
    assert trips == []  # 9 requests: the window is not full yet
    breaker.on_outcome(outcome("ok", 0))
    breaker.on_outcome(outcome("c", 9, status=None, error="cancelled"))  # the run's own doing: not counted
    assert trips == []
    breaker.on_outcome(outcome("c", 10, status=404))
    assert trips == ["target 'c': 9 of its last 10 requests failed (500: 9), at or above --abort-on-error-rate 50%"]
    breaker.on_outcome(outcome("c", 11, status=None, error="timeout"))
    assert len(trips) == 1  # once


def test_circuit_breaker_window_slides():
    trips: list[str] = []
    breaker = CircuitBreaker(0.75, 4, trips.append)
    # Failures per window of 4: 2, 2, 1, 2, then 3 of 4 on the eighth request.
    for i, status in enumerate((500, 500, 200, 200, 500, 200, 500, 500, 500)):
        breaker.on_outcome(outcome("c", i, status=status))
        assert len(trips) == (1 if i >= 7 else 0), i
    assert "3 of its last 4" in trips[0] and "75%" in trips[0]


async def test_progress_line_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(report_module, "PROGRESS_INTERVAL_S", 0.01)
    schedule = ScheduleStats()
    schedule.sent, schedule.dropped = 42, 3
    schedule.record_lag(12.5, 5)
    progress = report_module.Progress(schedule, lambda: 7)
    err = ""
    for _ in range(500):  # at most 5 s
        await asyncio.sleep(0.01)
        err += capsys.readouterr().err
        if "in flight" in err:
            break
    progress.stop()
    line = err.replace("\x1b[K", "")
    assert "\rsent 42  " in line and "lag p99 12.50 ms  late 5  dropped 3  in flight 7" in line
    assert capsys.readouterr().err.endswith("\r\x1b[K")
