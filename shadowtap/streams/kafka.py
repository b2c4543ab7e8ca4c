"""Kafka adapters on confluent-kafka: a keyed, confirmed Sink and a consumer-group Source.

Sink: the message value is the v1 record, the key its session (else its client), a header
`shadowtap-v: 1`; the producer is idempotent and lz4-compressed. `flush()` returns only when
the broker confirmed every record sent so far (the producer queue is empty and no delivery
report named a failure), which is what lets a shipper move its checkpoint. While the broker
is away records wait in the local queue and the problem is reported on stderr; a broker that
comes back without this producer's state gets them again from a new producer (`_renew`).
`close()` gives them a bounded time and fails naming how many were not delivered.
`KafkaOutcomeWriter` is the same producer as a replay listener, for `--outcomes kafka://`.

Source: a consumer group (`--group`) whose offsets are stored only when a record is acked,
through an ordered per-partition watermark, so a restart never skips an unfinished record.
Without `--follow` the run is bounded: a partition is finished at its end (or past `--until`).
Several consumers in one group (`replay --workers`, or several hosts) end together: each reads
every partition's end at start, and ends only when every partition of the topic is finished,
by itself or, for partitions it does not own, by the group's committed offset reaching that
end, so a partition whose owner died is taken over instead of left unreplayed.

Both also move bytes without Record objects (`cat`'s pass-through): the sink takes encoded
lines (`send_encoded`, `send_keyed`), the source hands out batches of message values
(`raw_batches`) acked a batch at a time.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

import orjson
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
from shadowtap.record import Outcome, Record, decode_record, encode_outcome, encode_record
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
EPOCH_STORM = 3
"""Producer epoch bumps within one statistics interval (1 s) that mean the broker forgot the producer."""
PURGE_WAIT_S = 5.0
CONSUME_BATCH = 1000
"""Messages taken from the consumer's local queue at once (as the benchmark's bare loop does)."""
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


def record_key(line: bytes) -> bytes | None:
    """The message key of an encoded v1 record: its session, else its client (None: no key)."""
    obj = orjson.loads(line)
    key = obj.get("session") or obj.get("client")
    return key.encode() if key else None


QUEUE_RECORDS = 1_000_000
QUEUE_KBYTES = 256 * 1024
"""A producer's local queue: records waiting for the broker, at most this many or this many KiB."""


