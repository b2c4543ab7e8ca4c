"""Option objects of the replay modes: plain data, built by the CLI or by a caller."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from replay.schedule import Pacing
from shadowtap.stream import StreamOptions

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods replayed without --allow-writes."""

DEFAULT_MARKER = ("X-Shadowtap", "1")

CLIENTS = ("auto", "lean", "aiohttp")
"""Sender implementations: `lean` (asyncio protocol + httptools, plain http only), `aiohttp`
(also https), `auto` (lean for http:// targets, aiohttp for https://)."""


def parse_duration(text: str) -> float | None:
    """`90`, `90s`, `1.5m`, `500ms`, `2h` → seconds; None unless it is a duration above 0."""
    m = _DURATION.match(text)
    value = float(m.group(1)) * _UNITS[m.group(2)] if m else 0.0
    return value if value > 0 else None


@dataclass(frozen=True, slots=True)
class Target:
    """A named base URL that receives replayed requests, with its own rules."""

    name: str
    """Name used in outcomes and reports (`t1`, `t2`, ... unless given)."""
    url: str
    """Base URL, http:// or https://; a path prefix is put before every record's target."""
    timeout: float | None = None
    """Seconds a request may take from send to the end of the response (None: the run's)."""
    set_headers: tuple[tuple[str, str], ...] = ()
    """Headers replacing every header of the same name (or added), in this order."""
    drop_headers: frozenset[str] = frozenset()
    """Lower-case names of headers removed from every request to this target."""

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")


@dataclass(frozen=True, slots=True)
class PathRewrite:
    """`--rewrite-path REGEX=>REPLACEMENT`, applied to the request target (path and query)."""

    pattern: str
    replacement: str

    def compile(self) -> tuple[re.Pattern[str], re.Pattern[bytes]]:
        """The pattern for text targets and the same pattern for raw (non-UTF-8) target bytes."""
        return re.compile(self.pattern), re.compile(self.pattern.encode())


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How records are paced and sent; shared by the replay modes."""

    pacing: Pacing = field(default_factory=Pacing)
    max_inflight: int = 256
    """Requests per target that may be outstanding (queued for a connection or on the wire);
    a request due beyond it is dropped and counted."""
    connections: int | None = None
    """Keep-alive connections per target (None: as many as max_inflight)."""
    wait_for_slot: bool | None = None
    """Wait for a free slot instead of dropping (None: only with `--rate max`)."""
    duration: float | None = None
    """Stop scheduling after this many seconds."""
    limit: int | None = None
    """Stop after this many records were scheduled."""
    loop: bool = False
    """Repeat the input (it must be a file) until --duration or --limit stops the run."""
    timeout: float = 10.0
    """Seconds a request may take from send to the end of the response (per target: Target.timeout)."""
    allow_writes: bool = False
    """Also replay methods other than GET, HEAD and OPTIONS."""
    marker: tuple[str, str] = DEFAULT_MARKER
    """Header put on every replayed request."""
    host_header: str | None = None
    """Host header for every request instead of the record's."""
    rewrite_paths: tuple[PathRewrite, ...] = ()
    """Applied in order to every request target."""
    client: str = "auto"
    """Which sender implementation (see CLIENTS)."""
    insecure: bool = False
    """Do not verify TLS certificates of https:// targets (self-signed debug builds)."""
    abort_error_rate: float | None = None
    """Stop the run when a target's share of failed requests (5xx or no response) over the
    last `error_window` requests reaches this fraction (0–1)."""
    error_window: int = 100
    """Requests per target the circuit breaker looks back over."""
    capture: bool = False
    """Keep the exact request and response bytes of every exchange (tee --dump)."""
    progress: bool = False
    """Show a live progress line on stderr."""
    handle_signals: bool = True
    """Turn SIGINT/SIGTERM into a graceful stop (main thread only)."""

    @property
    def pool_size(self) -> int:
        return min(self.connections or self.max_inflight, self.max_inflight)

    def timeout_for(self, target: Target) -> float:
        return self.timeout if target.timeout is None else target.timeout


@dataclass(frozen=True, slots=True)
class ShadowOptions:
    """Everything `shadowtap replay shadow` needs."""

    input: str
    """Source address (see Addresses in DESIGN.md)."""
    targets: tuple[Target, ...]
    replay: ReplayOptions = field(default_factory=ReplayOptions)
    stream: StreamOptions = field(default_factory=StreamOptions)
    """How to open the input (Kafka group, start, end, follow)."""
    outcomes: str | None = None
    """JSONL file (or `-`) receiving one Outcome per request per target."""
    report: str | None = None
    """JSON report file (or `-`)."""


@dataclass(frozen=True, slots=True)
class Match:
    """One `--match` filter of tee; a record passes when every filter matches."""

    kind: str
    """`method`, `path`, `header` or `status`."""
    value: str
    """Methods (comma-separated), a path regex, a header value, or statuses (`500`, `5xx`, comma-separated)."""
    name: str = ""
    """The header name, for kind `header`."""


@dataclass(frozen=True, slots=True)
class TeeOptions:
    """Everything `shadowtap replay tee` needs."""

    input: str
    target: Target
    replay: ReplayOptions = field(default_factory=ReplayOptions)
    stream: StreamOptions = field(default_factory=StreamOptions)
    """How to open a Kafka input (settings, group, start, end)."""
    follow: bool = False
    """Keep reading the input as it grows (a JSONL file being written, or stdin until it closes)."""
    from_end: bool = False
    """With follow: skip what the file already holds."""
    matches: tuple[Match, ...] = ()
    dump: str | None = None
    """Directory receiving request/response pairs of differing or failed requests."""
    dump_all: bool = False
    """Dump every exchange, not only the differing or failed ones."""
    outcomes: str | None = None
    report: str | None = None


DEFAULT_IGNORED_HEADERS = frozenset({
    "date", "expires", "last-modified", "age", "set-cookie", "content-length", "connection", "keep-alive",
    "transfer-encoding", "via", "x-request-id", "x-trace-id", "x-correlation-id", "traceparent", "tracestate",
    "server-timing", "x-runtime", "x-response-time",
})
"""Headers left out by default: they differ on every response (dates, ids, timings) or only
describe the transfer (the body itself is compared)."""

@dataclass(frozen=True, slots=True)
class DiffRules:
    """What is compared."""

    ignore_headers: frozenset[str] = DEFAULT_IGNORED_HEADERS
    """Lower-case header names left out."""
    ignore_fields: tuple[str, ...] = ()
    """Glob patterns of field names left out (`body.meta.*`, `header.x-*`)."""

    def kept(self, name: str) -> bool:
        return not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.ignore_fields)


@dataclass(frozen=True, slots=True)
class CompareOptions:
    """Everything `shadowtap replay compare` needs."""

    input: str
    targets: tuple[Target, ...]
    """primary, then secondary (optional), then candidate: named so."""
    replay: ReplayOptions = field(default_factory=ReplayOptions)
    stream: StreamOptions = field(default_factory=StreamOptions)
    rules: DiffRules = field(default_factory=DiffRules)
    relative: float = 0.2
    """A field is really different when its candidate difference rate is above the noise rate
    by more than this share of it..."""
    absolute: float = 0.0003
    """... and by more than this share of the requests."""
    max_diff_rate: float = 0.0
    """Exit 3 when an endpoint's share of requests with real differences is above this."""
    examples: int = 3
    """Examples kept per endpoint and field."""
    outcomes: str | None = None
    report: str | None = None
    """Directory receiving compare.json and latency.json."""
