"""Operator views of a Kafka topic: create it, describe partitions, time range and group lag, read it whole."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from shadowtap.errors import StreamError, UsageError
from shadowtap.streams.kafka import KafkaAddress, parse_address

TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition as `topic describe` shows it."""

    partition: int
    low: int
    high: int
    first_ms: int | None
    last_ms: int | None
    committed: int | None

    @property
    def records(self) -> int:
        return self.high - self.low

    @property
    def lag(self) -> int | None:
        """Records the group has not finished: from its committed offset (or the start) to the end."""
        return self.high - (self.committed if self.committed is not None else self.low)


def _base(bootstrap: str, settings: tuple[tuple[str, str], ...]) -> dict[str, object]:
    return {"bootstrap.servers": bootstrap, "log_level": 0, **dict(settings)}


def create_topic(address: str, partitions: int, retention_ms: int | None,
                 settings: tuple[tuple[str, str], ...] = ()) -> None:
    """Create the topic of `address`; StreamError naming the broker's reason when it refuses."""
    addr = parse_address(address)
    config = {} if retention_ms is None else {"retention.ms": str(retention_ms)}
    admin = AdminClient(_base(addr.bootstrap, settings))
    futures = admin.create_topics([NewTopic(addr.topic, num_partitions=partitions, replication_factor=1,
                                            config=config)], request_timeout=TIMEOUT_S)
    try:
        futures[addr.topic].result(TIMEOUT_S)
    except KafkaException as e:
        raise StreamError(f"cannot create kafka topic {addr.topic!r}: {e.args[0].str()}") from e


def _read_from(consumer: Consumer, topic: str, partition: int, offset: int) -> tuple[int | None, int | None, int]:
    """Read from `offset` to the end: (first timestamp ms, last timestamp ms, offset after the last record).

    The end is read rather than trusted from ListOffsets: Tansu reports the high watermark as
    the last batch's base offset + 1, which undercounts when that batch holds several records.
    """
    consumer.assign([TopicPartition(topic, partition, offset)])
    first = last = None
    end = offset
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        msg = consumer.poll(0.25)
        if msg is None:
            continue
        if msg.error() is not None:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                break
            continue
        first = msg.timestamp()[1] if first is None else first
        last = msg.timestamp()[1]
        end = msg.offset() + 1
    return first, last, end


