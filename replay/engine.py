"""The replay engine shared by the modes: walk a source on a schedule, hand each record to
every target's sender, route the Outcomes to listeners.

Open loop: the scheduling loop never waits for a response. When a target already has
--max-inflight requests outstanding the new one is dropped and counted, never queued behind
the limit (a queue would silently turn the schedule into a closed loop). `--rate max` is the
one closed-loop mode: it waits for a free slot on every target instead of dropping.

Three times per request: `intended` (the deadline), the dispatch time (schedule lag is
dispatch − intended: the generator's own lateness) and `sent` (bytes written: a request may
wait for one of the target's --connections). latency = done − sent, corrected = done − intended.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from replay.observe import CircuitBreaker, Fanout, Listener, ScheduleStats
from replay.options import SAFE_METHODS, ReplayOptions, Target
from replay.report import Progress
from replay.schedule import Clock, MonotonicClock, Schedule
from replay.send import Exchange, Preparer, Sender, make_sender
from shadowtap.errors import EXIT_ERROR, EXIT_VERDICT
from shadowtap.record import Outcome, Record
from shadowtap.stream import Delivery, Source

GRACE_S = 5.0
"""After an interruption or an abort, how long in-flight requests may still finish."""

YIELD_EVERY = 64
"""Requests dispatched in a row, without waiting, before the loop gets a turn for I/O."""


GC_THRESHOLD = (50_000, 20, 100)
"""Cyclic-GC thresholds during a run (Python's default first one is 700 allocations)."""


_tuned = 0
"""Runs currently inside `fewer_collections`."""


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic GC less often while replaying, then restore it.

    A replay allocates a few short-lived, acyclic objects per request (record, request,
    outcome); the default thresholds then trigger collections that walk every long-lived
    object over and over, about a tenth of the CPU at full speed. What exists when the run
    starts is frozen out of collections; cycles made during the run are still collected.
    """
    global _tuned
    _tuned += 1
    if _tuned > 1:  # a run inside another one (or beside it): the outer one restores
        try:
            yield
        finally:
            _tuned -= 1
        return
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        _tuned -= 1
        gc.set_threshold(*previous)
        gc.unfreeze()


@dataclass(slots=True)
class Summary:
    """How a run ended."""

    schedule: ScheduleStats
    interrupted: int | None = None
    """The signal that stopped the run early, if one did."""
    aborted: str | None = None
    """Why the circuit breaker stopped the run, if it did."""
    listener_failures: tuple[str, ...] = ()
    """Listeners that failed and were disabled (outcomes not all written, for one)."""

    @property
    def exit_code(self) -> int:
        """0; 128 + the signal number (130 after Ctrl-C); 3 when the circuit breaker tripped;
        1 when a listener failed (the replay went on, but what it wrote is incomplete)."""
        if self.aborted is not None:
            return EXIT_VERDICT
        if self.interrupted is not None:
            return 128 + self.interrupted
        return EXIT_ERROR if self.listener_failures else 0


class Hooks(Protocol):
    """Per-request callbacks of a mode that needs the record beside the Outcome (tee)."""

    def on_result(self, record: Record, outcome: Outcome, exchange: Exchange | None) -> None: ...

    def on_drop(self, record: Record, target: Target) -> None: ...


Skip = Callable[[Record], str | None]
"""Returns why a record is not replayed (a `skipped` counter key), or None to replay it."""


def skip_writes(options: ReplayOptions) -> Skip:
    """The default filter: methods other than GET/HEAD/OPTIONS unless --allow-writes."""
    if options.allow_writes:
        return lambda _record: None
    return lambda record: None if record.method in SAFE_METHODS else "write_method"


class _Pending:
    """Counts down a delivery's requests (one per target) so that it is acked once, at the last."""

    __slots__ = ("delivery", "left")

    def __init__(self, delivery: Delivery, left: int) -> None:
        self.delivery = delivery
        self.left = left


class _Run:
    def __init__(
        self, source: Source, targets: Iterable[Target], options: ReplayOptions, listeners: Iterable[Listener],
        stats: ScheduleStats, clock: Clock | None, hooks: Hooks | None, skip: Skip | None,
    ) -> None:
        self.source = source
        self.options = options
        self.stats = stats
        self.clock = clock or MonotonicClock()
        self.poke = self.clock.poke
        self.hooks = hooks
        self.skip = skip or skip_writes(options)
        extra: list[Listener] = []
        if options.abort_error_rate is not None:
            extra.append(CircuitBreaker(options.abort_error_rate, options.error_window, self._abort))
        self.fanout = Fanout([*listeners, *extra])
        offset = time.time() - self.clock.now()
        self.senders: list[Sender] = [make_sender(t, options, self.clock, offset, self._done) for t in targets]
        self.prepare = Preparer(options)
        self.limit = options.max_inflight
        self.wait = options.pacing.unpaced if options.wait_for_slot is None else options.wait_for_slot
        self.inflight = 0
        self.interrupted: int | None = None
        self.aborted: str | None = None
        self.schedule_task: asyncio.Task[None] | None = None
        self._slot = asyncio.Event()
        self._waiting = False
        self._idle = asyncio.Event()
        self._draining = False
        self._hooks_failed = False

    async def run(self) -> Summary:
        restore = self._install_signals()
        progress = Progress(self.stats, lambda: self.inflight) if self.options.progress else None
        external_cancel = False
        try:
            self.schedule_task = asyncio.create_task(self._schedule())
            try:
                await self.schedule_task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                external_cancel = current is not None and current.cancelling() > 0
            finally:  # also when the source failed: what was sent still gets its outcome
                hurry = external_cancel or self.interrupted is not None or self.aborted is not None
                await self._drain(hurry)
        finally:
            restore()
            if progress:
                progress.stop()
            for sender in self.senders:
                await sender.close()
            self.fanout.close()
        if external_cancel:
            raise asyncio.CancelledError
        return Summary(self.stats, self.interrupted, self.aborted, tuple(self.fanout.failures))

    async def _schedule(self) -> None:
        """Walk the source, wait for each deadline, dispatch; stop at --limit/--duration/profile end."""
        opts = self.options
        clock = self.clock
        stats = self.stats
        skip = self.skip
        source = self.source
        shared = hasattr(source, "rate_share")  # a Kafka consumer: the rate is its group's total
        share = 1.0
        started = clock.now()
        end, end_reason = (math.inf, "") if opts.duration is None else (started + opts.duration, "duration")
        schedule: Schedule | None = None
        stopped_at = None
        reason = "input ended"
        records = 0
        burst = 0
        try:
            async for delivery in source:
                record = delivery.record
                why = skip(record)
                if why is not None:
                    stats.skipped[why] += 1
                    delivery.ack()
                    continue
                if schedule is None:  # deadlines count from the first record, not from a group join
                    schedule = Schedule(opts.pacing, clock.now())
                    if schedule.end < end:
                        end, end_reason = schedule.end, "profile ended"
                if shared and source.rate_share != share:  # type: ignore[attr-defined]
                    share = source.rate_share  # type: ignore[attr-defined]
                    schedule.set_share(share)
                deadline = schedule.next_deadline(record.ts)
                now = clock.now()
                if deadline is None:
                    if self.wait and self._full():
                        await self._wait_for_slot()
                        burst = 0
                        now = clock.now()
                    elif burst >= YIELD_EVERY:
                        await clock.sleep_until(now)
                        burst = 0
                        now = clock.now()
                    if now >= end:
                        stopped_at, reason = end, end_reason
                        break
                    intended = now
                    paced = False
                else:
                    if deadline >= end:
                        stopped_at, reason = end, end_reason
                        break
                    if deadline > now:
                        await clock.sleep_until(deadline)
                        burst = 0
                        now = clock.now()
                    elif burst >= YIELD_EVERY:  # behind schedule: catch up, but let I/O run
                        await clock.sleep_until(now)
                        burst = 0
                        now = clock.now()
                    intended = deadline
                    paced = True
                burst += 1
                self._dispatch(delivery, intended, now, paced)
                records += 1
                if records == opts.limit:
                    reason = "limit"
                    break
        finally:
            t0 = started if schedule is None else schedule.t0
            stats.window_s = (clock.now() if stopped_at is None else stopped_at) - t0
            if not stats.stopped:
                stats.stopped = reason

    def _full(self) -> bool:
        senders, limit = self.senders, self.limit
        if len(senders) == 1:
            return senders[0].inflight >= limit
        return any(sender.inflight >= limit for sender in senders)

    async def _wait_for_slot(self) -> None:
        self._waiting = True
        try:
            while self._full():
                self._slot.clear()
                await self._slot.wait()
        finally:
            self._waiting = False

    def _dispatch(self, delivery: Delivery, intended: float, now: float, paced: bool) -> None:
        """Hand the record to every target with a free slot; the others drop it (counted)."""
        record = delivery.record
        stats = self.stats
        senders = self.senders
        limit = self.limit
        n = len(senders)
        stats.planned += n
        if n == 1:
            going = senders if senders[0].inflight < limit else []
        else:
            going = [s for s in senders if s.inflight < limit]
        if len(going) < n:
            stats.dropped += n - len(going)
            if self.hooks is not None:
                for sender in senders:
                    if sender not in going:
                        self._hook(self.hooks.on_drop, record, sender.target)
            if not going:
                delivery.ack()
                return
        prepared = self.prepare(record)
        stats.sent += len(going)
        if paced:
            stats.record_lag((now - intended) * 1000.0, len(going))
        # The token each completion brings back: the delivery itself when one request carries
        # it, else a countdown that acks once every target is done.
        token: Delivery | _Pending = delivery if len(going) == 1 else _Pending(delivery, len(going))
        self.inflight += len(going)
        for sender in going:
            sender.submit(prepared, intended, token)

    def _done(self, outcome: Outcome, token: Delivery | _Pending, exchange: Exchange | None) -> None:
        """A sender's completion callback (runs inside protocol callbacks: must not raise)."""
        self.inflight -= 1
        self.poke()
        self.fanout.emit(outcome)
        if type(token) is _Pending:
            token.left -= 1
            delivery = token.delivery
            if token.left == 0:
                delivery.ack()
        else:
            delivery = token  # type: ignore[assignment]
            delivery.ack()
        if self.hooks is not None:
            self._hook(self.hooks.on_result, delivery.record, outcome, exchange)
        if self._waiting:
            self._slot.set()
        if self._draining and self.inflight == 0:
            self._idle.set()

    def _hook(self, fn: Callable[..., None], *args: object) -> None:
        """Call a mode hook; like a listener, one that raises is reported once and disabled."""
        if self._hooks_failed:
            return
        try:
            fn(*args)
        except Exception as e:
            self._hooks_failed = True
            print(f"shadowtap: warning: {type(fn.__self__).__name__} failed and was disabled: "  # type: ignore[attr-defined]
                  f"{type(e).__name__}: {e}", file=sys.stderr)

    async def _drain(self, hurry: bool) -> None:
        """Wait for in-flight requests: all of them normally (each is bounded by --timeout),
        at most GRACE_S after an interruption or abort; closing the senders then cancels the
        rest, which still produce outcomes."""
        if self.inflight == 0:
            return
        self._draining = True
        self._idle.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), GRACE_S if hurry else None)

    def _stop(self, signum: int) -> None:
        """While scheduling: stop it (in-flight requests get GRACE_S). Later: stop waiting for them."""
        if self.interrupted is None:
            self.interrupted = signum
        if not self.stats.stopped:
            self.stats.stopped = "interrupted"
        self._halt()

    def _abort(self, reason: str) -> None:
        """The circuit breaker tripped: stop scheduling, say why."""
        if self.aborted is None:
            self.aborted = reason
            self.stats.stopped = "aborted"
            self._halt()

    def _halt(self) -> None:
        if self.schedule_task is not None and not self.schedule_task.done():
            self.schedule_task.cancel()
        elif self._draining:
            self._idle.set()

    def _install_signals(self) -> Callable[[], None]:
        """Route SIGINT/SIGTERM to `_stop`; returns what puts the previous handlers back."""
        if not self.options.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            prev = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._stop, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            previous[sig] = prev

        def restore() -> None:
            for sig, prev in previous.items():
                loop.remove_signal_handler(sig)
                if prev is not None:
                    signal.signal(sig, prev)

        return restore


async def run_replay(
    source: Source,
    targets: Iterable[Target],
    options: ReplayOptions,
    listeners: Iterable[Listener] = (),
    *,
    stats: ScheduleStats | None = None,
    clock: Clock | None = None,
    hooks: Hooks | None = None,
    skip: Skip | None = None,
) -> Summary:
    """Replay every record of `source` to every target, open loop; returns how the run ended.

    Listeners get every Outcome and are closed at the end. Pass `stats` to read the schedule
    counters even when the run is cancelled (it then drains and re-raises CancelledError).
    SIGINT/SIGTERM stop scheduling, in-flight requests get GRACE_S to finish, and the Summary
    carries the signal; so does a tripped circuit breaker (--abort-on-error-rate) its reason.
    """
    run = _Run(source, targets, options, listeners, stats or ScheduleStats(), clock, hooks, skip)
    with fewer_collections():
        return await run.run()
