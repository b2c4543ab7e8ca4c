"""`shadowtap report`: a report from outcome files, merging several runs or workers."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("outcomes", nargs=-1, required=True, metavar="OUTCOMES...")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True,
              help="text: the table replay prints; json: the --report layout; csv: one row per target and "
                   "endpoint, percentiles in ms.")
@click.option("-o", "--output", default="-", show_default=True, metavar="PATH", help="Where to write the report.")
def report(outcomes: tuple[str, ...], fmt: str, output: str) -> int:
    """Build the replay report from OUTCOMES files (written by `replay shadow --outcomes`; '-' is stdin).

    All files are counted together: histograms merge exactly, percentiles are never averaged.
    Planned, dropped and skipped requests and schedule lag are not in outcomes, so the report
    leaves them out; its rate is sent requests over first sent to last done. Bad lines are
    counted and reported on stderr.
    """
    from replay.offline import report_main

    return report_main(outcomes, fmt, output)
