"""In-memory Source and Sink, for tests and for wiring stages together in one process."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable

from shadowtap.record import Record
from shadowtap.stream import Delivery


class MemorySource:
    """Yields the given records; remembers which ids were acked."""

    def __init__(self, records: Iterable[Record]) -> None:
        self._records = list(records)
        self.acked: list[str] = []
        self.skipped: Counter[str] = Counter()

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        for rec in self._records:
            yield Delivery(rec, lambda rid=rec.id: self.acked.append(rid))

    async def close(self) -> None:
        return None


class MemorySink:
    """Collects records in a list."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.closed = False

    async def send(self, record: Record) -> None:
        self.records.append(record)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True
