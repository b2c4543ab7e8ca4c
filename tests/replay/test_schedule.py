"""Pacing on a fake clock: exact absolute deadlines, no drift."""

from __future__ import annotations

import itertools
import math
import statistics

from replay.schedule import Pacing, Schedule

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
