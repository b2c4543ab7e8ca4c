"""`capture nginx`: nginx access logs, in any log_format, into a stream of records."""

from __future__ import annotations

from dataclasses import dataclass, field

from capture.run import ShipOptions, make_scrubber, ship_logs
from capture.scrub import Scrubber
from shadowtap.errors import UsageError


@dataclass(frozen=True, slots=True)
class NginxCaptureOptions:
    """Everything `capture nginx` needs; the CLI fills it in."""

    ship: ShipOptions = field(default_factory=ShipOptions)
    format: str = "combined"
    escape: str = "default"
    format_file: str | None = None
    format_name: str | None = None


def load_format(opts: NginxCaptureOptions):
    """Compile the log format named by the options (a preset, a string, or a config file)."""
    from parsers.nginx import compile_format, read_format_file

    if opts.format_file:
        if not opts.format_name:
            raise UsageError("--format-file needs --format-name to say which log_format to use")
        fmt, escape = read_format_file(opts.format_file, opts.format_name)
        return compile_format(fmt, escape)
    return compile_format(opts.format, opts.escape)


def _logs_secrets(variables: tuple[str, ...], scrubber: Scrubber | None) -> bool:
    """Whether a format logs values that are secret as a whole (cookies, credentials), which
    the raw-line rules could not find in a line that does not match the format."""
    return scrubber is not None and any(scrubber.field(v) == scrubber.value for v in variables)


async def capture_nginx(opts: NginxCaptureOptions) -> int:
    """Ship nginx log lines into the output; print the summary on stderr; return the exit code.

    When the format logs cookies or credential headers, dead letters keep no raw line (only
    its position, reason and length): scrubbing cannot find those values in a line that does
    not match the format.
    """
    log_format = load_format(opts)
    redact = (lambda _raw: None) if _logs_secrets(log_format.variables, make_scrubber(opts.ship)) else None
    return await ship_logs("nginx", opts.ship, log_format, redact)
