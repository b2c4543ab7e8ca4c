"""`replay shadow --workers N`: processes of one consumer group split a topic, one merged report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from shadowtap.streams.kafka_admin import create_topic
from tests.conftest import REPO, run_cli
from tests.core.test_kafka import produce
from tests.core.test_kafka import records as kafka_records

pytestmark = pytest.mark.integration

RECORDS = 200
SESSIONS = 20


@pytest.fixture
def topic(kafka):
    """A new 4-partition topic; returns its kafka:// address."""
    address = f"kafka://{kafka.bootstrap}/shadowtap-workers-{time.time_ns()}"
    create_topic(address, partitions=4, retention_ms=None)
    return address


def _shadow_args(topic: str, group: str, target: str, *extra: str) -> list[str]:
    return ["replay", "shadow", "-i", topic, "--workers", "2", "--from", "earliest", "--group", group,
            "--target", target, *extra]


def test_workers_need_a_kafka_input(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("")
    res = run_cli("replay", "shadow", "-i", str(src), "--workers", "2", "--target", "http://127.0.0.1:9")
    assert res.returncode == 2
    assert res.stderr.decode().splitlines()[0].startswith("shadowtap: error: --workers needs a kafka:// input")


def test_two_workers_split_the_partitions_and_replay_every_record_once(tmp_path, topic, recording_server):
    recs = kafka_records(RECORDS, sessions=SESSIONS)
    produce(topic, recs)
    report = tmp_path / "r.json"
    outcomes = tmp_path / "o.jsonl"
    res = run_cli(*_shadow_args(topic, "workers-once", recording_server.url, "--rate", "400",
                                "--report", str(report), "--outcomes", str(outcomes)))
    assert res.returncode == 0, res.stderr
    assert sorted(r.target.decode() for r in recording_server.requests) == sorted(r.target for r in recs)
    data = json.loads(report.read_text())
    assert data["targets"]["t1"]["requests"] == RECORDS
    sent = [int(n) for n in re.findall(rb"shadowtap: worker \d: (\d+) outcomes", res.stderr)]
    assert len(sent) == 2 and all(n > 0 for n in sent), res.stderr  # both workers got partitions
    assert sum(sent) == RECORDS
    assert len(outcomes.read_bytes().splitlines()) == RECORDS


def test_a_killed_worker_loses_no_record(tmp_path, topic, recording_server):
    recs = kafka_records(RECORDS, sessions=SESSIONS)
    produce(topic, recs)
    rate = 20  # the group's total: 10 requests/s per worker (2 of 4 partitions each), so the run
    #            is still going when a worker is killed
    proc = subprocess.Popen([sys.executable, "-m", "shadowtap",
                             *_shadow_args(topic, "workers-kill", recording_server.url, "--rate", str(rate))],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        pids = {}
        while len(pids) < 2 and time.monotonic() < deadline:
            pids = {int(k): int(p) for k, p in re.findall(rb"shadowtap: worker (\d) pid (\d+)", b"".join(stderr))}
            time.sleep(0.05)
        assert len(pids) == 2, b"".join(stderr)
        while not recording_server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        # The group joined; 2 s later the workers send at 10/s each and have committed offsets.
        time.sleep(2)
        killed_at = len(recording_server.requests)
        assert 0 < killed_at < RECORDS - 40, "the run should still be going"
        os.kill(pids[1], signal.SIGKILL)
        proc.wait(40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    err = b"".join(stderr).decode()
    assert proc.returncode != 0, err
    assert "worker 1" in err and "was killed by SIGKILL" in err, err
    got = [r.target.decode() for r in recording_server.requests]
    assert set(got) == {r.target for r in recs}, err  # every record replayed at least once
    # Duplicates are what was sent but not yet committed when the partitions moved: the killed
    # worker's sends since its last auto-commit (1 s at its 10/s share) plus what either worker
    # had in flight (one or two at 10/s against a local server): 10 + 10 of margin.
    duplicates = len(got) - RECORDS
    assert 0 <= duplicates <= rate // 2 * 1 + 10, err
