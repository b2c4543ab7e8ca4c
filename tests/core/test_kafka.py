"""Kafka adapters against a real Kafka-protocol broker (Tansu), cross-checked with kafka-python."""

from __future__ import annotations

import asyncio
import itertools
import time

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from shadowtap.errors import StreamError
from shadowtap.record import Record, decode_record, encode_record
from shadowtap.stream import StreamOptions
from shadowtap.streams.kafka import KafkaSink, KafkaSource
from shadowtap.streams.kafka_admin import create_topic, describe_topic
from tests.conftest import run_cli

_topics = itertools.count()


@pytest.fixture
def topic(kafka):
    """A new 4-partition topic; returns its kafka:// address."""
    address = f"kafka://{kafka.bootstrap}/shadowtap-test-{time.time_ns()}-{next(_topics)}"
    create_topic(address, partitions=4, retention_ms=None)
    return address


def records(n: int, sessions: int = 7) -> list[Record]:
    return [Record(id=f"r{i}", ts=1000.0 + i, method="GET", target=f"/item/{i}", client=f"10.0.0.{i % 250}",
                   session=f"s{i % sessions}") for i in range(n)]


def produce(address: str, recs: list[Record]) -> None:
    async def go():
        sink = KafkaSink(address)
        for r in recs:
            await sink.send(r)
        await sink.flush()
        await sink.close()
    asyncio.run(go())


def consume(address: str, options: StreamOptions, ack=lambda d: True, stop_after: int | None = None):
    """Records read by a KafkaSource; `ack(delivery)` decides which get acked."""
    async def go():
        source = KafkaSource(address, options)
        got = []
        async for d in source:
            got.append(d.record)
            if ack(d):
                d.ack()
            if stop_after is not None and len(got) >= stop_after:
                break
        await source.close()
        return got, source.skipped
    return asyncio.run(asyncio.wait_for(go(), 60))


def bounded(group: str, **kw) -> StreamOptions:
    return StreamOptions(group=group, start=kw.pop("start", "earliest"), **kw)


def test_jsonl_to_kafka_to_jsonl_with_cat_keeps_every_record(tmp_path, topic):
    src = tmp_path / "in.jsonl"
    recs = records(500)
    src.write_bytes(b"".join(encode_record(r) + b"\n" for r in recs))
    res = run_cli("cat", "-i", str(src), "-o", topic)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out.jsonl"
    res = run_cli("cat", "-i", topic, "-o", str(out), "--from", "earliest", "--group", "cat-test")
    assert res.returncode == 0, res.stderr
    assert b"copied 500 records" in res.stderr
    back = [decode_record(line) for line in out.read_bytes().splitlines()]
    assert sorted(back, key=lambda r: r.id) == sorted(recs, key=lambda r: r.id)
    per_session = {}
    for r in back:  # one session lives in one partition, so its order is kept
        per_session.setdefault(r.session, []).append(int(r.id[1:]))
    assert all(ids == sorted(ids) for ids in per_session.values())


def test_kafka_python_reads_what_shadowtap_produced(kafka, topic):
    recs = records(200)
    produce(topic, recs)
    name = topic.rsplit("/", 1)[1]
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(name, p) for p in range(4)])
    consumer.seek_to_beginning()
    seen = {}
    for msg in consumer:
        rec = orjson.loads(msg.value)
        seen[rec["id"]] = (msg.key, dict(msg.headers), msg.partition)
        if len(seen) == len(recs):
            break
    consumer.close()
    assert len(seen) == 200
    for r in recs:
        key, headers, _ = seen[r.id]
        assert key == r.session.encode()
        assert headers == {"shadowtap-v": b"1"}
    partitions_of = {}
    for r in recs:
        partitions_of.setdefault(r.session, set()).add(seen[r.id][2])
    assert all(len(p) == 1 for p in partitions_of.values())


