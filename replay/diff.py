"""Field-level differences between responses, with noise cancelled (compare mode's engine).

A response becomes a flat map of fields to canonical text: `status` (or `error` when there
was no response), `header.<name>` for each header not ignored, and the body: a JSON body
flattened to one field per leaf (`body.items[0].price`, `body["a.b"]`), anything else as one
`body` field. Two responses differ in the fields whose texts differ or that one of them lacks.

Noise (Diffy's idea): the primary and a secondary, two instances of the same version, are
sent the same request; where even they differ (timestamps, request ids, random order) the
field is noisy. The candidate's differences from the primary (raw) count as real only where
they clearly exceed that noise: over a run, per endpoint and field, the raw rate must exceed
the noise rate by more than the absolute threshold and by more than the relative one.
Without a secondary every raw difference above the absolute threshold is real.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import httptools
import orjson

from replay.observe import path_template
from replay.options import DiffRules

TEXT_LIMIT = 256
"""A non-JSON body longer than this is compared by length and digest, not by its text."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class _Collector:
    """httptools callbacks gathering one response."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("utf-8", "replace")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def parse_response(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """(status, headers, body) of one HTTP/1.x response as received (chunks joined, the body
    decompressed when Content-Encoding says gzip or deflate and it decompresses), or None when
    the bytes are not a response."""
    collector = _Collector()
    parser = httptools.HttpResponseParser(collector)
    framed = True
    try:
        parser.feed_data(raw)
        if not collector.done:
            parser.feed_data(b"")  # a body delimited by the end of the connection
    except httptools.HttpParserError:
        if not collector.headers and not collector.body:
            return None
        framed = False
    try:
        status = parser.get_status_code()
    except httptools.HttpParserError:
        return None
    body = b"".join(collector.body)
    if not framed and any(n.lower() == "transfer-encoding" and "chunked" in v.lower() for n, v in collector.headers):
        body = raw[raw.find(b"\r\n\r\n") + 4:]  # the aiohttp client keeps the body already de-chunked
    encoding = next((v.strip().lower() for n, v in collector.headers if n.lower() == "content-encoding"), "")
    if encoding in ("gzip", "x-gzip", "deflate") and body:
        with suppress(OSError, EOFError, zlib.error):  # else compared as received
            body = gzip.decompress(body) if encoding != "deflate" else zlib.decompress(body)
    return status, collector.headers, body


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{orjson.dumps(key).decode()}]"


def flatten(value: Any, path: str, out: dict[str, str]) -> None:
    """One field per leaf of a JSON value; empty objects and lists are leaves."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            flatten(item, _join(path, key), out)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            flatten(item, f"{path}[{index}]", out)
    else:
        out[path] = orjson.dumps(value).decode()


def _body_fields(headers: list[tuple[str, str]], body: bytes, out: dict[str, str]) -> None:
    content_type = next((v.lower() for n, v in headers if n.lower() == "content-type"), "")
    if body and ("json" in content_type or body.lstrip()[:1] in (b"{", b"[")):
        try:
            flatten(orjson.loads(body), "body", out)
            return
        except orjson.JSONDecodeError:
            pass
    if len(body) <= TEXT_LIMIT:
        out["body"] = body.decode("utf-8", "backslashreplace")
    else:
        out["body"] = f"{len(body)} bytes, blake2b {_digest(body)}"


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def observe(raw: bytes | None, error: str | None, rules: DiffRules) -> dict[str, str]:
    """The fields of what one target answered (`error` is the outcome's error class, if any)."""
    if error is not None:
        return {"error": error}
    parsed = parse_response(raw) if raw else None
    if parsed is None:
        return {"error": "protocol"}
    status, headers, body = parsed
    out = {"status": str(status)}
    for name, value in headers:
        lower = name.lower()
        if lower not in rules.ignore_headers:
            key = f"header.{lower}"
            out[key] = f"{out[key]}, {value}" if key in out else value
    _body_fields(headers, body, out)
    return {k: v for k, v in out.items() if rules.kept(k)} if rules.ignore_fields else out


