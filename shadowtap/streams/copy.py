"""Copying records from any Source to any Sink (`shadowtap cat`).

Between JSONL (file, spool, stdin/stdout) and Kafka, `cat` moves bytes: each input line or
message value is checked to be a v1 record and written as it is, with no Record built and
no re-encoding (see `checked` and `checked_unkeyed`). gor files on either side go through
Records.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shadowtap.errors import RecordError, VersionError
from shadowtap.lines import iter_line_blocks, open_input
from shadowtap.record import FORMAT_VERSION, encode_record, record_from_dict
from shadowtap.stream import Sink, Source, StreamOptions
from shadowtap.streams.address import open_sink, open_source
from shadowtap.streams.jsonl import JsonlSink, JsonlSource, SpoolSink


@dataclass(slots=True)
class CopyStats:
    """What a copy did: records written and input items skipped, by reason."""

    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        return f"copied {self.records} records; skipped: {skipped}"


ACK_BATCH = 32768
"""Records between sink flushes: each flush confirms them, then their source items are acked."""
LINE_BATCH = 128
"""JSONL lines checked and handed to the sink at once by the pass-through (small batches keep
the producer fed steadily: checking 1,024 lines, then producing them, was 10% slower)."""


def _nothing() -> None:
    return None


_REQUIRED = frozenset(("v", "id", "ts", "method", "target"))


def checked(value: bytes) -> tuple[bytes, bytes | None]:
    """`value` as it should be written, and its Kafka key (session, else client), when it is a
    v1 record; RecordError when it is not, VersionError when it is newer than this shadowtap.

    A value shaped as shadowtap writes records (one line holding a JSON object with `v` 1 and
    the fields `id`, `ts`, `method` and `target`) is passed on unchanged: the values of the
    fields are checked by whoever decodes the record (replay counts a bad one as
    `bad_record`). Any other value is decoded in full: a usable record comes back re-encoded
    as one line, anything else is refused.
    """
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise RecordError(f"not valid JSON ({e.msg})") from e
    if not (type(obj) is dict and obj.keys() >= _REQUIRED and obj["v"] == FORMAT_VERSION and b"\n" not in value):
        value = encode_record(record_from_dict(obj))
    key = obj.get("session") or obj.get("client")
    return value, (key.encode() if type(key) is str else None)


def checked_unkeyed(value: bytes) -> tuple[bytes, None]:
    """`checked` for outputs that need no key (JSONL): every value is parsed and checked, so a
    malformed one is counted here, not passed on to whoever reads the file."""
    return checked(value)[0], None


@dataclass(slots=True)
class _Batch:
    """Checked values with their keys; `ack` once written."""

    values: list[bytes]
    keys: list[bytes | None]
    ack: Callable[[], None] = _nothing


async def _jsonl_batches(paths: list[str], skipped: Counter[str], limit: int | None) -> AsyncIterator[_Batch]:
    """Checked lines of JSONL files in order, counted like JsonlSource counts them."""
    left = limit
    values: list[bytes] = []
    keys: list[bytes | None] = []
    loads = orjson.loads
    for path in paths:
        f = open_input(path)
        try:
            for lines, torn in iter_line_blocks(f, path):
                for line in lines:
                    if left == 0:
                        break
                    # `checked`, spelled out for the usual line (this loop is the whole cost of
                    # `cat FILE -o kafka://` on the Python side): a line holds no newline.
                    try:
                        obj = loads(line)
                    except orjson.JSONDecodeError:
                        obj = None
                    if type(obj) is dict and obj.get("v") == FORMAT_VERSION and obj.keys() >= _REQUIRED:
                        value = line
                        key = obj.get("session") or obj.get("client")
                        key = key.encode() if type(key) is str else None
                    elif not line or line.isspace():  # (strip() would copy every line)
                        continue
                    else:
                        try:
                            value, key = checked(line)
                        except VersionError:
                            raise
                        except RecordError:
                            skipped["bad_record"] += 1
                            continue
                    values.append(value)
                    keys.append(key)
                    if left is not None:
                        left -= 1
                    if len(values) >= LINE_BATCH:
                        yield _Batch(values, keys)
                        values, keys = [], []
                if torn is not None and left != 0:
                    skipped["torn_line"] += 1
                if left == 0:
                    break
        finally:
            if f is not sys.stdin.buffer:
                f.close()
    if values:
        yield _Batch(values, keys)


def _raw_reader(source: Source, keyed: bool, limit: int | None) -> AsyncIterator[Any] | None:
    """Batches of checked values from `source` (with keys when `keyed`), or None when it has no
    byte pass-through."""
    if isinstance(source, JsonlSource):
        return _jsonl_batches(source.paths, source.skipped, limit)
    raw_batches = getattr(source, "raw_batches", None)  # KafkaSource, imported only when used
    return None if raw_batches is None else raw_batches(checked if keyed else checked_unkeyed, limit)


def _raw_writer(sink: Sink) -> tuple[Callable[[list[bytes], list[bytes | None]], Any] | None, bool]:
    """A coroutine function taking (values, keys) and whether it uses the keys, or None when
    `sink` takes only Records."""
    if isinstance(sink, (JsonlSink, SpoolSink)):
        return (lambda values, _keys: sink.send_encoded(values)), False
    return getattr(sink, "send_keyed", None), True  # KafkaSink


async def _copy_raw(batches: AsyncIterator[Any], write: Callable[..., Any], sink: Sink, stats: CopyStats) -> None:
    """Write batches; confirm (flush, then ack) every ACK_BATCH records of a source that
    needs acks (Kafka: offsets to commit), else once at the end."""
    pending: list[Callable[[], None]] = []
    unconfirmed = 0
    async for batch in batches:
        await write(batch.values, batch.keys)
        stats.records += len(batch.values)
        if batch.ack is _nothing:
            continue
        pending.append(batch.ack)
        unconfirmed += len(batch.values)
        if unconfirmed >= ACK_BATCH:
            await sink.flush()
            for ack in pending:
                ack()
            pending.clear()
            unconfirmed = 0
    await sink.flush()
    for ack in pending:
        ack()


async def _copy_records(source: Source, sink: Sink, stats: CopyStats, limit: int | None) -> None:
    pending = []
    async for delivery in source:
        if limit is not None and stats.records >= limit:
            break
        await sink.send(delivery.record)
        pending.append(delivery)
        stats.records += 1
        if len(pending) >= ACK_BATCH:
            await sink.flush()
            for d in pending:
                d.ack()
            pending.clear()
    await sink.flush()
    for d in pending:
        d.ack()


async def copy_stream(source: Source, sink: Sink, limit: int | None = None) -> CopyStats:
    """Send every record of `source` into `sink`, acking each once the sink confirmed it;
    bytes pass through when both ends allow it."""
    stats = CopyStats()
    try:
        write, keyed = _raw_writer(sink)
        batches = _raw_reader(source, keyed, limit) if write is not None else None
        if batches is not None:
            await _copy_raw(batches, write, sink, stats)
        else:
            await _copy_records(source, sink, stats, limit)
    finally:
        await sink.close()
        await source.close()
        stats.skipped.update(source.skipped)
    return stats


async def copy_addresses(input_address: str, output_address: str, options: StreamOptions,
                         limit: int | None = None) -> CopyStats:
    """Copy between two addresses (see "Addresses" in DESIGN.md); `options` apply to both ends."""
    source = open_source(input_address, options)
    sink = open_sink(output_address, options)
    return await copy_stream(source, sink, limit)
