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


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How to open a Source or Sink beyond its address (most adapters ignore most of it)."""

    settings: tuple[tuple[str, str], ...] = ()
    """Client settings passed through as `-X key=value` (librdkafka for kafka://)."""
    group: str = "shadowtap-replay"
    """Consumer group of a Kafka source."""
    start: str = "committed"
    """Where a Kafka source starts: earliest, latest, committed, a time, or `-15m`."""
    until: str | None = None
    """Where a bounded Kafka source ends: a time or `now`."""
    follow: bool = False
    """Keep reading as the stream grows instead of ending at its current end."""


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
