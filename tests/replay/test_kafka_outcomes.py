"""Outcomes into Kafka: `replay shadow --workers 2 --outcomes kafka://...`, then `shadowtap report
kafka://...` reads the whole distributed run and merges it exactly, against a real broker."""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest

from shadowtap.streams.kafka import KafkaOutcomeWriter
from shadowtap.streams.kafka_admin import create_topic, read_topic
from tests.conftest import run_cli
from tests.core.test_kafka import produce
from tests.core.test_kafka import records as kafka_records

pytestmark = pytest.mark.integration

RECORDS = 300


def new_topic(kafka, name: str, partitions: int = 4) -> str:
    address = f"kafka://{kafka.bootstrap}/{name}-{time.time_ns()}"
    create_topic(address, partitions=partitions, retention_ms=None)
    return address


def report_json(*inputs: str) -> dict:
    res = run_cli("report", *inputs, "--format", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_two_workers_write_outcomes_to_kafka_and_report_reads_the_whole_run(tmp_path, kafka, recording_server):
    records = new_topic(kafka, "records")
    outcomes = new_topic(kafka, "outcomes")
    produce(records, kafka_records(RECORDS, sessions=20))
    parent_report = tmp_path / "parent.json"
    res = run_cli("replay", "shadow", "-i", records, "--workers", "2", "--from", "earliest", "--group", "kout",
                  "--target", recording_server.url, "--rate", "max", "--outcomes", outcomes,
                  "--report", str(parent_report), timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(recording_server.requests) == RECORDS

    messages = list(read_topic(outcomes))
    values = [value for _p, _o, value in messages]
    ids = [orjson.loads(v)["id"] for v in values]
    assert sorted(ids) == sorted(f"r{i}" for i in range(RECORDS))  # one outcome per record, none twice
    # The same outcomes as a JSONL file, and split by latency into a fast and a slow half: a
    # report that averaged the halves' percentiles would differ from the whole; a merged one cannot.
    by_latency = sorted(values, key=lambda v: orjson.loads(v)["latency_ms"])
    whole, fast, slow = tmp_path / "all.jsonl", tmp_path / "fast.jsonl", tmp_path / "slow.jsonl"
    whole.write_bytes(b"".join(v + b"\n" for v in values))
    fast.write_bytes(b"".join(v + b"\n" for v in by_latency[: RECORDS // 2]))
    slow.write_bytes(b"".join(v + b"\n" for v in by_latency[RECORDS // 2:]))

    from_kafka = report_json(outcomes)
    t1 = from_kafka["targets"]["t1"]
    assert t1["requests"] == RECORDS and t1["responses"] == RECORDS
    assert from_kafka["input"]["outcomes"] == RECORDS and from_kafka["input"]["bad_lines"] == {}
    from_file = report_json(str(whole))
    assert from_kafka["targets"] == from_file["targets"]
    assert from_kafka["targets"] == json.loads(parent_report.read_text())["targets"]
    merged = report_json(str(fast), str(slow))
    assert merged["targets"] == from_kafka["targets"]

    # several inputs: the topic and a file together count both
    both = report_json(outcomes, str(fast))
    assert both["targets"]["t1"]["requests"] == RECORDS + RECORDS // 2


def test_report_counts_messages_that_are_not_outcomes(kafka):
    from shadowtap.record import Outcome

    outcomes = new_topic(kafka, "outcomes-bad", partitions=1)
    writer = KafkaOutcomeWriter(outcomes)
    for i in range(20):
        writer.on_outcome(Outcome(id=f"r{i}", target="t1", url="http://x/a", intended=100.0 + i, sent=100.0 + i,
                                  done=100.01 + i, status=200, path="/a"))
    writer.close()

    async def junk():
        from shadowtap.streams.kafka import KafkaSink

        sink = KafkaSink(outcomes)
        await sink.send_keyed([b"not json", b'{"v":1,"id":"x"}'], [None, None])
        await sink.close()

    asyncio.run(junk())
    res = run_cli("report", outcomes, "--format", "json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["targets"]["t1"]["requests"] == 20
    assert got["input"]["bad_lines"] == {"bad_json": 1, "malformed": 1}
    assert b"2 bad line(s) skipped (first: bad_json at partition 0 offset 20" in res.stderr


def test_outcome_writer_names_undelivered_outcomes_and_bad_addresses_are_usage_errors(kafka, tmp_path):
    from scripts.procs import free_port
    from shadowtap.errors import StreamError
    from shadowtap.record import Outcome

    writer = KafkaOutcomeWriter(f"kafka://127.0.0.1:{free_port()}/nowhere", close_timeout=1.0)
    for i in range(5):
        writer.on_outcome(Outcome(id=f"r{i}", target="t1", url="http://x/", intended=1.0, sent=1.0, done=1.1))
    with pytest.raises(StreamError, match="5 of 5 outcomes did not reach kafka topic 'nowhere'"):
        writer.close()

    res = run_cli("report", "kafka://127.0.0.1/no-port")
    assert res.returncode == 2
    assert res.stderr.decode().startswith("shadowtap: error: address 'kafka://127.0.0.1/no-port'")


def test_tee_writes_its_outcomes_to_kafka_too(tmp_path, kafka, recording_server):
    from shadowtap.record import encode_record

    outcomes = new_topic(kafka, "tee-outcomes", partitions=1)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(encode_record(r) + b"\n" for r in kafka_records(25)))
    res = run_cli("replay", "tee", "-i", str(src), "--target", recording_server.url, "--outcomes", outcomes)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 25  # one line per request on stdout, as without Kafka
    ids = sorted(orjson.loads(value)["id"] for _p, _o, value in read_topic(outcomes))
    assert ids == sorted(f"r{i}" for i in range(25))
    assert report_json(outcomes)["targets"]["t1"]["responses"] == 25
