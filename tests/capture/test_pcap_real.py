"""`capture pcap` on every real capture in shared/data/real/pcap, checked against tshark run
in the test: the requests (client port, method, target), their paired responses, the bytes
of bodies (against tshark's own TCP reassembly), and losses that are reported, not hidden."""

from __future__ import annotations

import base64
import re
from collections import Counter

import pytest

from tests.capture.pcap_helpers import capture, follow, summary, tshark
from tests.conftest import SHARED_DATA

PCAP_DIR = SHARED_DATA / "pcap"
PCAPS = sorted(p for p in PCAP_DIR.iterdir() if p.suffix in (".pcap", ".pcapng"))


def decode_as(path) -> tuple[str, ...]:
    # SOURCES.md: tshark dissects HTTP on port 22 only when told to.
    return ("-d", "tcp.port==22,http") if "single-conn-22" in path.name else ()


def port(client: str) -> str:
    return client.rsplit(":", 1)[1]


def test_the_shared_captures_are_there():
    assert len(PCAPS) >= 20, PCAP_DIR


@pytest.mark.parametrize("pcap", PCAPS, ids=lambda p: p.name)
def test_requests_responses_and_losses_match_tshark(pcap, tmp_path):
    records, res = capture(pcap, tmp_path / "out.jsonl", "--no-scrub")
    assert res.returncode == 0, res.stderr
    line = summary(res)
    assert f"{len(records)} records written" in line

    rows = tshark(pcap, "http || tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment",
                  ["frame.number", "tcp.stream", "tcp.srcport", "http.request.method", "http.request.uri",
                   "http.request_in", "http.response.code", "tcp.analysis.lost_segment",
                   "tcp.analysis.ack_lost_segment", "http"], decode_as(pcap))
    requests = [(f, p, m, u) for f, _, p, m, u, _, _, _, _, http in rows if http and m]
    responses = [(req, code) for _, _, _, _, _, req, code, _, _, http in rows if http and code]

    ours = Counter((port(r["client"]), r["method"], r["target"]) for r in records)
    theirs = Counter((p, m, u) for _, p, m, u in requests)
    # tshark takes a lone method ("OPTIONS\n") for a request with an empty target; that is no
    # request line (RFC 9112 3), so it is a counted bad_request drop here.
    missing = theirs - ours
    assert all(target == "" for _, _, target in missing), missing
    if missing:
        assert "bad_request" in line
    # tshark has no HTTP/0.9 (SOURCES.md): the only requests it lacks must be simple requests.
    extra = ours - theirs
    assert all(r["version"] == "HTTP/0.9" and not r["headers"]
               for r in records if (port(r["client"]), r["method"], r["target"]) in extra), extra

    by_frame = {f: (p, m, u) for f, p, m, u in requests}
    theirs_pairs = Counter((*by_frame[req], int(code)) for req, code in responses if req in by_frame)
    ours_pairs = Counter((port(r["client"]), r["method"], r["target"], r["response"]["status"])
                         for r in records if r["response"] and r["response"]["status"] is not None)
    assert all(target == "" for _, _, target, _ in theirs_pairs - ours_pairs), theirs_pairs - ours_pairs
    # A response tshark could not dissect is one that lost bytes in a capture gap: such a
    # record says so; so does every request whose response tshark did not see either.
    for r in records:
        key = (port(r["client"]), r["method"], r["target"])
        status = r["response"]["status"] if r["response"] else None
        if (status is not None and (*key, status) in ours_pairs - theirs_pairs and key not in extra) \
                or (r["response"] is None and key in theirs):
            assert r["fields"].get("incomplete"), r

    # Data missing from the capture in a stream that carries HTTP (tshark also flags streams
    # whose start was simply not captured; those lose nothing) is counted as gaps, and what
    # the gaps hit is visible: incomplete records or counted drops.
    http_streams = {row[1] for row in rows if row[9]}
    lost = [row for row in rows if (row[7] or row[8]) and row[1] in http_streams]
    gaps = int(line.split("tcp gaps: ")[1].split(" ")[0])
    if lost:
        assert gaps > 0, line
        incomplete = sum(1 for r in records if r["fields"].get("incomplete"))
        dropped = int(line.split("dropped ")[1].split(" ")[0].rstrip(";"))
        assert incomplete + dropped > 0, line
    else:
        assert gaps == 0, line


BODY_FILES = ["zeek-post.pcap", "zeek-http-post-large.pcap", "zeek-100-continue.pcap",
              "zeek-content-length-in-request-body.pcap", "zeek-multipart-form-data.pcap",
              "zeek-pipelined-requests.pcap", "zeek-get.pcap", "zeek-bro.org.pcap", "zeek-cooper-grill-dvwa.pcapng"]


def dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        nl = data.index(b"\r\n", pos)
        size = int(data[pos:nl].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[nl + 2:nl + 2 + size])
        pos = nl + 2 + size + 2


