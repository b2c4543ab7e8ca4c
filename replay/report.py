"""The end-of-run report (JSON and a plain-text table) and the live progress line."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import orjson

from replay.observe import ScheduleStats, StatsListener
from shadowtap.errors import StreamError

PROGRESS_INTERVAL_S = 0.25
"""The progress line is refreshed at most 4 times a second."""


def build_report(schedule: ScheduleStats, stats: StatsListener) -> dict[str, Any]:
    """The JSON report: schedule counters and, per target, counts and latency percentiles (ms)."""
    lag = schedule.lag.summary()
    rps = schedule.achieved_rps
    return {
        "schedule": {
            "planned": schedule.planned,
            "sent": schedule.sent,
            "dropped": schedule.dropped,
            "skipped": dict(sorted(schedule.skipped.items())),
            "achieved_rps": None if rps is None else round(rps, 1),
            "lag_ms": {"p50": lag["p50"], "p99": lag["p99"], "max": lag["max"]},
        },
        "targets": {
            name: {
                "url": t.url,
                "requests": t.requests,
                "responses": t.responses,
                "errors": dict(sorted(t.errors.items())),
                "status": dict(sorted(t.status.items())),
                "latency_ms": t.latency.summary(),
                "corrected_ms": t.corrected.summary(),
            }
            for name, t in stats.targets.items()
        },
    }


def write_report(path: str, report: dict[str, Any]) -> None:
    """Write the report as indented JSON to `path` (`-`: stdout)."""
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise StreamError(f"cannot write the report to {path!r}: {e.strerror or e}") from e


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """A plain-text summary: one schedule line, then one aligned row per target.

    ok % is the share of requests answered with a status below 400.
    """
    s = report["schedule"]
    skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "none"
    rps = "-" if s["achieved_rps"] is None else f"{s['achieved_rps']:.1f}"
    across = f" across {len(report['targets'])} targets" if len(report["targets"]) > 1 else ""
    lines = [
        f"schedule: planned {s['planned']}, sent {s['sent']}, dropped {s['dropped']}, "
        f"skipped: {skipped}; {rps} requests/s{across}; lag p99 {_ms(s['lag_ms']['p99'])} ms",
    ]
    header = ["target", "requests", "ok %", "errors", "p50 ms", "p99 ms", "max ms",
              "p50 corr", "p99 corr", "max corr"]
    rows = [header]
    for name, t in report["targets"].items():
        ok = sum(n for code, n in t["status"].items() if int(code) < 400)
        pct = f"{100.0 * ok / t['requests']:.1f}" if t["requests"] else "-"
        lat, cor = t["latency_ms"], t["corrected_ms"]
        rows.append([
            name, str(t["requests"]), pct, str(sum(t["errors"].values())),
            _ms(lat["p50"]), _ms(lat["p99"]), _ms(lat["max"]),
            _ms(cor["p50"]), _ms(cor["p99"]), _ms(cor["max"]),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


class Progress:
    """A live status line on stderr (sent, dropped, requests/s, in flight), until `stop()`."""

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
            sys.stderr.write(
                f"\r\x1b[Ksent {sent}  dropped {self._schedule.dropped}  "
                f"{rps:.0f} req/s  in flight {self._inflight()}"
            )
            sys.stderr.flush()

    def stop(self) -> None:
        self._task.cancel()
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