def test_shadowtap_reads_what_kafka_python_produced_and_counts_bad_messages(kafka, topic):
    name = topic.rsplit("/", 1)[1]
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    recs = records(50)
    for r in recs:
        producer.send(name, value=encode_record(r), key=r.session.encode())
    producer.send(name, value=b"this is not a record", key=b"s0")
    producer.flush(10)
    producer.close()
    got, skipped = consume(topic, bounded("reader"))
    assert sorted(r.id for r in got) == sorted(r.id for r in recs)
    assert skipped == {"bad_record": 1}


def test_offsets_are_stored_only_behind_the_ack_watermark(topic):
    produce(topic, records(120, sessions=1))  # one session: one partition, offsets 0..119
    unacked = {"r40", "r41"}
    got, _ = consume(topic, bounded("wm"), ack=lambda d: d.record.id not in unacked)
    assert len(got) == 120
    info = {p.partition: p for p in describe_topic(topic, "wm")}
    [busy] = [p for p in info.values() if p.records]
    assert busy.committed == 40  # the first unfinished offset, although 42..119 were acked
    again, _ = consume(topic, StreamOptions(group="wm", start="committed"))
    assert [r.id for r in again] == [f"r{i}" for i in range(40, 120)]  # redelivered: bounded by the gap
    info = {p.partition: p for p in describe_topic(topic, "wm")}
    assert info[busy.partition].committed == 120 and info[busy.partition].lag == 0


def test_from_time_and_until_select_a_window(topic):
    produce(topic, records(30))
    time.sleep(1.2)
    middle = time.time()
    time.sleep(0.2)
    later = [Record(id=f"late{i}", ts=2000.0 + i, method="GET", target="/late", session=f"s{i % 5}")
             for i in range(20)]
    produce(topic, later)
    got, skipped = consume(topic, StreamOptions(group="from-time", start=str(middle)))
    assert sorted(r.id for r in got) == sorted(r.id for r in later)
    assert set(skipped) <= {"before_from"}
    got, _ = consume(topic, StreamOptions(group="until", start="earliest", until=str(middle)))
    assert len(got) == 30 and all(r.id.startswith("r") for r in got)


def test_an_unreachable_broker_fails_on_close_naming_the_undelivered_count(kafka):
    from scripts.procs import free_port

    async def go():
        sink = KafkaSink(f"kafka://127.0.0.1:{free_port()}/nowhere", close_timeout=1.0)
        for r in records(10):
            await sink.send(r)
        await sink.close()

    with pytest.raises(StreamError, match="10 records were not delivered"):
        asyncio.run(go())


def test_topic_cli_describes_records_and_lag(topic):
    produce(topic, records(40))
    res = run_cli("topic", "describe", topic, "--group", "nobody-yet")
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert "total: 40 records in 4 partitions; group 'nobody-yet' lag 40" in out
    assert len(out.strip().splitlines()) == 6  # header, 4 partitions, total
    res = run_cli("topic", "create", topic.replace("kafka://", "kafka://") + "!bad")
    assert res.returncode == 2 and b"expected kafka://HOST:PORT" in res.stderr


def test_each_consumer_of_a_group_knows_its_share_of_the_partitions(kafka):
    """Two members of one group on a 3-partition topic: one owns two partitions, the other one,
    and each says so in `rate_share` (what a replay paces its part of --rate by)."""
    address = f"kafka://{kafka.bootstrap}/shadowtap-share-{time.time_ns()}"
    create_topic(address, partitions=3, retention_ms=None)
    produce(address, records(60, sessions=12))
    options = StreamOptions(group=f"share-{time.time_ns()}", start="earliest", follow=True)

    async def go():
        sources = [KafkaSource(address, options) for _ in range(2)]

        async def drain(source):
            async for d in source:
                d.ack()

        tasks = [asyncio.create_task(drain(s)) for s in sources]
        try:
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                shares = sorted(round(s.rate_share, 3) for s in sources)
                if shares == [0.333, 0.667]:
                    return shares
                await asyncio.sleep(0.2)
            return sorted(s.rate_share for s in sources)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in sources:
                await s.close()

    assert asyncio.run(go()) == [0.333, 0.667]
