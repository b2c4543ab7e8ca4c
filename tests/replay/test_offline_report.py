"""`shadowtap report` from outcome files: merging real runs exactly, the formats, bad input."""

from __future__ import annotations

import asyncio
import csv
import io
import math
import subprocess
from html.parser import HTMLParser

import orjson
import pytest
from aiohttp import web

from replay.offline import report_from_outcomes
from shadowtap.record import Outcome, Record, encode_outcome
from tests.replay.test_replay_cli import RUN_TIMEOUT_S, SHADOWTAP, run_cli, write_input

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "max": 100.0}


def nearest_rank(values: list[float]) -> dict[str, float]:
    """Exact nearest-rank percentiles of `values`, the definition the histogram approximates."""
    ordered = sorted(values)
    return {k: ordered[max(1, math.ceil(p / 100.0 * len(ordered))) - 1] for k, p in PERCENTILES.items()}


def report(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SHADOWTAP, "report", *args], input=input, capture_output=True, timeout=RUN_TIMEOUT_S)


def requests(n: int, prefix: str) -> list[Record]:
    """`n` GETs, every fourth to /health and the others to /item/<i>."""
    return [Record(id=f"{prefix}{i}", ts=1_700_000_000.0 + i * 0.001, method="GET",
                   target="/health" if i % 4 == 0 else f"/item/{i}") for i in range(n)]


