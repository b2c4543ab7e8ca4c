"""Pacing on a fake clock: exact absolute deadlines for speed, rate, Poisson, ramp and stages, no
drift; loops; duration, limit and the end of a profile stopping a run."""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time

import pytest

from replay import schedule
from replay.options import ReplayOptions, Target
from replay.schedule import Loop, Pacing, Schedule, ramp, stages
from replay.shadow import run_shadow
from replay.sources import LoopSource, open_replay_source
from shadowtap.record import Record, encode_record
from shadowtap.stream import StreamOptions
from shadowtap.streams.memory import MemorySource

T0 = 1000.0


def deadlines(pacing: Pacing, stamps: list[float]) -> list[float | None]:
    schedule = Schedule(pacing, T0)
    return [schedule.next_deadline(ts) for ts in stamps]


def test_speed_one_reproduces_recorded_offsets():
    stamps = [1_700_000_000.0, 1_700_000_000.25, 1_700_000_003.0, 1_700_000_003.0]
    assert deadlines(Pacing(), stamps) == [T0, T0 + 0.25, T0 + 3.0, T0 + 3.0]


def test_speed_two_halves_every_offset():
    assert deadlines(Pacing(speed=2.0), [10.0, 11.0, 14.0, 20.0]) == [T0, T0 + 0.5, T0 + 2.0, T0 + 5.0]


def test_out_of_order_records_are_due_immediately():
    # Earlier than the first record: no deadline. Earlier than the previous one but after the
    # first: its own (already passed) deadline, so it goes at once without shifting the rest.
    assert deadlines(Pacing(), [10.0, 12.0, 9.0, 11.0, 13.0]) == [T0, T0 + 2.0, None, T0 + 1.0, T0 + 3.0]


def test_rate_is_uniform_and_ignores_timestamps():
    got = deadlines(Pacing(rate=200.0), [5.0, 1.0, 99.0, 7.0, 7.0])
    assert got == [T0 + i / 200.0 for i in range(5)]


def test_rate_deadlines_do_not_drift_over_many_records():
    schedule = Schedule(Pacing(rate=1000.0), T0)
    last = [schedule.next_deadline(0.0) for _ in range(1_000_001)][-1]
    assert last == T0 + 1000.0


def test_rate_max_has_no_deadline():
    assert deadlines(Pacing(rate=math.inf), [1.0, 2.0, 3.0]) == [None, None, None]
    assert Pacing(rate=math.inf).unpaced and not Pacing(rate=5.0).unpaced


def test_poisson_gaps_are_exponential_with_the_right_mean():
    rate, n = 200.0, 20_000
    got = deadlines(Pacing(rate=rate, poisson=True, seed=7), [0.0] * (n + 1))
    assert got[0] == T0
    gaps = [b - a for a, b in itertools.pairwise(got)]
    mean = statistics.fmean(gaps)
    assert abs(mean - 1 / rate) < 0.03 / rate  # standard error of the mean is 1/rate/sqrt(n) = 0.7%
    # Exponential shape: P(gap > k·mean) = e^-k, and the coefficient of variation is 1.
    for k in (0.5, 1.0, 2.0, 3.0):
        share = sum(g > k / rate for g in gaps) / n
        assert abs(share - math.exp(-k)) < 0.015, k
    assert abs(statistics.pstdev(gaps) / mean - 1.0) < 0.05
    # Absolute: each deadline is the cumulative sum of the gaps, reproducible from the seed.
    assert got == deadlines(Pacing(rate=rate, poisson=True, seed=7), [0.0] * (n + 1))
    assert got != deadlines(Pacing(rate=rate, poisson=True, seed=8), [0.0] * (n + 1))


async def test_fake_clock_sleeps_to_absolute_deadlines(fake_clock):
    schedule = Schedule(Pacing(rate=4.0), fake_clock.now())
    for _ in range(5):
        deadline = schedule.next_deadline(0.0)
        fake_clock.t += 0.1  # a slow send must not push later deadlines back
        await fake_clock.sleep_until(deadline)
    assert fake_clock.sleeps == [1000.0, 1000.25, 1000.5, 1000.75, 1001.0]


def test_ramp_inverts_the_cumulative_count_then_holds():
    # 0 → 10 requests/s over 2 s: Λ(t) = 2.5·t², so request i is due at sqrt(i / 2.5).
    got = deadlines(Pacing(profile=ramp(0.0, 10.0, 2.0)), [0.0] * 13)
    want = [T0 + math.sqrt(i / 2.5) for i in range(11)] + [T0 + 2.1, T0 + 2.2]
    assert got == pytest.approx(want, abs=1e-9)


