"""The stream protocol every adapter follows: Sources yield Deliveries, Sinks take Records."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from shadowtap.record import Record


def _nothing() -> None:
    return None


@dataclass(slots=True)
class Delivery:
    """A record read from a Source; `ack()` once its outcome is recorded."""

    record: Record
    ack: Callable[[], None] = _nothing


class Source(Protocol):
    """An async iterator of deliveries. Items it cannot decode are counted in `skipped`."""

    skipped: Counter[str]

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def close(self) -> None: ...


class Sink(Protocol):
    """Where records go. `flush` returns once everything sent so far is durable."""

    async def send(self, record: Record) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...
