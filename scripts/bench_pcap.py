"""Benchmark: `capture pcap` against tshark, and the loss-free rate of `capture sniff`.

    .venv/bin/python scripts/bench_pcap.py [--requests N] [--repeat R] [--rates 5000,10000,15000] [--seconds S]

1. A keep-alive capture generated here from real traffic: ApacheBench (`ab -k -c 4`) sends N
   requests (default 100,000) to a real nginx on loopback while Debian's tcpdump writes the
   pcap (tcpdump's own drop count must be 0; the capture is retried when it is not). Then, on
   the same file in the same run, taking turns `--repeat` times (default 3):
   `tshark -r FILE -Y http.request -T fields -e http.request.uri` and
   `shadowtap capture pcap FILE -o OUT.jsonl`, each counted (shadowtap must write N records;
   tshark's count is shown: it sometimes misses a whole connection).
   Wall time and CPU time (user + system, of the process and its children) of each run;
   the ratios are tshark / shadowtap, per pair of adjacent runs, as ranges.
2. `capture sniff --iface lo` while a paced client (a separate process: asyncio, 32 keep-alive
   connections, absolute send times) sends each rate for S seconds (default 30) to nginx.
   A rate passes when records == requests sent and the kernel and shadowtap drops are 0;
   the table gives every rate tried and the highest that passed.

Figures from one run on a noisy machine: only same-run ratios mean anything.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.local_nginx import LocalNginx  # noqa: E402

SHADOWTAP = [sys.executable, "-m", "shadowtap"]
LOG_FORMAT = "$request_uri $status"


def tool(name: str) -> str:
    for path in (f"/usr/bin/{name}", f"/usr/sbin/{name}"):
        if os.path.exists(path):
            return path
    sys.exit(f"{name} is not installed (make system-deps)")


CAPTURE_ATTEMPTS = 3


def make_capture(path: Path, requests: int) -> tuple[int, str]:
    """Real keep-alive traffic from ab to nginx, written by tcpdump; (packets, tcpdump's report).
    A capture in which tcpdump dropped packets is not usable: it is made again."""
    for _ in range(CAPTURE_ATTEMPTS):
        with LocalNginx(LOG_FORMAT) as nginx:
            dump = subprocess.Popen([tool("tcpdump"), "-i", "lo", "-w", str(path), "-U", "--immediate-mode", "-s", "0",
                                     "-B", "262144", f"tcp port {nginx.port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assert dump.stderr is not None
            while b"listening on" not in dump.stderr.readline():
                if dump.poll() is not None:
                    sys.exit("tcpdump did not start")
            subprocess.run([tool("ab"), "-q", "-k", "-n", str(requests), "-c", "4",
                            f"{nginx.base_url}/item?id=42&page=1"], check=True, capture_output=True)
            time.sleep(0.5)
            dump.send_signal(signal.SIGINT)
            report = dump.communicate(timeout=30)[1].decode()
        captured = int(re.search(r"(\d+) packets captured", report).group(1))  # type: ignore[union-attr]
        dropped = int(re.search(r"(\d+) packets dropped by kernel", report).group(1))  # type: ignore[union-attr]
        if not dropped:
            return captured, report
        print(f"tcpdump dropped {dropped} packets: capturing again", file=sys.stderr)
    sys.exit(f"tcpdump dropped packets in {CAPTURE_ATTEMPTS} attempts: the machine is too busy, run again later")


def timed(args: list[str], stdout) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds, result) of one run of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(args, stdout=stdout, stderr=subprocess.PIPE, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), res


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """`low–high` of some figures (one figure when they are all equal)."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}–{high}"


def bench_files(workdir: Path, requests: int, repeat: int) -> None:
    pcap = workdir / "keepalive.pcap"
    packets, _ = make_capture(pcap, requests)
    size = pcap.stat().st_size
    print(f"capture: {requests} requests by ab -k -c 4 to nginx on lo, tcpdump: {packets} packets, "
          f"{size / 1e6:.1f} MB")
    runs: dict[str, list[tuple[float, float]]] = {"tshark": [], "shadowtap": []}
    found = {"tshark": 0, "shadowtap": 0}
    summary = ""
    for _ in range(repeat):
        with open(workdir / "tshark.txt", "wb") as out:
            wall, cpu, res = timed([tool("tshark"), "-r", str(pcap), "-Y", "http.request", "-T", "fields", "-e",
                                    "http.request.uri"], out)
        if res.returncode:
            sys.exit(f"tshark failed: {res.stderr.decode()}")
        found["tshark"] = sum(1 for _ in open(workdir / "tshark.txt", "rb"))
        runs["tshark"].append((wall, cpu))
        out_path = workdir / "records.jsonl"
        out_path.unlink(missing_ok=True)
        wall, cpu, res = timed([*SHADOWTAP, "capture", "pcap", str(pcap), "-o", str(out_path)], subprocess.DEVNULL)
        found["shadowtap"] = sum(1 for _ in open(out_path, "rb")) if out_path.exists() else 0
        if res.returncode or found["shadowtap"] != requests:
            sys.exit(f"shadowtap wrote {found['shadowtap']} of {requests} records: {res.stderr.decode()}")
        runs["shadowtap"].append((wall, cpu))
        summary = res.stderr.decode().strip().splitlines()[-1]
    print(f"\n{repeat} runs each, taking turns")
    print(f"{'':28} {'requests':>9} {'wall s':>11} {'CPU s':>11} {'requests/s (wall)':>18} {'packets/s (wall)':>17}")
    for name, label in (("tshark", "tshark -Y http.request"), ("shadowtap", "shadowtap capture pcap")):
        walls, cpus = [w for w, _ in runs[name]], [c for _, c in runs[name]]
        per_request = spread([found[name] / w for w in walls], "{:,.0f}")
        per_packet = spread([packets / w for w in walls], "{:,.0f}")
        print(f"{label:28} {found[name]:>9} {spread(walls):>11} {spread(cpus):>11} {per_request:>18} {per_packet:>17}")
    pairs = list(zip(runs["tshark"], runs["shadowtap"], strict=True))
    wall_ratios, cpu_ratios = [t[0] / o[0] for t, o in pairs], [t[1] / o[1] for t, o in pairs]
    print(f"ratio tshark / shadowtap, per pair of adjacent runs: wall {spread(wall_ratios)}x "
          f"(median {statistics.median(wall_ratios):.2f}x), CPU {spread(cpu_ratios)}x "
          f"(median {statistics.median(cpu_ratios):.2f}x); target: 5x")
    print(f"shadowtap: {summary}")


# -- live capture ------------------------------------------------------------------------------

CLIENT = r'''
import asyncio, sys, time
try:
    import uvloop
except ImportError:
    uvloop = None

async def main(port, rate, seconds, connections):
    total = int(rate * seconds)
    sent = done = errors = 0
    start = time.monotonic() + 0.2
    async def worker(k):
        nonlocal sent, done, errors
        reader = writer = None
        for i in range(k, total, connections):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /live/%d HTTP/1.1\r\nHost: bench\r\n\r\n" % i)
            sent += 1
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                done += 1
                if b"connection: close" in head.lower():
                    writer.close()
                    reader = writer = None
            except (asyncio.IncompleteReadError, ConnectionError):
                errors += 1
                reader = writer = None
    await asyncio.gather(*(worker(k) for k in range(connections)))
    late = time.monotonic() - start - seconds
    print(sent, done, errors, f"{late:.2f}")

(uvloop.run if uvloop else asyncio.run)(main(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), 32))
'''


def sniff_rate(rate: int, seconds: float, workdir: Path) -> tuple[bool, str]:
    out = workdir / f"sniff-{rate}.jsonl"
    out.unlink(missing_ok=True)
    with LocalNginx(LOG_FORMAT) as nginx:
        # nginx closes a keep-alive connection after keepalive_requests (1000): the client reconnects.
        sniff = subprocess.Popen([*SHADOWTAP, "capture", "sniff", "--iface", "lo", "--port", str(nginx.port),
                                  "-o", str(out)], cwd=REPO, stderr=subprocess.PIPE)
        assert sniff.stderr is not None
        while b"listening on" not in sniff.stderr.readline():
            if sniff.poll() is not None:
                sys.exit("capture sniff did not start (root or CAP_NET_RAW needed)")
        client = subprocess.run([sys.executable, "-c", CLIENT, str(nginx.port), str(rate), str(seconds)],
                                capture_output=True, text=True)
        sent, done, errors, late = client.stdout.split()
        time.sleep(1.0)
        sniff.send_signal(signal.SIGTERM)
        err = sniff.communicate(timeout=120)[1].decode()
    records = sum(1 for _ in open(out, "rb")) if out.exists() else 0
    summary = err.strip().splitlines()[-1]
    m = re.search(r"drops: kernel (\d+) .* own (\d+)", summary)
    kernel, own = (int(m.group(1)), int(m.group(2))) if m else (-1, -1)
    ok = records == int(sent) == int(done) and kernel == 0 and own == 0 and int(errors) == 0
    achieved = int(sent) / (seconds + max(0.0, float(late)))
    line = (f"{rate:>8} {seconds:>5.0f} {int(sent):>9} {achieved:>9.0f} {records:>9} {kernel:>7} {own:>5}  "
            f"{'yes' if ok else 'NO'}")
    return ok, line


def bench_sniff(rates: list[int], seconds: float, workdir: Path) -> None:
    if not rates:
        return
    if os.geteuid() != 0:
        print("\nsniff: skipped (needs root or CAP_NET_RAW)")
        return
    print(f"\ncapture sniff on lo, a paced client (32 keep-alive connections) for {seconds:.0f} s per rate")
    print(f"{'rate/s':>8} {'secs':>5} {'sent':>9} {'sent/s':>9} {'records':>9} {'kernel':>7} {'own':>5}  loss-free")
    best = 0
    for rate in rates:
        ok, line = sniff_rate(rate, seconds, workdir)
        print(line, flush=True)
        if ok:
            best = max(best, rate)
    print(f"highest loss-free rate tried: {best or 'none'} requests/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool, taking turns")
    parser.add_argument("--rates", default="5000,10000,15000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shadowtap-bench-pcap-") as tmp:
        workdir = Path(args.dir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench_files(workdir, args.requests, args.repeat)
        bench_sniff([int(r) for r in args.rates.split(",") if r], args.seconds, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
