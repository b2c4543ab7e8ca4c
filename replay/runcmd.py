"""`shadowtap run CONFIG.toml`: parse the arguments and call replay.run.run_main."""

from __future__ import annotations

import click

from shadowtap.cli import run_async


@click.command("run")
@click.argument("config", metavar="CONFIG.toml")
@click.option("--check", is_flag=True, help="Only read and check the config, print what the run would do, exit 0.")
def run(config: str, check: bool) -> int:
    """One scheduled dark-traffic run, for cron: replay what CONFIG.toml names (shadow or
    compare mode) and decide PASS, FAIL or INCONCLUSIVE against its [pass] limits.

    The verdict and its reasons go to stdout, the replay's tables to stderr, and with
    `report = DIR` everything (verdict.json, report.json, report.html, compare.json) to a
    folder of its own. Exit 0 PASS, 3 FAIL, 4 INCONCLUSIVE, 1 when another run of the same
    name still holds the lock. The config's keys are in the README ("Scheduled runs").
    """
    from replay.run import describe, load_config, run_main

    if check:
        click.echo(describe(load_config(config)))
        return 0
    return run_async(run_main(config))
