"""Replay benchmarks (issue 3), side by side with wrk in one run, against one local nginx.

    .venv/bin/python scripts/bench_replay.py [--quick]

nginx: one worker on loopback, `return 200 "ok\\n"`, access log off (the same for both
clients), the default keepalive_requests (1000), so both reconnect every 1000 requests.
Measured, in this order:

1. throughput: wrk (-t1, the same 32 connections) vs `replay shadow --rate max` of 500,000
   GET records from JSONL (lean sender, --connections 32), wrk again; the ratio is against the mean of the two
   wrk runs. For reference: a bare Python client loop (scripts/bare_client.py: one prebuilt
   request, no per-request work) on 500,000 requests, and `--client aiohttp` on 50,000 records.
2. pacing: `--rate 20000 --duration 10`: achieved rate (within ±1%?) and schedule lag p99
   (≤ 2 ms?), from the run's own report.
3. memory: peak RSS while replaying 5,000,000 records from a JSONL file, sampled every 0.5 s,
   beside the peak of the 500,000-record run (flat memory: about the same).

Records are written by this script into a temporary directory (about 1.3 GB for 5M) and
removed at the end. `--quick` divides the record counts by 10 (for a smoke run).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.local_nginx import LocalNginx  # noqa: E402

CONNECTIONS = 32
MAX_INFLIGHT = 256
"""Requests per target outstanding: on the 32 connections or queued for one (the default)."""
LINE = (b'{"v":1,"id":"bench:%d","ts":%.3f,"method":"GET","target":"/item/%d?q=%d","version":"HTTP/1.1",'
        b'"host":"shop.example","headers":[["User-Agent","Mozilla/5.0 (bench)"],["Accept","*/*"]],'
        b'"body":null,"client":"10.0.%d.%d","session":null,"origin":{"kind":"nginx","name":"access.log","pos":%d},'
        b'"response":{"status":200,"elapsed_ms":0.4,"bytes":3},"fields":{}}\n')
"""One record as `capture nginx` would write it (a real-looking GET), ~390 bytes."""


def write_records(path: Path, count: int) -> None:
    """`count` records a millisecond apart, written from a byte template (fast: 5M in ~10 s)."""
    ts0 = 1_700_000_000.0
    with open(path, "wb") as f:
        for start in range(0, count, 50_000):
            f.write(b"".join(LINE % (i, ts0 + i / 1000, i, i % 97, (i >> 8) & 255, i & 255, i * 120)
                             for i in range(start, min(count, start + 50_000))))


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", url],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def bare_client(url: str, requests: int) -> float:
    cmd = [sys.executable, str(ROOT / "scripts" / "bare_client.py"), url, str(requests), str(CONNECTIONS)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out)


def vm_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def replay(input_path: Path, url: str, report: Path, *extra: str) -> tuple[dict, int, float, list[int]]:
    """Run `replay shadow`; returns (report, peak RSS in kB, wall seconds, RSS samples in kB)."""
    cmd = [sys.executable, "-m", "shadowtap", "replay", "shadow", "-i", str(input_path), "--target", url,
           "--max-inflight", str(MAX_INFLIGHT), "--connections", str(CONNECTIONS), "--report", str(report), *extra]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    samples = []
    while proc.poll() is None:
        peak = max(peak, vm_kb(proc.pid, "VmHWM") or 0)
        samples.append(vm_kb(proc.pid, "VmRSS") or 0)
        time.sleep(0.5)
    wall = time.monotonic() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"replay failed ({proc.returncode}): {err}")
    return orjson.loads(report.read_bytes()), peak, wall, [x for x in samples if x]


def row(cells: list[str], widths: list[int]) -> str:
    return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the records (smoke run)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    if not shutil.which("wrk"):
        print("wrk is not installed (Debian: apt-get install wrk; `make bench` does it)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="shadowtap-bench-"))
    rows: list[list[str]] = []
    try:
        small, big, sample = work / "500k.jsonl", work / "5m.jsonl", work / "50k.jsonl"
        write_records(small, 500_000 // scale)
        write_records(sample, 50_000 // scale)
        with LocalNginx("$status", location_extra="access_log off;", workdir=str(work / "nginx")) as nginx:
            url = nginx.base_url
            wrk(url + "/item/1?q=1", 2)  # warm-up
            wrk_before = wrk(url + "/item/1?q=1", 10)
            ours, peak_small, _, _ = replay(small, url, work / "max.json", "--rate", "max")
            wrk_after = wrk(url + "/item/1?q=1", 10)
            bare = bare_client(url + "/item/1?q=1", 500_000 // scale)
            aio, _, _, _ = replay(sample, url, work / "aiohttp.json", "--rate", "max", "--client", "aiohttp")
            wrk_mean = (wrk_before + wrk_after) / 2
            rps = ours["schedule"]["achieved_rps"]
            ok = ours["targets"]["t1"]["status"].get("200", 0)
            rows.append([f"--rate max, {ours['schedule']['sent']:,} GETs (lean)", f"{rps:,.0f}/s",
                         f"wrk {wrk_mean:,.0f}/s", f"{rps / wrk_mean:.2f}x", "target >= 0.80x",
                         f"200s: {ok:,}; wrk before/after {wrk_before:,.0f}/{wrk_after:,.0f}"])
            rows.append(["bare Python loop, one prebuilt GET", f"{bare:,.0f}/s", f"wrk {wrk_mean:,.0f}/s",
                         f"{bare / wrk_mean:.2f}x", "reference", "uvloop + httptools, no per-request work"])
            aio_rps = aio["schedule"]["achieved_rps"]
            rows.append([f"--rate max, {aio['schedule']['sent']:,} GETs (--client aiohttp)", f"{aio_rps:,.0f}/s",
                         f"wrk {wrk_mean:,.0f}/s", f"{aio_rps / wrk_mean:.2f}x", "reference", ""])

            paced, _, _, _ = replay(small, url, work / "20k.json", "--rate", "20000", "--duration", "10")
            s = paced["schedule"]
            achieved, lag99 = s["achieved_rps"], s["lag_ms"]["p99"]
            rows.append([f"--rate 20000 --duration 10, {CONNECTIONS} connections", f"{achieved:,.0f}/s",
                         "asked 20,000/s",
                         f"{(achieved / 20000 - 1) * 100:+.2f}%", "target within ±1%",
                         f"sent {s['sent']:,}, dropped {s['dropped']}"])
            rows.append(["  schedule lag p99", f"{lag99:.2f} ms", "", "", "target <= 2 ms",
                         f"p50 {s['lag_ms']['p50']:.2f}, max {s['lag_ms']['max']:.2f} ms, late>10ms {s['late']}"])

            small.unlink()
            write_records(big, 5_000_000 // scale)
            mem, peak_big, wall, rss = replay(big, url, work / "5m.json", "--rate", "max")
            n = mem["schedule"]["sent"]
            quarters = "/".join(f"{rss[min(len(rss) - 1, len(rss) * q // 4)] / 1024:.0f}" for q in (1, 2, 3, 4))
            rows.append([f"peak RSS, {n:,} records from JSONL", f"{peak_big / 1024:.0f} MiB",
                         f"{500_000 // scale:,} records: {peak_small / 1024:.0f} MiB",
                         f"{peak_big / peak_small:.2f}x", "flat (about 1x)",
                         f"RSS at 1/4, 1/2, 3/4, end: {quarters} MiB; {n / wall:,.0f} records/s over {wall:.0f} s"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = ["measure", "shadowtap", "peer / reference", "ratio", "goal", "notes"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(row(header, widths))
    for r in rows:
        print(row(r, widths))
    print(f"(nginx 1 worker, {CONNECTIONS} keep-alive connections for both, wrk -t1; one run on a shared machine: "
          "compare ratios, not absolute figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
