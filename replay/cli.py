"""`shadowtap replay ...`: parse options into ShadowOptions/TeeOptions and call one library
function (replay.shadow.shadow_main, replay.tee.tee_main).

aiohttp and httptools are imported only when a command runs, so `--help` stays fast.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import click

from replay.options import (
    CLIENTS,
    DEFAULT_IGNORED_HEADERS,
    DEFAULT_MARKER,
    CompareOptions,
    DiffRules,
    Match,
    PathRewrite,
    ReplayOptions,
    ShadowOptions,
    Target,
    TeeOptions,
    parse_duration,
)
from replay.schedule import Pacing, Segment, ramp, stages
from shadowtap.cli import run_async
from shadowtap.cliopts import kafka_source_options, source_options, stream_options
from shadowtap.stream import StreamOptions

_NAME = re.compile(r"^([A-Za-z0-9_.-]+)=(.*)$", re.S)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_GROUP_REF = re.compile(r"\\(\d+)|\\g<([^>]*)>")


class OptionError(click.BadParameter):
    """A bad option value, shown as exactly its one-sentence message."""

    def format_message(self) -> str:
        return self.message


def _number(option: str, text: str, what: str = "a number above 0", minimum: float = 0.0,
            inclusive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    ok = (value >= minimum) if inclusive else (value > minimum)
    if not (ok and value < math.inf):
        raise OptionError(f"cannot parse {option} {text!r}: expected {what}")
    return value


def _seconds(option: str, text: str) -> float:
    """`90`, `90s`, `1.5m`, `500ms`, `2h` → seconds (above 0)."""
    value = parse_duration(text)
    if value is None:
        raise OptionError(f"cannot parse {option} {text!r}: expected a duration above 0 like 30s, 2m or 500ms")
    return value


def _positive(option: str, what: str):
    def convert(_ctx: click.Context, _param: click.Parameter, text: str | None) -> float | None:
        return None if text is None else _number(option, text, what)

    return convert


def _duration(_ctx: click.Context, _param: click.Parameter, text: str | None) -> float | None:
    return None if text is None else _seconds("--duration", text)


def _rate(_ctx: click.Context, _param: click.Parameter, text: str | None) -> float | None:
    if text is None:
        return None
    if text.strip().lower() == "max":
        return math.inf
    return _number("--rate", text, "a number or 'max'")


def _ramp(_ctx: click.Context, _param: click.Parameter, text: str | None) -> tuple[Segment, ...] | None:
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) != 3:
        raise OptionError(f"cannot parse --ramp {text!r}: expected START:END:DURATION like 100:2000:60s")
    what = "rates of 0 or more requests/s"
    start = _number(f"--ramp {text!r} start", parts[0], what, inclusive=True)
    end = _number(f"--ramp {text!r} end", parts[1], what, inclusive=True)
    if start == 0 and end == 0:
        raise OptionError(f"cannot parse --ramp {text!r}: the start or the end rate must be above 0")
    return ramp(start, end, _seconds(f"--ramp {text!r} duration", parts[2]))


def _stages(_ctx: click.Context, _param: click.Parameter, text: str | None) -> tuple[Segment, ...] | None:
    if text is None:
        return None
    steps = []
    for step in text.split(","):
        duration, sep, rate = step.partition(":")
        if not sep:
            raise OptionError(f"cannot parse --stages {text!r}: expected DURATION:RATE,... like 30s:500,60s:2000")
        steps.append((_seconds(f"--stages {step!r}", duration),
                      _number(f"--stages {step!r} rate", rate, "a rate of 0 or more requests/s", inclusive=True)))
    if not any(rate > 0 for _, rate in steps):
        raise OptionError(f"cannot parse --stages {text!r}: at least one stage needs a rate above 0")
    return stages(steps)


def _target(spec: str, index: int, option: str = "--target") -> Target:
    m = _NAME.match(spec)
    name, url = (m.group(1), m.group(2)) if m else (f"t{index}", spec)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise OptionError(f"cannot parse {option} {spec!r}: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise OptionError(f"cannot parse {option} {spec!r}: the URL must start with http:// or https://")
    if not parts.hostname or port == 0:
        raise OptionError(f"cannot parse {option} {spec!r}: the URL needs a host (and a port above 0)")
    if parts.query or parts.fragment or "?" in url or "#" in url or any(c.isspace() for c in url):
        raise OptionError(f"cannot parse {option} {spec!r}: a base URL has no query, fragment or spaces")
    if parts.username is not None:
        raise OptionError(f"cannot parse {option} {spec!r}: credentials in the URL are not supported")
    return Target(name, url)


def _targets(_ctx: click.Context, _param: click.Parameter, specs: tuple[str, ...] | str) -> tuple[Target, ...]:
    targets = tuple(_target(spec, i) for i, spec in enumerate((specs,) if isinstance(specs, str) else specs, 1))
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


def _scoped(text: str) -> tuple[str | None, str]:
    """`[TARGET:]rest` → (target name or None, rest); header names never contain ':'."""
    head, sep, rest = text.partition(":")
    if sep and _NAME.match(head + "=") and "=" not in head:
        return head, rest
    return None, text


def _set_headers(_ctx: click.Context, _param: click.Parameter, specs: tuple[str, ...]) -> list[tuple[Any, str, str]]:
    out = []
    for spec in specs:
        left, sep, value = spec.partition("=")
        scope, name = _scoped(left)
        if not sep or not _TOKEN.match(name) or any(c in value for c in "\r\n"):
            raise OptionError(f"cannot parse --set-header {spec!r}: expected [TARGET:]Name=value")
        out.append((scope, name, value))
    return out


def _drop_headers(_ctx: click.Context, _param: click.Parameter, specs: tuple[str, ...]) -> list[tuple[Any, str]]:
    out = []
    for spec in specs:
        scope, name = _scoped(spec)
        if not _TOKEN.match(name):
            raise OptionError(f"cannot parse --drop-header {spec!r}: expected [TARGET:]Name")
        out.append((scope, name.lower()))
    return out


def _timeouts(_ctx: click.Context, _param: click.Parameter, specs: tuple[str, ...]) -> list[tuple[Any, float]]:
    out = []
    for spec in specs:
        m = _NAME.match(spec)
        scope, text = (m.group(1), m.group(2)) if m else (None, spec)
        out.append((scope, _number("--timeout", text, "seconds above 0 (or NAME=SECONDS)")))
    return out


def _rewrites(_ctx: click.Context, _param: click.Parameter, specs: tuple[str, ...]) -> tuple[PathRewrite, ...]:
    out = []
    for spec in specs:
        pattern, sep, replacement = spec.partition("=>")
        if not sep or not pattern:
            raise OptionError(f"cannot parse --rewrite-path {spec!r}: expected 'REGEX=>REPLACEMENT'")
        try:
            compiled = re.compile(pattern)
            re.compile(pattern.encode())
        except (re.error, UnicodeEncodeError) as e:
            raise OptionError(f"cannot parse --rewrite-path {spec!r}: bad regular expression ({e})") from e
        for number, name in _GROUP_REF.findall(replacement):
            ref = number or name
            known = int(ref) <= compiled.groups if ref.isdigit() else ref in compiled.groupindex
            if not known:
                raise OptionError(f"cannot parse --rewrite-path {spec!r}: the replacement refers to a group "
                                  f"the expression does not have")
        out.append(PathRewrite(pattern, replacement))
    return tuple(out)


def _error_rate(_ctx: click.Context, _param: click.Parameter, text: str | None) -> float | None:
    if text is None:
        return None
    value = _number("--abort-on-error-rate", text.strip().removesuffix("%"), "a percentage like 50%")
    if value > 100:
        raise OptionError(f"cannot parse --abort-on-error-rate {text!r}: expected a percentage up to 100%")
    return value / 100.0


def _matches(_ctx: click.Context, _param: click.Parameter, specs: tuple[str, ...]) -> tuple[Match, ...]:
    out = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        kind, _, name = key.partition(":")
        kind = kind.strip().lower()
        if kind == "header" and _TOKEN.match(name):
            out.append(Match("header", value, name))
            continue
        if kind in ("method", "path", "status") and sep and value and not name:
            if kind == "path":
                try:
                    re.compile(value)
                except re.error as e:
                    raise OptionError(f"cannot parse --match {spec!r}: bad regular expression ({e})") from e
            if kind == "status" and not all(re.fullmatch(r"[1-5](\d\d|xx)", s.strip().lower())
                                            for s in value.split(",")):
                raise OptionError(f"cannot parse --match {spec!r}: expected statuses like 500 or 5xx")
            out.append(Match(kind, value))
            continue
        raise OptionError(f"cannot parse --match {spec!r}: expected method=GET,HEAD, path=REGEX, "
                          f"header:NAME[=VALUE] or status=5xx")
    return tuple(out)


def _pacing(speed: float | None, rate: float | None, ramp_: tuple[Segment, ...] | None,
            stages_: tuple[Segment, ...] | None, arrival: str | None, seed: int, default: Pacing) -> Pacing:
    chosen = [name for name, v in (("--speed", speed), ("--rate", rate), ("--ramp", ramp_), ("--stages", stages_))
              if v is not None]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)} cannot be used together: choose one")
    profile = ramp_ or stages_ or ()
    if arrival is not None and not profile and (rate is None or rate == math.inf):
        raise click.UsageError(f"--arrival {arrival} needs --rate N, --ramp or --stages")
    if not chosen:
        return default
    return Pacing(speed=speed or 1.0, rate=rate, profile=profile, poisson=arrival == "poisson", seed=seed)


def _apply_rules(targets: tuple[Target, ...], timeouts: list[tuple[Any, float]],
                 set_headers: list[tuple[Any, str, str]], drop_headers: list[tuple[Any, str]]) -> tuple[Target, ...]:
    """Give each target its timeout and header rules: unscoped ones apply to all targets."""
    names = {t.name for t in targets}
    for scope in [s for s, *_ in (*timeouts, *set_headers, *drop_headers) if s is not None]:
        if scope not in names:
            raise click.UsageError(f"no --target is named {scope!r} (targets: {', '.join(sorted(names))})")
    out = []
    for t in targets:
        timeout = next((v for s, v in reversed(timeouts) if s == t.name), None)
        sets = tuple((n, v) for s, n, v in set_headers if s in (None, t.name))
        drops = frozenset(n for s, n in drop_headers if s in (None, t.name))
        out.append(Target(t.name, t.url, timeout, sets, drops))
    return tuple(out)


def _common(f: Callable[..., Any], report_help: str = "Write the JSON report (counts, latency percentiles in ms); "
                                                      "a name ending in .html gets the HTML page instead.",
            report_metavar: str = "FILE") -> Callable[..., Any]:
    """The options shared by the modes: pacing, limits, request rules, TLS, outputs."""
    options = [
        click.option("-i", "--input", "input_", metavar="ADDR", required=True,
                     help="Records to replay: '-' (stdin), a JSONL file, or a spool directory."),
        click.option("--speed", metavar="X", callback=_positive("--speed", "a number above 0"),
                     help="Replay the recorded timing X times faster (shadow's default: 1, as recorded)."),
        click.option("--rate", metavar="N|max", callback=_rate,
                     help="N requests per second regardless of timestamps, or 'max': as fast as "
                          "--max-inflight allows (waits for a free slot instead of dropping)."),
        click.option("--ramp", "ramp_", metavar="START:END:DURATION", callback=_ramp,
                     help="Rate rising (or falling) linearly from START to END requests/s over DURATION "
                          "(e.g. 100:2000:60s), then held at END."),
        click.option("--stages", "stages_", metavar="DURATION:RATE,...", callback=_stages,
                     help="Constant rates one after another (e.g. 30s:500,60s:2000); the run ends with the last."),
        click.option("--arrival", type=click.Choice(["uniform", "poisson"]), default=None,
                     help="With a rate: evenly spaced (default) or exponential gaps (a Poisson process)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Poisson gaps."),
        click.option("--duration", metavar="DURATION", callback=_duration,
                     help="Stop scheduling after this long (seconds, or 30s, 5m, 1h)."),
        click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Stop after N records."),
        click.option("--max-inflight", type=click.IntRange(min=1), default=256, show_default=True, metavar="N",
                     help="Outstanding requests per target (waiting for a connection or on the wire); "
                          "a request due beyond it is dropped and counted."),
        click.option("--connections", type=click.IntRange(min=1), metavar="N",
                     help="Keep-alive connections per target (default: --max-inflight). Fewer connections "
                          "than --max-inflight makes requests wait for one, as with wrk2's -c."),
        click.option("--timeout", "timeouts", metavar="[NAME=]SECONDS", multiple=True, callback=_timeouts,
                     help="Per request, from send to the end of the response; NAME= for one target "
                          "(repeatable).  [default: 10]"),
        click.option("--allow-writes", is_flag=True,
                     help="Also replay methods other than GET, HEAD and OPTIONS "
                          "(otherwise they are skipped and counted)."),
        click.option("--marker", metavar="'NAME: VALUE'", callback=_marker,
                     help="Header added to every replayed request.  [default: 'X-Shadowtap: 1']"),
        click.option("--target-host-header", "host_header", metavar="HOST", callback=_host,
                     help="Host header for every request (default: the record's Host, else the target's host:port)."),
        click.option("--set-header", "set_headers", metavar="[NAME:]HEADER=VALUE", multiple=True,
                     callback=_set_headers,
                     help="Replace (or add) a header, on every target or on target NAME only (repeatable)."),
        click.option("--drop-header", "drop_headers", metavar="[NAME:]HEADER", multiple=True, callback=_drop_headers,
                     help="Remove a header, on every target or on target NAME only (repeatable)."),
        click.option("--rewrite-path", "rewrite_paths", metavar="'REGEX=>REPLACEMENT'", multiple=True,
                     callback=_rewrites,
                     help="Rewrite every request target (path and query), Python re.sub syntax (repeatable)."),
        click.option("--insecure", is_flag=True, help="Do not verify the TLS certificates of https:// targets."),
        click.option("--client", type=click.Choice(CLIENTS), default="auto", show_default=True,
                     help="HTTP client: lean (fast, plain http), aiohttp (also https), auto (lean for http://)."),
        click.option("--abort-on-error-rate", "abort_error_rate", metavar="PCT", callback=_error_rate,
                     help="Stop the run (exit 3) when a target's 5xx and failed requests reach PCT (e.g. 50%) "
                          "of its last --error-window requests."),
        click.option("--error-window", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
                     help="Requests per target the --abort-on-error-rate breaker looks back over."),
        click.option("--outcomes", metavar="ADDR",
                     help="Write one JSON line per request per target (times in Unix seconds, latencies in ms) "
                          "to a file ('-': stdout), or one message each to kafka://HOST:PORT/TOPIC."),
        click.option("--report", metavar=report_metavar, help=report_help),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _replay_options(p: dict[str, Any], pacing: Pacing, targets: tuple[Target, ...],
                    wait_for_slot: bool | None = None) -> ReplayOptions:
    tls = next((t for t in targets if t.tls), None)
    if p["client"] == "lean" and tls is not None:
        raise click.UsageError(f"--client lean speaks plain http only; target {tls.name!r} is {tls.url}")
    return ReplayOptions(
        pacing=pacing, max_inflight=p["max_inflight"], connections=p["connections"], wait_for_slot=wait_for_slot,
        duration=p["duration"], limit=p["limit"], loop=p.get("loop", False),
        timeout=next((v for s, v in reversed(p["timeouts"]) if s is None), 10.0),
        allow_writes=p["allow_writes"], marker=p["marker"], host_header=p["host_header"],
        rewrite_paths=p["rewrite_paths"], client=p["client"], insecure=p["insecure"],
        abort_error_rate=p["abort_error_rate"], error_window=p["error_window"],
        progress=sys.stderr.isatty(),
    )


def _stream(p: dict[str, Any], follow: bool) -> StreamOptions:
    return stream_options(p["settings"], p["group"], p["start"], p["until"], follow)


@click.group()
def replay() -> None:
    """Replay a stream of records against targets."""


@replay.command(short_help="Fire-and-forget dark traffic: every record to every target, open loop.")
@click.option("--target", "targets", metavar="[NAME=]URL", multiple=True, required=True, callback=_targets,
              help="Base URL (http:// or https://, optional path prefix) that receives every record; "
                   "repeat for several targets. Names default to t1, t2, ...")
@click.option("--loop", is_flag=True,
              help="Repeat the input (a file or spool) with shifted timestamps and ids suffixed #1, #2, ... "
                   "until --duration or --limit.")
@click.option("--workers", type=int, metavar="N",
              help="Replay in N processes of one consumer group (kafka:// input only); --rate is the group's "
                   "total, each worker pacing the share its partitions are of the topic. One report from all "
                   "workers' outcomes. Default: 1, in this process.")
@source_options
@_common
def shadow(**p: Any) -> int:
    """Send every record to every target, open loop (fire-and-forget dark traffic).

    Pacing is absolute: a slow target never slows the schedule; when a target has
    --max-inflight requests outstanding, new ones are dropped and counted. Only GET, HEAD and
    OPTIONS are replayed unless --allow-writes. Prints a summary table at the end; Ctrl-C
    stops, waits up to 5 s for in-flight requests and still writes outcomes and the report.
    """
    if p["loop"] and p["duration"] is None and p["limit"] is None:
        raise click.UsageError("--loop needs --duration or --limit: a looped input never ends by itself")
    pacing = _pacing(p["speed"], p["rate"], p["ramp_"], p["stages_"], p["arrival"], p["seed"], Pacing())
    targets = _apply_rules(p["targets"], p["timeouts"], p["set_headers"], p["drop_headers"])
    options = ShadowOptions(input=p["input_"], targets=targets, replay=_replay_options(p, pacing, targets),
                            stream=_stream(p, follow=p["follow"]), outcomes=p["outcomes"], report=p["report"])
    if p["workers"] is not None:
        from replay.workers import workers_main

        return workers_main(options, p["workers"])
    from replay.shadow import shadow_main

    return run_async(shadow_main(options))


@replay.command(short_help="Copy a (live) stream to one debug target; one line per request, dumps of differences.")
@click.option("--target", "target", metavar="[NAME=]URL", required=True, callback=_targets,
              help="Base URL of the debug target (http:// or https://, optional path prefix).")
@click.option("--follow", "-f", is_flag=True,
              help="Keep reading as the input grows (a JSONL file or spool directory being written; stdin "
                   "until it closes).")
@click.option("--from-end", is_flag=True, help="With --follow: skip what the file already holds.")
@click.option("--match", "matches", metavar="FILTER", multiple=True, callback=_matches,
              help="Only records matching: method=GET,HEAD | path=REGEX | header:NAME[=VALUE] | "
                   "status=500,5xx (the original status). Repeat: all must match.")
@click.option("--dump", metavar="DIR",
              help="Save request/response pairs (and the original response when known) of requests whose "
                   "status differs from the original or that failed.")
@click.option("--dump-all", is_flag=True, help="With --dump: save every exchange.")
@kafka_source_options
@_common
def tee(**p: Any) -> int:
    """Send each record to one target as it is read and print what came back, one line per request:

    time, method, target, original status -> new status (or error class), latency, notes.

    Without a pacing option, records go out as they are read; --timeout and --max-inflight
    (requests beyond it are dropped and shown) keep a hanging debug build from stalling the
    stream. The summary table goes to stderr at the end; Ctrl-C ends --follow.
    """
    if p["dump_all"] and not p["dump"]:
        raise click.UsageError("--dump-all needs --dump DIR")
    as_read = Pacing(rate=math.inf)
    pacing = _pacing(p["speed"], p["rate"], p["ramp_"], p["stages_"], p["arrival"], p["seed"], as_read)
    (target,) = _apply_rules(p["target"], p["timeouts"], p["set_headers"], p["drop_headers"])
    options = TeeOptions(
        input=p["input_"], target=target,
        replay=_replay_options(p, pacing, (target,), wait_for_slot=False if pacing is as_read else None),
        stream=_stream(p, follow=False), follow=p["follow"], from_end=p["from_end"], matches=p["matches"],
        dump=p["dump"], dump_all=p["dump_all"],
        outcomes=p["outcomes"], report=p["report"],
    )
    from replay.tee import tee_main

    return run_async(tee_main(options))


def _rate_option(option: str):
    def convert(_ctx: click.Context, _param: click.Parameter, text: str | None) -> float | None:
        if text is None:
            return None
        value = _number(option, text.strip().removesuffix("%"), "a percentage like 1% or 0.03%", inclusive=True)
        if value > 100:
            raise OptionError(f"cannot parse {option} {text!r}: expected a percentage up to 100%")
        return value / 100.0

    return convert


def _header_names(_ctx: click.Context, _param: click.Parameter, names: tuple[str, ...]) -> frozenset[str]:
    for name in names:
        if not _TOKEN.match(name):
            raise OptionError(f"cannot parse --ignore-header {name!r}: expected a header name")
    return frozenset(n.lower() for n in names)


def _compare_report(f: Callable[..., Any]) -> Callable[..., Any]:
    return _common(f, "Directory receiving compare.json (differences per endpoint and field, with examples), "
                      "latency.json (each side's counts and latency percentiles) and compare.html (both on "
                      "one page).", "DIR")


@replay.command(short_help="Tap-compare: each request to primary and candidate, field-level diffs, noise cancelled.")
@click.option("--primary", metavar="URL", required=True,
              help="Base URL of the version in production (the reference): an instance set aside for the "
                   "comparison, it gets the replayed traffic too.")
@click.option("--candidate", metavar="URL", required=True, help="Base URL of the new version.")
@click.option("--secondary", metavar="URL",
              help="Base URL of a second instance of the primary's version: where it differs from the primary "
                   "(timestamps, ids, random order) is noise, cancelled from the candidate's differences.")
@click.option("--ignore-header", "ignore_headers", metavar="NAME", multiple=True, callback=_header_names,
              help="Leave this response header out of the comparison (repeatable; Date, Set-Cookie, "
                   "Content-Length, request ids and timings are left out already).")
@click.option("--compare-all-headers", is_flag=True, help="Do not leave out the default headers either.")
@click.option("--ignore", "ignore_fields", metavar="GLOB", multiple=True,
              help="Leave out fields matching this glob: body.meta.*, header.x-*, status (repeatable).")
@click.option("--max-diff-rate", metavar="PCT", default="0%", show_default=True,
              callback=_rate_option("--max-diff-rate"),
              help="Exit 3 when an endpoint has more than this share of requests with real differences.")
@click.option("--relative-threshold", metavar="PCT", default="20%", show_default=True,
              callback=_rate_option("--relative-threshold"),
              help="A field differs for real when the candidate differs more often than the secondary by "
                   "more than this share of the secondary's rate...")
@click.option("--absolute-threshold", metavar="PCT", default="0.03%", show_default=True,
              callback=_rate_option("--absolute-threshold"),
              help="... and by more than this share of the requests.")
@click.option("--examples", type=click.IntRange(min=0), default=3, show_default=True, metavar="N",
              help="Examples kept per endpoint and field in the report.")
@kafka_source_options
@_compare_report
def compare(**p: Any) -> int:
    """Send every record to the primary, the candidate and the secondary (if given) and compare
    what comes back: status, headers and body, a JSON body field by field, grouped by endpoint
    (method and path with ids as {id}).

    Differences the secondary also shows are noise; the rest are real. The differences go to
    stdout, the latency table of each side to stderr. Exit 3 when an endpoint's share of
    requests with real differences is above --max-diff-rate. Only GET, HEAD and OPTIONS are
    replayed unless --allow-writes (a write would reach the primary too).
    """
    specs = [("primary", p["primary"]), ("secondary", p["secondary"]), ("candidate", p["candidate"])]
    targets = tuple(Target(name, _target(url, 0, f"--{name}").url) for name, url in specs if url is not None)
    targets = _apply_rules(targets, p["timeouts"], p["set_headers"], p["drop_headers"])
    pacing = _pacing(p["speed"], p["rate"], p["ramp_"], p["stages_"], p["arrival"], p["seed"], Pacing())
    ignored = (frozenset() if p["compare_all_headers"] else DEFAULT_IGNORED_HEADERS) | p["ignore_headers"]
    options = CompareOptions(
        input=p["input_"], targets=targets, replay=_replay_options(p, pacing, targets), stream=_stream(p, follow=False),
        rules=DiffRules(ignored, tuple(p["ignore_fields"])), relative=p["relative_threshold"],
        absolute=p["absolute_threshold"], max_diff_rate=p["max_diff_rate"], examples=p["examples"],
        outcomes=p["outcomes"], report=p["report"],
    )
    from replay.compare import compare_main

    return run_async(compare_main(options))
