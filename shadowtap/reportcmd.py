"""`shadowtap report`: a report from outcome files or topics, merging several runs or workers."""

from __future__ import annotations

import click

from shadowtap.cliopts import sink_options


@click.command("report")
@click.argument("outcomes", nargs=-1, required=True, metavar="OUTCOMES...")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv", "html"]), default="text",
              show_default=True,
              help="text: the table replay prints; json: the --report layout; csv: one row per target and "
                   "endpoint, percentiles in ms; html: one self-contained page with latency charts.")
@click.option("-o", "--output", default="-", show_default=True, metavar="PATH", help="Where to write the report.")
@sink_options
def report(outcomes: tuple[str, ...], fmt: str, output: str, settings: tuple[tuple[str, str], ...]) -> int:
    """Build the replay report from OUTCOMES written by `replay shadow --outcomes`: JSONL files
    ('-' is stdin) or kafka://HOST:PORT/TOPIC topics, each read whole (start to end, no group).

    All inputs are counted together: histograms merge exactly, percentiles are never averaged.
    Planned, dropped and skipped requests and schedule lag are not in outcomes, so the report
    leaves them out; its rate is sent requests over first sent to last done. Bad lines are
    counted and reported on stderr.
    """
    from replay.offline import report_main

    return report_main(outcomes, fmt, output, settings)
