"""Outcomes kept beyond a run: where `--outcomes` writes them (a JSONL file or a kafka:// topic)
and `shadowtap report`, the end-of-run report rebuilt from outcome files and topics.

Several files or topics (several replay processes or workers) merge exactly: every outcome is fed into
one StatsListener, so the histograms hold all values and no percentile is ever averaged.
Outcomes hold what happened to each request that reached a sender, not the schedule: planned,
dropped and skipped requests, schedule lag and why the run stopped are counted by the replaying
process only, so the report names them as missing instead of guessing them.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from replay.observe import PERCENTILES, Listener, OutcomeWriter, ScheduleStats, StatsListener, TargetStats
from replay.report import build_report, format_table, write_output, write_report
from shadowtap.errors import RecordError, UsageError, VersionError
from shadowtap.lines import iter_lines, open_input
from shadowtap.record import Outcome, decode_outcome

KAFKA_SCHEME = "kafka://"

NOT_IN_OUTCOMES = ("planned", "dropped", "skipped", "lag_ms", "late", "stopped")
"""Schedule counters only the replaying process knows (a dropped request leaves no outcome)."""


def outcome_writer(address: str, settings: tuple[tuple[str, str], ...] = ()) -> Listener:
    """The listener writing every outcome to `address`: a JSONL file (`-`: stdout), or a
    kafka:// topic (one message per outcome, key the record id; `settings` for librdkafka)."""
    if address.startswith(KAFKA_SCHEME):
        from shadowtap.streams.kafka import KafkaOutcomeWriter

        return KafkaOutcomeWriter(address, settings)
    return OutcomeWriter(address)


def _usable(o: Outcome) -> bool:
    """The fields the statistics compute with have the types they need."""
    number = (int, float)
    return (isinstance(o.target, str) and isinstance(o.url, str) and isinstance(o.path, str)
            and isinstance(o.intended, number) and isinstance(o.done, number)
            and (o.sent is None or isinstance(o.sent, number))
            and (o.status is None or isinstance(o.status, int)))


def _base_url(o: Outcome) -> str:
    """The target's URL: the outcome's URL without the request's own path."""
    if o.path.startswith("/") and o.url.endswith(o.path):
        return o.url[: len(o.url) - len(o.path)]
    return o.url


class _Reader:
    """Feeds outcome lines into per-target statistics; counts bad lines by reason per file."""

    def __init__(self) -> None:
        self.stats = StatsListener(())
        self.urls: dict[str, set[str]] = {}
        self.files: list[dict[str, Any]] = []
        self.bad: Counter[str] = Counter()
        self.outcomes = 0
        self.sent = 0
        self.first_sent: float | None = None
        self.last_done: float | None = None

    def add(self, o: Outcome) -> None:
        target = self.stats.targets.get(o.target)
        if target is None:
            target = self.stats.targets[o.target] = TargetStats(o.target, "")
            self.urls[o.target] = set()
        self.urls[o.target].add(_base_url(o))
        target.add(o)
        self.outcomes += 1
        if o.sent is not None:
            self.sent += 1
            self.first_sent = o.sent if self.first_sent is None else min(self.first_sent, o.sent)
            self.last_done = o.done if self.last_done is None else max(self.last_done, o.done)

    def _take(self, line: bytes, complete: bool) -> tuple[str, str]:
        """Add one outcome line; ("", "") or (reason, detail) when it is bad. VersionError raises."""
        if not line.strip():
            return "", ""
        try:
            o = decode_outcome(line)
        except VersionError:
            raise
        except RecordError as e:
            reason = "torn_last_line" if not complete else (
                "bad_json" if isinstance(e.__cause__, orjson.JSONDecodeError) else "malformed")
            return reason, e.message
        if not _usable(o):
            return "malformed", "a field has the wrong type"
        self.add(o)
        return "", ""

    def _count(self, name: str, items: Iterable[tuple[str, bytes, bool]]) -> None:
        """Take every (position, line, complete) of one input; count its outcomes and bad lines."""
        outcomes, bad, first_bad = 0, 0, ""
        for where, line, complete in items:
            before = self.outcomes
            reason, detail = self._take(line, complete)
            if reason:
                self.bad[reason] += 1
                bad += 1
                first_bad = first_bad or f"{reason} at {where}: {detail}"
            outcomes += self.outcomes - before
        self.files.append({"path": name, "outcomes": outcomes, "bad_lines": bad})
        if bad:
            print(f"shadowtap report: {name}: {bad} bad line(s) skipped (first: {first_bad})", file=sys.stderr)

    def read(self, path: str, settings: tuple[tuple[str, str], ...] = ()) -> None:
        """Read one file (`-`: stdin) or kafka:// topic (every message, start to end, no consumer
        group); a newer format version raises VersionError."""
        if path.startswith(KAFKA_SCHEME):
            from shadowtap.streams.kafka_admin import read_topic

            messages = read_topic(path, settings)
            self._count(path, ((f"partition {p} offset {o}", value, True) for p, o, value in messages))
            return
        f = open_input(path)
        try:
            self._count("stdin" if path == "-" else path,
                        ((f"byte {offset}", line, complete) for offset, line, complete in iter_lines(f, path)))
        finally:
            if f is not sys.stdin.buffer:
                f.close()

    def report(self) -> dict[str, Any]:
        for name, target in self.stats.targets.items():
            target.url = ", ".join(sorted(self.urls[name]))
        report = build_report(ScheduleStats(), self.stats)
        span = None if self.first_sent is None else round(self.last_done - self.first_sent, 6)
        report["schedule"] = {
            "sent": self.sent,
            "first_sent": self.first_sent,
            "last_done": self.last_done,
            "span_s": span,
            "achieved_rps": round(self.sent / span, 1) if span else None,
            "not_in_outcomes": list(NOT_IN_OUTCOMES),
        }
        report["input"] = {"files": self.files, "outcomes": self.outcomes, "bad_lines": dict(sorted(self.bad.items()))}
        return report


