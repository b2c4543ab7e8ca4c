"""GoReplay `.gor` files: shadowtap's writer read back by shadowtap's reader gives the same
records; the payloads are valid HTTP/1.x for an independent parser (llhttp via httptools);
a hand-assembled GoReplay file reads correctly; `capture gor` ships and scrubs."""

from __future__ import annotations

import asyncio
import gzip

import httptools
import orjson
import pytest

from shadowtap.errors import StreamError
from shadowtap.record import Origin, Record, Response, record_to_dict
from shadowtap.streams import open_sink, open_source
from shadowtap.streams.gor import SEPARATOR, GorSink, GorSource
from tests.conftest import SHARED_DATA, run_cli

PCAPS = ["zeek-pipelined-requests.pcap", "zeek-100-continue.pcap", "zeek-http-post-large.pcap",
         "zeek-cooper-grill-dvwa.pcapng", "zeek-http_09.pcap", "zeek-docker-http-upgrade.pcap"]
CARRIED = ("id", "ts", "method", "target", "version", "host", "headers", "body")


def read_jsonl(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def carried(record: dict) -> dict:
    """What the gor format carries of a record (see shadowtap/streams/gor.py)."""
    out = {k: record[k] for k in CARRIED}
    out["truncation"] = {k: record["fields"].get(k) for k in ("body_truncated", "body_size")}
    resp = record["response"]
    if resp and resp["status"] is not None:
        out["response"] = {k: resp.get(k) for k in ("status", "elapsed_ms", "bytes", "headers", "body")}
    return out


def test_pcap_records_written_as_gor_read_back_identical(tmp_path):
    paths = [str(SHARED_DATA / "pcap" / name) for name in PCAPS]
    direct, gor, back = tmp_path / "direct.jsonl", tmp_path / "x.gor", tmp_path / "back.jsonl"
    assert run_cli("capture", "pcap", *paths, "-o", str(direct), "--max-body", "5000").returncode == 0
    res = run_cli("capture", "pcap", *paths, "-o", f"gor:{gor}", "--max-body", "5000")
    assert res.returncode == 0, res.stderr
    res = run_cli("cat", "-i", f"gor:{gor}", "-o", str(back))
    assert res.returncode == 0, res.stderr
    original, copy = read_jsonl(direct), read_jsonl(back)
    assert len(original) == len(copy) > 10
    assert any(r["fields"].get("body_truncated") for r in original)  # --max-body cut some bodies
    assert [carried(r) for r in copy] == [carried(r) for r in original]
    assert all(r["origin"]["kind"] == "gor" and r["origin"]["name"] == str(gor) for r in copy)


def test_written_payloads_are_valid_http_for_llhttp(tmp_path):
    records = [
        Record("a1", 1700000000.5, "POST", "/p?x=1", "HTTP/1.1", "h", (("Host", "h"), ("Content-Length", "5")),
               b"hello", response=Response(201, 12.5, 2, (("Content-Length", "2"),), b"ok")),
        Record("a2", 1700000001.0, "PUT", "/c", "HTTP/1.1", None, (("Transfer-Encoding", "chunked"),), b"abc",
               fields={"trailers": [["X-T", "1"]]}),
        Record("a3", 1700000002.0, "GET", "/", headers=(("Host", "h"),)),
    ]
    path = tmp_path / "w.gor"
    sink = GorSink(str(path))

    async def write():
        for r in records:
            await sink.send(r)
        await sink.close()

    asyncio.run(write())
    data = path.read_bytes()
    items = data.split(SEPARATOR)
    assert items[-1] == b"" and len(items) == 5  # 3 requests + 1 response, each followed by the separator
    metas = [item.split(b"\n", 1)[0].split(b" ") for item in items[:-1]]
    assert metas == [[b"1", b"a1", b"1700000000500000000", b"0"], [b"2", b"a1", b"1700000000512500000", b"0"],
                     [b"1", b"a2", b"1700000001000000000", b"0"], [b"1", b"a3", b"1700000002000000000", b"0"]]

    class Collect:
        def __init__(self):
            self.url, self.body, self.headers, self.done = b"", b"", [], False

        def on_url(self, url): self.url += url
        def on_header(self, name, value): self.headers.append((name, value))
        def on_body(self, body): self.body += body
        def on_message_complete(self): self.done = True

    for item, record in zip([items[0], items[2], items[3]], records, strict=True):
        c = Collect()
        p = httptools.HttpRequestParser(c)
        p.feed_data(item.split(b"\n", 1)[1])
        assert c.done and c.url == record.target.encode() and c.body == (record.body or b"")
        assert p.get_method().decode() == record.method
    c = Collect()
    httptools.HttpResponseParser(c).feed_data(items[1].split(b"\n", 1)[1])
    assert c.done and c.body == b"ok"


GOREPLAY_SAMPLE = (
    "1 8d4f8c7e0a3b11ee9c1f0242 1700000000000000000 1200000\n"
    "GET /search?q=shadow HTTP/1.1\r\nHost: api.example\r\nUser-Agent: curl/8.0\r\nCookie: s=1\r\n\r\n"
    "\n🐵🙈🙉\n"
    "1 5a6b7c8d9e0f1a2b3c4d5e6f 1700000000100000000 0\n"
    "POST /orders HTTP/1.1\r\nHost: api.example\r\nContent-Length: 13\r\n\r\n{\"item\": 42}\n"
    "\n🐵🙈🙉\n"
    "2 8d4f8c7e0a3b11ee9c1f0242 1700000000004200000 300000\n"
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5\r\n[1,2]\r\n0\r\n\r\n"
    "\n🐵🙈🙉\n"
    "3 8d4f8c7e0a3b11ee9c1f0242 1700000005000000000 900000\n"
    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
    "\n🐵🙈🙉\n"
    "2 ffffffffffffffffffffffffffffffffffffffff 1700000000200000000 0\n"
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    "\n🐵🙈🙉\n"
    "garbage-without-fields\nxyz"
    "\n🐵🙈🙉\n"
    "1 0123456789abcdef0123456789abcdef01234567 1700000001000000000\n"
    "DELETE /old HTTP/1.0\r\nHost: api.example\r\n\r\n"
    "\n🐵🙈🙉\n"
).encode()


@pytest.mark.parametrize("compress", [False, True])
def test_a_hand_assembled_goreplay_file_reads_correctly(tmp_path, compress):
    path = tmp_path / ("sample.gor.gz" if compress else "sample.gor")
    path.write_bytes(gzip.compress(GOREPLAY_SAMPLE) if compress else GOREPLAY_SAMPLE)
    source = GorSource(str(path))
    records = list(source.records())
    by_id = {r.id: r for r in records}
    assert sorted(by_id) == ["0123456789abcdef0123456789abcdef01234567", "5a6b7c8d9e0f1a2b3c4d5e6f",
                             "8d4f8c7e0a3b11ee9c1f0242"]
    get = by_id["8d4f8c7e0a3b11ee9c1f0242"]
    assert (get.method, get.target, get.host, get.ts) == ("GET", "/search?q=shadow", "api.example", 1700000000.0)
    assert get.headers[1] == ("User-Agent", "curl/8.0")
    # Response stamped 4.2 ms after the request's first packet; the request took 1.2 ms.
    assert get.response.status == 200 and get.response.body == b"[1,2]" and get.response.elapsed_ms == 3.0
    post = by_id["5a6b7c8d9e0f1a2b3c4d5e6f"]
    assert post.body == b'{"item": 42}\n' and post.response is None
    old = by_id["0123456789abcdef0123456789abcdef01234567"]  # a 40-hex ID and no latency field
    assert (old.method, old.version, old.response) == ("DELETE", "HTTP/1.0", None)
    assert source.skipped == {"replayed_response": 1, "response_without_request": 1, "bad_meta": 1}
    assert source.read == 7


def test_capture_gor_scrubs_and_summarizes(tmp_path):
    path = tmp_path / "sample.gor"
    path.write_bytes(GOREPLAY_SAMPLE)
    out = tmp_path / "out.jsonl"
    res = run_cli("capture", "gor", str(path), "-o", str(out))
    assert res.returncode == 0, res.stderr
    records = read_jsonl(out)
    assert len(records) == 3
    cookie = next(dict(r["headers"]).get("Cookie") for r in records if r["method"] == "GET")
    assert cookie != "s=1"
    assert res.stderr.decode().strip().splitlines()[-1] == (
        "shadowtap capture gor: 7 gor records read, 3 records written; skipped: 3 "
        "(1 replayed_response, 1 response_without_request, 1 bad_meta)")
    kept = tmp_path / "kept.jsonl"
    assert run_cli("capture", "gor", str(path), "-o", str(kept), "--no-scrub").returncode == 0
    assert any(["Cookie", "s=1"] in r["headers"] for r in read_jsonl(kept))


def test_gor_addresses_and_errors(tmp_path):
    res = run_cli("cat", "-i", "gor:", "-o", "-")
    assert res.returncode == 2 and b"gor: needs a file path" in res.stderr
    res = run_cli("cat", "-i", f"gor:{tmp_path / 'missing.gor'}", "-o", "-")
    assert res.returncode == 1 and b"does not exist" in res.stderr
    with pytest.raises(StreamError):
        GorSource(str(tmp_path / "missing.gor"))
    assert isinstance(open_source(f"gor:{tmp_path}/x"), GorSource) if (tmp_path / "x").touch() is None else False
    assert isinstance(open_sink(f"gor:{tmp_path}/y.gor"), GorSink)


def test_a_record_round_trips_through_gor_in_process(tmp_path):
    record = Record("id-1", 1700000000.123456, "PATCH", "/x?a=%ff", "HTTP/1.1", "h",
                    (("Host", "h"), ("Content-Length", "3"), ("X-Dup", "1"), ("X-Dup", "2")), b"\x00\x01\xff",
                    origin=Origin("pcap", "f.pcap", 9),
                    response=Response(304, 0.5, 0, (("ETag", '"x"'),), None))
    path = tmp_path / "one.gor"

    async def write():
        sink = GorSink(str(path))
        await sink.send(record)
        await sink.close()

    asyncio.run(write())
    (back,) = GorSource(str(path)).records()
    a, b = record_to_dict(record), record_to_dict(back)
    assert carried(a) == carried(b)
