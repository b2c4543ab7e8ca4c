"""Shadow mode: fire-and-forget dark traffic, every record to every target, open loop.

The engine (replay/engine.py) does the pacing and sending; this module wires a run from
its options: the source (looped or not), per-target statistics, the outcome file, the report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from replay.engine import Summary, run_replay
from replay.observe import Listener, ScheduleStats, StatsListener
from replay.offline import outcome_writer
from replay.options import ReplayOptions, ShadowOptions, Target
from replay.report import build_report, format_table, write_report
from replay.schedule import Clock
from replay.sources import open_replay_source
from shadowtap.errors import StreamError
from shadowtap.stream import Source

__all__ = ["Summary", "run_shadow", "shadow_main", "shadow_run"]


async def run_shadow(
    source: Source,
    targets: Iterable[Target],
    options: ReplayOptions,
    listeners: Iterable[Listener] = (),
    *,
    stats: ScheduleStats | None = None,
    clock: Clock | None = None,
) -> Summary:
    """Replay every record of `source` to every target (see `replay.engine.run_replay`)."""
    return await run_replay(source, targets, options, listeners, stats=stats, clock=clock)


def check_writable(path: str | None, what: str) -> None:
    """Fail before replaying anything when a file could not be written at the end."""
    if path and path != "-" and not path.startswith("kafka://"):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StreamError(f"cannot write {what} to {path!r}: directory {parent!r} does not exist")


async def shadow_main(options: ShadowOptions, extra_listeners: Iterable[Listener] = ()) -> int:
    """`shadowtap replay shadow`: open the source, run, write outcomes and the report.

    The report and the summary table are written even when the run is interrupted or the
    circuit breaker stops it (whose reason also goes to stderr). `extra_listeners` get every
    outcome too (a worker's own outcome file). Returns the exit code.
    """
    def show(report: dict[str, Any]) -> None:
        to_stdout = "-" in (options.report, options.outcomes)
        if options.report:
            write_report(options.report, report)
        print(format_table(report), file=sys.stderr if to_stdout else sys.stdout, flush=True)

    summary = await shadow_run(options, show, extra_listeners)
    if summary.aborted:
        print(f"shadowtap: aborted: {summary.aborted}", file=sys.stderr, flush=True)
    return summary.exit_code


async def shadow_run(options: ShadowOptions, on_report: Callable[[dict[str, Any]], None],
                     extra_listeners: Iterable[Listener] = ()) -> Summary:
    """Run shadow mode and hand its report to `on_report`, also when the run fails or is
    cancelled (before the exception goes on)."""
    check_writable(options.report, "the report")
    source = open_replay_source(options.input, options.replay.loop, options.stream)
    targets = options.targets
    stats = ScheduleStats()
    target_stats = StatsListener((t.name, t.url) for t in targets)
    listeners: list[Listener] = [target_stats]
    if options.outcomes:
        listeners.append(outcome_writer(options.outcomes, options.stream.settings))
    listeners.extend(extra_listeners)
    summary: Summary | None = None
    try:
        summary = await run_shadow(source, targets, options.replay, listeners, stats=stats)
    finally:
        with suppress(Exception):
            await source.close()
        stats.skipped.update(source.skipped)
        on_report(build_report(stats, target_stats, summary.aborted if summary else None))
    return summary