def report_from_outcomes(paths: Sequence[str], settings: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The report of all outcomes in `paths` (`-`: stdin, kafka://HOST:PORT/TOPIC: a whole
    topic, read with the librdkafka `settings`) together, in the layout of `replay shadow
    --report`, with `schedule` holding only what outcomes tell and `input` counting outcomes
    and bad lines per file or topic.

    `schedule.achieved_rps` is sent outcomes over first sent → last done across all files, so
    runs far apart in time lower it: it is the rate of the whole span, gaps included.
    """
    for path in paths:
        if path.startswith(KAFKA_SCHEME):
            from shadowtap.streams.kafka import parse_address

            parse_address(path)
        elif path != "-" and not os.path.exists(path):
            raise UsageError(f"outcomes file {path!r} does not exist")
    reader = _Reader()
    for path in paths:
        reader.read(path, settings)
    return reader.report()


CSV_COLUMNS = ("target", "endpoint", "requests", "responses", "errors",
               *(f"latency_{k}_ms" for k in PERCENTILES), *(f"corrected_{k}_ms" for k in PERCENTILES))


def format_csv(report: dict[str, Any]) -> str:
    """One row per target (endpoint empty) and one per endpoint, percentiles in ms.

    Endpoints keep only p50, p99 and max of latency and no corrected latency, so those cells
    are empty on endpoint rows; an empty percentile on a target row means no responses.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def cells(values: dict[str, float | None]) -> list[Any]:
        return ["" if values.get(k) is None else values[k] for k in PERCENTILES]

    for name, t in report["targets"].items():
        writer.writerow([name, "", t["requests"], t["responses"], sum(t["errors"].values()),
                         *cells(t["latency_ms"]), *cells(t["corrected_ms"])])
        for endpoint, e in t["endpoints"].items():
            writer.writerow([name, endpoint, e["requests"], e["requests"] - e["errors"], e["errors"],
                             *cells(e["latency_ms"]), *cells({})])
    return out.getvalue()


def report_main(paths: Sequence[str], fmt: str, output: str, settings: tuple[tuple[str, str], ...] = ()) -> int:
    """`shadowtap report`: build the report from `paths` and write it as `fmt` to `output`."""
    report = report_from_outcomes(paths, settings)
    if fmt == "json":
        write_report(output, report)
    elif fmt == "csv":
        write_output(output, format_csv(report).encode())
    elif fmt == "html":
        from replay.html import format_html

        write_output(output, format_html(report).encode())
    else:
        write_output(output, (format_table(report) + "\n").encode())
    return 0
