"""`shadowtap cat` between JSONL and Kafka moves bytes: records pass unchanged, everything else is
counted, and Kafka offsets are stored only for what was written (real broker)."""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaProducer

from shadowtap.errors import RecordError, VersionError
from shadowtap.record import decode_record, encode_record
from shadowtap.streams.copy import checked, checked_unkeyed
from shadowtap.streams.kafka_admin import create_topic, read_topic
from tests.conftest import run_cli
from tests.core.test_kafka import records


@pytest.fixture
def topic(kafka):
    """A new 4-partition topic; returns its kafka:// address."""
    address = f"kafka://{kafka.bootstrap}/shadowtap-cat-{time.time_ns()}"
    create_topic(address, partitions=4, retention_ms=None)
    return address


def test_checked_passes_records_as_they_are_and_refuses_the_rest():
    line = encode_record(records(1)[0])
    assert checked(line) == (line, b"s0")
    spaced = b'{"id": "a", "v": 1, "ts": 1, "method": "GET", "target": "/", "client": "10.0.0.1"}'
    assert checked(spaced) == (spaced, b"10.0.0.1")  # any key order or spacing, one line: unchanged
    pretty = orjson.dumps(orjson.loads(spaced), option=orjson.OPT_INDENT_2)
    value, key = checked(pretty)  # a valid record over several lines is re-encoded as one
    assert b"\n" not in value and decode_record(value).id == "a" and key == b"10.0.0.1"
    for bad in (b"not json", b"[1, 2]", b'{"v": 1, "id": "a"}', b'{"v": 0, "id": "a", "ts": 1, "method": "GET", '
                                                                 b'"target": "/"}'):
        with pytest.raises(RecordError):
            checked(bad)
    with pytest.raises(VersionError, match="upgrade"):
        checked(b'{"v": 2, "id": "a", "ts": 1, "method": "GET", "target": "/"}')
    # without a key to find, values are checked just the same, also those that look like
    # shadowtap's own lines at both ends
    assert checked_unkeyed(line) == (line, None)
    assert checked_unkeyed(pretty)[0] == value
    for bad in (b"not json", b'{"v": 1, "id": "a"}', b'{"v":1,"id":"a"}\n{"v":1}', b'{"v":1,"id":"a",}',
                b'{"v":1,"id":"a","method":"GET"}'):
        with pytest.raises(RecordError):
            checked_unkeyed(bad)
    with pytest.raises(VersionError):
        checked_unkeyed(b'{"v":2,"id":"a","ts":1,"method":"GET","target":"/"}')


def test_jsonl_to_kafka_to_jsonl_keeps_every_byte(tmp_path, topic):
    src = tmp_path / "in.jsonl"
    lines = [encode_record(r) for r in records(300)]
    src.write_bytes(b"".join(line + b"\n" for line in lines) + b"\n")  # a blank line is ignored
    res = run_cli("cat", "-i", str(src), "-o", topic)
    assert res.returncode == 0, res.stderr
    assert b"copied 300 records; skipped: none" in res.stderr
    keys = {orjson.loads(v)["id"]: (p, v) for p, _o, v in read_topic(topic)}
    assert sorted(v for _p, v in keys.values()) == sorted(lines)
    out = tmp_path / "out.jsonl"
    res = run_cli("cat", "-i", topic, "-o", str(out), "--from", "earliest", "--group", "bytes")
    assert res.returncode == 0, res.stderr
    assert sorted(out.read_bytes().splitlines()) == sorted(lines)


def test_bad_messages_are_counted_never_written_and_newer_ones_stop_the_copy(kafka, tmp_path, topic):
    name = topic.rsplit("/", 1)[1]
    good = [encode_record(r) for r in records(40)]
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for value in good:
        producer.send(name, value=value, partition=0)
    for value in (b"not json", b'{"v": 1, "id": "no-fields"}', b""):
        producer.send(name, value=value, partition=1)
    producer.flush(10)
    out = tmp_path / "out.jsonl"
    res = run_cli("cat", "-i", topic, "-o", str(out), "--from", "earliest", "--group", "bad")
    assert res.returncode == 0, res.stderr
    assert b"copied 40 records; skipped: 3 bad_record" in res.stderr
    assert out.read_bytes().splitlines() == good  # one partition: in order

    producer.send(name, value=b'{"v": 7, "id": "x", "ts": 1, "method": "GET", "target": "/"}', partition=2)
    producer.flush(10)
    producer.close()
    res = run_cli("cat", "-i", topic, "-o", str(tmp_path / "new.jsonl"), "--from", "earliest", "--group", "newer")
    assert res.returncode == 1
    assert res.stderr.decode().startswith("shadowtap: error: record format v7 is newer")


def test_limit_stores_offsets_only_for_what_was_written(tmp_path, topic):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(encode_record(r) + b"\n" for r in records(100, sessions=1)))  # one partition
    assert run_cli("cat", "-i", str(src), "-o", topic).returncode == 0
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    res = run_cli("cat", "-i", topic, "-o", str(first), "--from", "earliest", "--group", "limited", "--limit", "30")
    assert res.returncode == 0, res.stderr
    res = run_cli("cat", "-i", topic, "-o", str(rest), "--group", "limited")  # --from committed
    assert res.returncode == 0, res.stderr
    ids = [orjson.loads(line)["id"] for f in (first, rest) for line in f.read_bytes().splitlines()]
    assert ids == [f"r{i}" for i in range(100)]  # the first 30, then exactly the other 70


def test_kafka_to_kafka_keeps_keys(kafka, tmp_path, topic):
    src = tmp_path / "in.jsonl"
    recs = records(60)
    src.write_bytes(b"".join(encode_record(r) + b"\n" for r in recs))
    assert run_cli("cat", "-i", str(src), "-o", topic).returncode == 0
    copy = topic + "-copy"
    create_topic(copy, partitions=4, retention_ms=None)
    res = run_cli("cat", "-i", topic, "-o", copy, "--from", "earliest", "--group", "k2k")
    assert res.returncode == 0, res.stderr
    assert b"copied 60 records" in res.stderr
    partitions: dict[str, set[int]] = {}
    for p, _o, value in read_topic(copy):
        partitions.setdefault(orjson.loads(value)["session"], set()).add(p)
    assert len(partitions) == 7 and all(len(p) == 1 for p in partitions.values())  # keyed by session
