"""Copying records from any Source to any Sink (`shadowtap cat`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shadowtap.stream import Sink, Source, StreamOptions
from shadowtap.streams.address import open_sink, open_source


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


async def copy_stream(source: Source, sink: Sink, limit: int | None = None) -> CopyStats:
    """Send every record of `source` into `sink`, acking each once the sink has it."""
    stats = CopyStats()
    pending = []
    try:
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
