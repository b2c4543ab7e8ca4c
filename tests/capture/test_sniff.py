"""`capture sniff` on loopback against a real nginx: every request recorded once (loopback
shows each packet twice to a packet socket), no drops at 500 requests/s, clean stops, and one
clear sentence without the privileges."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time

import orjson
import pytest

from scripts.local_nginx import LocalNginx
from tests.capture.pcap_helpers import tool
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration
DROPS = re.compile(r"drops: kernel (\d+) \(of (\d+) packets the filter passed\), own (\d+)")


class Sniffer:
    """`shadowtap capture sniff` in the background, ready once it says it is listening."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "shadowtap", "capture", "sniff", *args], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        line = b""
        while b"listening on" not in line and time.monotonic() < deadline:
            line = self.proc.stderr.readline()  # type: ignore[union-attr]
            if not line and self.proc.poll() is not None:
                pytest.fail(f"sniff exited with {self.proc.returncode}")
        assert b"listening on lo (filter: tcp port" in line, line

    def wait(self, timeout: float) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"sniff did not stop within {timeout} s: {err.decode()}")
        return self.proc.returncode, err.decode()


def paced_requests(port: int, count: int, rate: float, connections: int = 4) -> None:
    """`count` GETs at `rate` per second on keep-alive connections, each on an absolute deadline."""
    pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(connections)]
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        conn = pool[i % connections]
        conn.request("GET", f"/r/{i}?rate={rate:g}", headers={"X-N": str(i)})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"ok\n"
        assert time.monotonic() - start < count / rate + 20, "client fell far behind"
    for conn in pool:
        conn.close()


def test_2000_requests_at_500_per_second_all_recorded_no_drops(tmp_path):
    out = tmp_path / "sniff.jsonl"
    with LocalNginx('$request_uri $status') as nginx:
        sniff = Sniffer("--iface", "lo", "--port", str(nginx.port), "-o", str(out), "--count", "2000",
                        "--duration", "40")
        paced_requests(nginx.port, 2000, 500.0)
        code, err = sniff.wait(30)
    assert code == 0, err
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(records) == 2000
    assert sorted(int(r["target"].split("/")[2].split("?")[0]) for r in records) == list(range(2000))
    assert all(r["response"]["status"] == 200 and r["origin"]["kind"] == "sniff" for r in records)
    assert all(r["response"]["elapsed_ms"] >= 0 and not r["fields"].get("incomplete") for r in records)
    summary = err.strip().splitlines()[-1]
    kernel, passed, own = map(int, DROPS.search(summary).groups())
    assert (kernel, own) == (0, 0), summary
    assert "2000 records written" in summary and "tcp gaps: 0" in summary and passed > 4000


def test_sigterm_stops_and_writes_what_it_has(tmp_path):
    out = tmp_path / "sniff.jsonl"
    with LocalNginx('$request_uri $status') as nginx:
        sniff = Sniffer("--iface", "lo", "--port", str(nginx.port), "-o", str(out))
        paced_requests(nginx.port, 30, 200.0, connections=1)
        time.sleep(0.5)
        sniff.proc.send_signal(signal.SIGTERM)
        code, err = sniff.wait(15)
    assert code == 0
    assert len(out.read_bytes().splitlines()) == 30
    assert "30 records written" in err and "drops: kernel 0" in err


def test_without_cap_net_raw_one_clear_sentence(tmp_path):
    os.chmod(tmp_path, 0o777)
    res = subprocess.run([tool("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-m", "shadowtap", "capture", "sniff", "--iface", "lo",
                          "-o", str(tmp_path / "out.jsonl"), "--duration", "1"],
                         cwd=REPO, capture_output=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.decode() == ("shadowtap: error: capture sniff needs root or the CAP_NET_RAW capability "
                                   "to open a packet socket on 'lo'\n")


def test_unknown_interface_and_bad_filter_are_usage_errors():
    res = run_cli("capture", "sniff", "--iface", "nosuch0", "-o", "-", "--duration", "1")
    assert res.returncode == 2 and b"no network interface named 'nosuch0' (there are: " in res.stderr
    res = run_cli("capture", "sniff", "--iface", "lo", "--bpf", "tcp port banana", "-o", "-", "--duration", "1")
    assert res.returncode == 2 and b"cannot use the BPF filter 'tcp port banana'" in res.stderr
