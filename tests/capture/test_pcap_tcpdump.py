"""Real traffic, real capture: curl, ab and a pipelining Python client talk to a real nginx on
loopback while Debian's tcpdump writes the pcap; `capture pcap` must give exactly the requests
that were sent, bodies byte-equal, each with nginx's response."""

from __future__ import annotations

import base64
import os
import random
import signal
import socket
import subprocess
import time
from collections import Counter

import pytest

from scripts.local_nginx import LocalNginx
from tests.capture.pcap_helpers import capture, summary, tool
from tests.capture.test_pcap_fast import compare

pytestmark = pytest.mark.integration


class Tcpdump:
    """tcpdump writing loopback traffic of one port to a file, stopped with SIGINT."""

    def __init__(self, path, port: int) -> None:
        # The ring's frames are sized by the snap length: 70000 holds any loopback packet (MTU 65536
        # + headers) whole, and 128 MiB then holds ~2000 of them, so bursts are not dropped.
        self.proc = subprocess.Popen([tool("tcpdump"), "-i", "lo", "-w", str(path), "-U", "--immediate-mode",
                                      "-s", "70000", "-B", "131072", f"tcp port {port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        line = b""
        while b"listening on" not in line and time.monotonic() < deadline:
            line = self.proc.stderr.readline()  # type: ignore[union-attr]
            if not line and self.proc.poll() is not None:
                pytest.fail(f"tcpdump exited: {self.proc.returncode}")
        assert b"listening on" in line, line

    def stop(self) -> str:
        time.sleep(0.3)  # the last ACKs and FINs
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=10)
        return err.decode()


def http_exchange(sock: socket.socket, count: int) -> bytes:
    """Read until `count` responses of nginx's `ok\\n` arrived (bounded by the socket timeout)."""
    data = b""
    while data.count(b"\r\n\r\nok\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def python_client(port: int, sent: list) -> None:
    rng = random.Random(5)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        # Pipelining: five GETs and two POSTs with binary bodies in one write.
        batch = []
        for i in range(5):
            batch.append(b"GET /pipe/%d?q=%d HTTP/1.1\r\nHost: t\r\nX-Seq: %d\r\n\r\n" % (i, i, i))
            sent.append(("GET", f"/pipe/{i}?q={i}", b""))
        for i in range(2):
            body = bytes(rng.randrange(256) for _ in range(3000 + i))
            head = b"POST /pipe/post%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (i, len(body))
            batch.append(head + body)
            sent.append(("POST", f"/pipe/post{i}", body))
        s.sendall(b"".join(batch))
        assert http_exchange(s, 7).count(b"HTTP/1.1 200") == 7
        # A chunked upload written piece by piece (several segments), with a trailer.
        chunks = [bytes(rng.randrange(256) for _ in range(n)) for n in (1, 100, 5000, 70000, 17)]
        s.sendall(b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in chunks:
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            time.sleep(0.01)
        s.sendall(b"0\r\nX-Checksum: 1\r\n\r\n")
        sent.append(("POST", "/chunked", b"".join(chunks)))
        assert b"HTTP/1.1 200" in http_exchange(s, 1)


def test_capture_of_real_loopback_traffic_gives_exactly_the_requests_sent(tmp_path, capsys, monkeypatch):
    curl, ab = tool("curl"), tool("ab")
    rng = random.Random(1)
    big = bytes(rng.randrange(256) for _ in range(300_000))
    (tmp_path / "big.bin").write_bytes(big)
    small = b"name=value&token=s3cret"
    (tmp_path / "small.txt").write_bytes(small)
    pcap = tmp_path / "traffic.pcap"
    sent: list[tuple[str, str, bytes]] = []
    with LocalNginx('$request_method $request_uri $status') as nginx:
        dump = Tcpdump(pcap, nginx.port)
        base = nginx.base_url
        # curl: one connection, keep-alive across several URLs; an upload with 100-continue;
        # HEAD; a chunked upload.
        run = [curl, "-s", "-o", os.devnull, "--max-time", "20"]
        subprocess.run([*run, f"{base}/curl/a?x=1&y=%41", "-o", os.devnull, f"{base}/curl/b"], check=True)
        sent += [("GET", "/curl/a?x=1&y=%41", b""), ("GET", "/curl/b", b"")]
        subprocess.run([*run, "-H", "Expect: 100-continue", "--data-binary", f"@{tmp_path / 'big.bin'}",
                        "-H", "Content-Type: application/octet-stream", f"{base}/curl/upload"], check=True)
        sent.append(("POST", "/curl/upload", big))
        subprocess.run([*run, "-I", f"{base}/curl/head"], check=True)
        sent.append(("HEAD", "/curl/head", b""))
        subprocess.run([*run, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{tmp_path / 'small.txt'}",
                        f"{base}/curl/chunked"], check=True)
        sent.append(("POST", "/curl/chunked", small))
        # ab: keep-alive GETs on 4 connections, and POSTs.
        subprocess.run([ab, "-q", "-k", "-n", "200", "-c", "4", f"{base}/ab/get?n=1"], check=True,
                       capture_output=True, timeout=60)
        sent += [("GET", "/ab/get?n=1", b"")] * 200
        subprocess.run([ab, "-q", "-n", "20", "-c", "2", "-p", str(tmp_path / "small.txt"), "-T",
                        "application/x-www-form-urlencoded", f"{base}/ab/post"], check=True, capture_output=True,
                       timeout=60)
        sent += [("POST", "/ab/post", small)] * 20
        python_client(nginx.port, sent)
        nginx_lines = nginx.log_lines(len(sent))
        err = dump.stop()
    assert "0 packets dropped by kernel" in err, err

    records, res = capture(pcap, tmp_path / "out.jsonl", "--no-scrub")
    assert res.returncode == 0, res.stderr
    got = Counter((r["method"], r["target"], base64.b64decode(r["body"]) if r["body"] else b"") for r in records)
    assert got == Counter(sent)
    assert len(records) == len(nginx_lines)
    assert all(r["response"]["status"] == 200 and not r["fields"].get("incomplete") for r in records)
    assert all(base64.b64decode(r["response"].get("body") or "") == (b"" if r["method"] == "HEAD" else b"ok\n")
               for r in records)
    upload = next(r for r in records if r["target"] == "/curl/upload")
    assert ["Expect", "100-continue"] in upload["headers"]
    chunked = next(r for r in records if r["target"] == "/chunked")
    assert chunked["fields"]["trailers"] == [["X-Checksum", "1"]]
    line = summary(res)
    assert "tcp gaps: 0 (0 bytes)" in line and "dropped 0" in line and "incomplete 0" in line
    pipelined = sorted((r for r in records if r["target"].startswith("/pipe/")), key=lambda r: r["target"])
    assert len({r["origin"]["pos"] for r in pipelined}) < len(pipelined)  # several in one frame
    assert len({r["id"] for r in records}) == len(records)
    # The fast path takes ab's keep-alive GETs (at least) and writes what the general path writes.
    for scrub in (True, False):
        _, taken = compare([pcap], tmp_path, capsys, monkeypatch, scrub=scrub)
        assert taken >= 200


def test_max_body_truncates_and_says_how_large_the_body_was(tmp_path):
    body = bytes(range(256)) * 400
    pcap = tmp_path / "big.pcap"
    with LocalNginx('$request_method $request_uri $status') as nginx:
        dump = Tcpdump(pcap, nginx.port)
        subprocess.run([tool("curl"), "-s", "-o", os.devnull, "--max-time", "20", "--data-binary", "@-",
                        f"{nginx.base_url}/up"], input=body, check=True)
        nginx.log_lines(1)
        dump.stop()
    (r,), _ = capture(pcap, tmp_path / "out.jsonl", "--max-body", "1000")
    assert base64.b64decode(r["body"]) == body[:1000]
    assert r["fields"]["body_truncated"] is True and r["fields"]["body_size"] == len(body)
    (whole,), _ = capture(pcap, tmp_path / "whole.jsonl")
    assert base64.b64decode(whole["body"]) == body and "body_truncated" not in whole["fields"]
