"""The report as one self-contained HTML page (`shadowtap report --format html`).

No scripts, fonts or files beside it: a page that can be mailed, attached to a ticket or
opened from a CI artifact years later. It shows what the text table shows (the schedule or
what outcome files tell of it, one row per target with raw and coordinated-omission-corrected
latency, statuses and errors, the endpoints of each target) and latency-by-percentile charts
drawn as inline SVG: p50, p90, p99, p99.9 and max evenly spaced (about one "nine" apart, as
HdrHistogram plots them, so the tail gets as much room as the median) on a logarithmic
latency axis. Every text from the data is escaped.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from replay.observe import PERCENTILES
from replay.report import format_ms, ok_percent, server_errors

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .7em;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:600}.muted{color:#666}svg text{font:12px system-ui,sans-serif}
"""
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
ENDPOINT_ROWS = 50
"""Endpoints shown per target (the JSON report has them all)."""


def _row(cells: list[str], numeric_from: int = 1, head: bool = False) -> str:
    tag = "th" if head else "td"
    return "<tr>" + "".join(
        f'<{tag}{" class=n" if k >= numeric_from and not head else ""}>{c}</{tag}>' for k, c in enumerate(cells)
    ) + "</tr>"


def _schedule(report: dict[str, Any]) -> list[str]:
    s = report["schedule"]
    rps = "-" if s.get("achieved_rps") is None else f"{s['achieved_rps']:.1f}"
    if "planned" in s:
        skipped = ", ".join(f"{escape(k)} {v}" for k, v in s["skipped"].items()) or "none"
        lag = s["lag_ms"]
        items = [f"planned {s['planned']}, sent {s['sent']}, dropped {s['dropped']}, skipped: {skipped}",
                 f"{rps} requests/s; stopped: {escape(str(s['stopped'] or '-'))}",
                 f"schedule lag p50 {format_ms(lag['p50'])} ms, p99 {format_ms(lag['p99'])} ms, "
                 f"max {format_ms(lag['max'])} ms; late (&gt; {s['late_ms']:g} ms) {s['late']}"]
    else:
        read = report.get("input", {})
        bad = ", ".join(f"{escape(k)} {v}" for k, v in read.get("bad_lines", {}).items()) or "none"
        span = "-" if s.get("span_s") is None else f"{s['span_s']:.3f} s"
        items = [f"{read.get('outcomes', 0)} outcomes from {len(read.get('files', []))} input(s); bad lines: {bad}",
                 f"sent {s['sent']} over {span} (first sent to last done), {rps} requests/s",
                 "not in outcomes: " + escape(", ".join(s.get("not_in_outcomes", ())))]
    if "aborted" in report:
        items.append(f'<span class=bad>aborted: {escape(report["aborted"])}</span>')
    return ["<h2>Schedule</h2><ul>", *(f"<li>{item}</li>" for item in items), "</ul>"]


def _targets(report: dict[str, Any]) -> list[str]:
    head = ["target", "URL", "requests", "ok %", "errors",
            *(f"{k} ms" for k in PERCENTILES), *(f"{k} corrected" for k in PERCENTILES)]
    rows = [_row(head, head=True)]
    notes = []
    for name, t in report["targets"].items():
        errors = sum(t["errors"].values())
        rows.append(_row([escape(name), escape(t["url"]), str(t["requests"]), ok_percent(t),
                          f"<span class=bad>{errors}</span>" if errors else "0",
                          *(format_ms(t["latency_ms"][k]) for k in PERCENTILES),
                          *(format_ms(t["corrected_ms"][k]) for k in PERCENTILES)], numeric_from=2))
        statuses = ", ".join(f"{escape(code)}: {n}" for code, n in t["status"].items()) or "none"
        kinds = ", ".join(f"{escape(kind)}: {n}" for kind, n in t["errors"].items()) or "none"
        notes.append(f"<li><b>{escape(name)}</b>: status {statuses}; errors {kinds}</li>")
    return ["<h2>Targets</h2>", "<table>", *rows, "</table>", "<ul>", *notes, "</ul>"]


