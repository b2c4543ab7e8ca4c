"""`capture nginx`: nginx access logs, in any log_format, into a stream of records."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from capture.scrub import scrub
from capture.ship import DeadLetters, Shipper
from shadowtap.errors import EXIT_ERROR, EXIT_OK, UsageError
from shadowtap.streams import open_sink


@dataclass(frozen=True, slots=True)
class NginxCaptureOptions:
    """Everything `capture nginx` needs; the CLI fills it in."""

    paths: tuple[str, ...]
    output: str
    format: str = "combined"
    escape: str = "default"
    format_file: str | None = None
    format_name: str | None = None
    dead_letter: str | None = None
    scrub: bool = True
    strict: bool = False


def load_format(opts: NginxCaptureOptions):
    """Compile the log format named by the options (a preset, a string, or a config file)."""
    from parsers.nginx import compile_format, read_format_file

    if opts.format_file:
        if not opts.format_name:
            raise UsageError("--format-file needs --format-name to say which log_format to use")
        fmt, escape = read_format_file(opts.format_file, opts.format_name)
        return compile_format(fmt, escape)
    return compile_format(opts.format, opts.escape)


async def capture_nginx(opts: NginxCaptureOptions) -> int:
    """Parse every file into the output; print one summary line to stderr; return the exit code."""
    log_format = load_format(opts)
    dead_letters = DeadLetters(opts.dead_letter)
    sink = open_sink(opts.output)
    shipper = Shipper(
        parse=log_format.parse,
        sink=sink,
        transform=scrub if opts.scrub else None,
        dead_letters=dead_letters,
        strict=opts.strict,
    )
    try:
        for path in opts.paths:
            await shipper.ship_file(path)
    finally:
        await sink.close()
        dead_letters.close()
    stats = shipper.stats
    print(f"shadowtap capture nginx: {stats.summary()}", file=sys.stderr)
    if stats.dead and not opts.dead_letter:
        print(f"shadowtap: first dead letter: {dead_letters.first} (keep them with --dead-letter PATH)",
              file=sys.stderr)
    if stats.dead and not stats.records:
        print("shadowtap: error: no line could be parsed: check --format (or --escape) against the log",
              file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR if stats.unreadable else EXIT_OK
