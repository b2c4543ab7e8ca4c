"""Benchmark: `shadowtap capture nginx|haproxy FILE -o OUT.jsonl` on 1,000,000-line logs.

    .venv/bin/python scripts/bench_capture.py [--lines N] [--repeat N] [--dir /tmp/shadowtap-bench]

Generates (once, seeded) an nginx `combined` log and a HAProxy `httplog` file with a syslog
prefix and captured Host/User-Agent headers: a shop-like mix where a quarter of the targets
have a query string (some with `token=`, which scrubbing replaces) and a third of the
referers do. The inputs are read into the page cache first and the previous run's output is
synced before each run. Each run is its own process; wall time gives lines/s, os.wait4 gives
that process's peak RSS. Beside them, in the same run:

- `wc -l`: the raw read floor;
- the peers: bare `python -c` loops doing what a first shipper does per line (one regex,
  a dict, orjson.dumps, one write per chunk), without scrubbing, accounting or checkpoints,
  one for each format;
- for HAProxy also the floor: shadowtap's own strict line regex, its groups formatted into one
  fixed template as long as shadowtap's records, nothing else (no nulls, caches, scrubbing,
  ids, dates or checks): what CPython needs per line before any of the shipper's work;
- a capture of the first fifth of the nginx file, to show that memory does not grow with it.

Each run is repeated (`--repeat`, default 3) and reported as a range. Two rates: wall-clock
lines/s, and CPU lines/s (lines over the process's user + system time from os.wait4). On a
machine shared with other work the wall clock also counts time spent waiting for a core, so
the CPU figure is the honest "on one core" rate; on an idle machine the two are close.
Only same-run ratios mean anything.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHADOWTAP = [sys.executable, "-m", "shadowtap"]

AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1.15",
    "curl/8.5.0",
    "okhttp/4.12.0",
]
REFERERS = ["-", "https://shop.example.test/", "https://www.example.org/search?q=lamp"]
WORDS = ["lamp", "desk", "chair", "sofa", "rug", "shelf", "mirror", "clock", "vase", "stool"]

LOOP = r'''
with open(sys.argv[1], "rb") as f, open(sys.argv[2], "wb") as out:
    rest = b""
    while chunk := f.read(1 << 20):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        buf = []
        append = buf.append
        for line in lines:
            m = MATCH
            if m:
                append(RECORD)
        out.write(b"\n".join(buf) + b"\n")
'''
"""The loop every peer runs, MATCH and RECORD replaced by the peer's own expressions."""
AS_DICT = "orjson.dumps(dict(zip(keys, (v.decode() for v in m.groups()))))"

PEER = r'''
import re, sys, orjson
rx = re.compile(rb'(\S+) - (\S+) \[([^\]]*)\] "(\S+) (\S+) (\S+)" (\d+) (\d+) "([^"]*)" "([^"]*)"')
keys = ("client", "user", "time", "method", "target", "version", "status", "bytes", "referer", "agent")
''' + LOOP.replace("MATCH", "rx.fullmatch(line)").replace("RECORD", AS_DICT)

HAPROXY_PEER = r'''
import re, sys, orjson
rx = re.compile(rb'\S+ +\d+ \S+ \S+ \S+: (\S+):(\d+) \[([^\]]*)\] (\S+) ([^ /]+)/(\S+) (-?\d+)/(-?\d+)/(-?\d+)/'
                rb'(-?\d+)/(\+?\d+) (\d+) (\+?\d+) (\S+) (\S+) (\S+) (\d+)/(\d+)/(\d+)/(\d+)/(\+?\d+) (\d+)/(\d+) '
                rb'\{([^}]*)\} "(\S+) (\S+) (\S+)"')
keys = ("client", "port", "time", "frontend", "backend", "server", "TR", "Tw", "Tc", "Tr", "Ta", "status",
        "bytes", "req_cookie", "res_cookie", "termination", "actconn", "feconn", "beconn", "srv_conn",
        "retries", "srv_queue", "backend_queue", "headers", "method", "target", "version")
''' + LOOP.replace("MATCH", "rx.fullmatch(line)").replace("RECORD", AS_DICT)

