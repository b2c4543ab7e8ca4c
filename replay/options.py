"""Option objects of the replay modes: plain data, built by the CLI or by a caller."""

from __future__ import annotations

from dataclasses import dataclass, field

from replay.schedule import Pacing

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods replayed without --allow-writes."""

DEFAULT_MARKER = ("X-Shadowtap", "1")


@dataclass(frozen=True, slots=True)
class Target:
    """A named base URL that receives replayed requests."""

    name: str
    """Name used in outcomes and reports (`t1`, `t2`, ... unless given)."""
    url: str
    """Base URL, http:// or https://; a path prefix is put before every record's target."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How records are paced and sent; shared by the replay modes."""

    pacing: Pacing = field(default_factory=Pacing)
    max_inflight: int = 256
    """Outstanding requests per target before further ones are dropped (counted)."""
    duration: float | None = None
    """Stop scheduling after this many seconds."""
    limit: int | None = None
    """Stop after this many records were scheduled."""
    timeout: float = 10.0
    """Seconds a request may take from send to the end of the response."""
    allow_writes: bool = False
    """Also replay methods other than GET, HEAD and OPTIONS."""
    marker: tuple[str, str] = DEFAULT_MARKER
    """Header put on every replayed request."""
    host_header: str | None = None
    """Host header for every request instead of the record's."""
    progress: bool = False
    """Show a live progress line on stderr."""
    handle_signals: bool = True
    """Turn SIGINT/SIGTERM into a graceful stop (main thread only)."""


@dataclass(frozen=True, slots=True)
class ShadowOptions:
    """Everything `shadowtap replay shadow` needs."""

    input: str
    """Source address (see Addresses in DESIGN.md)."""
    targets: tuple[Target, ...]
    replay: ReplayOptions = field(default_factory=ReplayOptions)
    outcomes: str | None = None
    """JSONL file (or `-`) receiving one Outcome per request per target."""
    report: str | None = None
    """JSON report file (or `-`)."""
