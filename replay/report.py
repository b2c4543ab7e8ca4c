"""The end-of-run report (JSON and a plain-text table) and the live progress line."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from replay.observe import LATE_MS, ScheduleStats, StatsListener, TargetStats
from shadowtap.errors import StreamError

PROGRESS_INTERVAL_S = 0.25
"""The progress line is refreshed at most 4 times a second."""


def _counts(counter: Counter[int] | Counter[str]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counter.items())}


def _endpoints(t: TargetStats) -> dict[str, Any]:
    """Endpoints by request count, most requested first."""
    ranked = sorted(t.endpoints.items(), key=lambda kv: (-kv[1].requests, kv[0]))
    return {
        name: {
            "requests": e.requests,
            "errors": e.errors,
            "status": _counts(e.status),
            "latency_ms": {k: v for k, v in e.latency.summary().items() if k in ("p50", "p99", "max")},
        }
        for name, e in ranked
    }


def build_report(schedule: ScheduleStats, stats: StatsListener, aborted: str | None = None) -> dict[str, Any]:
    """The JSON report: schedule counters and, per target, counts and latency percentiles (ms)."""
    rps = schedule.achieved_rps
    report: dict[str, Any] = {
        "schedule": {
            "planned": schedule.planned,
            "sent": schedule.sent,
            "dropped": schedule.dropped,
            "skipped": dict(sorted(schedule.skipped.items())),
            "achieved_rps": None if rps is None else round(rps, 1),
            "lag_ms": schedule.lag.summary(),
            "late": schedule.late,
            "late_ms": LATE_MS,
            "stopped": schedule.stopped,
        },
        "targets": {
            name: {
                "url": t.url,
                "requests": t.requests,
                "responses": t.responses,
                "errors": dict(sorted(t.errors.items())),
                "status": _counts(t.status),
                "latency_ms": t.latency.summary(),
                "corrected_ms": t.corrected.summary(),
                "endpoints": _endpoints(t),
            }
            for name, t in stats.targets.items()
        },
    }
    if aborted is not None:
        report["aborted"] = aborted
    return report


def write_report(path: str, report: dict[str, Any]) -> None:
    """Write the report as indented JSON to `path` (`-`: stdout), or as an HTML page when the
    name ends with `.html`."""
    if path.endswith(".html"):
        from replay.html import format_html

        write_output(path, format_html(report).encode())
        return
    write_output(path, orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def write_output(path: str, data: bytes) -> None:
    """Write a finished report (any format) to `path` (`-`: stdout)."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise StreamError(f"cannot write the report to {path!r}: {e.strerror or e}") from e


def ok_percent(target: dict[str, Any]) -> str:
    """The share of a target's requests answered with a status below 400, as the tables show it."""
    if not target["requests"]:
        return "-"
    ok = sum(n for code, n in target["status"].items() if int(code) < 400)
    return f"{100.0 * ok / target['requests']:.1f}"


def server_errors(status: dict[str, int]) -> int:
    """Answers with a 5xx status, from a report's `status` counts."""
    return sum(n for code, n in status.items() if int(code) >= 500)