def describe_topic(address: str, group: str | None,
                   settings: tuple[tuple[str, str], ...] = ()) -> list[PartitionInfo]:
    """Per partition: offsets, the time range of its records, and `group`'s committed offset."""
    addr = parse_address(address)
    consumer = Consumer({**_base(addr.bootstrap, settings), "group.id": group or "shadowtap-describe",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        meta = consumer.list_topics(addr.topic, timeout=TIMEOUT_S).topics.get(addr.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            reason = meta.error.str() if meta is not None and meta.error is not None else "no partitions"
            raise StreamError(f"kafka topic {addr.topic!r} on {addr.bootstrap}: {reason}")
        parts = sorted(meta.partitions)
        committed = {}
        if group:
            for tp in consumer.committed([TopicPartition(addr.topic, p) for p in parts], timeout=TIMEOUT_S):
                committed[tp.partition] = tp.offset if tp.offset >= 0 else None
        infos = []
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(addr.topic, p), timeout=TIMEOUT_S)
            first = last = None
            if high > low:
                first, _, _ = _read_from(consumer, addr.topic, p, low)
                _, last, high = _read_from(consumer, addr.topic, p, high - 1)
            infos.append(PartitionInfo(p, low, high, first, last, committed.get(p)))
        return infos
    except KafkaException as e:
        raise StreamError(f"kafka {addr.bootstrap}: {e.args[0].str()}") from e
    finally:
        consumer.close()


def _topic(consumer: Consumer, addr: KafkaAddress) -> Any:
    """The topic's metadata; StreamError when it does not exist or has no partitions."""
    meta = consumer.list_topics(addr.topic, timeout=TIMEOUT_S).topics.get(addr.topic)
    if meta is None or meta.error is not None or not meta.partitions:
        reason = meta.error.str() if meta is not None and meta.error is not None else "no partitions"
        raise StreamError(f"kafka topic {addr.topic!r} on {addr.bootstrap}: {reason}")
    return meta


def partition_ends(address: str, settings: tuple[tuple[str, str], ...] = (),
                   until_ms: int | None = None) -> dict[int, tuple[int, int]]:
    """Every partition of the topic: (low offset, offset after its last record), read now.

    The end is read (all partitions in one pass), not trusted from ListOffsets (see `_read_from`).
    With `until_ms`, the end is the first offset of a record after that time when there is one
    (what a consumer stopping at --until has finished up to).
    """
    addr = parse_address(address)
    consumer = Consumer({**_base(addr.bootstrap, settings), "group.id": "shadowtap-ends",
                         "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 10})
    try:
        meta = _topic(consumer, addr)
        ends = {}
        for p in sorted(meta.partitions):
            ends[p] = consumer.get_watermark_offsets(TopicPartition(addr.topic, p), timeout=TIMEOUT_S)
        waiting = {p for p, (low, high) in ends.items() if high > low}
        if waiting:
            consumer.assign([TopicPartition(addr.topic, p, ends[p][1] - 1) for p in sorted(waiting)])
            deadline = time.monotonic() + TIMEOUT_S
            while waiting and time.monotonic() < deadline:
                for msg in consumer.consume(512, 0.25):
                    p = msg.partition()
                    if msg.error() is None:
                        ends[p] = (ends[p][0], max(ends[p][1], msg.offset() + 1))
                    elif msg.error().code() == KafkaError._PARTITION_EOF:
                        waiting.discard(p)
        if until_ms is not None:
            for p, (low, high) in ends.items():
                if high > low:
                    (tp,) = consumer.offsets_for_times([TopicPartition(addr.topic, p, until_ms + 1)],
                                                       timeout=TIMEOUT_S)
                    if tp.offset >= 0:
                        ends[p] = (low, min(high, tp.offset))
        return ends
    except KafkaException as e:
        raise StreamError(f"kafka {addr.bootstrap}: {e.args[0].str()}") from e
    finally:
        consumer.close()


def read_topic(address: str, settings: tuple[tuple[str, str], ...] = ()) -> Iterator[tuple[int, int, bytes]]:
    """(partition, offset, value) of every message of the topic, from its start to its end as
    each partition is reached; no consumer group (nothing committed, no join delay).
    StreamError when a partition makes no progress for TIMEOUT_S seconds."""
    addr = parse_address(address)
    consumer = Consumer({**_base(addr.bootstrap, settings), "group.id": "shadowtap-read",
                         "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 10})
    try:
        meta = _topic(consumer, addr)
        waiting = set()
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(addr.topic, p), timeout=TIMEOUT_S)
            if high > low:
                waiting.add(p)
        consumer.assign([TopicPartition(addr.topic, p, OFFSET_BEGINNING) for p in sorted(waiting)])
        progress = time.monotonic()
        while waiting:
            if time.monotonic() - progress > TIMEOUT_S:
                raise StreamError(f"kafka topic {addr.topic!r}: partitions {sorted(waiting)} sent nothing "
                                  f"for {TIMEOUT_S:g} s")
            for msg in consumer.consume(1000, 0.25):
                progress = time.monotonic()
                err = msg.error()
                if err is None:
                    yield msg.partition(), msg.offset(), msg.value() or b""
                elif err.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(msg.partition())
                elif err.fatal() or not err.retriable():
                    raise StreamError(f"kafka topic {addr.topic!r}: {err.str()}")
    except KafkaException as e:
        raise StreamError(f"kafka {addr.bootstrap}: {e.args[0].str()}") from e
    finally:
        consumer.close()


def commit_group_start(address: str, group: str, start: str, settings: tuple[tuple[str, str], ...] = ()) -> None:
    """Commit `start` (earliest, latest or a time) as `group`'s offset of every partition, so that
    consumers of the group started with `--from committed` begin there, and a partition moved to
    another consumer by a rebalance resumes where the group got to instead of at `start` again.
    Only safe while no consumer of the group is running.
    """
    from shadowtap.times import parse_time

    addr = parse_address(address)
    start_ms = None if start in ("earliest", "latest") else int(parse_time(start, "--from") * 1000)
    ends = partition_ends(address, settings)
    offsets = []
    consumer = Consumer({**_base(addr.bootstrap, settings), "group.id": group, "enable.auto.commit": False})
    try:
        for p, (low, end) in sorted(ends.items()):
            offset = low if start == "earliest" else end
            if start_ms is not None:
                (tp,) = consumer.offsets_for_times([TopicPartition(addr.topic, p, start_ms)], timeout=TIMEOUT_S)
                offset = tp.offset if tp.offset >= 0 else end
            offsets.append(TopicPartition(addr.topic, p, offset))
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as e:
        raise StreamError(f"cannot set the start of kafka group {group!r}: {e.args[0].str()}") from e
    finally:
        consumer.close()


def parse_retention(text: str) -> int:
    """`7d`, `12h`, `30m`, `90s` or milliseconds → milliseconds."""
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    for suffix in ("ms", "s", "m", "h", "d"):
        number = text.removesuffix(suffix)
        if number != text and number.isdigit():
            return int(number) * units[suffix]
    if text.isdigit():
        return int(text)
    raise UsageError(f"cannot parse --retention {text!r}: expected a duration like 7d, 12h, 30m or milliseconds")