def test_ramp_100_to_2000_over_60s():
    schedule = Schedule(Pacing(profile=ramp(100.0, 2000.0, 60.0)), T0)
    got = [schedule.next_deadline(0.0) for _ in range(63_000 + 2001)]
    assert got[:2] == pytest.approx([T0, T0 + 1 / 100.0], rel=1e-3)
    assert got[63_000] == pytest.approx(T0 + 60.0, abs=1e-6)  # the ramp holds (100+2000)/2·60 requests
    assert got[-1] == pytest.approx(T0 + 61.0, abs=1e-6)  # then 2000/s
    # The instantaneous rate follows the line: 1050/s halfway.
    i = next(k for k, t in enumerate(got) if t >= T0 + 30.0)
    assert 1 / (got[i + 1] - got[i]) == pytest.approx(1050.0, rel=1e-3)
    assert schedule.end == math.inf


def test_stages_are_steps_and_end_the_schedule():
    schedule = Schedule(Pacing(profile=stages([(30.0, 500.0), (60.0, 2000.0)])), T0)
    got = [schedule.next_deadline(0.0) for _ in range(15_000 + 120_000 + 1)]
    assert got[:3] == [T0, T0 + 1 / 500, T0 + 2 / 500]
    assert got[14_999] == pytest.approx(T0 + 29.998)
    assert got[15_000] == pytest.approx(T0 + 30.0) and got[15_001] == pytest.approx(T0 + 30.0005)
    assert got[134_999] == pytest.approx(T0 + 89.9995)
    assert got[135_000] == math.inf and schedule.end == T0 + 90.0


def test_a_ramp_down_to_zero_ends_the_schedule():
    schedule = Schedule(Pacing(profile=ramp(4.0, 0.0, 2.0)), T0)  # 4 requests in all
    got = [schedule.next_deadline(0.0) for _ in range(5)]
    assert got[:4] == pytest.approx([T0, T0 + 2 - math.sqrt(3), T0 + 2 - math.sqrt(2), T0 + 1.0])
    assert got[4] == math.inf and schedule.end == T0 + 2.0


def test_a_stage_at_rate_zero_is_a_pause():
    got = deadlines(Pacing(profile=stages([(1.0, 2.0), (5.0, 0.0), (1.0, 2.0)])), [0.0] * 5)
    assert got == [T0, T0 + 0.5, T0 + 6.0, T0 + 6.5, math.inf]


def test_poisson_follows_a_profile():
    # 1 s at 1000/s then 1 s at 4000/s: counts per stage are Poisson (σ = √n), gaps exponential.
    got = deadlines(Pacing(profile=stages([(1.0, 1000.0), (1.0, 4000.0)]), poisson=True, seed=3), [0.0] * 6000)
    finite = [t for t in got if t != math.inf]
    first = sum(t < T0 + 1.0 for t in finite)
    second = len(finite) - first
    assert abs(first - 1000) < 4 * math.sqrt(1000) and abs(second - 4000) < 4 * math.sqrt(4000)
    gaps = [b - a for a, b in itertools.pairwise(t for t in finite if t >= T0 + 1.0)]
    assert statistics.fmean(gaps) == pytest.approx(1 / 4000, rel=0.05)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.08)


def test_loop_shifts_by_one_period_and_suffixes_ids():
    loop = Loop(first_ts=100.0, last_ts=104.0, count=5)  # five records a second apart
    assert loop.period == 5.0
    assert [loop.ts(100.0, k) for k in range(3)] == [100.0, 105.0, 110.0]
    assert [Loop.id("r1", k) for k in range(3)] == ["r1", "r1#1", "r1#2"]
    assert Loop(7.0, 7.0, 1).period == 1.0


async def test_loop_source_rereads_the_input(tmp_path):
    path = tmp_path / "in.jsonl"
    recs = [Record(id=f"r{i}", ts=50.0 + i, method="GET", target=f"/{i}") for i in range(3)]
    path.write_bytes(b"".join(encode_record(r) + b"\n" for r in recs) + b"not json\n")
    source = open_replay_source(str(path), loop=True, stream=StreamOptions())
    got = []
    async for delivery in source:
        got.append((delivery.record.id, delivery.record.ts))
        if len(got) == 8:
            break
    assert got == [("r0", 50.0), ("r1", 51.0), ("r2", 52.0), ("r0#1", 53.0), ("r1#1", 54.0), ("r2#1", 55.0),
                   ("r0#2", 56.0), ("r1#2", 57.0)]
    assert source.skipped == {"bad_record": 2}  # the third pass has not reached the bad line yet


async def test_loop_with_speed_keeps_the_schedule_seamless(serve, fake_clock):
    recs = [Record(id=f"r{i}", ts=10.0 + i, method="GET", target="/") for i in range(3)]
    intended: list[tuple[str, float]] = []

    class Times:
        def on_outcome(self, o):
            intended.append((o.id, o.intended))

        def close(self):
            return None

    class Again(MemorySource):
        """A memory source `LoopSource` can reopen."""

    async with serve() as srv:
        source = LoopSource(lambda: Again(recs))
        opts = ReplayOptions(pacing=Pacing(speed=2.0), limit=7)
        summary = await run_shadow(source, [Target("t1", srv.url)], opts, [Times()], clock=fake_clock)
    assert summary.schedule.stopped == "limit"
    t0 = dict(intended)["r0"]
    assert sorted((i, round(t - t0, 6)) for i, t in intended) == sorted(
        [("r0", 0.0), ("r1", 0.5), ("r2", 1.0), ("r0#1", 1.5), ("r1#1", 2.0), ("r2#1", 2.5), ("r0#2", 3.0)])