def format_ms(value: float | None) -> str:
    """Milliseconds as the reports show them: two decimals below 100, one above."""
    return "-" if value is None else f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def _table(rows: list[list[str]]) -> list[str]:
    """Rows as aligned text: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]).rstrip()
            for r in rows]


def _schedule_lines(s: dict[str, Any], rps: str, across: str) -> list[str]:
    """The schedule as the replay that kept it counted it."""
    skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "none"
    lag = s["lag_ms"]
    return [
        f"schedule: planned {s['planned']}, sent {s['sent']}, dropped {s['dropped']}, "
        f"skipped: {skipped}; {rps} requests/s{across}; stopped: {s['stopped'] or '-'}",
        f"schedule lag ms: p50 {format_ms(lag['p50'])}, p99 {format_ms(lag['p99'])}, max {format_ms(lag['max'])}; "
        f"late (> {s['late_ms']:g} ms) {s['late']}",
    ]


def _outcome_lines(report: dict[str, Any], rps: str, across: str) -> list[str]:
    """The inputs and the little of the schedule that outcome files can tell (see replay.offline)."""
    s, read = report["schedule"], report["input"]
    bad = ", ".join(f"{k} {v}" for k, v in read["bad_lines"].items()) or "none"
    span = "-" if s["span_s"] is None else f"{s['span_s']:.3f} s"
    return [
        f"input: {read['outcomes']} outcomes from {len(read['files'])} file(s); bad lines: {bad}",
        f"schedule (from outcomes): sent {s['sent']} over {span} (first sent to last done), "
        f"{rps} requests/s{across}; not in outcomes: {', '.join(s['not_in_outcomes'])}",
    ]


ENDPOINT_ROWS = 10
"""Endpoints per target in the text table (the JSON report has all of them)."""


def format_table(report: dict[str, Any]) -> str:
    """A plain-text summary: the schedule, one aligned row per target, errors by class, and the
    busiest endpoints per target.

    ok % is the share of requests answered with a status below 400.
    """
    s = report["schedule"]
    rps = "-" if s["achieved_rps"] is None else f"{s['achieved_rps']:.1f}"
    across = f" across {len(report['targets'])} targets" if len(report["targets"]) > 1 else ""
    lines = _schedule_lines(s, rps, across) if "planned" in s else _outcome_lines(report, rps, across)
    if "aborted" in report:
        lines.append(f"aborted: {report['aborted']}")
    rows = [["target", "requests", "ok %", "errors", "p50 ms", "p99 ms", "max ms",
             "p50 corr", "p99 corr", "max corr"]]
    notes = []
    for name, t in report["targets"].items():
        lat, cor = t["latency_ms"], t["corrected_ms"]
        rows.append([
            name, str(t["requests"]), ok_percent(t), str(sum(t["errors"].values())),
            format_ms(lat["p50"]), format_ms(lat["p99"]), format_ms(lat["max"]),
            format_ms(cor["p50"]), format_ms(cor["p99"]), format_ms(cor["max"]),
        ])
        statuses = ", ".join(f"{code} {n}" for code, n in t["status"].items()) or "none"
        errors = ", ".join(f"{kind} {n}" for kind, n in t["errors"].items()) or "none"
        notes.append(f"{name}: status {statuses}; errors {errors}")
    lines += _table(rows)
    lines += notes
    for name, t in report["targets"].items():
        endpoints = list(t["endpoints"].items())
        if not endpoints:
            continue
        more = f" (top {ENDPOINT_ROWS} of {len(endpoints)})" if len(endpoints) > ENDPOINT_ROWS else ""
        lines.append(f"{name} endpoints{more}:")
        rows = [["  endpoint", "requests", "errors", "5xx", "p50 ms", "p99 ms", "max ms"]]
        for endpoint, e in endpoints[:ENDPOINT_ROWS]:
            lat = e["latency_ms"]
            rows.append([f"  {endpoint}", str(e["requests"]), str(e["errors"]), str(server_errors(e["status"])),
                         format_ms(lat["p50"]), format_ms(lat["p99"]), format_ms(lat["max"])])
        lines += _table(rows)
    return "\n".join(lines)


class Progress:
    """A live status line on stderr until `stop()`: sent, requests/s, schedule lag p99, late
    and dropped requests (the generator's own limits, kept apart from the target's), in flight."""

    def __init__(self, schedule: ScheduleStats, inflight: Callable[[], int]) -> None:
        self._schedule = schedule
        self._inflight = inflight
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_t, last_sent = loop.time(), 0
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            now, sent = loop.time(), self._schedule.sent
            rps = (sent - last_sent) / (now - last_t)
            last_t, last_sent = now, sent
            s = self._schedule
            (lag,) = s.lag.percentiles([99.0])
            sys.stderr.write(
                f"\r\x1b[Ksent {sent}  {rps:.0f} req/s  lag p99 {format_ms(lag)} ms  late {s.late}  "
                f"dropped {s.dropped}  in flight {self._inflight()}"
            )
            sys.stderr.flush()

    def stop(self) -> None:
        self._task.cancel()
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
