"""A real HAProxy (Debian haproxy) in front of an aiohttp backend, logging real requests:

(a) `option httplog` over UDP syslog to `shadowtap capture haproxy --listen`;
(b) a custom `log-format` to stdout (`log stdout format raw`), redirected to a file.

The records must say what was sent (method, target, status, client, timing fields), and the
Authorization header, the session cookie and the `?token=` sent never appear in any output.
"""

from __future__ import annotations

import asyncio
import http.client
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from aiohttp import web

from scripts.local_haproxy import LocalHaproxy
from scripts.procs import free_port
from tests.conftest import REPO, run_cli
from tests.support import complete_jsonl, wait_for

SECRETS = (b"s3cr3t-token", b"s3cr3t-auth", b"s3cr3t-cookie")


class Backend:
    """aiohttp in a background thread: `/status/N` answers N, `/slow` waits 60 ms, else 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        if request.path.startswith("/status/"):
            return web.Response(status=int(request.path.rsplit("/", 1)[1]), text="status")
        if request.path == "/slow":
            await asyncio.sleep(0.06)
        return web.Response(text="x" * 100)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> Backend:
        self._thread.start()
        assert self._started.wait(10), "backend did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


REQUESTS = [
    ("GET", "/a?n=1", {}, 200),
    ("GET", "/status/404?n=2", {}, 404),
    ("POST", "/submit?n=3", {"Content-Type": "text/plain"}, 200),
    ("GET", "/slow?n=4", {}, 200),
    ("HEAD", "/h?n=5", {}, 200),
    ("GET", "/login?n=6&token=s3cr3t-token", {"Authorization": "Bearer s3cr3t-auth",
                                              "Cookie": "theme=dark; sid=s3cr3t-cookie"}, 200),
]


def send_all(port: int) -> None:
    for method, target, headers, status in REQUESTS:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(method, target, body=b"hello" if method == "POST" else None,
                     headers={"User-Agent": "shadowtap-test/1", **headers})
        response = conn.getresponse()
        response.read()
        assert response.status == status
        conn.close()




def read_jsonl(path) -> list[dict]:
    return complete_jsonl(path)


def check_records(recs: list[dict], backend: Backend, proxy: LocalHaproxy) -> None:
    by_n = {int(r["target"].split("n=")[1].split("&")[0]): r for r in recs}
    assert sorted(by_n) == [1, 2, 3, 4, 5, 6]
    for n, (method, target, _headers, status) in enumerate(REQUESTS, 1):
        r = by_n[n]
        assert (r["method"], r["response"]["status"], r["client"], r["version"]) == (
            method, status, "127.0.0.1", "HTTP/1.1")
        assert r["target"] == target.replace("s3cr3t-token", "SCRUBBED")
        assert r["origin"]["kind"] == "haproxy" and r["id"] and r["ts"] > time.time() - 600
        for timer in ("TR", "Tw", "Tc", "Tr"):
            assert int(r["fields"][timer]) >= 0, (timer, r["fields"])
        assert r["response"]["elapsed_ms"] >= int(r["fields"]["Tr"])
        assert r["fields"]["server_name"] == "s1" and r["fields"]["backend_name"] == "be"
    assert int(by_n[4]["fields"]["Tr"]) >= 60 and by_n[4]["response"]["elapsed_ms"] >= 60
    assert by_n[1]["response"]["bytes"] > 100


def test_httplog_over_udp_syslog_to_the_listener(tmp_path):
    udp = free_port(socket.SOCK_DGRAM)
    out, err = tmp_path / "r.jsonl", tmp_path / "listener.err"
    with open(err, "wb") as stderr_file:
        listener = subprocess.Popen(
            [sys.executable, "-m", "shadowtap", "capture", "haproxy", "--listen", f"udp://127.0.0.1:{udp}", "-o",
             str(out), "--capture-headers", "Host,User-Agent,Authorization,Cookie", "--poll-interval", "0.05",
             "--stats-interval", "0.2"],
            cwd=REPO, stderr=stderr_file)
    try:
        wait_for(lambda: b"listening on udp://127.0.0.1" in err.read_bytes(), what="the listener")
        with Backend() as backend, LocalHaproxy(backend.port, syslog=f"127.0.0.1:{udp}",
                                                capture_headers=("Host", "User-Agent", "Authorization", "Cookie"),
                                                capture_cookie="sid") as proxy:
            send_all(proxy.port)
            recs = wait_for(lambda: len(read_jsonl(out)) >= len(REQUESTS) and read_jsonl(out), what="6 records")
            check_records(recs, backend, proxy)
            for r in recs:
                assert r["host"] == f"127.0.0.1:{proxy.port}"
                assert dict(r["headers"])["User-Agent"] == "shadowtap-test/1"
                assert r["origin"]["name"] == f"udp://127.0.0.1:{udp}"
            login = next(r for r in recs if r["target"].startswith("/login"))
            assert dict(login["headers"])["Authorization"] == "SCRUBBED"
            assert dict(login["headers"])["Cookie"] == "SCRUBBED"
            assert login["fields"]["captured_request_cookie"] == "SCRUBBED"
        wait_for(lambda: b"stats:" in err.read_bytes(), what="a stats line")
        listener.send_signal(signal.SIGTERM)
        listener.wait(20)
        stderr = err.read_bytes()
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert listener.returncode == 0, stderr
    summary = stderr.decode().strip().splitlines()[-1]
    assert f"{len(REQUESTS)} records written" in summary and "0 datagrams dropped" in summary
    lines = int(summary.split(": ")[1].split(" lines")[0])
    skipped = int(summary.split("skipped: ")[1].split(" ")[0])
    assert lines == len(REQUESTS) + skipped  # HAProxy's own notices are the skips
    for secret in SECRETS:
        assert secret not in out.read_bytes() and secret not in stderr


CUSTOM = ("%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %U %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq "
          "%{+Q}HM %{+Q}HU %HV %{+Q}[capture.req.hdr(0)] %ID")


def test_custom_log_format_written_to_stdout_and_captured_from_the_file(tmp_path):
    out = tmp_path / "r.jsonl"
    with Backend() as backend, LocalHaproxy(backend.port, log_format=CUSTOM,
                                            capture_headers=("User-Agent",)) as proxy:
        send_all(proxy.port)
        wait_for(lambda: proxy.stdout_log.read_bytes().count(b"\n") >= len(REQUESTS), what="6 log lines")
        res = run_cli("capture", "haproxy", str(proxy.stdout_log), "--format", CUSTOM, "--capture-headers",
                      "User-Agent", "-o", str(out), "--dead-letter", str(tmp_path / "dead.jsonl"))
    assert res.returncode == 0, res.stderr
    recs = read_jsonl(out)
    check_records(recs, backend, proxy)
    for r in recs:
        assert r["headers"] == [["User-Agent", "shadowtap-test/1"]]
        assert r["fields"]["unique_id"] is None
    post = next(r for r in recs if r["method"] == "POST")
    assert int(post["fields"]["bytes_uploaded"]) > 5  # the request line, headers and body
    for secret in SECRETS:
        assert secret not in out.read_bytes() and secret not in res.stderr


@pytest.fixture(autouse=True)
def _haproxy_must_exist():
    """These tests fail (not skip) when haproxy is missing: LocalHaproxy raises with a hint."""
    from scripts.local_haproxy import find_haproxy

    find_haproxy()
