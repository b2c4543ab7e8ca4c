"""`shadowtap capture ...`: option parsing only; the work is in capture.nginx, capture.haproxy
(both through capture.run) and the lazily imported modules of LAZY_COMMANDS."""

from __future__ import annotations

from collections.abc import Callable

import click

from shadowtap.cli import LazyGroup, run_async
from shadowtap.cliopts import sink_options

LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, attribute, one-line help); the module is imported only when the command runs
    "pcap": ("capture.pcap_cli", "pcap", "Read HTTP/1.x requests and their responses from pcap/pcapng files."),
    "sniff": ("capture.pcap_cli", "sniff", "Capture HTTP/1.x requests and responses live from a network interface."),
    "gor": ("capture.pcap_cli", "gor", "Read GoReplay .gor files (requests and their original responses)."),
}


@click.group("capture", cls=LazyGroup, lazy=LAZY_COMMANDS)
def capture() -> None:
    """Capture traffic from access logs (and later packets) into a stream of records.

    Every input line becomes a record, a counted skip, or a dead letter with its reason; a
    summary line on stderr accounts for all of them.
    """


SHIPPER_HELP = """
Delivery is at-least-once: with --checkpoint FILE the position of every file (identified by
a fingerprint of its first line, so rename and copytruncate rotation are followed) moves only
after the output confirmed what was read (a JSONL file is flushed and fsynced, Kafka
acknowledged), so a restart, even after kill -9, loses nothing and repeats at most what was
read since the last confirmation (same record ids). SIGTERM flushes, checkpoints and exits 0.

Secrets are scrubbed by default: Authorization, Proxy-Authorization, Cookie and Set-Cookie
values, and query parameters named like token/password/secret/key/signature/session/auth.
"""


def _ship_options(func: Callable) -> Callable:
    """The options every shipper shares, passed on as keyword arguments."""
    options = [
        click.option("-o", "--output", required=True, metavar="ADDR",
                     help="Where records go: '-', a JSONL file (.gz ok), a spool directory (trailing '/'), "
                          "or kafka://HOST:PORT/TOPIC."),
        click.option("--follow", is_flag=True,
                     help="Keep reading as the files grow, like tail -F: globs pick up new files, "
                          "rotated files are finished first."),
        click.option("--checkpoint", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Keep each file's confirmed position here and resume from it (at-least-once)."),
        click.option("--checkpoint-interval", type=float, default=1.0, show_default=True, metavar="SECONDS",
                     help="How often the output is confirmed and the checkpoint written."),
        click.option("--poll-interval", type=float, default=0.25, show_default=True, metavar="SECONDS",
                     help="How often followed files are looked at when nothing was new."),
        click.option("--stats-interval", type=float, metavar="SECONDS",
                     help="Print a stats line to stderr this often (lines/s, records, skips and dead "
                          "letters by reason, checkpoint lag)."),
        click.option("--dead-letter", type=click.Path(dir_okay=False), metavar="PATH",
                     help="Append lines that are not records here as JSONL (file, line, offset, reason, "
                          "raw line, scrubbed)."),
        click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
                     help="skip: dead-letter bad lines and go on; fail: stop at the first one (exit 1)."),
        click.option("--no-scrub", is_flag=True,
                     help="Keep secrets instead of replacing them; scrubbing is on by default."),
        click.option("--scrub", "scrub_mode", type=click.Choice(["marker", "hash"]), default="marker",
                     show_default=True,
                     help="Replace secrets by SCRUBBED, or by a keyed hash that keeps cardinality (the key "
                          "comes from SHADOWTAP_SCRUB_KEY)."),
        click.option("--scrub-header", multiple=True, metavar="NAME", help="Also scrub this header; repeatable."),
        click.option("--scrub-param", multiple=True, metavar="NAME",
                     help="Also scrub this query parameter; repeatable."),
        click.option("--sample", metavar="RATE", help="Keep this share of records: 10% or 0.1."),
        click.option("--sample-key", metavar="KEY",
                     help="Sample consistently by client, header:NAME or cookie:NAME (a session is all in "
                          "or all out); also sets each record's session."),
        click.option("--method", multiple=True, metavar="METHODS", help="Keep only these methods: GET,HEAD."),
        click.option("--path", "path_regex", metavar="REGEX", help="Keep only paths matching this regex."),
        click.option("--exclude-path", metavar="REGEX", help="Leave out paths matching this regex."),
        click.option("--status", multiple=True, metavar="CODES", help="Keep only these statuses: 2xx,304."),
    ]
    for option in reversed(options):
        func = option(func)
    return sink_options(func)