async def test_duration_and_profiles_stop_exactly_on_the_fake_clock(serve, fake_clock, records):
    async with serve() as srv:
        target = [Target("t1", srv.url)]
        rate = await run_shadow(MemorySource(records(100)), target,
                                ReplayOptions(pacing=Pacing(rate=10.0), duration=1.0), clock=fake_clock)
        steps = await run_shadow(MemorySource(records(100)), target,
                                 ReplayOptions(pacing=Pacing(profile=stages([(1.0, 5.0), (1.0, 10.0)]))),
                                 clock=fake_clock)
        limited = await run_shadow(MemorySource(records(100)), target,
                                   ReplayOptions(pacing=Pacing(rate=10.0), limit=4), clock=fake_clock)
    assert (rate.schedule.sent, rate.schedule.window_s, rate.schedule.stopped) == (10, 1.0, "duration")
    assert (steps.schedule.sent, steps.schedule.window_s, steps.schedule.stopped) == (15, 2.0, "profile ended")
    assert (limited.schedule.sent, limited.schedule.stopped) == (4, "limit")
    assert limited.schedule.window_s == pytest.approx(0.3)
    assert len(srv.seen) == 29


async def test_a_poke_ends_a_wait_once_its_time_has_passed_and_not_before(monkeypatch):
    """The real clock's timer is only a fallback: completions poke it awake at the deadline."""
    monkeypatch.setattr(schedule, "MIN_WAIT_S", 30.0)  # the timer alone would wait 30 s
    clock = schedule.MonotonicClock()
    start = time.monotonic()
    deadline = start + 0.05
    poked: list[float] = []

    async def poke_every_5_ms() -> None:
        while True:
            await asyncio.sleep(0.005)
            poked.append(time.monotonic())
            clock.poke()

    poker = asyncio.create_task(poke_every_5_ms())
    try:
        await clock.sleep_until(deadline)
    finally:
        poker.cancel()
    woke = time.monotonic()
    assert woke >= deadline, "woken before its time by an early poke"
    assert any(p < deadline for p in poked)
    assert woke - deadline < 1.0, f"not woken by the pokes after the deadline ({woke - deadline:.3f} s late)"


def test_a_share_stretches_the_gaps_after_the_last_deadline():
    s = Schedule(Pacing(rate=100.0), t0=0.0)
    before = [s.next_deadline(0.0) for _ in range(5)]
    s.set_share(0.5)
    after = [s.next_deadline(0.0) for _ in range(3)]
    s.set_share(1.0)
    back = [s.next_deadline(0.0) for _ in range(2)]
    assert before == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])
    assert after == pytest.approx([0.06, 0.08, 0.10])
    assert back == pytest.approx([0.11, 0.12])


def test_a_share_of_a_ramp_is_the_ramp_scaled_down():
    shared = Schedule(Pacing(profile=ramp(0.0, 100.0, 10.0)), t0=0.0)
    shared.set_share(0.25)
    scaled = Schedule(Pacing(profile=ramp(0.0, 25.0, 10.0)), t0=0.0)
    assert [shared.next_deadline(0.0) for _ in range(300)] == pytest.approx(
        [scaled.next_deadline(0.0) for _ in range(300)])


def test_a_share_leaves_recorded_timing_and_rate_max_alone():
    timed = Schedule(Pacing(speed=2.0), t0=0.0)
    timed.set_share(0.5)
    assert [timed.next_deadline(ts) for ts in (10.0, 11.0, 12.0)] == [0.0, 0.5, 1.0]
    unpaced = Schedule(Pacing(rate=math.inf), t0=0.0)
    unpaced.set_share(0.5)
    assert unpaced.next_deadline(1.0) is None


async def test_the_engine_follows_the_share_of_a_group_source(fake_clock):
    """A Kafka source's share changes (a rebalance) after 4 records: the gaps double from there."""
    class Rebalanced(MemorySource):
        rate_share = 1.0

        async def __aiter__(self):
            n = 0
            async for delivery in super().__aiter__():
                n += 1
                if n == 5:
                    self.rate_share = 0.5
                yield delivery

    recs = [Record(id=f"r{i}", ts=1000.0, method="GET", target=f"/{i}") for i in range(8)]
    target = Target("t1", "http://127.0.0.1:9")  # nothing listens: connect errors, fine for pacing
    summary = await run_shadow(Rebalanced(recs), [target], ReplayOptions(pacing=Pacing(rate=10.0)), [],
                               clock=fake_clock)
    t0 = fake_clock.sleeps[0] - 0.1
    assert [round(t - t0, 6) for t in fake_clock.sleeps] == [0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.1]
    assert summary.schedule.sent == 8
