"""`shadowtap cat`: copy records between any two addresses."""

from __future__ import annotations

import click

from shadowtap.cli import run_async
from shadowtap.cliopts import source_options, stream_options


@click.command("cat")
@click.option("-i", "--input", "input_address", required=True, metavar="ADDR",
              help="Where to read records: '-', a JSONL file (.gz ok), a spool directory, kafka://HOST:PORT/TOPIC.")
@click.option("-o", "--output", "output_address", default="-", show_default=True, metavar="ADDR",
              help="Where to write records: '-', a JSONL file (.gz ok), a spool directory, kafka://HOST:PORT/TOPIC.")
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help="Stop after N records.")
@source_options
def cat(input_address: str, output_address: str, limit: int | None, **source) -> int:
    """Copy records from -i to -o. Unusable input items are counted and reported on stderr.

    Between JSONL and Kafka records pass through as bytes, unchanged: each line or message is
    checked to be a v1 record (into Kafka: parsed for its key), not decoded and re-encoded.
    From Kafka without --follow the copy ends at the topic's current end (or --until), so a
    topic window can be saved to a file; into Kafka it ends once the broker confirmed every
    record (exit 1 naming how many were not delivered otherwise).
    """
    from shadowtap.streams.copy import copy_addresses

    stats = run_async(copy_addresses(input_address, output_address, stream_options(**source), limit))
    click.echo(f"shadowtap cat: {stats.summary()}", err=True)
    return 0
