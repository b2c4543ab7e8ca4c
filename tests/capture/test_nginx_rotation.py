"""A real nginx log rotated by rename + reopen and by copytruncate while `capture nginx --follow
--checkpoint` runs, is killed with SIGKILL twice at random moments and restarted: every request
sent reaches the output (zero lost), and every duplicate is a line read after the checkpoint
the killed process had confirmed (bounded by what was in flight), with the same record id.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson

from scripts.local_nginx import LocalNginx
from tests.conftest import REPO
from tests.support import wait_for

COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent"')


class Sender:
    """Sends `GET /r/N?token=...` one after another (N = 0, 1, ...) until stopped; pausable."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: list[int] = []
        self.errors: list[str] = []
        self.running = threading.Event()
        self.running.set()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            if not self.running.is_set():
                self._idle.set()
                self.running.wait(0.05)
                continue
            self._idle.clear()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", f"/r/{n}?token=s3cr3t{n}", headers={"User-Agent": "rotation-test"})
                conn.getresponse().read()
                conn.close()
            except OSError as e:
                self.errors.append(f"request {n}: {e}")
                return
            self.sent.append(n)
            n += 1
            time.sleep(0.002)

    def pause(self) -> None:
        self.running.clear()
        assert self._idle.wait(10), "sender did not pause"

    def start(self) -> Sender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.running.set()
        self._thread.join(10)




def read_output(path: Path) -> tuple[list[dict], int]:
    """Records, and the number of torn lines a SIGKILL left in the middle of a write."""
    records, torn = [], 0
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                torn += 1
    return records, torn


def logged_lines(directory: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in directory.glob("access.log*"))


def test_rotation_and_sigkill_lose_nothing(tmp_path):
    rng = random.Random()
    out, cp, log_err = tmp_path / "out.jsonl", tmp_path / "cp.json", tmp_path / "shipper.err"
    with LocalNginx(COMBINED, workdir=str(tmp_path / "nginx")) as nginx:
        logs = nginx.dir
        command = [sys.executable, "-m", "shadowtap", "capture", "nginx", str(logs / "access.log*"), "--follow",
                   "--checkpoint", str(cp), "-o", str(out), "--poll-interval", "0.05", "--checkpoint-interval", "0.5",
                   "--stats-interval", "0.2"]

        started: list[float] = []

        def start() -> subprocess.Popen:
            started.append(time.time())
            with open(log_err, "ab") as err:
                return subprocess.Popen(command, cwd=REPO, stderr=err)

        def count() -> int:
            return len(read_output(out)[0])

        shipper = start()
        sender = Sender(nginx.port).start()
        checkpoints_at_kill: list[dict[str, int]] = []

        def kill_and_restart() -> subprocess.Popen:
            # At a random moment after this process confirmed something (so that it is killed
            # with a checkpoint behind it and unconfirmed lines in flight).
            wait_for(lambda: cp.exists() and cp.stat().st_mtime > started[-1], what="a checkpoint")
            time.sleep(rng.uniform(0.05, 0.6))
            shipper.send_signal(signal.SIGKILL)
            shipper.wait(10)
            saved = orjson.loads(cp.read_bytes())["files"] if cp.exists() else {}
            checkpoints_at_kill.append({fp: entry["offset"] for fp, entry in saved.items()})
            return start()

        try:
            wait_for(lambda: count() >= 100, what="the first records")

            # rename + reopen: nginx writes to the renamed file until it reopens its log
            os.rename(logs / "access.log", logs / "access.log.1")
            time.sleep(rng.uniform(0.05, 0.2))
            nginx.reopen()
            wait_for(lambda: (logs / "access.log").exists() and (logs / "access.log").stat().st_size > 0,
                     what="nginx to reopen its log")
            wait_for(lambda: "renamed" in log_err.read_text(), what="the shipper to see the rename")
            shipper = kill_and_restart()
            before = count()
            wait_for(lambda: count() > before + 50, what="progress after the first restart")

            # copytruncate, as logrotate does it: shift, copy, truncate. Lines written between the
            # copy and the truncation are lost by copytruncate itself, so requests pause for it.
            sender.pause()
            wait_for(lambda: logged_lines(logs) == len(sender.sent), what="nginx to log every request")
            os.rename(logs / "access.log.1", logs / "access.log.2")
            shutil.copyfile(logs / "access.log", logs / "access.log.1")
            os.truncate(logs / "access.log", 0)
            sender.running.set()
            wait_for(lambda: "truncated" in log_err.read_text(), what="the shipper to see the truncation")
            shipper = kill_and_restart()
            time.sleep(0.5)

            sender.stop()
            assert not sender.errors, sender.errors
            sent = set(sender.sent)
            wait_for(lambda: logged_lines(logs) == len(sent), what="nginx to log every request")
            wait_for(lambda: {int(r["target"].split("/")[2].split("?")[0]) for r in read_output(out)[0]} >= sent,
                     timeout=30, what="every request in the output")
            wait_for(lambda: "stats:" in log_err.read_text(), what="a stats line")
            shipper.send_signal(signal.SIGTERM)
            assert shipper.wait(20) == 0
        finally:
            sender.stop()
            if shipper.poll() is None:
                shipper.kill()
                shipper.wait()

    records, torn = read_output(out)
    numbers = [int(r["target"].split("/")[2].split("?")[0]) for r in records]
    assert set(numbers) == sent, f"lost: {sorted(sent - set(numbers))[:20]}"
    ids = Counter(r["id"] for r in records)
    duplicates = {rid: n for rid, n in ids.items() if n > 1}
    print(f"\n{len(sent)} requests, {len(records)} records, {sum(duplicates.values()) - len(duplicates)} "
          f"duplicates, {torn} torn lines; checkpoints at the kills: {checkpoints_at_kill}")
    assert torn <= 2 and len(set(ids)) == len(sent)
    assert all(n <= 3 for n in duplicates.values())
    assert all(kill for kill in checkpoints_at_kill)
    for rid in duplicates:
        fp, offset = rid.rsplit("-", 1)
        # Re-read only from where a killed process's confirmed checkpoint stood.
        assert any(int(offset) >= kill.get(fp, 0) for kill in checkpoints_at_kill), rid
    for r in records:
        assert r["target"].endswith("?token=SCRUBBED")
    stderr = log_err.read_text()
    assert "resuming" in stderr and "stats:" in stderr and "renamed" in stderr and "truncated" in stderr
    assert b"s3cr3t" not in out.read_bytes() and "s3cr3t" not in stderr
    saved = orjson.loads(cp.read_bytes())
    assert saved["version"] == 1 and saved["files"]
