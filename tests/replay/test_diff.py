"""The compare engine's pure parts: responses to fields, differences, noise, the summary."""

from __future__ import annotations

import gzip

from replay.diff import DiffStats, differing, endpoint, flatten, format_diffs, observe, parse_response, significant
from replay.options import DiffRules


def response(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_parse_response_joins_chunks_and_decompresses():
    chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert parse_response(chunked) == (201, [("Transfer-Encoding", "chunked"), ("X-A", "1")], b"abcde")
    zipped = response(gzip.compress(b'{"a":1}'), "Content-Encoding: gzip", "Content-Type: application/json")
    assert parse_response(zipped)[2] == b'{"a":1}'
    broken = response(b"not gzip", "Content-Encoding: gzip")
    assert parse_response(broken)[2] == b"not gzip"  # compared as received
    until_close = b"HTTP/1.0 200 OK\r\n\r\nall of it"
    assert parse_response(until_close) == (200, [], b"all of it")
    assert parse_response(b"garbage\r\n\r\n") is None
    # What the aiohttp client keeps: the headers as received, the body already de-chunked.
    dechunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{\"a\": [1, 2]}"
    assert parse_response(dechunked)[2] == b'{"a": [1, 2]}'


def test_flatten_names_every_leaf():
    out: dict[str, str] = {}
    flatten({"a": {"b": [1, {"c": None}], "e": {}}, "d.x": "é", "f": []}, "body", out)
    assert out == {"body.a.b[0]": "1", "body.a.b[1].c": "null", "body.a.e": "{}", 'body["d.x"]': '"é"',
                   "body.f": "[]"}


def test_observe_leaves_out_ignored_headers_and_fields():
    raw = response(b'{"id": 7, "meta": {"at": 1, "by": "x"}}', "Date: Tue, 1 Jan 2030 00:00:00 GMT",
                   "Content-Type: application/json", "Vary: A", "Vary: B")
    rules = DiffRules(ignore_fields=("body.meta.at",))
    assert observe(raw, None, rules) == {"status": "200", "header.content-type": "application/json",
                                         "header.vary": "A, B", "body.id": "7", "body.meta.by": '"x"'}
    assert observe(raw, None, DiffRules(frozenset()))["header.date"].startswith("Tue")
    assert observe(None, "timeout", rules) == {"error": "timeout"}
    assert observe(b"junk", None, rules) == {"error": "protocol"}
    text = observe(response(b"x" * 300, "Content-Type: text/html"), None, rules)
    assert text["body"].startswith("300 bytes, blake2b ")
    assert observe(response(b"plain"), None, rules)["body"] == "plain"


def test_differing_fields_include_those_only_one_side_has():
    assert differing({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == {"b", "c"}
    assert differing({"status": "200"}, {"error": "timeout"}) == {"status", "error"}


def test_endpoint_groups_ids():
    assert endpoint("GET", "/users/42/orders/6f1c9a2e-0d3b-4c1e-9a57-1f2e3d4c5b6a?x=1") == "GET /users/{id}/orders/{id}"


def test_significant_needs_both_thresholds():
    assert significant(10, 0, 100, 0.2, 0.0003)
    assert not significant(10, 9, 100, 0.2, 0.0003)  # within the noise
    assert significant(50, 10, 100, 0.2, 0.0003)  # well above it
    assert not significant(1, 0, 100_000, 0.2, 0.0003)  # 0.001% of requests: below the absolute threshold
    assert not significant(0, 0, 100, 0.2, 0.0003)


def test_summary_counts_requests_with_a_real_difference():
    stats = DiffStats(secondary=True, examples=1)
    request = {"id": "r", "method": "GET", "target": "/a"}
    sides = {"primary": {"x": "1"}, "secondary": {"x": "1"}, "candidate": {"x": "2"}}
    for i in range(100):
        raw = {"ts"} | ({"x"} if i < 20 else set())
        stats.add("GET /a", frozenset(raw), {"ts"}, sides, request)
    stats.incomplete = 2
    summary = stats.summary()
    a = summary["endpoints"]["GET /a"]
    assert (a["requests"], a["real_diff_requests"], a["real_diff_rate"]) == (100, 20, 0.2)
    assert a["fields"]["x"]["real"] and not a["fields"]["ts"]["real"]
    assert a["fields"]["x"]["examples"] == [{"request": request, "primary": "1", "secondary": "1", "candidate": "2"}]
    assert (summary["compared"], summary["incomplete"]) == (100, 2)
    text = format_diffs(summary)
    assert "100 requests compared, 20 with real differences, 2 not compared" in text
    assert "    REAL  x  candidate 20.00%  secondary 0.00%\n" in text
    assert "(1 fields differed within the noise or below the thresholds: ts)" in text


def test_memory_stays_bounded_when_every_response_differs_in_new_fields(monkeypatch):
    """Maps keyed by ids make new field names on every response: fields, sets of fields and
    endpoints are capped, and what goes beyond is counted, never dropped."""
    import replay.diff as diff

    monkeypatch.setattr(diff, "FIELDS_MAX", 20)
    monkeypatch.setattr(diff, "PATTERNS_MAX", 30)
    monkeypatch.setattr(diff, "ENDPOINTS_MAX", 3)
    stats = DiffStats(secondary=False, examples=0)
    request = {"id": "r", "method": "GET", "target": "/a"}
    for i in range(200):
        stats.add(f"GET /e{i % 5}", frozenset({f"body.items.k{i}", "body.total"}), (), {}, request)
    assert len(stats.endpoints) == 4 and diff.OTHER_ENDPOINTS in stats.endpoints
    for e in stats.endpoints.values():
        assert len(e.fields) <= 21 and len(e.patterns) <= 30
    summary = stats.summary()
    other = summary["endpoints"][diff.OTHER_ENDPOINTS]
    assert other["requests"] == 80 and other["fields"][diff.OTHER_FIELDS]["raw"] <= 80
    assert sum(e["requests"] for e in summary["endpoints"].values()) == 200
    assert all(e["real_diff_requests"] == e["requests"] for e in summary["endpoints"].values())  # total differs always

    patterns = DiffStats(secondary=False, examples=0)
    for i in range(1, 200):  # every request differs in its own set of the same eight fields
        patterns.add("GET /p", frozenset(f"f{bit}" for bit in range(8) if i >> bit & 1), (), {}, request)
    p = patterns.summary()["endpoints"]["GET /p"]
    assert len(patterns.endpoints["GET /p"].patterns) == 30 and p["untracked_requests"] == 199 - 30
    assert p["real_diff_requests"] == 199  # counted as different: an upper bound, here exact
