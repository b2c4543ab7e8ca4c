"""`shadowtap topic`: create and describe the Kafka topics records travel through."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from shadowtap.cliopts import sink_options


@click.group("topic")
def topic() -> None:
    """Create and inspect Kafka topics (kafka://HOST:PORT[,HOST:PORT...]/TOPIC)."""


@topic.command("create")
@click.argument("address", metavar="kafka://HOST:PORT/TOPIC")
@click.option("--partitions", type=click.IntRange(min=1), default=4, show_default=True, metavar="N",
              help="Partitions: the most replayers one consumer group can spread over.")
@click.option("--retention", metavar="DURATION", help="How long the broker keeps records: 7d, 12h, 30m, or ms.")
@sink_options
def create(address: str, partitions: int, retention: str | None, settings) -> int:
    """Create a topic for records, keyed by session so that one session stays in one partition."""
    from shadowtap.streams.kafka_admin import create_topic, parse_retention

    create_topic(address, partitions, None if retention is None else parse_retention(retention), settings)
    click.echo(f"created {address} with {partitions} partitions", err=True)
    return 0


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@topic.command("describe")
@click.argument("address", metavar="kafka://HOST:PORT/TOPIC")
@click.option("--group", default="shadowtap-replay", show_default=True, metavar="NAME",
              help="Consumer group whose committed offsets and lag to show.")
@sink_options
def describe(address: str, group: str, settings) -> int:
    """Partitions, offsets, the time range of their records, and the group's lag."""
    from shadowtap.streams.kafka_admin import describe_topic

    infos = describe_topic(address, group, settings)
    rows = [("partition", "low", "high", "records", "first record", "last record", "committed", "lag")]
    rows += [(str(i.partition), str(i.low), str(i.high), str(i.records), _time(i.first_ms), _time(i.last_ms),
              "-" if i.committed is None else str(i.committed), str(i.lag)) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.rjust(w) if c not in (4, 5) else cell.ljust(w)
                             for c, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    total = sum(i.records for i in infos)
    lag = sum(i.lag or 0 for i in infos)
    click.echo(f"total: {total} records in {len(infos)} partitions; group {group!r} lag {lag}")
    return 0
