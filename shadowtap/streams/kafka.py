"""Kafka adapters on confluent-kafka: a keyed, confirmed Sink and a consumer-group Source.

Sink: the message value is the v1 record, the key its session (else its client), a header
`shadowtap-v: 1`; the producer is idempotent and lz4-compressed. `flush()` returns only when
the broker confirmed every record sent so far (delivery callbacks), which is what lets a
shipper move its checkpoint. While the broker is away records wait in the local queue and the
problem is reported on stderr; `close()` gives them a bounded time and fails naming how many
were not delivered.

Source: a consumer group (`--group`) whose offsets are stored only when a record is acked,
through an ordered per-partition watermark, so a restart never skips an unfinished record.
Without `--follow` the run is bounded: a partition is finished at its end (or past `--until`).
Several consumers in one group (`replay --workers`, or several hosts) end together: each reads
every partition's end at start, and ends only when every partition of the topic is finished,
by itself or, for partitions it does not own, by the group's committed offset reaching that
end, so a partition whose owner died is taken over instead of left unreplayed.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from shadowtap.errors import RecordError, StreamError, UsageError, VersionError
from shadowtap.record import Record, decode_record, encode_record
from shadowtap.stream import Delivery, StreamOptions
from shadowtap.streams.watermark import PartitionWatermark
from shadowtap.times import parse_time

SCHEME = "kafka://"
VERSION_HEADER = [("shadowtap-v", b"1")]
CLOSE_TIMEOUT_S = 30.0
JOIN_TIMEOUT_S = 60.0
GROUP_POLL_S = 1.0
"""At most this often, a bounded source asks the group's committed offsets of partitions it does not own."""
WARN_EVERY_S = 5.0
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class KafkaAddress:
    """A parsed `kafka://HOST:PORT[,HOST:PORT...]/TOPIC` address."""

    bootstrap: str
    topic: str


def parse_address(address: str) -> KafkaAddress:
    """Split and check a kafka:// address; UsageError naming it when it is malformed."""
    hosts, _, topic = address.removeprefix(SCHEME).partition("/")
    servers = [h.strip() for h in hosts.split(",") if h.strip()]
    if not servers or not all(_HOST_PORT.match(h) for h in servers) or not _TOPIC.match(topic):
        raise UsageError(f"address {address!r}: expected kafka://HOST:PORT[,HOST:PORT...]/TOPIC")
    return KafkaAddress(",".join(servers), topic)