class KafkaSink:
    """Produces records into one topic; `flush` confirms delivery of everything sent."""

    def __init__(self, address: str, settings: tuple[tuple[str, str], ...] = (),
                 close_timeout: float = CLOSE_TIMEOUT_S) -> None:
        self.address = parse_address(address)
        self.close_timeout = close_timeout
        self.failed = 0
        self.last_error: str | None = None
        """The broker's or librdkafka's last error message, for the closing failure."""
        self.report = _Reporter(f"producer {self.address.bootstrap}")
        conf = _config(self.address, {
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 20,
            # Room for a burst (a whole log file, or the broker away for a while) without
            # back-pressure: librdkafka's default of 100,000 records fills in a tenth of a second.
            "queue.buffering.max.messages": QUEUE_RECORDS,
            "queue.buffering.max.kbytes": QUEUE_KBYTES,
            "message.timeout.ms": 0,  # retry until delivered; close() bounds the wait
            # Confirmation is "left the queue without a failure report": a Python call per
            # delivered record would cost more than producing it.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            "statistics.interval.ms": 1000,  # to notice a broker that forgot this producer (see _renew)
            "stats_cb": self._on_stats,
        }, settings)
        self._conf = conf
        self._epochs = 0
        self._forgotten = False
        self._purged: list[Message] | None = None
        try:
            self._producer = Producer(conf)
        except KafkaException as e:
            raise UsageError(f"kafka producer settings rejected: {e.args[0].str()}") from e

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.str()
        if err.fatal():
            self.report(f"fatal: {err.str()}", force=True)
        else:
            self.report(f"{err.str()} (retrying; {len(self._producer)} records waiting)")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        if self._purged is not None and err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            self._purged.append(msg)
            return
        self.failed += 1
        self.last_error = err.str()

    def _on_stats(self, data: str) -> None:
        """Notice the idempotent producer bumping its epoch again and again with records waiting:
        the broker answers "unknown producer id" because it restarted without its state (Tansu's
        memory storage), and librdkafka never asks it for a new id by itself."""
        epochs = orjson.loads(data).get("eos", {}).get("producer_epoch", 0)
        if epochs - self._epochs >= EPOCH_STORM and len(self._producer):
            self._forgotten = True
        self._epochs = epochs

    def _renew(self) -> None:
        """Take every unconfirmed record back from the producer the broker forgot and send it
        again from a new one (which asks for a new producer id). Records that were in flight may
        have been stored already, so they can arrive twice (at-least-once, as a restart is)."""
        self._forgotten = False
        self._purged = purged = []
        try:
            self._producer.purge(in_queue=True, in_flight=True, blocking=True)
            self._producer.flush(PURGE_WAIT_S)  # serves the purged records' delivery reports
        finally:
            self._purged = None
        self.report(f"the broker no longer knows this producer (restarted without its state?): sending "
                    f"{len(purged)} unconfirmed records again from a new producer", force=True)
        self._producer = Producer(self._conf)
        self._epochs = 0
        for msg in purged:  # no more than the old queue held, so they fit in the new one
            self._producer.produce(self.address.topic, msg.value(), msg.key(), headers=msg.headers())

    async def send(self, record: Record) -> None:
        key = record.session or record.client
        await self.send_keyed([encode_record(record)], [key.encode() if key else None])

    async def send_encoded(self, lines: list[bytes]) -> None:
        """Produce records already encoded as v1 JSON lines (capture's fast path); keys read from them."""
        await self.send_keyed(lines, [record_key(line) for line in lines])

    async def send_keyed(self, values: list[bytes], keys: list[bytes | None]) -> None:
        """Produce encoded records with their keys, as they are: the byte pass-through of `cat`."""
        producer = self._producer
        produce = producer.produce
        topic = self.address.topic
        full_since = None
        for value, key in zip(values, keys, strict=True):
            while True:
                try:
                    produce(topic, value, key, headers=VERSION_HEADER)
                    break
                except BufferError:  # a full queue is normal back-pressure; reported when it lasts
                    now = time.monotonic()
                    full_since = full_since or now
                    if now - full_since >= WARN_EVERY_S:
                        self.report(f"local queue full ({len(producer)} records) for {now - full_since:.0f} s, "
                                     f"waiting for the broker")
                    producer.poll(0)
                    if self._forgotten:
                        self._renew()
                        producer = self._producer
                        produce = producer.produce
                    await asyncio.sleep(0.01)
        producer.poll(0)

    def produce_now(self, value: bytes, key: bytes | None) -> bool:
        """Queue one message without waiting; False when the local queue is full."""
        try:
            self._producer.produce(self.address.topic, value, key, headers=VERSION_HEADER)
        except BufferError:
            return False
        return True

    def poll(self) -> None:
        """Serve delivery failures and errors without waiting (sync producers call it now and then)."""
        self._producer.poll(0)

    def settle(self, timeout: float) -> int:
        """Block until everything queued is delivered or `timeout` passed; how many are left."""
        return self._producer.flush(timeout)

    async def _wait(self, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (left := self._producer.flush(0)) > 0:
            if self._forgotten:
                self._renew()
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return left
            await asyncio.sleep(0.01)
        return 0

    def _check_failed(self) -> None:
        if self.failed:
            raise StreamError(f"{self.failed} records could not be delivered to kafka topic "
                              f"{self.address.topic!r}: {self.last_error}")

    async def flush(self) -> None:
        """Return once every record sent so far is confirmed by the broker (waits while it is away)."""
        await self._wait(None)
        self._check_failed()

    async def close(self) -> None:
        left = await self._wait(self.close_timeout)
        if left:
            raise StreamError(f"{left} records were not delivered to kafka {self.address.bootstrap} within "
                              f"{self.close_timeout:g} s ({self.last_error or 'no answer'})")
        self._check_failed()


class KafkaOutcomeWriter:
    """A replay listener producing every Outcome as one message: key the record's id (so the
    outcomes of one record share a partition), value the v1 outcome JSON, header `shadowtap-v: 1`.

    It never waits (listeners run inside the senders' callbacks): an outcome that finds the
    local queue full (the broker away for long) is counted as lost and reported on stderr.
    `close()` waits up to `close_timeout` for the rest, then raises StreamError naming how many
    outcomes were lost or not delivered.
    """

    POLL_EVERY = 256

    def __init__(self, address: str, settings: tuple[tuple[str, str], ...] = (),
                 close_timeout: float = CLOSE_TIMEOUT_S) -> None:
        self.sink = KafkaSink(address, settings, close_timeout)
        self.lost = 0
        self._count = 0

    def on_outcome(self, outcome: Outcome) -> None:
        if not self.sink.produce_now(encode_outcome(outcome), outcome.id.encode()):
            self.lost += 1
            self.sink.report(f"local queue full: {self.lost} outcomes lost so far")
        self._count += 1
        if self._count % self.POLL_EVERY == 0:
            self.sink.poll()

    def close(self) -> None:
        left = self.sink.settle(self.sink.close_timeout)
        failed = self.lost + left + self.sink.failed
        if failed:
            raise StreamError(f"{failed} of {self._count} outcomes did not reach kafka topic "
                              f"{self.sink.address.topic!r} ({self.sink.last_error or 'local queue full'})")


@dataclass(slots=True)
class RawBatch:
    """Message values of a Kafka source with their keys; `ack()` once they are written."""

    values: list[bytes]
    keys: list[bytes | None]
    ack: Callable[[], None]


class KafkaSource:
    """Reads records of one topic in a consumer group, storing offsets only behind the ack watermark."""

    def __init__(self, address: str, options: StreamOptions) -> None:
        self.address = parse_address(address)
        self.options = options
        self.skipped: Counter[str] = Counter()
        self._marks: dict[int, PartitionWatermark] = {}
        """The assigned partitions, each with the watermark of its Delivery acks."""
        self._stored: dict[int, int] = {}
        """Per assigned partition, the offset last stored (what a revoke commits)."""
        self._finished: set[int] = set()
        self._ends: dict[int, int] = {}
        """Every partition of the topic: the offset after its last record when the run started."""
        self._group_done: set[int] = set()
        self._group_polled = 0.0
        self._partitions = 0
        """How many partitions the topic has (read at every assignment)."""
        self.rate_share = 1.0
        """The part of the topic's partitions assigned to this consumer: a replay paces this
        share of its --rate, the rest being the other members' of the group (see Schedule.set_share)."""
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
        try:
            meta = consumer.list_topics(self.address.topic, timeout=10).topics.get(self.address.topic)
            self._partitions = len(meta.partitions) if meta is not None and meta.partitions else self._partitions
        except KafkaException as e:
            self._report(f"reading the topic's partitions failed: {e.args[0].str()}")
        self._update_share()

    def _update_share(self) -> None:
        if self._marks and self._partitions:
            self.rate_share = min(1.0, len(self._marks) / self._partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what is finished; records still in flight will be re-delivered to the new owner."""
        done = []
        for tp in partitions:
            self._marks.pop(tp.partition, None)
            self._finished.discard(tp.partition)
            stored = self._stored.pop(tp.partition, None)
            if stored is not None:
                done.append(TopicPartition(self.address.topic, tp.partition, stored))
        if done:
            try:
                consumer.commit(offsets=done, asynchronous=False)
            except KafkaException as e:
                self._report(f"commit on revoke failed: {e.args[0].str()}", force=True)
        consumer.unassign()
        self._update_share()

    def _ack(self, partition: int, offset: int) -> None:
        mark = self._marks.get(partition)
        if mark is not None and mark.ack(offset):
            tp = TopicPartition(self.address.topic, partition, mark.committable)
            try:
                self._consumer.store_offsets(offsets=[tp])
            except KafkaException as e:  # the partition was revoked meanwhile
                self._report(f"store offset failed: {e.args[0].str()}")
                return
            self._stored[partition] = mark.committable

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

    async def _messages(self) -> AsyncIterator[list[Message]]:
        """Batches of messages from the local queue until the run is done (never when following)."""
        consumer = self._consumer
        if not self.options.follow:
            self._read_ends()
        consumer.subscribe([self.address.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        started = time.monotonic()
        while True:
            messages = consumer.consume(CONSUME_BATCH, 0)
            if messages:
                yield messages
                continue
            if self._done():
                return
            if not self._assigned_once and time.monotonic() - started > JOIN_TIMEOUT_S:
                raise StreamError(f"no partition of kafka topic {self.address.topic!r} was assigned within "
                                  f"{JOIN_TIMEOUT_S:g} s (does the topic exist on {self.address.bootstrap}?)")
            await asyncio.sleep(0.02)

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        async for messages in self._messages():
            for msg in messages:
                delivery = self._delivery(msg)
                if delivery is not None:
                    yield delivery

    def _usable(self, msg: Message) -> bool:
        """False for an error event, or a message of a partition revoked meanwhile or already past --until."""
        err = msg.error()
        partition = msg.partition()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._finished.add(partition)
            elif err.fatal() or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                raise StreamError(f"kafka topic {self.address.topic!r}: {err.str()}")
            else:
                self._report(err.str())
            return False
        if partition not in self._marks or (partition in self._finished and not self.options.follow):
            return False
        if self._until_ms is not None and msg.timestamp()[1] > self._until_ms:
            self._finished.add(partition)
            self._consumer.pause([TopicPartition(self.address.topic, partition)])
            return False
        return True

    def _before_start(self, msg: Message) -> bool:
        """offsets_for_times may land early (Tansu answers at batch granularity): skip, counted."""
        if self._start_ms is not None and msg.timestamp()[1] < self._start_ms:
            self.skipped["before_from"] += 1
            return True
        return False

    def _delivery(self, msg: Message) -> Delivery | None:
        if not self._usable(msg):
            return None
        partition, offset = msg.partition(), msg.offset()
        self._marks[partition].delivered(offset)
        if self._before_start(msg):
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

    async def raw_batches(self, check: Callable[[bytes], tuple[bytes, bytes | None]],
                          limit: int | None = None) -> AsyncIterator[RawBatch]:
        """Message values as batches, without Record objects (`cat`'s pass-through).

        `check(value)` returns the value to write and its key, or raises RecordError (counted
        as `bad_record`, skipped) or VersionError (fatal). A batch's `ack()` stores the offsets
        after its last message per partition, bad ones included: ack batches in order, each
        once what it holds is written. At most `limit` values; the rest is left unacked.
        """
        left = limit
        marks, finished = self._marks, self._finished
        plain = self._start_ms is None and self._until_ms is None
        async for messages in self._messages():
            values: list[bytes] = []
            keys: list[bytes | None] = []
            ends: dict[int, int] = {}
            for msg in messages:
                if left == 0:
                    break
                partition = msg.partition()
                # the common case decided here, per message; anything else by _usable
                common = plain and msg.error() is None and partition in marks and partition not in finished
                if not common and not self._usable(msg):
                    continue
                ends[partition] = msg.offset() + 1
                if not plain and self._before_start(msg):
                    continue
                try:
                    value, key = check(msg.value() or b"")
                except VersionError:
                    raise
                except RecordError:
                    self.skipped["bad_record"] += 1
                    continue
                values.append(value)
                keys.append(key)
                if left is not None:
                    left -= 1
            if ends:
                yield RawBatch(values, keys, partial(self._store, ends))
            if left == 0:
                return

    def _store(self, ends: dict[int, int]) -> None:
        """Store the offsets of an acked raw batch, for the partitions still assigned."""
        offsets = [TopicPartition(self.address.topic, p, end) for p, end in ends.items() if p in self._marks]
        if not offsets:
            return
        try:
            self._consumer.store_offsets(offsets=offsets)
        except KafkaException as e:  # a partition was revoked meanwhile
            self._report(f"store offset failed: {e.args[0].str()}")
            return
        self._stored.update((tp.partition, tp.offset) for tp in offsets)

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
