"""Pure pacing: record timestamps and --speed/--rate become absolute deadlines on a clock.

Every deadline is computed from the start time t0, never as "sleep the gap since the last
send": a late send then does not push every later one back, so the replay cannot drift
below the intended rate. The clock is injected, so tests check exact deadlines instantly.
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


class MonotonicClock:
    """The real clock: `time.monotonic()` (nanosecond resolution), waited on with asyncio.sleep.

    Not `loop.time()`: uvloop caches that per loop iteration at millisecond resolution, which
    would quantise every latency to whole milliseconds.
    """

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t: float) -> None:
        """Wait until `t`; always yields to the loop once, even when `t` has passed."""
        await asyncio.sleep(max(0.0, t - time.monotonic()))


@dataclass(frozen=True, slots=True)
class Pacing:
    """How records are spread in time."""

    speed: float = 1.0
    """Replay the recorded timing this many times faster (used when `rate` is None)."""
    rate: float | None = None
    """Requests per second regardless of timestamps; `math.inf` means no deadline at all."""
    poisson: bool = False
    """With `rate`: exponential gaps (a Poisson process) instead of even spacing."""
    seed: int = 0
    """Seed of the Poisson gaps, so a run can be reproduced."""

    @property
    def unpaced(self) -> bool:
        """True for `--rate max`: send as soon as an in-flight slot is free."""
        return self.rate == math.inf


class Schedule:
    """Deadlines for a sequence of records, relative to a start time `t0` on some clock.

    Call `next_deadline(ts)` once per record, in order. It returns None when the record is
    due immediately: always with `--rate max`, and with `--speed` for a record stamped
    earlier than the first one (out of order).
    """

    def __init__(self, pacing: Pacing, t0: float) -> None:
        self.pacing = pacing
        self.t0 = t0
        self._ts0: float | None = None
        self._index = 0
        self._elapsed = 0.0
        self._rng = random.Random(pacing.seed)

    def next_deadline(self, ts: float) -> float | None:
        p = self.pacing
        if p.rate is None:
            if self._ts0 is None:
                self._ts0 = ts
            offset = ts - self._ts0
            return None if offset < 0 else self.t0 + offset / p.speed
        if p.unpaced:
            return None
        i = self._index
        self._index += 1
        if not p.poisson:
            return self.t0 + i / p.rate
        if i:
            self._elapsed += self._rng.expovariate(p.rate)
        return self.t0 + self._elapsed
