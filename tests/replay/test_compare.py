"""`shadowtap replay compare` as a user runs it: a subprocess replaying a JSONL file to a primary,
a secondary (the same version) and a candidate (with a bug and a new field), all real HTTP
servers; the report must name the candidate's real differences and only those."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import orjson
from aiohttp import web

from replay.compare import Comparer
from replay.diff import DiffStats
from replay.options import CompareOptions, Target
from replay.send import Exchange
from shadowtap.record import Outcome, Record, encode_record
from tests.replay.test_offline_report import Page

SHADOWTAP = [sys.executable, "-m", "shadowtap"]
WAIT_S = 60.0
PRODUCTS = 100


def records() -> list[Record]:
    out = []
    for i in range(2 * PRODUCTS):
        out.append(Record(id=f"p{i}", ts=1_700_000_000.0 + i / 100, method="GET",
                          target=f"/api/products/{i % PRODUCTS + 1}"))
    for i in range(40):
        out.append(Record(id=f"s{i}", ts=1_700_000_003.0 + i / 100, method="GET", target=f"/api/search?q=w{i % 4}"))
    out.append(Record(id="h", ts=1_700_000_004.0, method="GET", target="/health"))
    out.append(Record(id="w", ts=1_700_000_004.1, method="POST", target="/api/cart"))
    return out


def version(candidate: bool):
    async def handle(request: web.Request, _server) -> web.StreamResponse:
        noise = {"X-Backend": uuid.uuid4().hex}  # which node answered: different on every response
        if request.path.startswith("/api/products/"):
            n = int(request.path.rsplit("/", 1)[1])
            body = {"id": n, "name": f"lamp {n}", "price": round(n * 1.5, 2), "tags": ["a", "b"],
                    "served_at": time.time(), "request_id": uuid.uuid4().hex}
            if candidate:
                body["currency"] = "EUR"  # a new field: a real difference on every product
                if n % 10 == 0:
                    body["price"] = round(n * 1.6, 2)  # the bug: a real difference on a tenth of them
            return web.json_response(body, headers=noise)
        if request.path == "/api/search":
            return web.json_response({"q": request.query["q"], "hits": [1, 2, 3], "took_ns": time.perf_counter_ns()},
                                     headers=noise)
        return web.Response(text="ok", headers=noise)

    return handle


async def run_compare(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*SHADOWTAP, "replay", "compare", *args, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    return proc.returncode, out.decode(), err.decode()


async def test_real_differences_are_found_and_noise_is_cancelled(serve, tmp_path):
    feed = tmp_path / "records.jsonl"
    feed.write_bytes(b"".join(encode_record(r) + b"\n" for r in records()))
    report = tmp_path / "report"
    async with serve(version(False)) as primary, serve(version(False)) as secondary, \
            serve(version(True)) as candidate:
        sides = ["--primary", primary.url, "--secondary", secondary.url, "--candidate", candidate.url]
        code, out, err = await run_compare("-i", str(feed), *sides, "--rate", "500", "--report", str(report))
        without_secondary = await run_compare("-i", str(feed), "--primary", primary.url, "--candidate",
                                              candidate.url, "--rate", "500")
        ignoring = await run_compare("-i", str(feed), *sides, "--rate", "500", "--ignore", "body.price",
                                     "--ignore", "body.currency")
        tolerant = await run_compare("-i", str(feed), *sides, "--rate", "500", "--max-diff-rate", "100%")
        assert len(primary.seen) == len(candidate.seen) == 4 * (2 * PRODUCTS + 41)  # every record, every run
        assert len(secondary.seen) == 3 * (2 * PRODUCTS + 41)
        assert not any(s.method == "POST" for s in candidate.seen)  # writes are not replayed by default
        assert all(s.header("X-Shadowtap") == "1" for s in candidate.seen)

    assert code == 3, err
    summary = orjson.loads((report / "compare.json").read_bytes())
    assert summary["compared"] == 2 * PRODUCTS + 41 and summary["incomplete"] == 0 and summary["secondary"]
    products = summary["endpoints"]["GET /api/products/{id}"]
    fields = products["fields"]
    assert products["requests"] == 2 * PRODUCTS
    assert fields["body.currency"]["real"] and fields["body.currency"]["raw_rate"] == 1.0
    assert fields["body.price"]["real"] and fields["body.price"]["raw"] == 2 * PRODUCTS // 10
    assert fields["body.price"]["noise"] == 0
    example = fields["body.price"]["examples"][0]
    n = int(example["request"]["target"].rsplit("/", 1)[1])
    assert (example["primary"], example["candidate"]) == (orjson.dumps(round(n * 1.5, 2)).decode(),
                                                          orjson.dumps(round(n * 1.6, 2)).decode())
    assert example["secondary"] == example["primary"]
    for noisy in ("body.served_at", "body.request_id", "header.x-backend"):
        assert not fields[noisy]["real"] and fields[noisy]["noise"] > 0, noisy
    assert "header.date" not in fields and "body.name" not in fields and "body.tags[0]" not in fields
    assert products["real_diff_requests"] == 2 * PRODUCTS  # the new field is on every product
    search = summary["endpoints"]["GET /api/search"]
    assert search["real_diff_requests"] == 0 and not any(f["real"] for f in search["fields"].values())
    assert summary["failing"] == ["GET /api/products/{id}"]
    page = (report / "compare.html").read_text()
    assert "<h3>GET /api/products/{id}: 200 of 200 requests (100.00%)</h3>" in page
    assert "<code>body.price</code>" in page and "2 endpoints without real differences" in page
    parsed = Page()
    parsed.feed(page)
    parsed.close()
    assert parsed.open == [] and parsed.scripts == 0
    latency = orjson.loads((report / "latency.json").read_bytes())
    assert latency["schedule"]["skipped"] == {"write_method": 1}
    assert set(latency["targets"]) == {"primary", "secondary", "candidate"}
    assert "    REAL  body.price  candidate 10.00%  secondary 0.00%\n" in out
    assert "(3 fields differed within the noise or below the thresholds: " in out
    assert "no real differences on 2 endpoint(s), 41 requests: GET /api/search, GET /health" in out
    assert "GET /api/products/{id}  200 requests, 200 (100.00%) with real differences" in out
    assert "primary" in err and "candidate" in err  # the latency table goes to stderr
    assert "real differences above --max-diff-rate 0% on 1 endpoint(s): GET /api/products/{id}" in err

    # Without a secondary nothing is cancelled: the timestamps and ids count as real.
    code2, out2, err2 = without_secondary
    assert code2 == 3, err2
    assert "no --secondary" in out2 and "    REAL  body.served_at  candidate 100.00%\n" in out2
    assert "GET /api/search  40 requests, 40 (100.00%) with real differences" in out2

    code3, out3, err3 = ignoring  # the two real differences left out: nothing real remains
    assert code3 == 0, err3
    assert "body.price" not in out3 and "241 requests compared, 0 with real differences" in out3

    code4, _, err4 = tolerant
    assert code4 == 0, err4


def test_a_record_missing_a_side_is_not_compared():
    """Dropped on one side (--max-inflight), cancelled at the stop, or never reported: counted
    as not compared; a timeout is an answer (error `timeout`) and is compared."""
    options = CompareOptions(input="-", targets=(Target("primary", "http://a"), Target("candidate", "http://b")))
    diffs = DiffStats(secondary=False)
    comparer = Comparer(options, diffs)
    ok = Exchange(b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def outcome(record: Record, side: str, error: str | None = None) -> Outcome:
        return Outcome(record.id, side, "", 0.0, 0.0, 1.0, None if error else 200, error)

    dropped, cancelled, timed_out, fine, unfinished = (
        Record(id=n, ts=0.0, method="GET", target=f"/{n}") for n in ("d", "c", "t", "f", "u"))
    comparer.on_result(dropped, outcome(dropped, "primary"), ok)
    comparer.on_drop(dropped, options.targets[1])
    comparer.on_result(cancelled, outcome(cancelled, "primary", "cancelled"), None)
    comparer.on_result(cancelled, outcome(cancelled, "candidate"), ok)
    for side in ("primary", "candidate"):
        comparer.on_result(timed_out, outcome(timed_out, side, "timeout" if side == "candidate" else None),
                           None if side == "candidate" else ok)
        comparer.on_result(fine, outcome(fine, side), ok)
    comparer.on_result(unfinished, outcome(unfinished, "primary"), ok)
    comparer.close()
    summary = diffs.summary()
    assert (summary["compared"], summary["incomplete"]) == (2, 3)
    timeout_fields = summary["endpoints"]["GET /t"]["fields"]
    assert set(timeout_fields) == {"status", "error", "body"} and timeout_fields["error"]["real"]
    assert summary["endpoints"]["GET /f"]["real_diff_requests"] == 0
