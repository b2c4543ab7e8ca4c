"""Shadow mode: fire-and-forget dark traffic, open loop, every record to every target.

The scheduling loop never waits for a response. Each request runs as its own task; when a
target already has --max-inflight requests outstanding the new one is dropped and counted,
never queued (a queue would silently turn the schedule into a closed loop). `--rate max` is
the one closed-loop mode: it waits for a free slot on every target instead of dropping.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial

from replay.observe import Fanout, Listener, OutcomeWriter, ScheduleStats, StatsListener
from replay.options import SAFE_METHODS, ReplayOptions, ShadowOptions, Target
from replay.report import Progress, build_report, format_table, write_report
from replay.schedule import Clock, MonotonicClock, Schedule
from replay.send import Prepared, Sender, prepare
from shadowtap.errors import StreamError
from shadowtap.stream import Delivery, Source
from shadowtap.streams import open_source

GRACE_S = 5.0
"""After an interruption, how long in-flight requests may still finish."""


@dataclass(slots=True)
class Summary:
    """How a run ended."""

    schedule: ScheduleStats
    interrupted: int | None = None
    """The signal that stopped the run early, if one did."""

    @property
    def exit_code(self) -> int:
        """0, or 128 + the signal number (130 after Ctrl-C)."""
        return 0 if self.interrupted is None else 128 + self.interrupted


class _Pending:
    """Acks a delivery once every target's request for it has produced its Outcome."""

    __slots__ = ("ack", "left")

    def __init__(self, ack: Callable[[], None], left: int) -> None:
        self.ack = ack
        self.left = left

    def done(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.ack()


class _ShadowRun:
    def __init__(
        self, source: Source, targets: Iterable[Target], options: ReplayOptions,
        listeners: Iterable[Listener], stats: ScheduleStats, clock: Clock | None,
    ) -> None:
        self.source = source
        self.options = options
        self.stats = stats
        self.clock = clock or MonotonicClock()
        self.fanout = Fanout([stats, *listeners])
        offset = time.time() - self.clock.now()
        self.senders = [Sender(t, options, self.clock, offset) for t in targets]
        self.tasks: set[asyncio.Task[None]] = set()
        self.interrupted: int | None = None
        self.slot_free = asyncio.Event()
        self.schedule_task: asyncio.Task[None] | None = None

    @property
    def inflight(self) -> int:
        return len(self.tasks)

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
                await self._drain(hurry=external_cancel or self.interrupted is not None)
        finally:
            restore()
            if progress:
                progress.stop()
            for sender in self.senders:
                await sender.close()
            self.fanout.close()
        if external_cancel:
            raise asyncio.CancelledError
        return Summary(self.stats, self.interrupted)

    async def _schedule(self) -> None:
        """Walk the source, wait for each deadline, dispatch; stop at --limit/--duration."""
        opts = self.options
        pacing = opts.pacing
        t0 = self.clock.now()
        end = math.inf if opts.duration is None else t0 + opts.duration
        schedule = Schedule(pacing, t0)
        stopped_at = None
        records = 0
        try:
            async for delivery in self.source:
                record = delivery.record
                if record.method not in SAFE_METHODS and not opts.allow_writes:
                    self.stats.skipped["write_method"] += 1
                    delivery.ack()
                    continue
                deadline = schedule.next_deadline(record.ts)
                if deadline is None:
                    if pacing.unpaced:
                        await self._wait_for_slots()
                    intended = self.clock.now()
                    if intended >= end:
                        stopped_at = end
                        break
                    if not pacing.unpaced:
                        await self.clock.sleep_until(intended)
                else:
                    if deadline >= end:
                        stopped_at = end
                        break
                    await self.clock.sleep_until(deadline)
                    intended = deadline
                self._dispatch(delivery, intended)
                records += 1
                if records == opts.limit:
                    break
        finally:
            self.stats.window_s = (self.clock.now() if stopped_at is None else stopped_at) - t0

    async def _wait_for_slots(self) -> None:
        limit = self.options.max_inflight
        while any(s.inflight >= limit for s in self.senders):
            self.slot_free.clear()
            await self.slot_free.wait()

    def _dispatch(self, delivery: Delivery, intended: float) -> None:
        prepared = prepare(delivery.record, self.options)
        pending = _Pending(delivery.ack, 0)
        limit = self.options.max_inflight
        stats = self.stats
        for sender in self.senders:
            stats.planned += 1
            if sender.inflight >= limit:
                stats.dropped += 1
                continue
            stats.sent += 1
            sender.inflight += 1
            pending.left += 1
            task = asyncio.create_task(self._send(sender, prepared, intended))
            self.tasks.add(task)
            task.add_done_callback(partial(self._finish, sender, prepared, intended, pending))
        if pending.left == 0:
            delivery.ack()

    async def _send(self, sender: Sender, prepared: Prepared, intended: float) -> None:
        self.fanout.emit(await sender.send(prepared, intended))

    def _finish(
        self, sender: Sender, prepared: Prepared, intended: float, pending: _Pending,
        task: asyncio.Task[None],
    ) -> None:
        """Bookkeeping when a request task ends; a task cancelled before it ever ran still
        gets its (cancelled) Outcome here, since its coroutine never started."""
        self.tasks.discard(task)
        if task.cancelled():
            reason = "the run stopped before it was sent"
            self.fanout.emit(sender.unsent(prepared, intended, "cancelled", reason))
        sender.inflight -= 1
        self.slot_free.set()
        pending.done()

    async def _drain(self, hurry: bool) -> None:
        """Wait for in-flight requests: all of them normally (each is bounded by --timeout),
        at most GRACE_S after an interruption; the rest are cancelled and still produce outcomes."""
        if not self.tasks:
            return
        try:
            await asyncio.wait(set(self.tasks), timeout=GRACE_S if hurry else None)
        finally:
            left = set(self.tasks)
            for task in left:
                task.cancel()
            if left:
                await asyncio.gather(*left, return_exceptions=True)

    def _stop(self, signum: int) -> None:
        """While scheduling: stop it (in-flight requests get GRACE_S). Later: cancel them now."""
        if self.interrupted is None:
            self.interrupted = signum
        if self.schedule_task is not None and not self.schedule_task.done():
            self.schedule_task.cancel()
            return
        for task in set(self.tasks):
            task.cancel()

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


async def run_shadow(
    source: Source,
    targets: Iterable[Target],
    options: ReplayOptions,
    listeners: Iterable[Listener] = (),
    *,
    stats: ScheduleStats | None = None,
    clock: Clock | None = None,
) -> Summary:
    """Replay every record of `source` to every target, open loop; returns how the run ended.

    Listeners get every Outcome and are closed at the end. Pass `stats` to read the schedule
    counters even when the run is cancelled (it then drains and re-raises CancelledError).
    SIGINT/SIGTERM stop scheduling, in-flight requests get GRACE_S to finish, and the
    Summary carries the signal.
    """
    run = _ShadowRun(source, targets, options, listeners, stats or ScheduleStats(), clock)
    return await run.run()


def _check_writable(path: str | None, what: str) -> None:
    """Fail before replaying anything when the report could not be written at the end."""
    if path and path != "-":
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StreamError(f"cannot write {what} to {path!r}: directory {parent!r} does not exist")


async def shadow_main(options: ShadowOptions) -> int:
    """`shadowtap replay shadow`: open the source, run, write outcomes and the report.

    The report and the summary table are written even when the run is interrupted.
    Returns the exit code.
    """
    _check_writable(options.report, "the report")
    source = open_source(options.input)
    targets = options.targets
    stats = ScheduleStats()
    target_stats = StatsListener((t.name, t.url) for t in targets)
    listeners: list[Listener] = [target_stats]
    if options.outcomes:
        listeners.append(OutcomeWriter(options.outcomes))
    summary: Summary | None = None
    try:
        summary = await run_shadow(source, targets, options.replay, listeners, stats=stats)
    finally:
        with suppress(Exception):
            await source.close()
        stats.skipped.update(source.skipped)
        report = build_report(stats, target_stats)
        to_stdout = "-" in (options.report, options.outcomes)
        if options.report:
            write_report(options.report, report)
        print(format_table(report), file=sys.stderr if to_stdout else sys.stdout, flush=True)
    return summary.exit_code
