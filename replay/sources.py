"""Sources as the replay modes open them: plain, looped (--loop), or followed (tee --follow)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable

from replay.schedule import Loop
from shadowtap.errors import UsageError
from shadowtap.stream import Delivery, Source, StreamOptions
from shadowtap.streams import open_source
from shadowtap.streams.follow import FollowSource


class LoopSource:
    """Reads a finite source again and again, until the consumer stops.

    Pass k (from 0) shifts every timestamp by k periods of the first pass (see `Loop`) and
    suffixes ids with `#k`, so pacing carries on seamlessly and outcomes stay unique. The
    input is re-read each pass, never held in memory. An empty input ends the loop.
    """

    def __init__(self, open_pass: Callable[[], Source]) -> None:
        self._open = open_pass
        self._skipped: Counter[str] = Counter()
        self._current: Source | None = None

    @property
    def skipped(self) -> Counter[str]:
        """Input items skipped by every pass so far, the current one included."""
        current = self._current.skipped if self._current is not None else Counter()
        return self._skipped + current

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        loop: Loop | None = None
        k = 0
        while True:
            self._current = source = self._open()
            first = last = None
            count = 0
            try:
                async for delivery in source:
                    record = delivery.record
                    if loop is None:
                        first = record.ts if first is None else first
                        last = record.ts if last is None else max(last, record.ts)
                        count += 1
                        yield delivery
                    else:
                        yield Delivery(dataclasses.replace(record, id=loop.id(record.id, k), ts=loop.ts(record.ts, k)),
                                       delivery.ack)
            finally:
                await source.close()
                self._skipped.update(source.skipped)
                self._current = None
            if loop is None:
                if first is None or last is None:
                    return
                loop = Loop(first, last, count)
            k += 1

    async def close(self) -> None:
        return None


def open_replay_source(address: str, loop: bool, stream: StreamOptions) -> Source:
    """The source of `replay shadow`: the address, read once, followed (--follow), or (--loop)
    read again and again."""
    if stream.follow and not address.startswith("kafka://"):
        if loop:
            raise UsageError("--loop and --follow exclude each other: a followed input never ends")
        return _followed(address, from_end=False)
    if not loop:
        return open_source(address, stream)
    if address == "-" or address.startswith("kafka://"):
        raise UsageError("--loop needs an input that can be read again: a file or spool")
    open_source(address)  # fail now, not at the second pass, when the address is wrong
    return LoopSource(lambda: open_source(address))


def _followed(address: str, from_end: bool) -> Source:
    if address != "-" and (address.endswith(".gz") or "://" in address or address.startswith("gor:")):
        raise UsageError(f"cannot follow {address!r}: --follow reads a plain JSONL file, a spool directory, "
                         "'-' or kafka://")
    return FollowSource(address, from_end=from_end)


def open_tee_source(address: str, follow: bool, from_end: bool, stream: StreamOptions) -> Source:
    """The source of `replay tee`: followed as it grows with --follow (a JSONL file, a spool,
    stdin, or a Kafka topic, where --from-end starts at the latest offset); stdin is never read in a way
    that blocks the event loop (a slow pipe must not stall in-flight requests)."""
    if from_end and not follow:
        raise UsageError("--from-end needs --follow")
    if address.startswith("kafka://"):
        return open_source(address, dataclasses.replace(stream, follow=follow,
                                                        start="latest" if from_end else stream.start))
    if follow or address == "-":
        return _followed(address, from_end)
    return open_source(address)