def differing(a: dict[str, str], b: dict[str, str]) -> frozenset[str]:
    """The fields whose texts differ, or that only one side has."""
    return frozenset(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def endpoint(method: str, target: str) -> str:
    """`METHOD /path/{id}`: requests are grouped by it."""
    return f"{method} {path_template(target)}"


def significant(raw: int, noise: int, requests: int, relative: float, absolute: float) -> bool:
    """Whether `raw` differences from the candidate clearly exceed the `noise` differences
    between primary and secondary over `requests` requests: by more than `absolute` (a share of
    the requests) and by more than `relative` (a share of the noise)."""
    if requests <= 0 or raw <= 0:
        return False
    return (raw - noise) / requests > absolute and raw > noise * (1 + relative)


@dataclass(slots=True)
class FieldStats:
    raw: int = 0
    """Requests whose candidate differed from the primary in this field."""
    noise: int = 0
    """Requests whose secondary differed from the primary in this field."""
    examples: list[dict[str, Any]] = field(default_factory=list)


FIELDS_MAX = 1000
"""Fields tracked per endpoint; further ones (maps keyed by ids, say) count as OTHER_FIELDS."""
OTHER_FIELDS = "(other fields)"
PATTERNS_MAX = 10_000
"""Distinct sets of differing fields kept per endpoint (see EndpointDiffs.untracked)."""
ENDPOINTS_MAX = 500
"""Endpoints tracked; further ones count as OTHER_ENDPOINTS."""
OTHER_ENDPOINTS = "(other endpoints)"


@dataclass(slots=True)
class EndpointDiffs:
    requests: int = 0
    """Requests compared (every side answered or failed)."""
    fields: dict[str, FieldStats] = field(default_factory=dict)
    patterns: Counter[frozenset[str]] = field(default_factory=Counter)
    """How many requests differed (raw) in exactly these fields."""
    untracked: int = 0
    """Requests whose set of differing fields came after PATTERNS_MAX others: counted as
    really different whenever any field of the endpoint is (an upper bound)."""


class DiffStats:
    """Differences per endpoint and field over a run; decisions are taken on the totals."""

    def __init__(self, secondary: bool, relative: float = 0.2, absolute: float = 0.0003, examples: int = 3) -> None:
        self.secondary = secondary
        self.relative = relative
        self.absolute = absolute
        self.examples = examples
        self.endpoints: dict[str, EndpointDiffs] = {}
        self.incomplete = 0
        """Records not compared: a side's request was dropped (--max-inflight)."""

    def add(self, name: str, raw: frozenset[str], noise: Iterable[str], sides: dict[str, dict[str, str]],
            request: dict[str, Any]) -> None:
        """One compared request: its endpoint `name`, the fields where the candidate differed
        (`raw`) and where the secondary did (`noise`), each side's fields (for examples)."""
        if name not in self.endpoints and len(self.endpoints) >= ENDPOINTS_MAX:
            name = OTHER_ENDPOINTS
        stats = self.endpoints.setdefault(name, EndpointDiffs())
        stats.requests += 1
        raw = frozenset(self._tracked(stats, key) for key in raw)
        if raw in stats.patterns or len(stats.patterns) < PATTERNS_MAX:
            stats.patterns[raw] += 1
        else:
            stats.untracked += 1
        for key in raw:
            entry = stats.fields[key]
            entry.raw += 1
            if len(entry.examples) < self.examples:
                entry.examples.append({"request": request, **{side: f.get(key) for side, f in sides.items()}})
        for key in {self._tracked(stats, key) for key in noise}:
            stats.fields[key].noise += 1

    @staticmethod
    def _tracked(stats: EndpointDiffs, key: str) -> str:
        """`key`, or OTHER_FIELDS once the endpoint tracks FIELDS_MAX fields; its entry exists."""
        if key not in stats.fields:
            if len(stats.fields) >= FIELDS_MAX:
                key = OTHER_FIELDS
            stats.fields.setdefault(key, FieldStats())
        return key

    def real_fields(self, stats: EndpointDiffs) -> set[str]:
        return {key for key, f in stats.fields.items()
                if significant(f.raw, f.noise, stats.requests, self.relative, self.absolute)}

    def summary(self) -> dict[str, Any]:
        """The report: per endpoint, requests, requests with real differences, and per field the
        raw and noise counts and rates, whether it is real, and examples."""
        endpoints = {}
        for name, stats in sorted(self.endpoints.items()):
            real = self.real_fields(stats)
            differing_requests = sum(n for pattern, n in stats.patterns.items() if pattern & real)
            if real:
                differing_requests += stats.untracked
            endpoints[name] = {
                "requests": stats.requests,
                "real_diff_requests": differing_requests,
                "real_diff_rate": round(differing_requests / stats.requests, 6),
                "untracked_requests": stats.untracked,
                "fields": {key: {"raw": f.raw, "noise": f.noise, "raw_rate": round(f.raw / stats.requests, 6),
                                 "noise_rate": round(f.noise / stats.requests, 6), "real": key in real,
                                 "examples": f.examples}
                           for key, f in sorted(stats.fields.items(), key=lambda kv: (-kv[1].raw, kv[0]))},
            }
        return {
            "compared": sum(s.requests for s in self.endpoints.values()),
            "incomplete": self.incomplete,
            "secondary": self.secondary,
            "thresholds": {"relative": self.relative, "absolute": self.absolute},
            "endpoints": endpoints,
        }


ENDPOINTS_NAMED = 10
"""Endpoints without real differences named in the text report's last line."""


def format_diffs(summary: dict[str, Any], fields_shown: int = 8) -> str:
    """The text report: the endpoints with real differences, most affected first, each with
    its real fields (an example each) and the noise it cancelled; then one line for the rest."""
    endpoints = summary["endpoints"]
    real_requests = sum(e["real_diff_requests"] for e in endpoints.values())
    lines = [f"compare: {summary['compared']} requests compared, {real_requests} with real differences"
             + (f", {summary['incomplete']} not compared (a side's request was dropped)" if summary["incomplete"]
                else "")
             + ("" if summary["secondary"] else " (no --secondary: no noise cancelled)")]
    differing = sorted((kv for kv in endpoints.items() if kv[1]["real_diff_requests"]),
                       key=lambda kv: (-kv[1]["real_diff_requests"], kv[0]))
    for name, e in differing:
        lines.append(f"{name}  {e['requests']} requests, {e['real_diff_requests']} "
                     f"({100 * e['real_diff_rate']:.2f}%) with real differences")
        real = [(key, f) for key, f in e["fields"].items() if f["real"]]
        for key, f in real[:fields_shown]:
            noise = f"  secondary {100 * f['noise_rate']:.2f}%" if summary["secondary"] else ""
            lines.append(f"    REAL  {key}  candidate {100 * f['raw_rate']:.2f}%{noise}")
            if f["examples"]:
                example = f["examples"][0]
                request = example["request"]
                lines.append(f"          e.g. {request['method']} {request['target']}: primary "
                             f"{_short(example.get('primary'))} -> candidate {_short(example.get('candidate'))}")
        if len(real) > fields_shown:
            lines.append(f"    ... {len(real) - fields_shown} more real fields in the report")
        cancelled = [key for key, f in e["fields"].items() if not f["real"]]
        if cancelled:
            shown = ", ".join(cancelled[:fields_shown]) + (", ..." if len(cancelled) > fields_shown else "")
            lines.append(f"    ({len(cancelled)} fields differed within the noise or below the thresholds: "
                         f"{shown})")
    rest = [name for name, e in endpoints.items() if not e["real_diff_requests"]]
    if rest:
        requests = sum(endpoints[name]["requests"] for name in rest)
        named = ", ".join(rest[:ENDPOINTS_NAMED]) + (", ..." if len(rest) > ENDPOINTS_NAMED else "")
        lines.append(f"no real differences on {len(rest)} endpoint(s), {requests} requests: {named}")
    return "\n".join(lines)


def _short(value: str | None, limit: int = 60) -> str:
    if value is None:
        return "(absent)"
    return value if len(value) <= limit else value[:limit - 3] + "..."
