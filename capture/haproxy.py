"""`capture haproxy`: HAProxy logs (httplog, clf, httpslog, tcplog or any log-format), from
files or received as syslog, into a stream of records."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from capture.run import ShipOptions, ship_logs

_BLOCK = re.compile(rb"\{[^{}]*\}")
_COOKIE = re.compile(rb"(?<=\s)([!#$%&'*+\-.^_`|~0-9A-Za-z]+)=([^\s\"{}|]+)")


@dataclass(frozen=True, slots=True)
class HaproxyCaptureOptions:
    """Everything `capture haproxy` needs; the CLI fills it in."""

    ship: ShipOptions = field(default_factory=ShipOptions)
    format: str = "httplog"
    capture_headers: tuple[str, ...] = ()
    capture_response_headers: tuple[str, ...] = ()


def redact(raw: bytes) -> bytes:
    """A dead-lettered HAProxy line without what can hold secrets even where the line does
    not match the format: captured header blocks `{...}` and captured cookies `name=value`."""
    return _COOKIE.sub(rb"\1=SCRUBBED", _BLOCK.sub(b"{SCRUBBED}", raw))


async def capture_haproxy(opts: HaproxyCaptureOptions) -> int:
    """Ship HAProxy log lines into the output; print the summary on stderr; return the exit code."""
    from parsers.haproxy import compile_format

    log_format = compile_format(opts.format, opts.capture_headers, opts.capture_response_headers)
    return await ship_logs("haproxy", opts.ship, log_format, redact)
