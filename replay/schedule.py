"""Pure pacing: record timestamps and --speed/--rate/--ramp/--stages become absolute deadlines.

Every deadline is computed from the start time t0, never as "sleep the gap since the last
send": a late send then does not push every later one back, so the replay cannot drift
below the intended rate. The clock is injected, so tests check exact deadlines instantly.

Rate profiles (a constant rate, a linear ramp, steps) are one mechanism: the profile's
cumulative request count Λ(t) = ∫ rate is inverted, and request i is due when Λ reaches
u_i, where u_i = i for evenly spaced arrivals and a running sum of unit exponential gaps for
Poisson arrivals (time rescaling: that gives a Poisson process whose intensity follows the
profile, as Iago and k6's arrival-rate executors do for a constant rate).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds and a way to wait for an absolute time."""

    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...

    def poke(self) -> None:
        """Something happened (a response arrived): end a `sleep_until` whose time has passed."""


MIN_WAIT_S = 0.001
"""The shortest timer wait for a time still ahead (see MonotonicClock.sleep_until)."""


class MonotonicClock:
    """The real clock: `time.monotonic()` (nanosecond resolution), waited on with a loop timer
    and woken early by `poke`.

    Not `loop.time()`: uvloop caches that per loop iteration at millisecond resolution, which
    would quantise every latency to whole milliseconds.
    """

    def __init__(self) -> None:
        self._wake_at = math.inf
        self._waiter: asyncio.Future[None] | None = None

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t: float) -> None:
        """Wait until `t`; yield to the loop once when it has passed.

        Event-loop timers have millisecond resolution, and the next deadline at 20,000
        requests/s is 50 µs away: a timer alone makes every wait a millisecond or more and
        sends what fell due in bursts. So the timer (at least MIN_WAIT_S) is only the fallback
        of a quiet run: while responses arrive, each one pokes the clock, which ends the wait
        as soon as `t` has passed. Busy runs are then woken within a response's gap of their
        deadline, without spinning, and idle ones sleep.
        """
        gap = t - time.monotonic()
        if gap <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._wake_at = t
        timer = loop.call_later(max(gap, MIN_WAIT_S), _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._wake_at = math.inf

    def poke(self) -> None:
        if time.monotonic() >= self._wake_at:
            self._wake_at = math.inf
            _wake(self._waiter)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of a rate profile: the rate moves linearly from `start` to `end` requests/s."""

    duration: float
    """Seconds; `math.inf` for the last segment of a profile that holds its rate."""
    start: float
    end: float

    @property
    def count(self) -> float:
        """Requests due within the segment (its area); inf for a held, non-zero rate."""
        if self.duration == math.inf:
            return math.inf if self.start > 0 else 0.0
        return (self.start + self.end) / 2 * self.duration

    def offset(self, u: float) -> float:
        """Seconds into the segment at which `u` requests of it are due (u < count)."""
        if self.start == self.end:
            return u / self.start
        if u == 0:
            return 0.0
        accel = (self.end - self.start) / self.duration
        # Root of start·τ + accel·τ²/2 = u, in the form that stays exact as accel → 0.
        return 2 * u / (self.start + math.sqrt(self.start * self.start + 2 * accel * u))


def constant(rate: float) -> tuple[Segment, ...]:
    """`--rate N`: N requests/s for ever."""
    return (Segment(math.inf, rate, rate),)


def ramp(start: float, end: float, duration: float) -> tuple[Segment, ...]:
    """`--ramp START:END:DURATION`: a linear ramp, then the end rate held."""
    return (Segment(duration, start, end), Segment(math.inf, end, end))


def stages(steps: list[tuple[float, float]]) -> tuple[Segment, ...]:
    """`--stages D1:R1,D2:R2,...`: each rate for its duration; the schedule ends after the last."""
    return tuple(Segment(duration, rate, rate) for duration, rate in steps)


@dataclass(frozen=True, slots=True)
class Pacing:
    """How records are spread in time: by their timestamps, or by a rate profile."""

    speed: float = 1.0
    """Replay the recorded timing this many times faster (used when there is no rate)."""
    rate: float | None = None
    """Constant requests per second regardless of timestamps; `math.inf` means no deadline at all."""
    profile: tuple[Segment, ...] = ()
    """A rate profile (`--ramp`, `--stages`); takes precedence over `rate`."""
    poisson: bool = False
    """With a rate: exponential gaps (a Poisson process) instead of even spacing."""
    seed: int = 0
    """Seed of the Poisson gaps, so a run can be reproduced."""

    @property
    def unpaced(self) -> bool:
        """True for `--rate max`: send as soon as an in-flight slot is free."""
        return not self.profile and self.rate == math.inf

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The rate profile, or () when pacing follows the timestamps (or is unpaced)."""
        if self.profile:
            return self.profile
        return () if self.rate is None or self.unpaced else constant(self.rate)


class Schedule:
    """Deadlines for a sequence of records, relative to a start time `t0` on some clock.

    Call `next_deadline(ts)` once per record, in order. It returns None when the record is
    due immediately: always with `--rate max`, and with `--speed` for a record stamped
    earlier than the first one (out of order). It returns `math.inf` once a finite profile
    (`--stages`) is over; `end` is then when that happened.

    A rate profile is the total of a group of replayers (Kafka consumers splitting a topic's
    partitions): `set_share` makes this schedule pace its share of it from then on.
    """

    def __init__(self, pacing: Pacing, t0: float) -> None:
        self.pacing = pacing
        self.t0 = t0
        self._ts0: float | None = None
        self._segments = pacing.segments
        self._index = 0
        self._u = 0.0
        self._rng = random.Random(pacing.seed)
        # The segment the next request falls in: its number, start time and first count.
        self._seg = 0
        self._seg_t = t0
        self._seg_u = 0.0
        # Request counts of this schedule (local) map onto the profile's (group) counts linearly:
        # group = base_group + (local - base_local) / share, rebased at every share change.
        self._share = 1.0
        self._base_local = 0.0
        self._base_group = 0.0
        self._last = (0.0, 0.0)
        self.end = math.inf
        """When a rate profile is over: after its last finite segment, or when it holds a rate of 0."""
        if self._segments:
            last = self._segments[-1]
            held_zero = last.duration == math.inf and last.count == 0
            self.end = t0 + sum(s.duration for s in (self._segments[:-1] if held_zero else self._segments))

    def next_deadline(self, ts: float) -> float | None:
        p = self.pacing
        if not self._segments:
            if p.rate is not None:  # --rate max
                return None
            if self._ts0 is None:
                self._ts0 = ts
            offset = ts - self._ts0
            return None if offset < 0 else self.t0 + offset / p.speed
        if p.poisson:
            if self._index:
                self._u += self._rng.expovariate(1.0)
            u = self._u
        else:
            u = float(self._index)
        self._index += 1
        group = self._base_group + (u - self._base_local) / self._share
        self._last = (u, group)
        return self._deadline(group)

    def set_share(self, share: float) -> None:
        """Pace `share` (0 < share ≤ 1) of the rate profile from the request after the last one
        given a deadline: the gaps after it stretch by 1/share. No effect without a rate (with
        `--speed` each replayer keeps the timing of its own records) or when `share` is 0."""
        if 0 < share <= 1 and share != self._share:
            self._base_local, self._base_group = self._last
            self._share = share

    def _deadline(self, u: float) -> float:
        """The time at which the profile's cumulative count reaches `u`."""
        segments = self._segments
        while self._seg < len(segments):
            seg = segments[self._seg]
            if u - self._seg_u < seg.count:
                return self._seg_t + seg.offset(u - self._seg_u)
            self._seg_u += seg.count
            self._seg_t += seg.duration
            self._seg += 1
        return math.inf


@dataclass(frozen=True, slots=True)
class Loop:
    """How pass k of a looped input is shifted: timestamps by k·period, ids suffixed `#k`.

    The period is the span of the first pass plus one average gap, so the first record of a
    pass follows the last of the previous one as it would follow any other record.
    """

    first_ts: float
    last_ts: float
    count: int

    @property
    def period(self) -> float:
        span = self.last_ts - self.first_ts
        if self.count < 2 or span <= 0:
            return 1.0
        return span + span / (self.count - 1)

    def ts(self, ts: float, k: int) -> float:
        return ts + k * self.period

    @staticmethod
    def id(record_id: str, k: int) -> str:
        return record_id if k == 0 else f"{record_id}#{k}"
