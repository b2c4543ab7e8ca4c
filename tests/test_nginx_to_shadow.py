"""End to end with a real nginx: awkward real requests → real access log → capture → replay.

The target is a raw recording server, so the test sees the exact bytes replay put on the wire.
"""

from __future__ import annotations

import socket

import orjson
import pytest

from scripts.local_nginx import LocalNginx
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent"')
JSON_FORMAT = ('{"time":"$time_iso8601","remote":"$remote_addr","host":"$host","request":"$request",'
               '"status":$status,"bytes":$body_bytes_sent,"rt":$request_time,'
               '"xff":"$http_x_forwarded_for","ua":"$http_user_agent"}')

LONG_QUERY = b"/search?q=" + b"abcdefghij" * 600  # a 6 kB request line

# (method, target bytes, Host, extra header lines, body)
AWKWARD = [
    (b"GET", b"/plain", b"shop.example.test", [], b""),
    (b"GET", b'/q?a=%22quoted%22&b=x"y"', b"shop.example.test", [b"User-Agent: say \"hi\" \\o/"], b""),
    (b"GET", b"/back\\slash?p=a\\b", b"api.example.test", [b"X-Forwarded-For: 10.1.2.3, 10.0.0.1"], b""),
    (b"GET", b"/with space/in path", b"shop.example.test", [], b""),
    (b"GET", b"/encoded%20space?x=%41%2F%7e", b"shop.example.test", [], b""),
    (b"GET", "/café/ünïcode?q=ß".encode(), b"shop.example.test", ["User-Agent: naïve/1.0".encode()], b""),
    (b"GET", LONG_QUERY, b"shop.example.test", [], b""),
    (b"HEAD", b"/static/logo.png", b"cdn.example.test", [], b""),
    (b"OPTIONS", b"/api/cart", b"shop.example.test", [b"Origin: https://shop.example.test"], b""),
    (b"POST", b"/api/cart/items", b"shop.example.test", [b"Content-Type: application/json"], b'{"sku":1}'),
    (b"GET", b"/last?page=2", b"shop.example.test", [b"User-Agent: curl/8.5.0"], b""),
]
REPLAYED = [r for r in AWKWARD if r[0] != b"POST"]
RAW_SPACE = 3  # nginx 1.22 answers a raw space in the target with 400, before reading the Host


def logged_host(index: int, host: bytes) -> str:
    """$host as nginx logs it: the server_name when it rejected the request before the headers."""
    return "localhost" if index == RAW_SPACE else host.decode()


def send_raw(port: int, method: bytes, target: bytes, host: bytes, extra: list[bytes], body: bytes) -> None:
    """One request on its own connection, bytes exactly as given; waits for the response."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host, *extra, b"Connection: close"]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        while s.recv(65536):
            pass


def capture_and_replay(tmp_path, nginx: LocalNginx, fmt_args: list[str], target_url: str):
    for req in AWKWARD:
        send_raw(nginx.port, *req)
    nginx.log_lines(len(AWKWARD))
    records = tmp_path / "records.jsonl"
    cap = run_cli("capture", "nginx", str(nginx.access_log), "-o", str(records), *fmt_args,
                  "--dead-letter", str(tmp_path / "dead.jsonl"))
    assert cap.returncode == 0, cap.stderr
    assert b"11 lines read, 11 records written" in cap.stderr
    report = tmp_path / "report.json"
    rep = run_cli("replay", "shadow", "-i", str(records), "--target", f"t={target_url}",
                  "--rate", "50", "--report", str(report), "--outcomes", str(tmp_path / "out.jsonl"))
    assert rep.returncode == 0, rep.stderr
    recs = [orjson.loads(line) for line in records.read_bytes().splitlines()]
    return recs, orjson.loads(report.read_bytes())


def assert_received_exactly(server, expect_host, logged_headers: set[bytes]) -> None:
    seen = server.requests
    assert [(r.method, r.target) for r in seen] == [(m, t) for m, t, *_ in REPLAYED]
    for got, (_, _, host, extra, _) in zip(seen, REPLAYED, strict=True):
        assert got.header("X-Shadowtap") == b"1"
        assert got.header("Host") == expect_host(host)
        assert got.version == b"HTTP/1.1"
        for line in extra:
            name, _, value = line.partition(b": ")
            if name in logged_headers:
                assert got.header(name.decode()) == value
            else:
                assert got.header(name.decode()) is None


def test_combined_log_replays_exactly_what_nginx_served(tmp_path, recording_server):
    with LocalNginx(COMBINED) as nginx:
        recs, report = capture_and_replay(tmp_path, nginx, [], recording_server.url)
    assert [r["method"].encode() for r in recs] == [m for m, *_ in AWKWARD]
    assert recs[RAW_SPACE]["target"] == "/with space/in path"
    assert all(r["host"] is None for r in recs)  # combined does not log the Host
    assert_received_exactly(recording_server, lambda _: f"127.0.0.1:{recording_server.port}".encode(),
                            {b"User-Agent"})
    assert report["schedule"]["skipped"] == {"write_method": 1}
    assert report["targets"]["t"]["requests"] == len(REPLAYED)
    assert report["targets"]["t"]["status"] == {"200": len(REPLAYED)}


def test_json_escaped_custom_format_keeps_host_forwarded_for_and_timing(tmp_path, recording_server):
    with LocalNginx(JSON_FORMAT, escape="json") as nginx:
        recs, report = capture_and_replay(tmp_path, nginx, ["--format", JSON_FORMAT, "--escape", "json"],
                                          recording_server.url)
    assert [r["host"] for r in recs] == [logged_host(i, h) for i, (_, _, h, _, _) in enumerate(AWKWARD)]
    xff = dict(recs[2]["headers"]).get("X-Forwarded-For")
    assert xff == "10.1.2.3, 10.0.0.1"
    assert "X-Forwarded-For" not in dict(recs[0]["headers"])
    assert [r["response"]["status"] for r in recs] == [400 if i == RAW_SPACE else 200 for i in range(len(recs))]
    assert all(r["response"]["elapsed_ms"] is not None for r in recs)
    expected_hosts = iter(logged_host(i, r[2]).encode() for i, r in enumerate(AWKWARD) if r[0] != b"POST")
    assert_received_exactly(recording_server, lambda _: next(expected_hosts), {b"User-Agent", b"X-Forwarded-For"})
    assert report["targets"]["t"]["errors"] == {}


def test_posts_are_sent_only_with_allow_writes(tmp_path, recording_server):
    with LocalNginx(COMBINED) as nginx:
        send_raw(nginx.port, b"POST", b"/api/cart/items", b"shop.example.test", [], b'{"sku":1}')
        send_raw(nginx.port, b"DELETE", b"/api/cart/items/1", b"shop.example.test", [], b"")
        nginx.log_lines(2)
        records = tmp_path / "records.jsonl"
        assert run_cli("capture", "nginx", str(nginx.access_log), "-o", str(records)).returncode == 0
    rep = run_cli("replay", "shadow", "-i", str(records), "--target", recording_server.url,
                  "--rate", "50", "--allow-writes")
    assert rep.returncode == 0, rep.stderr
    assert [(r.method, r.target) for r in recording_server.requests] == [
        (b"POST", b"/api/cart/items"), (b"DELETE", b"/api/cart/items/1")]
    assert all(r.header("X-Shadowtap") == b"1" for r in recording_server.requests)
