"""`make bench`: run every scripts/bench_*.py benchmark, each beside its peer in the same run.

    .venv/bin/python scripts/bench.py [NAME ...]     # e.g. `bench.py replay` runs bench_replay.py

Each benchmark prints its own table (ours, the peer, the ratio) and states the machine.
Figures from one run on a noisy machine: only same-run ratios mean anything.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def main(names: list[str]) -> int:
    benches = sorted(HERE.glob("bench_*.py"))
    if names:
        benches = [b for b in benches if b.stem.removeprefix("bench_") in names]
    if not benches:
        print(f"no benchmark matches {names}", file=sys.stderr)
        return 2
    print(f"machine: {machine()}")
    failed = 0
    for bench in benches:
        print(f"\n== {bench.stem.removeprefix('bench_')}", flush=True)
        failed += subprocess.call([sys.executable, str(bench)], cwd=HERE.parent) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
