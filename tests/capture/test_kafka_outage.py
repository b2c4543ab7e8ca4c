"""A Kafka broker stopped for 10 s while `capture nginx --follow` ships into it, then started again
on the same port: the outage is reported on stderr, the checkpoint stays at the last confirmed
record while the broker is away, and every line not confirmed before the outage reaches the
restarted broker. The broker (Tansu, memory storage) is this test's own, not the session one:
what it had confirmed before the outage dies with it, so those lines are left out of the count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from scripts.local_kafka import LocalKafka
from scripts.procs import free_port
from shadowtap.errors import StreamError
from shadowtap.streams.kafka_admin import create_topic, read_topic
from tests.conftest import REPO
from tests.support import wait_for

pytestmark = pytest.mark.integration

OUTAGE_S = 10.0
LINE = '127.0.0.1 - - [27/Nov/2026:10:00:00 +0000] "GET /r/{n} HTTP/1.1" 200 3 "-" "outage-test"\n'


def confirmed(checkpoint) -> int | None:
    """The confirmed byte offset of the (only) followed file, None before the first checkpoint."""
    try:
        files = orjson.loads(checkpoint.read_bytes())["files"]
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return next(iter(files.values()))["offset"] if files else None


def create(address: str) -> None:
    """Create the topic; the restarted broker may already have made it (a producer's metadata
    request creates unknown topics on Tansu), which is as good."""
    try:
        create_topic(address, partitions=2, retention_ms=None)
    except StreamError as e:
        if "already exists" not in e.message.lower():
            raise


def test_a_broker_outage_loses_no_unconfirmed_line(tmp_path):
    port = free_port()
    topic = f"kafka://127.0.0.1:{port}/outage"
    log, checkpoint, stderr_path = tmp_path / "access.log", tmp_path / "ckpt.json", tmp_path / "stderr.txt"
    offsets: list[int] = []  # byte offset of line n

    def write(count: int, pause: float = 0.0) -> None:
        with open(log, "a") as f:
            for _ in range(count):
                offsets.append(f.tell())
                f.write(LINE.format(n=len(offsets) - 1))
                f.flush()
                if pause:
                    time.sleep(pause)

    write(50)
    broker = LocalKafka(port).__enter__()
    capture = None
    try:
        create(topic)
        with open(stderr_path, "wb") as err:
            capture = subprocess.Popen(
                [sys.executable, "-m", "shadowtap", "capture", "nginx", str(log), "--follow", "--checkpoint",
                 str(checkpoint), "--checkpoint-interval", "0.2", "--poll-interval", "0.05", "-o", topic],
                cwd=REPO, stderr=err)
        wait_for(lambda: confirmed(checkpoint) == log.stat().st_size, 30, "the first 50 lines confirmed")
        before = confirmed(checkpoint)

        broker.__exit__(None, None, None)  # SIGTERM: the broker and all it held are gone
        outage_started = time.monotonic()
        write(100, pause=OUTAGE_S / 100)  # lines keep coming during the outage
        stuck = confirmed(checkpoint)
        assert stuck == before, "the checkpoint moved while the broker was away"
        assert time.monotonic() - outage_started >= OUTAGE_S
        reported = stderr_path.read_text()
        assert f"shadowtap: kafka producer 127.0.0.1:{port}:" in reported, reported  # while it lasts

        broker = LocalKafka(port).__enter__()
        create(topic)
        write(30)
        end = log.stat().st_size
        wait_for(lambda: confirmed(checkpoint) == end, 60, "every line confirmed by the restarted broker")
        capture.send_signal(signal.SIGTERM)
        assert capture.wait(30) == 0, stderr_path.read_text()

        got = [orjson.loads(value)["origin"]["pos"] for _p, _o, value in read_topic(topic)]
    finally:
        if capture is not None and capture.poll() is None:
            os.kill(capture.pid, signal.SIGKILL)
            capture.wait()
        broker.__exit__(None, None, None)

    stderr = stderr_path.read_text()
    unconfirmed = [o for o in offsets if o >= before]
    assert len(unconfirmed) == 130
    assert sorted(set(got)) == unconfirmed, stderr  # every line not confirmed before the outage, nothing else
    assert len(got) == len(unconfirmed), f"{len(got) - len(unconfirmed)} duplicates"
