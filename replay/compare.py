"""Compare mode (tap-compare): every record to the primary, the candidate and, optionally, a
secondary; field-level differences of the responses, noise cancelled, grouped by endpoint.

The engine sends each record to all sides at its scheduled time (open loop, as shadow) and
keeps the response bytes; when every side has answered, failed or timed out, the responses
are flattened into fields and compared (replay/diff.py): primary against candidate (raw
differences) and primary against secondary (noise). A record whose request was dropped on a
side (--max-inflight), or cancelled at the end of the run, is counted as not compared.

At the end the text report goes to stdout (the latency table of each side to stderr), and
`--report DIR` gets `compare.json` (per endpoint and field: counts, rates, real or noise,
examples), `latency.json` (shadow's report) and `compare.html` (both as one page). Exit 3
when an endpoint's share of requests with real differences is above --max-diff-rate
(default 0: any real difference).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson

from replay.diff import DiffStats, differing, endpoint, format_diffs, observe
from replay.engine import Summary, run_replay
from replay.html import format_html
from replay.observe import Listener, ScheduleStats, StatsListener
from replay.offline import outcome_writer
from replay.options import CompareOptions, Target
from replay.report import build_report, format_table, write_output, write_report
from replay.send import Exchange
from replay.shadow import check_writable
from replay.sources import open_replay_source
from shadowtap.errors import EXIT_VERDICT, StreamError
from shadowtap.record import Outcome, Record

UNANSWERED = ("cancelled",)
"""Error classes of requests that were never really answered or refused: not compared."""


class Comparer:
    """The engine's hooks: gathers each record's sides, then compares them into `diffs`."""

    def __init__(self, options: CompareOptions, diffs: DiffStats) -> None:
        self.options = options
        self.diffs = diffs
        self.sides = len(options.targets)
        self._pending: dict[int, tuple[Record, dict[str, dict[str, str] | None]]] = {}
        """Records some side has not reported on yet, by id(): each side's fields (None when it
        was not answered). The record is held so that its id() is not reused meanwhile."""

    def on_result(self, record: Record, outcome: Outcome, exchange: Exchange | None) -> None:
        fields = None if outcome.error in UNANSWERED else observe(
            exchange.response if exchange is not None else None, outcome.error, self.options.rules)
        self._side(record, outcome.target, fields)

    def on_drop(self, record: Record, target: Target) -> None:
        self._side(record, target.name, None)

    def _side(self, record: Record, side: str, fields: dict[str, str] | None) -> None:
        _, got = self._pending.setdefault(id(record), (record, {}))
        got[side] = fields
        if len(got) < self.sides:
            return
        del self._pending[id(record)]
        if any(f is None for f in got.values()):
            self.diffs.incomplete += 1
            return
        primary, candidate = got["primary"], got["candidate"]
        secondary = got.get("secondary")
        self.diffs.add(endpoint(record.method, record.target), differing(primary, candidate),
                       differing(primary, secondary) if secondary is not None else (), got,  # type: ignore[arg-type]
                       {"id": record.id, "method": record.method, "target": record.target})

    def close(self) -> None:
        """Records some side never reported on (the run was stopped) count as not compared."""
        self.diffs.incomplete += len(self._pending)
        self._pending.clear()


def failing_endpoints(summary: dict[str, Any], max_rate: float) -> list[str]:
    """Endpoints whose share of requests with real differences is above `max_rate`."""
    return [name for name, e in summary["endpoints"].items() if e["real_diff_rate"] > max_rate]


async def compare_main(options: CompareOptions) -> int:
    """`shadowtap replay compare`: run, compare, report; the exit code (3 when differences are
    above --max-diff-rate)."""
    def show(latency: dict[str, Any], result: dict[str, Any]) -> None:
        if options.report:
            write_report(str(Path(options.report) / "latency.json"), latency)
            write_output(str(Path(options.report) / "compare.json"),
                         orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
            write_output(str(Path(options.report) / "compare.html"),
                         format_html(latency, "shadowtap compare", result).encode())
        print(format_table(latency), file=sys.stderr, flush=True)
        print(format_diffs(result), flush=True)
        shown.append(result)

    shown: list[dict[str, Any]] = []
    summary = await compare_run(options, show)
    if summary.aborted:
        print(f"shadowtap: aborted: {summary.aborted}", file=sys.stderr, flush=True)
    if summary.exit_code:
        return summary.exit_code
    failing = shown[0]["failing"]
    if failing:
        print(f"shadowtap: real differences above --max-diff-rate {100 * options.max_diff_rate:g}% on "
              f"{len(failing)} endpoint(s): {', '.join(failing[:5])}", file=sys.stderr)
        return EXIT_VERDICT
    return 0


async def compare_run(options: CompareOptions,
                      on_report: Callable[[dict[str, Any], dict[str, Any]], None]) -> Summary:
    """Run compare mode and hand its latency report and its differences (with `failing`, the
    endpoints above --max-diff-rate) to `on_report`, also when the run fails or is cancelled."""
    if options.report:
        try:
            os.makedirs(options.report, exist_ok=True)
        except OSError as e:
            raise StreamError(f"cannot create the report directory {options.report!r}: {e.strerror or e}") from e
    check_writable(options.outcomes, "the outcomes")
    source = open_replay_source(options.input, False, options.stream)
    replay = dataclasses.replace(options.replay, capture=True)
    stats = ScheduleStats()
    target_stats = StatsListener((t.name, t.url) for t in options.targets)
    listeners: list[Listener] = [target_stats]
    if options.outcomes:
        listeners.append(outcome_writer(options.outcomes, options.stream.settings))
    diffs = DiffStats(secondary=len(options.targets) == 3, relative=options.relative, absolute=options.absolute,
                      examples=options.examples)
    comparer = Comparer(options, diffs)
    summary: Summary | None = None
    try:
        summary = await run_replay(source, options.targets, replay, listeners, stats=stats, hooks=comparer)
    finally:
        with suppress(Exception):
            await source.close()
        comparer.close()
        stats.skipped.update(source.skipped)
        result = diffs.summary()
        result["max_diff_rate"] = options.max_diff_rate
        result["failing"] = failing_endpoints(result, options.max_diff_rate)
        on_report(build_report(stats, target_stats, summary.aborted if summary else None), result)
    return summary
