"""Observation: listeners that receive every Outcome, latency histograms, schedule counters.

The sender only produces Outcomes; everything that counts, stores or shows them is a
listener. A listener that raises is reported once on stderr and disabled, so a bug in
reporting never stops a replay.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
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

    def record(self, ms: float, n: int = 1) -> None:
        """Add a value in milliseconds `n` times (negative values count as 0)."""
        v = int(ms * 1e6) if ms > 0 else 0
        b = v.bit_length() - 8
        i = v if b <= 0 else (b << 7) + (v >> b)  # SUB_BITS = 8, spelled out: this runs per request
        counts = self.counts
        counts[i] = counts.get(i, 0) + n
        if v < self.min or not self.count:
            self.min = v
        if v > self.max:
            self.max = v
        self.count += n

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


LATE_MS = 10.0
"""A request dispatched more than this many milliseconds after its deadline counts as late."""

ENDPOINT_LIMIT = 500
"""Endpoints kept per target; requests to further ones are counted under OTHER_ENDPOINT."""

OTHER_ENDPOINT = "(other)"

_ID_SEGMENT = re.compile(
    r"(?<=/)(?:\d+"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[a-fA-F]*\d)[0-9a-fA-F]{8,})(?=/|$)"
)
"""Whole path segments that identify a resource: numbers, UUIDs, 8+ hex characters including a digit."""


def path_template(target: str) -> str:
    """The path of a request target with its id segments as `{id}`, the query dropped.

    `/users/42/orders/6f1c9a2e-0d3b-4c1e-9a57-1f2e3d4c5b6a?x=1` → `/users/{id}/orders/{id}`.
    A hex segment needs a digit, so that words like `deadbeef` or `facade` stay as they are.
    """
    return _ID_SEGMENT.sub("{id}", target.split("?", 1)[0])


class EndpointStats:
    """Requests to one endpoint (method + path template) of one target."""

    __slots__ = ("errors", "latency", "requests", "status")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.status: dict[int, int] = {}
        self.latency = Histogram()
        """done − sent of every response, ms."""


class TargetStats:
    """What one target did: request and response counts, errors by class, statuses, latencies,
    and the same per endpoint.

    Counts, statuses and the latency histogram are kept per endpoint only and summed when
    read (histograms merge exactly), so a request costs one endpoint lookup and two histogram
    updates: this runs for every response, at up to tens of thousands a second. (Memoising
    the endpoint per path was measured: with mostly distinct paths it costs more than it saves.)
    """

    __slots__ = ("corrected", "endpoints", "errors", "name", "url")

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.errors: Counter[str] = Counter()
        """Requests without a response, by error class."""
        self.corrected = Histogram()
        """done − intended of every response, ms (free of coordinated omission)."""
        self.endpoints: dict[str, EndpointStats] = {}
        """Keyed by `METHOD /path/{id}`."""

    @property
    def requests(self) -> int:
        return sum(e.requests for e in self.endpoints.values())

    @property
    def responses(self) -> int:
        return sum(e.requests - e.errors for e in self.endpoints.values())

    @property
    def status(self) -> Counter[int]:
        total: Counter[int] = Counter()
        for e in self.endpoints.values():
            total.update(e.status)
        return total

    @property
    def latency(self) -> Histogram:
        """done − sent of every response, ms."""
        total = Histogram()
        for e in self.endpoints.values():
            total.merge(e.latency)
        return total

    def endpoint(self, method: str, path: str) -> EndpointStats:
        """The stats of the endpoint a request belongs to."""
        name = f"{method} {path_template(path)}"
        stats = self.endpoints.get(name)
        if stats is None:
            if len(self.endpoints) >= ENDPOINT_LIMIT:
                name = OTHER_ENDPOINT
                stats = self.endpoints.get(name)
            if stats is None:
                stats = self.endpoints[name] = EndpointStats()
        return stats

    def add(self, o: Outcome) -> None:
        endpoint = self.endpoint(o.method, o.path)
        endpoint.requests += 1
        status = o.status
        if status is None:
            self.errors[o.error or "other"] += 1
            endpoint.errors += 1
            return
        counts = endpoint.status
        counts[status] = counts.get(status, 0) + 1
        done = o.done
        if o.sent is not None:
            endpoint.latency.record((done - o.sent) * 1000.0)
        self.corrected.record((done - o.intended) * 1000.0)


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

    `planned` requests were due; each was either `sent` (handed to its target's sender) or
    `dropped` (the target had --max-inflight requests outstanding). Records never scheduled
    are counted in `skipped` by reason. `lag` is dispatch time − deadline of every sent
    request, ms: the generator's own lateness, never the target's.
    """

    def __init__(self) -> None:
        self.planned = 0
        self.sent = 0
        self.dropped = 0
        self.late = 0
        """Sent requests with a lag above LATE_MS."""
        self.skipped: Counter[str] = Counter()
        self.lag = Histogram()
        self.window_s = 0.0
        """Seconds the schedule covered (for achieved_rps); set when scheduling stops."""
        self.stopped = ""
        """Why scheduling stopped: `input ended`, `duration`, `limit`, `profile ended`, `interrupted`, `aborted`."""

    @property
    def achieved_rps(self) -> float | None:
        return self.sent / self.window_s if self.window_s > 0 else None

    def record_lag(self, ms: float, requests: int) -> None:
        """`requests` requests of one record were dispatched `ms` after their deadline."""
        self.lag.record(ms, requests)
        if ms > LATE_MS:
            self.late += requests