async def test_two_runs_merge_exactly_in_every_format(serve, tmp_path):
    delay = [0.0]

    async def slow(_request, _server):
        await asyncio.sleep(delay[0])
        return web.Response(text="ok")

    files = []
    async with serve(slow) as srv:
        for name, n, seconds in (("a", 40, 0.001), ("b", 60, 0.02)):
            delay[0] = seconds
            src = write_input(tmp_path / f"in-{name}.jsonl", requests(n, name))
            out = tmp_path / f"{name}.jsonl"
            code, _, err = await run_cli("replay", "shadow", "-i", src, "--target", f"x={srv.url}",
                                         "--target", f"y={srv.url}", "--rate", "max", "--outcomes", str(out))
            assert code == 0, err
            files.append(str(out))
    outcomes = [orjson.loads(line) for f in files for line in open(f, "rb")]
    assert len(outcomes) == 2 * (40 + 60)

    proc = report(*files, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    got = orjson.loads(proc.stdout)
    assert got["input"] == {"outcomes": 200, "bad_lines": {},
                            "files": [{"path": files[0], "outcomes": 80, "bad_lines": 0},
                                      {"path": files[1], "outcomes": 120, "bad_lines": 0}]}
    s = got["schedule"]
    sent = [o["sent"] for o in outcomes]
    assert (s["sent"], s["first_sent"], s["last_done"]) == (200, min(sent), max(o["done"] for o in outcomes))
    assert s["achieved_rps"] == pytest.approx(200 / (s["last_done"] - s["first_sent"]), rel=0.01)
    assert {"planned", "dropped", "lag_ms"} <= set(s["not_in_outcomes"])
    assert list(got["targets"]) == ["x", "y"]
    for name, t in got["targets"].items():
        mine = [o for o in outcomes if o["target"] == name]
        assert (t["url"], t["requests"], t["responses"], t["errors"], t["status"]) == (srv.url, 100, 100, {},
                                                                                       {"200": 100})
        for key, start in (("latency_ms", "sent"), ("corrected_ms", "intended")):
            expected = nearest_rank([(o["done"] - o[start]) * 1000.0 for o in mine])
            assert t[key] == pytest.approx(expected, rel=0.01, abs=0.001), key
        assert list(t["endpoints"]) == ["GET /item/{id}", "GET /health"]
        health = [(o["done"] - o["sent"]) * 1000.0 for o in mine if o["path"] == "/health"]
        e = t["endpoints"]["GET /health"]
        assert (e["requests"], e["errors"], e["status"]) == (25, 0, {"200": 25})
        expected = nearest_rank(health)
        assert e["latency_ms"] == pytest.approx({k: expected[k] for k in ("p50", "p99", "max")}, rel=0.01, abs=0.001)

    proc = report(*files, "--format", "csv", "-o", str(tmp_path / "r.csv"))
    assert proc.returncode == 0 and proc.stdout == b"", proc.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert [(r["target"], r["endpoint"], r["requests"]) for r in rows] == [
        ("x", "", "100"), ("x", "GET /item/{id}", "75"), ("x", "GET /health", "25"),
        ("y", "", "100"), ("y", "GET /item/{id}", "75"), ("y", "GET /health", "25"),
    ]
    for r in rows[0], rows[3]:
        t = got["targets"][r["target"]]
        assert float(r["latency_p999_ms"]) == t["latency_ms"]["p999"]
        assert float(r["corrected_max_ms"]) == t["corrected_ms"]["max"]
    assert rows[1]["latency_p90_ms"] == "" and float(rows[1]["latency_p99_ms"]) > 0

    proc = report(*files)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode().splitlines()
    assert text[0] == "input: 200 outcomes from 2 file(s); bad lines: none"
    assert text[1].startswith("schedule (from outcomes): sent 200 over ") and "not in outcomes: planned" in text[1]
    assert text[2].split()[:2] == ["target", "requests"] and text[3].split()[:3] == ["x", "100", "100.0"]


def write_outcomes(path, n: int) -> list[bytes]:
    lines = [encode_outcome(Outcome(f"r{i}", "t", f"http://h/item/{i}", 10.0 + i, 10.0 + i, 10.1 + i, 200,
                                    path=f"/item/{i}")) for i in range(n)]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return lines


def test_bad_lines_are_counted_never_fatal(tmp_path, capsys):
    good = write_outcomes(tmp_path / "o.jsonl", 3)
    wrong_type = good[0].replace(b'"done":10.1', b'"done":"soon"')
    (tmp_path / "o.jsonl").write_bytes(
        good[0] + b"\nnot json\n" + good[1] + b'\n{"v": 1, "id": "x"}\n' + wrong_type
        + b"\n\n" + good[2] + b'\n{"v": 1, "id": "torn'
    )
    got = report_from_outcomes([str(tmp_path / "o.jsonl")])
    assert got["input"]["bad_lines"] == {"bad_json": 1, "malformed": 2, "torn_last_line": 1}
    assert got["input"]["files"][0]["bad_lines"] == 4 and got["targets"]["t"]["requests"] == 3
    assert "4 bad line(s) skipped (first: bad_json at byte" in capsys.readouterr().err


def test_stdin_and_files_merge(tmp_path):
    stdin = b"".join(line + b"\n" for line in write_outcomes(tmp_path / "o.jsonl", 4))
    proc = report("-", str(tmp_path / "o.jsonl"), "--format", "json", input=stdin)
    assert proc.returncode == 0, proc.stderr
    t = orjson.loads(proc.stdout)["targets"]["t"]
    assert (t["url"], t["requests"], t["latency_ms"]["max"]) == ("http://h", 8, 100.0)


def test_missing_file_is_one_sentence_exit_2(tmp_path):
    write_outcomes(tmp_path / "o.jsonl", 1)
    proc = report(str(tmp_path / "o.jsonl"), str(tmp_path / "nope.jsonl"))
    err = proc.stderr.decode()
    assert proc.returncode == 2 and proc.stdout == b""
    assert err == f"shadowtap: error: outcomes file '{tmp_path / 'nope.jsonl'}' does not exist\n"


def test_newer_format_exits_1_naming_the_version(tmp_path):
    (tmp_path / "o.jsonl").write_bytes(b'{"v": 99, "id": "x"}\n')
    proc = report(str(tmp_path / "o.jsonl"))
    assert proc.returncode == 1 and b"outcome format v99 is newer" in proc.stderr and b"Traceback" not in proc.stderr


class Page(HTMLParser):
    """Checks that every element opened is closed in order, and gathers the page's text."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.text: list[str] = []
        self.svgs = 0
        self.polylines = 0
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.svgs += tag == "svg"
        self.polylines += tag == "polyline"
        self.scripts += tag == "script"
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.polylines += tag == "polyline"

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (self.open[-5:], tag)
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


async def test_html_page_shows_the_report_and_escapes_what_it_shows(serve, tmp_path):
    """A real run with a failing endpoint and a hostile path: the page is well formed, holds the
    JSON report's figures, draws a line per target, runs no script, and shows the path as text."""
    async def app(request, _server):
        if request.path.startswith("/fail"):
            return web.Response(status=503, text="down")
        return web.Response(text="ok")

    records = [*requests(30, "h"),
               Record(id="evil", ts=1_700_000_001.0, method="GET", target="/x/<script>alert(1)</script>"),
               Record(id="f", ts=1_700_000_001.1, method="GET", target="/fail/1")]
    async with serve(app) as srv:
        src = write_input(tmp_path / "in.jsonl", records)
        out = tmp_path / "outcomes.jsonl"
        code, _, err = await run_cli("replay", "shadow", "-i", src, "--target", f"stable={srv.url}",
                                     "--target", f"next={srv.url}", "--rate", "max", "--outcomes", str(out))
        assert code == 0, err
    page_path = tmp_path / "report.html"
    proc = report(str(out), "--format", "html", "-o", str(page_path))
    assert proc.returncode == 0, proc.stderr
    html = page_path.read_text()
    assert html.startswith("<!doctype html>") and "<script>alert" not in html
    page = Page()
    page.feed(html)
    page.close()
    assert page.open == [] and page.scripts == 0
    assert page.svgs == 2 and page.polylines == 4  # raw and corrected latency, one line per target
    text = " ".join(page.text)
    assert "/x/<script>alert(1)</script>" in text  # shown as text, not markup
    got = orjson.loads(report(str(out), "--format", "json").stdout)
    for name, t in got["targets"].items():
        assert name in text and f"{t['latency_ms']['p99']:.2f}" in text
        assert f"503: {t['status']['503']}" in text


async def test_a_run_writes_its_report_as_a_page_when_asked(serve, tmp_path):
    async with serve() as srv:
        src = write_input(tmp_path / "in.jsonl", requests(20, "p"))
        code, _, err = await run_cli("replay", "shadow", "-i", src, "--target", f"only={srv.url}", "--rate", "200",
                                     "--report", str(tmp_path / "run.html"))
        assert code == 0, err
    page = Page()
    page.feed((tmp_path / "run.html").read_text())
    page.close()
    text = " ".join(page.text)
    assert page.open == [] and page.polylines == 2
    assert "planned 20, sent 20, dropped 0" in text and "schedule lag p50" in text
