"""`shadowtap capture ...`: option parsing only; the work is in capture.nginx."""

from __future__ import annotations

import click

from shadowtap.cli import LazyGroup, run_async

LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, attribute, one-line help); the module is imported only when the command runs
}


@click.group("capture", cls=LazyGroup, lazy=LAZY_COMMANDS)
def capture() -> None:
    """Capture traffic from access logs (and later packets) into a stream of records.

    Every input line becomes a record, a counted skip, or a dead letter with its reason; a
    summary line on stderr accounts for all of them.
    """


@capture.command("nginx")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("-o", "--output", required=True, metavar="ADDR",
              help="Where records go: '-', a JSONL file (.gz ok), or a spool directory (trailing '/').")
@click.option("--format", "log_format", default="combined", show_default=True, metavar="FORMAT",
              help="A preset (combined, main, upstreaminfo) or a log_format string pasted from "
                   "nginx.conf, e.g. '$remote_addr [$time_local] \"$request\" $status'.")
@click.option("--escape", type=click.Choice(["default", "json", "none"]), default="default",
              show_default=True, help="The log_format's escape= setting.")
@click.option("--format-file", type=click.Path(dir_okay=False), metavar="NGINX.CONF",
              help="Read the log_format from this nginx config file (with --format-name).")
@click.option("--format-name", metavar="NAME", help="Which log_format of --format-file to use.")
@click.option("--dead-letter", type=click.Path(dir_okay=False), metavar="PATH",
              help="Append unparseable lines here as JSONL (file, line, offset, reason, raw).")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
              help="skip: dead-letter bad lines and go on; fail: stop at the first one (exit 1).")
@click.option("--no-scrub", is_flag=True,
              help="Keep secrets (Authorization, Cookie, token-like query parameters) instead of "
                   "replacing them; scrubbing is on by default.")
def nginx(
    paths, output, log_format, escape, format_file, format_name, dead_letter, on_error, no_scrub
) -> int:
    """Read nginx access logs (PATH '-' is stdin; '.gz' files are decompressed).

    nginx logs a request when it ends; when the format has $request_time the record's ts is the
    arrival time (log time minus request time).
    """
    from capture.nginx import NginxCaptureOptions, capture_nginx

    opts = NginxCaptureOptions(
        paths=tuple(paths), output=output, format=log_format, escape=escape,
        format_file=format_file, format_name=format_name, dead_letter=dead_letter,
        scrub=not no_scrub, strict=on_error == "fail",
    )
    return run_async(capture_nginx(opts))
