"""`shadowtap replay ...`: parse options into a ShadowOptions and call replay.shadow.shadow_main.

aiohttp is imported only when a command runs, so `--help` stays fast.
"""

from __future__ import annotations

import math
import re
import sys
from urllib.parse import urlsplit

import click

from replay.options import DEFAULT_MARKER, ReplayOptions, ShadowOptions, Target
from replay.schedule import Pacing
from shadowtap.cli import run_async

_NAME = re.compile(r"^([A-Za-z0-9_.-]+)=(.*)$", re.S)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class OptionError(click.BadParameter):
    """A bad option value, shown as exactly its one-sentence message."""

    def format_message(self) -> str:
        return self.message


def _number(option: str, text: str, what: str = "a number above 0") -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise OptionError(f"cannot parse {option} {text!r}: expected {what}")
    return value


def _positive(option: str, what: str):
    def convert(_ctx: click.Context, _param: click.Parameter, text: str | None) -> float | None:
        return None if text is None else _number(option, text, what)

    return convert


def _rate(_ctx: click.Context, _param: click.Parameter, text: str | None) -> float | None:
    if text is None:
        return None
    if text.strip().lower() == "max":
        return math.inf
    return _number("--rate", text, "a number or 'max'")


def _target(spec: str, index: int) -> Target:
    m = _NAME.match(spec)
    name, url = (m.group(1), m.group(2)) if m else (f"t{index}", spec)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise OptionError(f"cannot parse --target {spec!r}: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise OptionError(f"cannot parse --target {spec!r}: the URL must start with http:// or https://")
    if not parts.hostname or port == 0:
        raise OptionError(f"cannot parse --target {spec!r}: the URL needs a host (and a port above 0)")
    if parts.query or parts.fragment or "?" in url or "#" in url or any(c.isspace() for c in url):
        raise OptionError(f"cannot parse --target {spec!r}: a base URL has no query, fragment or spaces")
    if parts.username is not None:
        raise OptionError(f"cannot parse --target {spec!r}: credentials in the URL are not supported")
    return Target(name, url)


def _targets(_ctx: click.Context, _param: click.Parameter, specs: tuple[str, ...]) -> tuple[Target, ...]:
    targets = tuple(_target(spec, i) for i, spec in enumerate(specs, 1))
    names = [t.name for t in targets]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise OptionError(f"--target name {duplicate!r} is used twice: give each target its own NAME=")
    return targets


def _marker(_ctx: click.Context, _param: click.Parameter, text: str | None) -> tuple[str, str]:
    if text is None:
        return DEFAULT_MARKER
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name) or any(c in value for c in "\r\n"):
        raise OptionError(f"cannot parse --marker {text!r}: expected 'Name: value'")
    return name, value


def _host(_ctx: click.Context, _param: click.Parameter, text: str | None) -> str | None:
    if text is not None and (not text or any(c.isspace() or not c.isprintable() for c in text)):
        raise OptionError(f"cannot use --target-host-header {text!r}: expected a host[:port] without spaces")
    return text


@click.group()
def replay() -> None:
    """Replay a stream of records against targets."""


@replay.command(short_help="Fire-and-forget dark traffic: every record to every target, open loop.")
@click.option("-i", "--input", "input_", metavar="ADDR", required=True,
              help="Records to replay: '-' (stdin), a JSONL file, or a spool directory.")
@click.option("--target", "targets", metavar="[NAME=]URL", multiple=True, required=True, callback=_targets,
              help="Base URL (http:// or https://, optional path prefix) that receives every record; "
                   "repeat for several targets. Names default to t1, t2, ...")
@click.option("--speed", metavar="X", callback=_positive("--speed", "a number above 0"),
              help="Replay the recorded timing X times faster (default 1: as recorded).")
@click.option("--rate", metavar="N|max", callback=_rate,
              help="Send N requests per second regardless of timestamps, or 'max': as fast as "
                   "--max-inflight allows. Excludes --speed.")
@click.option("--arrival", type=click.Choice(["uniform", "poisson"]), default=None,
              help="With --rate N: evenly spaced (default) or exponential gaps (a Poisson process).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Poisson gaps.")
@click.option("--max-inflight", type=click.IntRange(min=1), default=256, show_default=True, metavar="N",
              help="Outstanding requests per target; a request due beyond it is dropped and counted.")
@click.option("--duration", metavar="SECONDS", callback=_positive("--duration", "seconds above 0"),
              help="Stop scheduling after this many seconds.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Stop after N records.")
@click.option("--timeout", metavar="SECONDS", default="10", show_default=True,
              callback=_positive("--timeout", "seconds above 0"),
              help="Per request, from send to the end of the response.")
@click.option("--allow-writes", is_flag=True,
              help="Also replay methods other than GET, HEAD and OPTIONS "
                   "(otherwise they are skipped and counted).")
@click.option("--marker", metavar="'NAME: VALUE'", callback=_marker,
              help="Header added to every replayed request.  [default: 'X-Shadowtap: 1']")
@click.option("--target-host-header", "host_header", metavar="HOST", callback=_host,
              help="Host header for every request (default: the record's Host, else the target's host:port).")
@click.option("--outcomes", metavar="PATH",
              help="Write one JSON line per request per target (times in Unix seconds, latencies in ms).")
@click.option("--report", metavar="FILE", help="Write the JSON report (counts, latency percentiles in ms).")
def shadow(input_: str, targets: tuple[Target, ...], speed: float | None, rate: float | None,
           arrival: str | None, seed: int, max_inflight: int, duration: float | None, limit: int | None,
           timeout: float, allow_writes: bool, marker: tuple[str, str], host_header: str | None,
           outcomes: str | None, report: str | None) -> int:
    """Send every record to every target, open loop (fire-and-forget dark traffic).

    Pacing is absolute: a slow target never slows the schedule; when a target has
    --max-inflight requests outstanding, new ones are dropped and counted. Only GET, HEAD and
    OPTIONS are replayed unless --allow-writes. Prints a summary table at the end; Ctrl-C
    stops, waits up to 5 s for in-flight requests and still writes outcomes and the report.
    """
    if speed is not None and rate is not None:
        raise click.UsageError("--speed and --rate cannot be used together: choose one")
    if arrival is not None and (rate is None or rate == math.inf):
        raise click.UsageError(f"--arrival {arrival} needs --rate N (a number of requests per second)")
    pacing = Pacing(speed=speed or 1.0, rate=rate, poisson=arrival == "poisson", seed=seed)
    options = ShadowOptions(
        input=input_,
        targets=targets,
        replay=ReplayOptions(
            pacing=pacing, max_inflight=max_inflight, duration=duration, limit=limit, timeout=timeout,
            allow_writes=allow_writes, marker=marker, host_header=host_header, progress=sys.stderr.isatty(),
        ),
        outcomes=outcomes,
        report=report,
    )
    from replay.shadow import shadow_main

    return run_async(shadow_main(options))
