"""capture nginx → Kafka → replay shadow → target, with a real nginx and a real Kafka-protocol broker."""

from __future__ import annotations

import time

import pytest

from scripts.local_nginx import LocalNginx
from shadowtap.streams.kafka_admin import create_topic, describe_topic
from tests.conftest import run_cli
from tests.test_nginx_to_shadow import COMBINED, send_raw

pytestmark = pytest.mark.integration


def test_requests_travel_through_kafka_exactly_and_in_order(tmp_path, kafka, recording_server):
    topic = f"kafka://{kafka.bootstrap}/e2e-{time.time_ns()}"
    create_topic(topic, partitions=4, retention_ms=None)
    targets = [f"/item/{i}?page={i % 3}".encode() for i in range(60)]
    with LocalNginx(COMBINED) as nginx:
        for i, target in enumerate(targets):
            send_raw(nginx.port, b"GET" if i % 10 else b"POST", target, b"shop.example.test", [], b"")
        nginx.log_lines(len(targets))
        cap = run_cli("capture", "nginx", str(nginx.access_log), "-o", topic)
    assert cap.returncode == 0, cap.stderr
    assert b"60 lines read, 60 records written" in cap.stderr
    assert sum(p.records for p in describe_topic(topic, None)) == 60

    rep = run_cli("replay", "shadow", "-i", topic, "--from", "earliest", "--group", "e2e",
                  "--target", recording_server.url, "--rate", "200", "--report", str(tmp_path / "r.json"))
    assert rep.returncode == 0, rep.stderr
    expected = [t for i, t in enumerate(targets) if i % 10]  # the POSTs are skipped without --allow-writes
    # one client, so one session key and one partition: the order is the order nginx served them
    assert [r.target for r in recording_server.requests] == expected
    assert all(r.header("X-Shadowtap") == b"1" for r in recording_server.requests)
    committed = [p for p in describe_topic(topic, "e2e") if p.records]
    assert [(p.committed, p.lag) for p in committed] == [(60, 0)]  # every record finished and committed