def _chart(report: dict[str, Any], key: str, title: str) -> list[str]:
    """Latency (ms, log scale) by percentile, one line per target."""
    series = []
    for name, t in report["targets"].items():
        points = [(k, t[key][k]) for k in PERCENTILES if t[key][k] is not None]
        if points:
            series.append((name, points))
    if not series:
        return []
    width, height, left, bottom, top, right = 640, 300, 64, 40, 16, 120
    xs = {k: n for n, k in enumerate(PERCENTILES)}
    steps = len(PERCENTILES) - 1
    values = [max(v, 0.001) for _, points in series for _, v in points]
    low, high = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    high = max(high, low + 1)

    def x(k: str) -> float:
        return left + (width - left - right) * xs[k] / steps

    def y(v: float) -> float:
        return top + (height - top - bottom) * (high - math.log10(max(v, 0.001))) / (high - low)

    out = [f"<h2>{escape(title)}</h2>",
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}">']
    for decade in range(low, high + 1):
        yy = y(10.0 ** decade)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{10.0 ** decade:g} ms</text>')
    for k in PERCENTILES:
        label = "max" if k == "max" else f"p{PERCENTILES[k]:g}"
        out.append(f'<text x="{x(k):.1f}" y="{height - bottom + 18}" text-anchor="middle">{label}</text>')
    for n, (name, points) in enumerate(series):
        color = COLORS[n % len(COLORS)]
        path = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in points)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        out += [f'<circle cx="{x(k):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"><title>{escape(name)} '
                f'{escape(k)} {format_ms(v)} ms</title></circle>' for k, v in points]
        out.append(f'<text x="{width - right + 10}" y="{top + 16 * (n + 1)}" fill="{color}">{escape(name)}</text>')
    out.append("</svg>")
    return out


def _endpoints(report: dict[str, Any]) -> list[str]:
    out = []
    for name, t in report["targets"].items():
        endpoints = list(t["endpoints"].items())
        if not endpoints:
            continue
        more = f" (top {ENDPOINT_ROWS} of {len(endpoints)})" if len(endpoints) > ENDPOINT_ROWS else ""
        out += [f"<h2>Endpoints of {escape(name)}{more}</h2>", "<table>",
                _row(["endpoint", "requests", "errors", "5xx", "p50 ms", "p99 ms", "max ms"], head=True)]
        for endpoint, e in endpoints[:ENDPOINT_ROWS]:
            fives = server_errors(e["status"])
            lat = e["latency_ms"]
            out.append(_row([escape(endpoint), str(e["requests"]), str(e["errors"]),
                             f"<span class=bad>{fives}</span>" if fives else "0",
                             format_ms(lat["p50"]), format_ms(lat["p99"]), format_ms(lat["max"])]))
        out.append("</table>")
    return out


def _differences(diffs: dict[str, Any]) -> list[str]:
    """Compare mode's findings: the endpoints that really differ, field by field with an example
    each, then the others folded away."""
    endpoints = diffs["endpoints"]
    real = sorted(((name, e) for name, e in endpoints.items() if e["real_diff_requests"]),
                  key=lambda kv: (-kv[1]["real_diff_requests"], kv[0]))
    total = sum(e["real_diff_requests"] for e in endpoints.values())
    out = ["<h2>Differences</h2>",
           f"<p>{diffs['compared']} requests compared, <span class={'bad' if total else 'muted'}>{total} with real "
           f"differences</span>; {diffs['incomplete']} not compared. "
           + ("Noise measured against the secondary." if diffs["secondary"] else
              "No secondary: no noise cancelled.") + "</p>"]
    head = ["field", "candidate differs", "secondary differs", "example request", "primary", "candidate"]
    for name, e in real:
        out += [f"<h3>{escape(name)}: {e['real_diff_requests']} of {e['requests']} requests "
                f"({100 * e['real_diff_rate']:.2f}%)</h3>", "<table>", _row(head, numeric_from=1, head=True)]
        for key, f in e["fields"].items():
            if not f["real"]:
                continue
            example = f["examples"][0] if f["examples"] else {}
            request = example.get("request", {})
            out.append(_row([f"<code>{escape(key)}</code>", f"{100 * f['raw_rate']:.2f}%",
                             f"{100 * f['noise_rate']:.2f}%" if diffs["secondary"] else "-",
                             escape(f"{request.get('method', '')} {request.get('target', '')}"),
                             f"<code>{escape(str(example.get('primary')))}</code>",
                             f"<code>{escape(str(example.get('candidate')))}</code>"], numeric_from=1))
        out.append("</table>")
    calm = [name for name, e in endpoints.items() if not e["real_diff_requests"]]
    if calm:
        out += [f"<details><summary>{len(calm)} endpoints without real differences</summary><ul>",
                *(f"<li>{escape(name)} ({endpoints[name]['requests']} requests)</li>" for name in calm),
                "</ul></details>"]
    return out


def format_html(report: dict[str, Any], title: str = "shadowtap report", diffs: dict[str, Any] | None = None) -> str:
    """The whole page; with `diffs` (compare mode's summary) its differences come first."""
    body = [*(_differences(diffs) if diffs is not None else ()), *_schedule(report), *_targets(report),
            *_chart(report, "latency_ms", "Latency by percentile (sent → done)"),
            *_chart(report, "corrected_ms", "Corrected latency by percentile (intended → done)"),
            *_endpoints(report)]
    return "\n".join([
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>", f"<h1>{escape(title)}</h1>",
        '<p class=muted>Corrected latency counts from when each request was due (coordinated omission '
        "corrected); ok % is the share of requests answered below 400.</p>",
        *body, "</body></html>", "",
    ])