def _ship(paths: tuple[str, ...], listen: str | None, settings, output, follow, checkpoint, checkpoint_interval,
          poll_interval, stats_interval, dead_letter, on_error, no_scrub, scrub_mode, scrub_header,
          scrub_param, sample, sample_key, method, path_regex, exclude_path, status):
    """ShipOptions from the shared options (wrong values raise UsageError naming them)."""
    from capture.run import ShipOptions
    from capture.sample import Selection, compile_path, parse_key, parse_methods, parse_rate, parse_statuses

    selection = Selection(
        methods=parse_methods(method), path=compile_path(path_regex, "--path"),
        exclude_path=compile_path(exclude_path, "--exclude-path"), statuses=parse_statuses(status),
        rate=parse_rate(sample) if sample is not None else 1.0,
        key=parse_key(sample_key) if sample_key is not None else None,
    )
    return ShipOptions(
        paths=tuple(paths), output=output, sink_settings=tuple(settings), listen=listen, follow=follow,
        checkpoint=checkpoint, checkpoint_interval=checkpoint_interval, poll_interval=poll_interval,
        stats_interval=stats_interval, dead_letter=dead_letter, strict=on_error == "fail", scrub=not no_scrub,
        scrub_mode=scrub_mode, scrub_headers=tuple(scrub_header), scrub_params=tuple(scrub_param),
        selection=selection,
    )


@capture.command("nginx", epilog=SHIPPER_HELP)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--format", "log_format", default="combined", show_default=True, metavar="FORMAT",
              help="A preset (combined, main, upstreaminfo) or a log_format string pasted from "
                   "nginx.conf, e.g. '$remote_addr [$time_local] \"$request\" $status'.")
@click.option("--escape", type=click.Choice(["default", "json", "none"]), default="default",
              show_default=True, help="The log_format's escape= setting.")
@click.option("--format-file", type=click.Path(dir_okay=False), metavar="NGINX.CONF",
              help="Read the log_format from this nginx config file (with --format-name).")
@click.option("--format-name", metavar="NAME", help="Which log_format of --format-file to use.")
@_ship_options
def nginx(paths, log_format, escape, format_file, format_name, **ship) -> int:
    """Read nginx access logs (PATH '-' is stdin; '.gz' is decompressed; a quoted glob is expanded,
    and with --follow keeps picking up new files that match it).

    nginx logs a request when it ends; when the format has $request_time the record's ts is the
    arrival time (log time minus request time).
    """
    from capture.nginx import NginxCaptureOptions, capture_nginx

    opts = NginxCaptureOptions(
        ship=_ship(paths, None, **ship), format=log_format, escape=escape, format_file=format_file,
        format_name=format_name,
    )
    return run_async(capture_nginx(opts))


@capture.command("haproxy", epilog=SHIPPER_HELP)
@click.argument("paths", nargs=-1, metavar="[PATH...]")
@click.option("--listen", metavar="ADDR",
              help="Receive syslog instead of reading files: udp://HOST:PORT (HAProxy's `log HOST:PORT "
                   "local0`) or tcp://HOST:PORT.")
@click.option("--format", "log_format", default="httplog", show_default=True, metavar="FORMAT",
              help="httplog, clf, httpslog, tcplog (lines are counted skips: no HTTP request), or a "
                   "log-format string, e.g. '%ci:%cp [%tr] %ft %b/%s %ST %B %{+Q}r'.")
@click.option("--capture-headers", metavar="NAMES",
              help="Names of the `capture request header` lines, in order (Host,User-Agent): the "
                   "captured values become record headers.")
@click.option("--capture-response-headers", metavar="NAMES",
              help="Names of the `capture response header` lines, in order.")
@_ship_options
def haproxy(paths, listen, log_format, capture_headers, capture_response_headers, **ship) -> int:
    """Read HAProxy logs from files (PATH '-' is stdin; globs as for nginx) or receive them as
    syslog (--listen).

    A syslog prefix (RFC 3164, RFC 5424, `haproxy[pid]:`) is detected per line, or there is none
    (`log stdout format raw`). HAProxy's dates carry no offset: they are read in this machine's
    time zone (set TZ when HAProxy's differs).
    """
    from capture.haproxy import HaproxyCaptureOptions, capture_haproxy

    def names(text: str | None) -> tuple[str, ...]:
        return tuple(n.strip() for n in text.split(",")) if text else ()

    opts = HaproxyCaptureOptions(
        ship=_ship(paths, listen, **ship), format=log_format, capture_headers=names(capture_headers),
        capture_response_headers=names(capture_response_headers),
    )
    return run_async(capture_haproxy(opts))