@pytest.mark.parametrize("name", BODY_FILES)
def test_bodies_are_byte_equal_to_tsharks_reassembled_streams(name, tmp_path):
    pcap = PCAP_DIR / name
    records, res = capture(pcap, tmp_path / "out.jsonl", "--no-scrub")
    assert res.returncode == 0
    conversations = tshark(pcap, "tcp.flags.syn == 1 && tcp.flags.ack == 0 || tcp.len > 0",
                           ["tcp.stream", "tcp.srcport"])
    client_port_stream = {}
    for stream, src in conversations:
        client_port_stream.setdefault(src, int(stream))
    streams = follow(pcap, sorted({client_port_stream[port(r["client"])] for r in records}))
    checked = 0
    cursors: dict[int, list[int]] = {}
    for r in sorted(records, key=lambda r: (r["origin"]["pos"], r["id"])):
        problem = r["fields"].get("incomplete") or ""
        stream = client_port_stream[port(r["client"])]
        client, server = streams[stream]
        cursor = cursors.setdefault(stream, [0, 0])
        line = f"{r['method']} {r['target']} {r['version']}".encode()
        start = client.index(line, cursor[0])
        body_at = client.index(b"\r\n\r\n", start) + 4
        body = base64.b64decode(r["body"]) if r["body"] else b""
        if not problem.startswith("request_"):
            if any(n.lower() == "transfer-encoding" for n, _ in r["headers"]):
                assert dechunk(client[body_at:]).startswith(body)
            else:
                assert client[body_at:body_at + len(body)] == body
            checked += 1
        cursor[0] = body_at + len(body)
        resp = r["response"]
        if resp and resp["status"] and resp["status"] >= 200:
            status_at = re.compile(rb"HTTP/1\.[01] %d " % resp["status"]).search(server, cursor[1]).start()
            head_end = server.index(b"\r\n\r\n", status_at) + 4
            resp_body = base64.b64decode(resp["body"]) if resp.get("body") else b""
            if not problem.startswith("response_"):
                if any(n.lower() == "transfer-encoding" for n, _ in resp["headers"]):
                    assert dechunk(server[head_end:])[:len(resp_body)] == resp_body
                else:
                    assert server[head_end:head_end + len(resp_body)] == resp_body
                    assert resp["bytes"] == len(resp_body)
                checked += 1
            cursor[1] = head_end + len(resp_body)
    assert checked > 0


def test_one_dropped_response_in_a_thousand_is_one_incomplete_record(tmp_path):
    pcap = PCAP_DIR / "zeek-1000-requests-one-dropped-response.pcap"
    records, res = capture(pcap, tmp_path / "out.jsonl")
    responses = tshark(pcap, "http.response", ["http.request_in"])
    requests = tshark(pcap, "http.request", ["frame.number"])
    answered = {int(f) for (f,) in responses if f}
    unanswered = [int(f) for (f,) in requests if int(f) not in answered]
    assert len(records) == len(requests)
    incomplete = [r for r in records if r["fields"].get("incomplete")]
    # tshark names the request frame; the record names the request's first frame: the same
    # frame for these one-segment requests.
    assert [r["origin"]["pos"] for r in incomplete] == unanswered
    assert incomplete[0]["fields"]["incomplete"] == "response_gap" and incomplete[0]["response"] is None
    assert "1 response_stream_gap" in summary(res)


def test_ids_are_stable_and_unique_and_positions_are_frame_numbers(tmp_path):
    pcap = PCAP_DIR / "zeek-pipelined-requests.pcap"
    first, _ = capture(pcap, tmp_path / "a.jsonl")
    copy = tmp_path / "renamed.pcap"
    copy.write_bytes(pcap.read_bytes())
    second, _ = capture(copy, tmp_path / "b.jsonl")
    assert [r["id"] for r in first] == [r["id"] for r in second]
    assert len({r["id"] for r in first}) == len(first)
    frames = {int(f) for (f,) in tshark(pcap, "tcp.len > 0 && tcp.srcport != 80", ["frame.number"])}
    assert all(r["origin"]["kind"] == "pcap" and r["origin"]["pos"] in frames for r in first)
    assert second[0]["origin"]["name"] == str(copy)


def test_timestamps_and_elapsed_from_the_packets(tmp_path):
    pcap = PCAP_DIR / "zeek-post.pcap"
    (r,), _ = capture(pcap, tmp_path / "out.jsonl")
    times = {int(f): float(t) for f, t in tshark(pcap, "tcp.len > 0", ["frame.number", "frame.time_epoch"])}
    request_frames = [int(f) for (f,) in tshark(pcap, "tcp.len > 0 && tcp.dstport == 80", ["frame.number"])]
    response_frames = [int(f) for (f,) in tshark(pcap, "tcp.len > 0 && tcp.srcport == 80", ["frame.number"])]
    assert r["ts"] == pytest.approx(times[request_frames[0]], abs=1e-6)
    expected = (times[response_frames[0]] - times[request_frames[-1]]) * 1000
    assert r["response"]["elapsed_ms"] == pytest.approx(expected, abs=0.002)


def test_secrets_are_scrubbed_by_default(tmp_path):
    pcap = PCAP_DIR / "zeek-basic-auth-with-colon.pcap"
    (scrubbed,), _ = capture(pcap, tmp_path / "a.jsonl")
    (kept,), _ = capture(pcap, tmp_path / "b.jsonl", "--no-scrub")
    auth = dict(kept["headers"])["Authorization"]
    assert auth.startswith("Basic ") and len(auth) > 10
    assert dict(scrubbed["headers"])["Authorization"] != auth
    assert auth not in (tmp_path / "a.jsonl").read_text()


def test_upgrades_stop_parsing_and_tunnel_packets_are_counted(tmp_path):
    records, res = capture(PCAP_DIR / "zeek-websocket.pcap", tmp_path / "out.jsonl")
    assert [(r["response"]["status"], r["fields"].get("incomplete")) for r in records] == [(101, None)]
    line = summary(res)
    total = int(line.split(" packets read")[0].split()[-1])
    http = int(line.split("(")[1].split(" in HTTP")[0])
    upgraded = int(line.split(" upgraded")[0].rsplit("(", 1)[1])
    assert http + upgraded == total and upgraded > 0
