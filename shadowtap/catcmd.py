"""`shadowtap cat`: copy records between any two addresses."""

from __future__ import annotations

import click

from shadowtap.cli import run_async


@click.command("cat")
@click.option("-i", "--input", "input_address", required=True, metavar="ADDR",
              help="Where to read records: '-', a JSONL file (.gz ok), or a spool directory.")
@click.option("-o", "--output", "output_address", default="-", show_default=True, metavar="ADDR",
              help="Where to write records: '-', a JSONL file (.gz ok), or a spool directory.")
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help="Stop after N records.")
def cat(input_address: str, output_address: str, limit: int | None) -> int:
    """Copy records from -i to -o. Unusable input lines are counted and reported on stderr."""
    from shadowtap.streams.copy import copy_addresses

    stats = run_async(copy_addresses(input_address, output_address, limit))
    click.echo(f"shadowtap cat: {stats.summary()}", err=True)
    return 0
