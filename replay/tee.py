"""Tee mode: copy a (live) stream of records to one debug target and show what came back.

One line per request on stdout, as the responses arrive:

    12:00:01.234  GET  /api/items/42?x=1  200 -> 500  12.3ms  differs  [dump 000003-r42]

(when the request was due, method, request target, the original status (`-` when the record
has none), the new status or error class, latency from the send, then notes). `--dump DIR`
keeps the exchanges worth a look: those whose status differs from the original, those that
failed, or all of them with `--dump-all`. The engine's --timeout and --max-inflight bound
what a hanging debug build can hold up: its requests time out, further ones are dropped (a
`dropped` line), and the stream keeps moving.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TextIO

import orjson

from replay.engine import Summary, run_replay, skip_writes
from replay.observe import Listener, ScheduleStats, StatsListener
from replay.offline import outcome_writer
from replay.options import Match, ReplayOptions, Target, TeeOptions
from replay.report import build_report, format_table, write_report
from replay.send import Exchange
from replay.shadow import check_writable
from replay.sources import open_tee_source
from shadowtap.errors import StreamError
from shadowtap.record import Outcome, Record, outcome_to_dict, record_to_dict

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def compile_match(match: Match) -> Callable[[Record], bool]:
    """A predicate for one `--match` filter (see Match)."""
    if match.kind == "method":
        methods = {m.strip().upper() for m in match.value.split(",")}
        return lambda r: r.method.upper() in methods
    if match.kind == "path":
        pattern = re.compile(match.value)
        return lambda r: pattern.search(r.target) is not None
    if match.kind == "header":
        name = match.name.lower()
        if not match.value:
            return lambda r: any(n.lower() == name for n, _ in r.headers)
        return lambda r: any(n.lower() == name and v == match.value for n, v in r.headers)
    if match.kind == "status":
        wanted = [s.strip().lower() for s in match.value.split(",")]

        def status_matches(r: Record) -> bool:
            status = r.response.status if r.response is not None else None
            if status is None:
                return False
            code = str(status)
            return any(w == code or (w.endswith("xx") and w[0] == code[0]) for w in wanted)

        return status_matches
    raise ValueError(f"unknown --match kind {match.kind!r}")


def tee_skip(options: ReplayOptions, matches: tuple[Match, ...]) -> Callable[[Record], str | None]:
    """Writes are skipped unless allowed (`write_method`); records failing a --match, `no_match`."""
    writes = skip_writes(options)
    predicates = [compile_match(m) for m in matches]

    def skip(record: Record) -> str | None:
        why = writes(record)
        if why is None and not all(p(record) for p in predicates):
            return "no_match"
        return why

    return skip


def _clock_time(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def original_status(record: Record) -> int | None:
    return record.response.status if record.response is not None else None


class Dumper:
    """Writes exchanges to `DIR/NNNNNN-<id>/`: `request.http` (the bytes sent), `response.http`
    (the bytes received, when there was a response), `original-response.http` (when the record
    carries the original headers or body), and `meta.json` (the record, the outcome, and why
    it was dumped)."""

    def __init__(self, directory: str, dump_all: bool) -> None:
        self.directory = Path(directory)
        self.dump_all = dump_all
        self.count = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StreamError(f"cannot create the dump directory {directory!r}: {e.strerror or e}") from e

    def why(self, record: Record, outcome: Outcome) -> str | None:
        """Why this exchange is worth dumping, or None."""
        if outcome.status is None:
            return f"error: {outcome.error}"
        original = original_status(record)
        if original is not None and original != outcome.status:
            return f"status {original} -> {outcome.status}"
        return "all" if self.dump_all else None

    def write(self, record: Record, outcome: Outcome, exchange: Exchange | None, why: str) -> str:
        """Write one dump; returns its directory name."""
        self.count += 1
        name = f"{self.count:06d}-{_UNSAFE.sub('_', record.id)[:80]}"
        path = self.directory / name
        path.mkdir(exist_ok=True)
        if exchange is not None:
            (path / "request.http").write_bytes(exchange.request)
            if exchange.response is not None:
                (path / "response.http").write_bytes(exchange.response)
        original = record.response
        if original is not None and (original.headers is not None or original.body is not None):
            head = [f"HTTP/1.1 {original.status or 0}".encode()]
            head += [f"{n}: {v}".encode("utf-8", "surrogateescape") for n, v in original.headers or ()]
            (path / "original-response.http").write_bytes(b"\r\n".join(head) + b"\r\n\r\n" + (original.body or b""))
        meta = {"why": why, "record": record_to_dict(record), "outcome": outcome_to_dict(outcome)}
        (path / "meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
        return name


class TeeLines:
    """The engine hooks of tee: one line per request to `out`, dumps when asked for."""

    def __init__(self, out: TextIO, dumper: Dumper | None) -> None:
        self.out = out
        self.dumper = dumper

    def on_result(self, record: Record, outcome: Outcome, exchange: Exchange | None) -> None:
        original = original_status(record)
        new = str(outcome.status) if outcome.status is not None else outcome.error or "error"
        note = ""
        if original is not None and outcome.status is not None and outcome.status != original:
            note = "  differs"
        elif outcome.status is None:
            note = f"  {outcome.reason}" if outcome.reason else ""
        if self.dumper is not None:
            why = self.dumper.why(record, outcome)
            if why is not None:
                note += f"  [dump {self.dumper.write(record, outcome, exchange, why)}]"
        latency = outcome.latency_ms
        self._line(outcome.intended, record, original, new, "-" if latency is None else f"{latency:.1f}ms", note)

    def on_drop(self, record: Record, target: Target) -> None:
        self._line(time.time(), record, original_status(record), "dropped", "-",
                   "  (--max-inflight requests outstanding)")

    def _line(self, t: float, record: Record, original: int | None, new: str, latency: str, note: str) -> None:
        self.out.write(f"{_clock_time(t)}  {record.method}  {record.target}  {original or '-'} -> {new}  {latency}"
                       f"{note}\n")
        self.out.flush()


async def tee_main(options: TeeOptions) -> int:
    """`shadowtap replay tee`: lines on stdout, the summary table on stderr, dumps and outcomes
    where asked. Returns the exit code (130 after Ctrl-C, the usual way to end --follow)."""
    check_writable(options.report, "the report")
    check_writable(options.outcomes, "the outcomes")
    source = open_tee_source(options.input, options.follow, options.from_end, options.stream)
    dumper = Dumper(options.dump, options.dump_all) if options.dump else None
    replay = dataclasses.replace(options.replay, capture=dumper is not None)
    stats = ScheduleStats()
    target_stats = StatsListener([(options.target.name, options.target.url)])
    listeners: list[Listener] = [target_stats]
    if options.outcomes:
        listeners.append(outcome_writer(options.outcomes, options.stream.settings))
    summary: Summary | None = None
    try:
        summary = await run_replay(source, [options.target], replay, listeners, stats=stats,
                                   hooks=TeeLines(sys.stdout, dumper), skip=tee_skip(replay, options.matches))
    finally:
        with suppress(Exception):
            await source.close()
        stats.skipped.update(source.skipped)
        report = build_report(stats, target_stats, summary.aborted if summary else None)
        if options.report:
            write_report(options.report, report)
        print(format_table(report), file=sys.stderr, flush=True)
        if dumper is not None:
            print(f"shadowtap: {dumper.count} exchanges dumped to {os.fspath(dumper.directory)}", file=sys.stderr)
    if summary.aborted:
        print(f"shadowtap: aborted: {summary.aborted}", file=sys.stderr, flush=True)
    return summary.exit_code
