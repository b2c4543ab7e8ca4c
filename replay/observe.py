"""Observation: listeners that receive every Outcome, latency histograms, schedule counters.

The sender only produces Outcomes; everything that counts, stores or shows them is a
listener. A listener that raises is reported once on stderr and disabled, so a bug in
reporting never stops a replay.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterable
from typing import BinaryIO, Protocol

from shadowtap.errors import StreamError
from shadowtap.record import Outcome, encode_outcome

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "max": 100.0}
"""Report key → percentile, for latency summaries."""

WRITE_BATCH = 1024
"""Outcomes buffered before one write to the outcomes file."""


class Listener(Protocol):
    """Receives every Outcome of a run; `close()` once at the end."""

    def on_outcome(self, outcome: Outcome) -> None: ...

    def close(self) -> None: ...


class Histogram:
    """Log-linear bucketed values (HdrHistogram's layout), kept in integer nanoseconds.

    A value v ≥ 256 ns falls in a bucket holding its top 8 significant bits, so a bucket is at
    most 1/128 of its lower bound wide and its midpoint is within 0.4% of every value in it;
    smaller values are exact. Buckets are sparse (a dict), so any range from nanoseconds to
    hours costs only the buckets used, and two histograms merge by adding counts.
    """

    SUB_BITS = 8
    __slots__ = ("count", "counts", "max", "min")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.min = 0
        self.max = 0

    def record(self, ms: float) -> None:
        """Add one value in milliseconds (negative values count as 0)."""
        v = int(ms * 1e6) if ms > 0 else 0
        b = v.bit_length() - self.SUB_BITS
        i = v if b <= 0 else (b << (self.SUB_BITS - 1)) + (v >> b)
        self.counts[i] = self.counts.get(i, 0) + 1
        if self.count == 0 or v < self.min:
            self.min = v
        if v > self.max:
            self.max = v
        self.count += 1

    def merge(self, other: Histogram) -> None:
        """Add all of `other`'s values to this histogram."""
        if not other.count:
            return
        for i, n in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + n
        self.min = other.min if not self.count else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count

    def _midpoint(self, i: int) -> float:
        half = 1 << (self.SUB_BITS - 1)
        if i < 2 * half:
            return float(i)
        shift = (i >> (self.SUB_BITS - 1)) - 1
        return ((i - (shift << (self.SUB_BITS - 1))) << shift) + (1 << shift) / 2

    def percentiles(self, ps: Iterable[float]) -> list[float | None]:
        """Nearest-rank percentiles (0–100) in milliseconds; None when empty; 100 is the exact max."""
        ps = list(ps)
        if not self.count:
            return [None] * len(ps)
        ranks = [max(1, math.ceil(p / 100.0 * self.count)) for p in ps]
        out: list[float | None] = [None] * len(ps)
        order = sorted(range(len(ps)), key=ranks.__getitem__)
        seen = 0
        k = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            while k < len(order) and ranks[order[k]] <= seen:
                value = min(max(self._midpoint(i), self.min), self.max)
                out[order[k]] = value / 1e6
                k += 1
            if k == len(order):
                break
        for j, p in enumerate(ps):
            if p >= 100.0:
                out[j] = self.max / 1e6
        return out

    def summary(self, digits: int = 3) -> dict[str, float | None]:
        """The report's percentile keys (p50, p90, p99, p999, max) in ms, rounded."""
        values = self.percentiles(PERCENTILES.values())
        return {k: None if v is None else round(v, digits) for k, v in zip(PERCENTILES, values, strict=True)}


class TargetStats:
    """What one target did: request and response counts, errors, statuses, latencies."""

    __slots__ = ("corrected", "errors", "latency", "name", "requests", "responses", "status", "url")

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.requests = 0
        self.responses = 0
        self.errors: Counter[str] = Counter()
        self.status: Counter[str] = Counter()
        self.latency = Histogram()
        """done − sent of every response, ms."""
        self.corrected = Histogram()
        """done − intended of every response, ms (free of coordinated omission)."""

    def add(self, o: Outcome) -> None:
        self.requests += 1
        if o.status is None:
            self.errors[o.error or "other"] += 1
            return
        self.responses += 1
        self.status[str(o.status)] += 1
        if o.sent is not None:
            self.latency.record((o.done - o.sent) * 1000.0)
        self.corrected.record((o.done - o.intended) * 1000.0)


class StatsListener:
    """Per-target statistics, keyed by target name."""

    def __init__(self, targets: Iterable[tuple[str, str]]) -> None:
        self.targets = {name: TargetStats(name, url) for name, url in targets}

    def on_outcome(self, outcome: Outcome) -> None:
        self.targets[outcome.target].add(outcome)

    def close(self) -> None:
        return None


class ScheduleStats:
    """How well the schedule was kept. Counts are requests (one record to one target).

    `planned` requests were due; each was either `sent` or `dropped` (its target had
    --max-inflight requests outstanding). Records never scheduled are counted in `skipped`
    by reason. `lag` is sent − intended of every sent request, ms.
    """

    def __init__(self) -> None:
        self.planned = 0
        self.sent = 0
        self.dropped = 0
        self.skipped: Counter[str] = Counter()
        self.lag = Histogram()
        self.window_s = 0.0
        """Seconds the schedule covered (for achieved_rps); set when scheduling stops."""

    @property
    def achieved_rps(self) -> float | None:
        return self.sent / self.window_s if self.window_s > 0 else None

    def on_outcome(self, outcome: Outcome) -> None:
        if outcome.sent is not None:
            self.lag.record((outcome.sent - outcome.intended) * 1000.0)

    def close(self) -> None:
        return None


class OutcomeWriter:
    """Writes every Outcome as one JSON line to a file (or stdout for `-`), in batches."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._buf: list[bytes] = []
        try:
            self._file: BinaryIO = sys.stdout.buffer if path == "-" else open(path, "wb")
        except OSError as e:
            raise StreamError(f"cannot write outcomes to {path!r}: {e.strerror or e}") from e

    def on_outcome(self, outcome: Outcome) -> None:
        self._buf.append(encode_outcome(outcome))
        if len(self._buf) >= WRITE_BATCH:
            self._write()

    def _write(self) -> None:
        if self._buf:
            data = b"\n".join(self._buf) + b"\n"
            self._buf.clear()
            self._file.write(data)

    def close(self) -> None:
        try:
            self._write()
            self._file.flush()
        finally:
            if self._file is not sys.stdout.buffer:
                self._file.close()


class Fanout:
    """Hands each Outcome to every listener; a listener that raises is reported once and dropped."""

    def __init__(self, listeners: Iterable[Listener]) -> None:
        self._all = tuple(listeners)
        self._active = self._all

    def emit(self, outcome: Outcome) -> None:
        for listener in self._active:
            try:
                listener.on_outcome(outcome)
            except Exception as e:
                self._disable(listener, e)

    def _disable(self, listener: Listener, error: Exception) -> None:
        if listener in self._active:
            self._active = tuple(x for x in self._active if x is not listener)
            print(
                f"shadowtap: warning: {type(listener).__name__} failed and was disabled: "
                f"{type(error).__name__}: {error}",
                file=sys.stderr,
            )

    def close(self) -> None:
        """Close every listener, the disabled ones too (they may hold files)."""
        for listener in self._all:
            try:
                listener.close()
            except Exception as e:
                self._disable(listener, e)