HAPROXY_FLOOR = r'''
import re, sys
from parsers.haproxy import compile_format
regex, groups = compile_format("httplog", ["Host", "User-Agent"])._compile(fast=True)
match = re.compile(regex, re.DOTALL).fullmatch
values = b",".join(b'"f%d":"%%s"' % n for n in range(len(groups)))
with open(sys.argv[1], "rb") as f:  # size the template: output lines as long as shadowtap's
    sample = [m.groups(b"") for line in f.read(1 << 20).split(b"\n")[:1000]
              if (m := match(line, line.find(b"]: ") + 3))]
value_bytes = sum(len(v) for g in sample for v in g) // len(sample)
padding = int(sys.argv[3]) - value_bytes - (len(values) - 2 * len(groups)) - 12
template = b'{"pad":"' + b"x" * max(padding, 0) + b'",' + values + b"}"
''' + LOOP.replace("MATCH", 'match(line, line.find(b"]: ") + 3)').replace("RECORD", 'template % m.groups(b"")')


def target(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.40:
        return f"/api/products/{rng.randint(1, 5000)}"
    if roll < 0.60:
        return f"/api/search?q={rng.choice(WORDS)}&page={rng.randint(1, 20)}"
    if roll < 0.65:
        return f"/api/login?token={rng.getrandbits(64):016x}&next=/account"
    return f"/static/app.{rng.randint(1, 400)}.js"


def make_logs(directory: Path, lines: int) -> tuple[Path, Path]:
    """The two benchmark logs (generated once per size)."""
    directory.mkdir(parents=True, exist_ok=True)
    nginx, haproxy = directory / f"combined-{lines}.log", directory / f"haproxy-{lines}.log"
    if nginx.exists() and haproxy.exists():
        return nginx, haproxy
    rng = random.Random(20261127)
    t0 = 1795000000
    with open(nginx, "w") as n, open(haproxy, "w") as h:
        for i in range(lines):
            t = t0 + i // 50
            gm = time.gmtime(t)
            client = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            method = rng.choice(["GET"] * 8 + ["POST", "HEAD"])
            path, agent = target(rng), rng.choice(AGENTS)
            status, size = rng.choice([200, 200, 200, 304, 404]), rng.randint(0, 50000)
            n.write(f'{client} - - [{time.strftime("%d/%b/%Y:%H:%M:%S +0000", gm)}] "{method} {path} HTTP/1.1" '
                    f'{status} {size} "{rng.choice(REFERERS)}" "{agent}"\n')
            timers = [rng.randint(0, 5), 0, rng.randint(0, 2), rng.randint(1, 80)]
            h.write(f"{time.strftime('%b %d %H:%M:%S', gm)} lb1 haproxy[2345]: {client}:{rng.randint(1024, 65535)} "
                    f"[{time.strftime('%d/%b/%Y:%H:%M:%S', gm)}.{rng.randint(0, 999):03d}] www~ "
                    f"app/web{rng.randint(1, 4)} "
                    f"{'/'.join(map(str, timers))}/{sum(timers) + rng.randint(0, 5)} {status} {size} - - ---- "
                    f"{rng.randint(1, 50)}/{rng.randint(1, 50)}/{rng.randint(0, 20)}/{rng.randint(0, 5)}/0 0/0 "
                    f'{{shop.example.test|{agent}}} "{method} {path} HTTP/1.1"\n')
    return nginx, haproxy


def measure(argv: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds (user + system), peak RSS in MiB) of one command in its own
    process."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {stderr}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (default 3)")
    parser.add_argument("--dir", default="/tmp/shadowtap-bench")
    args = parser.parse_args()
    directory = Path(args.dir)
    nginx, haproxy = make_logs(directory, args.lines)
    fifth = directory / f"combined-{args.lines}-fifth.log"
    if not fifth.exists():
        with open(nginx, "rb") as src, open(fifth, "wb") as dst:
            for _ in range(args.lines // 5):
                dst.write(src.readline())
    out = directory / "out.jsonl"
    for path in (nginx, haproxy, fifth):
        count_lines(path)  # into the page cache: every run below reads from memory

    rows = []

    def run(label: str, argv: list[str], lines: int, check: bool = False) -> tuple[list[float], list[float]]:
        """Run one command `--repeat` times; its (wall, CPU) lines/s of each run."""
        walls, cpus, rsss = [], [], []
        for _ in range(args.repeat):
            out.unlink(missing_ok=True)
            os.sync()  # the previous run's output is written back before this run starts
            wall, cpu, rss = measure(argv)
            if check and count_lines(out) != lines:
                raise SystemExit(f"{label}: {count_lines(out)} records for {lines} lines")
            walls.append(lines / wall)
            cpus.append(lines / cpu if cpu > 0 else float("inf"))
            rsss.append(rss)
        rows.append((label, lines, walls, cpus, max(rsss)))
        return walls, cpus

    n_fifth = args.lines // 5
    capture = [*SHADOWTAP, "capture"]
    run("wc -l (read floor)", ["wc", "-l", str(nginx)], args.lines)
    peer = run("peer: python regex+orjson loop", [sys.executable, "-c", PEER, str(nginx), str(out)], args.lines,
               True)
    ours = run("shadowtap capture nginx", [*capture, "nginx", str(nginx), "-o", str(out)], args.lines, True)
    run("shadowtap capture nginx (1/5 file)", [*capture, "nginx", str(fifth), "-o", str(out)], n_fifth, True)
    theirs = run("shadowtap capture haproxy", [*capture, "haproxy", str(haproxy), "--capture-headers",
                                              "Host,User-Agent", "-o", str(out)], args.lines, True)
    record_bytes = out.stat().st_size // args.lines
    haproxy_peer = run("peer (haproxy): regex+orjson loop", [sys.executable, "-c", HAPROXY_PEER,
                                                                    str(haproxy), str(out)], args.lines, True)
    floor = run("floor: strict regex + one template", [sys.executable, "-c", HAPROXY_FLOOR, str(haproxy), str(out),
                                                        str(record_bytes)], args.lines, True)
    floor_bytes = out.stat().st_size // args.lines
    out.unlink(missing_ok=True)

    def span(rates: list[float]) -> str:
        low, high = min(rates), max(rates)
        return f"{low:,.0f}" if high - low < 500 else f"{low:,.0f}-{high:,.0f}"

    print(f"{args.repeat} runs each; wall = lines / elapsed time, CPU = lines / (user + system) time of the process")
    print(f"{'run':36s} {'lines':>9s} {'wall lines/s':>19s} {'CPU lines/s':>19s} {'peak RSS':>9s}")
    for label, lines, walls, cpus, rss in rows:
        print(f"{label:36s} {lines:>9d} {span(walls):>19s} {span(cpus):>19s} {rss:>5.1f} MiB")
    print(f"\nshadowtap capture nginx / peer (best runs): wall {max(ours[0]) / max(peer[0]):.2f}x, "
          f"CPU {max(ours[1]) / max(peer[1]):.2f}x (the peer does no scrubbing, accounting, dead letters or "
          "checkpoints)")
    print(f"shadowtap capture haproxy / peer (best runs): wall {max(theirs[0]) / max(haproxy_peer[0]):.2f}x, "
          f"CPU {max(theirs[1]) / max(haproxy_peer[1]):.2f}x; / floor: wall {max(theirs[0]) / max(floor[0]):.2f}x, "
          f"CPU {max(theirs[1]) / max(floor[1]):.2f}x (floor records {floor_bytes} bytes, shadowtap's {record_bytes})")
    for name, (walls, cpus) in (("nginx combined", ours), ("haproxy httplog", theirs)):
        met = sum(cpu >= 250_000 for cpu in cpus)
        print(f"target >= 250000 lines/s on one core, {name}: met in {met} of {len(cpus)} runs by CPU time "
              f"(CPU {span(cpus)}, wall {span(walls)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