class CircuitBreaker:
    """Calls `trip(reason)` once, when a target's failures over its last `window` requests reach
    `threshold` (a fraction). A failure is a 5xx status or no response at all; requests the run
    itself cancelled do not count. Each target has its own window, so one broken candidate
    stops the run however healthy the others are."""

    def __init__(self, threshold: float, window: int, trip: Callable[[str], None]) -> None:
        self.threshold = threshold
        self.window = window
        self._trip = trip
        self._rings: dict[str, list[str | None]] = {}
        self._pos: dict[str, int] = {}
        self._failures: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self.tripped: str | None = None

    def on_outcome(self, o: Outcome) -> None:
        if o.error == "cancelled":
            return
        name = o.target
        ring = self._rings.get(name)
        if ring is None:
            ring = self._rings[name] = [None] * self.window
            self._pos[name] = 0
        if o.status is None:
            failure: str | None = o.error or "other"
        else:
            failure = str(o.status) if o.status >= 500 else None
        pos = self._pos[name]
        if ring[pos] is not None:
            self._failures[name] -= 1
        ring[pos] = failure
        if failure is not None:
            self._failures[name] += 1
        self._pos[name] = (pos + 1) % self.window
        self._seen[name] += 1
        if (self.tripped is None and self._seen[name] >= self.window
                and self._failures[name] >= self.threshold * self.window):
            kinds = Counter(f for f in ring if f is not None)
            detail = ", ".join(f"{k}: {n}" for k, n in kinds.most_common())
            self.tripped = (f"target {name!r}: {self._failures[name]} of its last {self.window} requests failed "
                            f"({detail}), at or above --abort-on-error-rate {self.threshold:.0%}")
            self._trip(self.tripped)

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
        self.failures: list[str] = []
        """One line per listener that failed: its class, the error."""

    def emit(self, outcome: Outcome) -> None:
        for listener in self._active:
            try:
                listener.on_outcome(outcome)
            except Exception as e:
                self._disable(listener, e)

    def _disable(self, listener: Listener, error: Exception) -> None:
        if listener in self._active:
            self._active = tuple(x for x in self._active if x is not listener)
            failure = f"{type(listener).__name__} failed and was disabled: {type(error).__name__}: {error}"
            self.failures.append(failure)
            print(f"shadowtap: warning: {failure}", file=sys.stderr)

    def close(self) -> None:
        """Close every listener, the disabled ones too (they may hold files)."""
        for listener in self._all:
            try:
                listener.close()
            except Exception as e:
                self._disable(listener, e)
