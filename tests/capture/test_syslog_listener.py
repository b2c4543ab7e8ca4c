"""`capture haproxy --listen`: syslog over TCP (both framings, a broken frame) and a UDP burst
where every datagram is either received or counted as dropped by the kernel."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import orjson

from scripts.procs import free_port
from tests.conftest import REPO
from tests.support import complete_jsonl, wait_for

LINE = (b'<134>Nov 27 20:42:00 haproxy[7]: 10.0.0.%d:4%04d [27/Nov/2026:20:42:00.%03d] fe be/s1 0/0/1/2/3 200 %d '
        b'- - ---- 1/1/0/0/0 0/0 "GET /item/%d?token=s3cr3t HTTP/1.1"')


def line(n: int) -> bytes:
    return LINE % (n % 250, n % 10000, n % 1000, 100 + n, n)




def start(tmp_path, address: str) -> tuple[subprocess.Popen, object]:
    err = tmp_path / "listener.err"
    with open(err, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "shadowtap", "capture", "haproxy", "--listen", address, "-o",
             str(tmp_path / "r.jsonl"), "--dead-letter", str(tmp_path / "dead.jsonl"), "--poll-interval", "0.05"],
            cwd=REPO, stderr=stderr)
    wait_for(lambda: b"listening on" in err.read_bytes() or process.poll() is not None, what="the listener")
    assert process.poll() is None, err.read_text()
    return process, err


def stop(process: subprocess.Popen, err) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(20) == 0, err.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    return err.read_text()


def records(tmp_path) -> list[dict]:
    return complete_jsonl(tmp_path / "r.jsonl")


def test_tcp_octet_counting_newline_framing_and_a_broken_frame(tmp_path):
    port = free_port()
    process, err = start(tmp_path, f"tcp://127.0.0.1:{port}")
    try:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            stream = b"".join(b"%d %s" % (len(line(n)), line(n)) for n in range(50))
            stream += b"".join(line(n) + b"\n" for n in range(50, 100))
            for k in range(0, len(stream), 977):  # arbitrary cuts
                conn.sendall(stream[k:k + 977])
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(line(100) + b"\n" + b"2000000 broken")  # an octet count above the maximum
        wait_for(lambda: len(records(tmp_path)) >= 101, what="101 records")
    finally:
        summary = stop(process, err).strip().splitlines()[-1]
    recs = records(tmp_path)
    assert sorted(int(r["target"].split("/")[2].split("?")[0]) for r in recs) == list(range(101))
    assert all(r["target"].endswith("token=SCRUBBED") for r in recs)
    assert len({r["id"] for r in recs}) == 101
    [dead] = [orjson.loads(x) for x in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert dead["reason"] == "bad_frame" and dead["file"] == f"tcp://127.0.0.1:{port}"
    assert "102 lines read, 101 records written" in summary and "dead letters: 1" in summary
    assert b"s3cr3t" not in (tmp_path / "r.jsonl").read_bytes()


def test_udp_burst_every_datagram_received_or_counted_as_dropped(tmp_path):
    """The listener is stopped (SIGSTOP) while a burst larger than its receive buffer arrives:
    the kernel drops the rest, and the summary counts both."""
    port = free_port(socket.SOCK_DGRAM)
    process, err = start(tmp_path, f"udp://127.0.0.1:{port}")
    sent = 120_000
    try:
        process.send_signal(signal.SIGSTOP)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for n in range(sent):
                s.sendto(line(n) + b"\n", ("127.0.0.1", port))
        process.send_signal(signal.SIGCONT)
        previous = -1
        while (count := len(records(tmp_path))) != previous:  # until the output stops growing
            previous = count
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGCONT)
        summary = stop(process, err).strip().splitlines()[-1]
    received = int(summary.split("; ")[-1].split(" messages received")[0])
    dropped = int(summary.split("messages received, ")[1].split(" datagrams dropped")[0])
    print(f"\n{sent} sent, {received} received, {dropped} dropped")
    assert received + dropped == sent and dropped > 0
    assert len(records(tmp_path)) == received