class _Reporter:
    """Prints a broker problem to stderr at most every WARN_EVERY_S seconds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._last = 0.0

    def __call__(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= WARN_EVERY_S:
            self._last = now
            print(f"shadowtap: kafka {self.what}: {message}", file=sys.stderr, flush=True)


def _config(addr: KafkaAddress, defaults: dict[str, object], settings: tuple[tuple[str, str], ...]) -> dict:
    conf: dict[str, object] = {"log_level": 0}  # librdkafka's own stderr log; error_cb reports instead
    conf.update(defaults)
    conf["bootstrap.servers"] = addr.bootstrap
    conf.update(settings)
    return conf


class KafkaSink:
    """Produces records into one topic; `flush` confirms delivery of everything sent."""

    def __init__(self, address: str, settings: tuple[tuple[str, str], ...] = (),
                 close_timeout: float = CLOSE_TIMEOUT_S) -> None:
        self.address = parse_address(address)
        self.close_timeout = close_timeout
        self.delivered = 0
        self.failed = 0
        self._last_error: str | None = None
        self._report = _Reporter(f"producer {self.address.bootstrap}")
        conf = _config(self.address, {
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 20,
            "message.timeout.ms": 0,  # retry until delivered; close() bounds the wait
            "error_cb": self._on_error,
        }, settings)
        try:
            self._producer = Producer(conf)
        except KafkaException as e:
            raise UsageError(f"kafka producer settings rejected: {e.args[0].str()}") from e

    def _on_error(self, err: KafkaError) -> None:
        self._last_error = err.str()
        if err.fatal():
            self._report(f"fatal: {err.str()}", force=True)
        else:
            self._report(f"{err.str()} (retrying; {len(self._producer)} records waiting)")

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            self._last_error = err.str()

    async def send(self, record: Record) -> None:
        value = encode_record(record)
        key = record.session or record.client
        while True:
            try:
                self._producer.produce(self.address.topic, value=value, key=key.encode() if key else None,
                                       headers=VERSION_HEADER, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._report(f"local queue full ({len(self._producer)} records), waiting for the broker")
                self._producer.poll(0)
                await asyncio.sleep(0.05)
        self._producer.poll(0)

    async def _wait(self, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (left := self._producer.flush(0)) > 0:
            if deadline is not None and time.monotonic() >= deadline:
                return left
            await asyncio.sleep(0.01)
        return 0

    def _check_failed(self) -> None:
        if self.failed:
            raise StreamError(f"{self.failed} records could not be delivered to kafka topic "
                              f"{self.address.topic!r}: {self._last_error}")

    async def flush(self) -> None:
        """Return once every record sent so far is confirmed by the broker (waits while it is away)."""
        await self._wait(None)
        self._check_failed()

    async def close(self) -> None:
        left = await self._wait(self.close_timeout)
        if left:
            raise StreamError(f"{left} records were not delivered to kafka {self.address.bootstrap} within "
                              f"{self.close_timeout:g} s ({self._last_error or 'no answer'})")
        self._check_failed()


class KafkaSource:
    """Reads records of one topic in a consumer group, storing offsets only behind the ack watermark."""

    def __init__(self, address: str, options: StreamOptions) -> None:
        self.address = parse_address(address)
        self.options = options
        self.skipped: Counter[str] = Counter()
        self._marks: dict[int, PartitionWatermark] = {}
        self._finished: set[int] = set()
        self._ends: dict[int, int] = {}
        """Every partition of the topic: the offset after its last record when the run started."""
        self._group_done: set[int] = set()
        self._group_polled = 0.0
        self._assigned_once = False
        self._start = options.start
        self._start_ms = None if self._start in ("earliest", "latest", "committed") else int(
            parse_time(self._start, "--from") * 1000)
        self._until_ms = None if options.until is None else int(parse_time(options.until, "--until") * 1000)
        self._report = _Reporter(f"consumer {self.address.bootstrap}")
        conf = _config(self.address, {
            "group.id": options.group,
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "latest" if self._start == "latest" else "earliest",
            "session.timeout.ms": 6000,  # Tansu delays a group join by about half of it
            "heartbeat.interval.ms": 1500,
            "enable.partition.eof": True,
            "error_cb": self._on_error,
        }, options.settings)
        try:
            self._consumer = Consumer(conf)
        except KafkaException as e:
            raise UsageError(f"kafka consumer settings rejected: {e.args[0].str()}") from e

    def _on_error(self, err: KafkaError) -> None:
        self._report(err.str(), force=err.fatal())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned_once = True
        for tp in partitions:
            self._marks[tp.partition] = PartitionWatermark()
            self._finished.discard(tp.partition)
            if self._start == "earliest":
                tp.offset = OFFSET_BEGINNING
            elif self._start == "latest":
                tp.offset = OFFSET_END
            elif self._start_ms is not None:
                tp.offset = self._start_ms
        if self._start_ms is not None:
            partitions = consumer.offsets_for_times(partitions, timeout=10)
            for tp in partitions:
                if tp.offset < 0:  # no record at or after the time: start at the end
                    tp.offset = OFFSET_END
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what is finished; records still in flight will be re-delivered to the new owner."""
        done = []
        for tp in partitions:
            mark = self._marks.pop(tp.partition, None)
            self._finished.discard(tp.partition)
            if mark is not None and mark.committable is not None:
                done.append(TopicPartition(self.address.topic, tp.partition, mark.committable))
        if done:
            try:
                consumer.commit(offsets=done, asynchronous=False)
            except KafkaException as e:
                self._report(f"commit on revoke failed: {e.args[0].str()}", force=True)
        consumer.unassign()

    def _ack(self, partition: int, offset: int) -> None:
        mark = self._marks.get(partition)
        if mark is not None and mark.ack(offset):
            tp = TopicPartition(self.address.topic, partition, mark.committable)
            try:
                self._consumer.store_offsets(offsets=[tp])
            except KafkaException as e:  # the partition was revoked meanwhile
                self._report(f"store offset failed: {e.args[0].str()}")

    def _read_ends(self) -> None:
        """Record where every partition ends now (read, not trusted from ListOffsets: Tansu reports
        the last batch's base offset + 1 as the high watermark)."""
        from shadowtap.streams.kafka_admin import partition_ends

        ends = partition_ends(SCHEME + f"{self.address.bootstrap}/{self.address.topic}", self.options.settings,
                              self._until_ms)
        self._ends = {p: end for p, (_low, end) in ends.items()}
        self._group_done = {p for p, (low, end) in ends.items() if end <= low}  # empty: nothing to finish

    def _others_done(self) -> bool:
        """Partitions this consumer does not own are finished when the group committed their end."""
        waiting = [p for p in self._ends if p not in self._marks and p not in self._group_done]
        if not waiting:
            return True
        if time.monotonic() - self._group_polled < GROUP_POLL_S:
            return False
        self._group_polled = time.monotonic()
        try:
            committed = self._consumer.committed([TopicPartition(self.address.topic, p) for p in waiting], timeout=5)
        except KafkaException as e:
            self._report(f"reading the group's committed offsets failed: {e.args[0].str()}")
            return False
        for tp in committed:
            if tp.offset >= self._ends[tp.partition]:
                self._group_done.add(tp.partition)
        return all(p in self._group_done for p in waiting)

    def _done(self) -> bool:
        if self.options.follow or not self._assigned_once:
            return False
        return all(p in self._finished for p in self._marks) and self._others_done()

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        consumer = self._consumer
        if not self.options.follow:
            self._read_ends()
        consumer.subscribe([self.address.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        started = time.monotonic()
        while True:
            messages = consumer.consume(512, 0)
            if not messages:
                if self._done():
                    return
                if not self._assigned_once and time.monotonic() - started > JOIN_TIMEOUT_S:
                    raise StreamError(f"no partition of kafka topic {self.address.topic!r} was assigned within "
                                      f"{JOIN_TIMEOUT_S:g} s (does the topic exist on {self.address.bootstrap}?)")
                await asyncio.sleep(0.02)
                continue
            for msg in messages:
                delivery = self._delivery(msg)
                if delivery is not None:
                    yield delivery

    def _delivery(self, msg: Message) -> Delivery | None:
        err = msg.error()
        partition = msg.partition()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._finished.add(partition)
            elif err.fatal() or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                raise StreamError(f"kafka topic {self.address.topic!r}: {err.str()}")
            else:
                self._report(err.str())
            return None
        mark = self._marks.get(partition)
        if mark is None or (partition in self._finished and not self.options.follow):
            return None  # revoked meanwhile, or already past --until
        if self._until_ms is not None and msg.timestamp()[1] > self._until_ms:
            self._finished.add(partition)
            self._consumer.pause([TopicPartition(self.address.topic, partition)])
            return None
        offset = msg.offset()
        mark.delivered(offset)
        if self._start_ms is not None and msg.timestamp()[1] < self._start_ms:
            # offsets_for_times may land early (Tansu answers at batch granularity)
            self.skipped["before_from"] += 1
            self._ack(partition, offset)
            return None
        try:
            record = decode_record(msg.value() or b"")
        except VersionError:
            raise
        except RecordError:
            self.skipped["bad_record"] += 1
            self._ack(partition, offset)
            return None
        return Delivery(record, partial(self._ack, partition, offset))

    async def close(self) -> None:
        """Commit the stored watermark offsets and leave the group."""
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                self._report(f"final commit failed: {e.args[0].str()}", force=True)
        except RuntimeError:
            return  # already closed
        self._consumer.close()
