"""Running a shipper: log files (read once or followed) or a syslog listener into a sink, with
checkpoints, a periodic stats line, and a clean stop on SIGTERM.

Delivery is at-least-once. Every `checkpoint_interval` seconds (and at the end) the shipper
confirms: `await sink.flush()` returns once everything sent so far is delivered (JSONL: written
and flushed to the OS, then fsynced when a checkpoint is kept; Kafka: acknowledged by the
broker), dead letters are flushed the same way, and only then the checkpoint moves to the
positions read before the flush. When the input goes idle the sink is flushed (records reach
readers promptly) without moving the checkpoint. A crash, even `kill -9`, loses
nothing: the next run starts from the last checkpoint and ships again what was read after it
(duplicates, bounded by one interval of input, with the same record ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from capture.checkpoint import Checkpoint
from capture.follow import Chunk, Follower, read_once
from capture.sample import Selection
from capture.scrub import Scrubber
from capture.ship import DeadLetters, DurableSink, Shipper, ShipStats
from capture.syslog import SyslogListener
from parsers.encode import LineEncoder
from shadowtap.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, InputError, UsageError
from shadowtap.record import Record
from shadowtap.stream import Sink, StreamOptions
from shadowtap.streams import open_sink

SCRUB_KEY_ENV = "SHADOWTAP_SCRUB_KEY"


@dataclass(frozen=True, slots=True)
class ShipOptions:
    """What every shipper command shares; the CLI fills it in."""

    paths: tuple[str, ...] = ()
    output: str = "-"
    sink_settings: tuple[tuple[str, str], ...] = ()
    """`-X key=value` settings for the sink (Kafka)."""
    listen: str | None = None
    """`udp://HOST:PORT` or `tcp://HOST:PORT`: receive syslog instead of reading files."""
    follow: bool = False
    checkpoint: str | None = None
    checkpoint_interval: float = 1.0
    """Seconds between confirmations (sink flush, then checkpoint write)."""
    poll_interval: float = 0.25
    """Seconds between looks at followed files when nothing was new."""
    stats_interval: float | None = None
    dead_letter: str | None = None
    strict: bool = False
    scrub: bool = True
    scrub_mode: str = "marker"
    scrub_headers: tuple[str, ...] = ()
    scrub_params: tuple[str, ...] = ()
    selection: Selection = field(default_factory=Selection)


class LogFormat(Protocol):
    """What a shipper needs from a compiled log format (parsers.nginx / parsers.haproxy)."""

    def parse(self, line: bytes, *, name: str | None, offset: int, fingerprint: str) -> Record: ...

    def fast_encoder(self, fingerprint: str, name: str | None, rules: Scrubber | None) -> LineEncoder | None: ...


def make_scrubber(opts: ShipOptions) -> Scrubber | None:
    """The Scrubber for the options: None with --no-scrub; hash mode takes its key from
    SHADOWTAP_SCRUB_KEY (a key on the command line would show in `ps`)."""
    if not opts.scrub:
        return None
    key = None
    if opts.scrub_mode == "hash":
        key = os.environ.get(SCRUB_KEY_ENV, "").encode()
        if len(key) < 16:
            raise UsageError(f"--scrub hash needs a secret key of at least 16 characters in {SCRUB_KEY_ENV} "
                             "(the same key on every shipper keeps hashes comparable)")
    return Scrubber(opts.scrub_mode, key, opts.scrub_headers, opts.scrub_params)


def check_options(opts: ShipOptions) -> None:
    """Usage errors for combinations that cannot work, each naming the offending value."""
    if opts.listen and opts.paths:
        raise UsageError(f"give log files or --listen {opts.listen!r}, not both")
    if not opts.listen and not opts.paths:
        raise UsageError("give at least one log file (or '-' for stdin), or --listen")
    if opts.listen and (opts.follow or opts.checkpoint):
        option = "--follow" if opts.follow else f"--checkpoint {opts.checkpoint!r}"
        raise UsageError(f"{option} applies to files, not to --listen {opts.listen!r}")
    if opts.follow and "-" in opts.paths:
        raise UsageError("--follow cannot follow '-' (stdin): give file paths or globs")
    for name, value in (("--checkpoint-interval", opts.checkpoint_interval), ("--poll-interval", opts.poll_interval),
                        ("--stats-interval", opts.stats_interval)):
        if value is not None and not value > 0:
            raise UsageError(f"cannot use {name} {value!r}: expected a number of seconds above 0")


class _Run:
    """One shipper run: the loop, confirmations, stats lines and signals."""

    def __init__(self, kind: str, opts: ShipOptions, shipper: Shipper, checkpoint: Checkpoint,
                 follower: Follower | None, listener: SyslogListener | None) -> None:
        self.kind = kind
        self.opts = opts
        self.shipper = shipper
        self.checkpoint = checkpoint
        self.follower = follower
        self.listener = listener
        self.stop = asyncio.Event()
        self.interrupted = False
        now = time.monotonic()
        self._confirmed_at = self._stats_at = now
        self._stats_lines = 0
        self._unconfirmed = self._unflushed = False

    # -- signals ------------------------------------------------------------------------------

    def install_signals(self) -> Callable[[], None]:
        """SIGTERM stops cleanly (exit 0), SIGINT too (exit 130); returns the undo."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig, interrupted in ((signal.SIGTERM, False), (signal.SIGINT, True)):
            try:
                loop.add_signal_handler(sig, self._on_signal, interrupted)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (library use): the caller stops the run itself

        def undo() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return undo

    def _on_signal(self, interrupted: bool) -> None:
        self.interrupted = self.interrupted or interrupted
        self.stop.set()

    # -- the loop ---------------------------------------------------------------------------

    async def chunks(self) -> AsyncIterator[Chunk | None]:
        """What to ship next; None when there is nothing right now (a chance to confirm)."""
        if self.listener is not None:
            async for chunk in self.listener.chunks(self.stop):
                yield chunk
            return
        # The readers move a file's read position when they are resumed after a chunk was
        # shipped, so a stop is checked there: the last shipped chunk is then counted as read.
        if self.follower is None:
            for path in _expand(self.opts.paths):
                try:
                    for chunk in read_once(path, self.checkpoint):
                        if self.stop.is_set():
                            return
                        yield chunk
                        await asyncio.sleep(0)  # let a signal handler run
                except InputError as e:
                    self.shipper.count_unreadable(path, e)
            return
        while not self.stop.is_set():
            progressed = False
            for chunk in self.follower.poll():
                if self.stop.is_set():
                    return
                progressed = True
                yield chunk
                await asyncio.sleep(0)
            if not progressed:
                yield None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.opts.poll_interval)

    async def run(self) -> None:
        chunks = self.chunks()
        try:
            async for chunk in chunks:
                if chunk is not None:
                    await self.shipper.ship(chunk)
                    self._unconfirmed = self._unflushed = True
                await self._tick(idle=chunk is None)
        finally:
            await chunks.aclose()
        await self.confirm()

    async def _tick(self, idle: bool) -> None:
        """Confirm every checkpoint interval; flush (records visible downstream, no checkpoint)
        whenever the input goes idle; print the stats line when it is due."""
        now = time.monotonic()
        if self._unconfirmed and now - self._confirmed_at >= self.opts.checkpoint_interval:
            await self.confirm()
        elif idle and self._unflushed:
            await self.shipper.sink.flush()
            self.shipper.dead_letters.flush()
            self._unflushed = False
        if self.opts.stats_interval and now - self._stats_at >= self.opts.stats_interval:
            self.print_stats(now)

    async def confirm(self) -> None:
        """Make the sink confirm everything sent so far, then move and save the checkpoint."""
        durable = self.checkpoint.path is not None
        sink = self.shipper.sink
        if durable and isinstance(sink, DurableSink):
            await sink.sync()
        else:
            await sink.flush()
        self.shipper.dead_letters.flush(durable)
        if self.checkpoint.confirm():
            self.checkpoint.save()
        self._confirmed_at = time.monotonic()
        self._unconfirmed = self._unflushed = False

    # -- reporting ----------------------------------------------------------------------------

    def print_stats(self, now: float) -> None:
        """One stats line on stderr (see the README: "the stats line")."""
        stats = self.shipper.stats
        elapsed = now - self._stats_at
        rate = (stats.lines - self._stats_lines) / elapsed if elapsed > 0 else 0.0
        self._stats_at, self._stats_lines = now, stats.lines
        parts = [f"{stats.lines} lines ({rate:.0f}/s)", f"{stats.records} records",
                 _counts("skipped", stats.skipped), _counts("dead letters", stats.dead),
                 f"checkpoint lag {self.checkpoint.lag()} bytes / {max(now - self._confirmed_at, 0.0):.1f} s"]
        if self.follower is not None:
            parts.append(f"unread {self.follower.unread()} bytes in {self.follower.followed()} files")
        if self.listener is not None:
            parts.append(f"{self.listener.stats.messages} messages received, {self.listener.count_drops()} "
                         "datagrams dropped")
        print(f"shadowtap capture {self.kind}: stats: " + "; ".join(parts), file=sys.stderr, flush=True)


def _expand(paths: tuple[str, ...]) -> list[str]:
    """Paths with globs expanded (sorted); a glob that matches nothing stays, to be reported
    as unreadable."""
    expanded: list[str] = []
    for path in paths:
        matches = sorted(glob.glob(path)) if path != "-" and glob.has_magic(path) else []
        expanded += matches or [path]
    return expanded


def _counts(label: str, counts) -> str:
    detail = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
    return f"{label} {sum(counts.values())}" + (f" ({detail})" if detail else "")


async def ship_logs(kind: str, opts: ShipOptions, fmt: LogFormat,
                    redact: Callable[[bytes], bytes | None] | None = None) -> int:
    """Ship log lines in `fmt` from files or a listener into the output; print the summary on
    stderr; return the exit code (0, or 1 when a file was unreadable or no line parsed; 130 on
    SIGINT). `redact` prepares a dead letter's raw line for scrubbing (see DeadLetters)."""
    check_options(opts)
    scrubber = make_scrubber(opts)
    checkpoint = Checkpoint(opts.checkpoint)
    listener = SyslogListener(opts.listen, opts.poll_interval) if opts.listen else None
    dead_letters = DeadLetters(opts.dead_letter, scrubber, redact if scrubber is not None else None)
    sink: Sink = open_sink(opts.output, StreamOptions(settings=opts.sink_settings))
    select, select_line = opts.selection.selectors()
    shipper = Shipper(
        parse=fmt.parse, sink=sink, scrubber=scrubber, select=select,
        select_line=select_line if scrubber is None or not opts.selection.key_is_secret else None,
        fast=lambda fp, name: fmt.fast_encoder(fp, name, scrubber), dead_letters=dead_letters,
        strict=opts.strict,
    )
    follower = Follower(opts.paths, checkpoint) if opts.follow else None
    run = _Run(kind, opts, shipper, checkpoint, follower, listener)
    undo = run.install_signals()
    try:
        if listener is not None:
            await listener.start()
            print(f"shadowtap: listening on {opts.listen} (receive buffer {listener.stats.rcvbuf} bytes)",
                  file=sys.stderr, flush=True)
        await run.run()
    finally:
        undo()
        if listener is not None:
            await listener.close()
        if follower is not None:
            follower.close()
        await sink.close()
        dead_letters.close()
    return _finish(kind, opts, shipper.stats, dead_letters, run)


def _finish(kind: str, opts: ShipOptions, stats: ShipStats, dead_letters: DeadLetters, run: _Run) -> int:
    """The summary line (and hints) on stderr, and the exit code."""
    summary = stats.summary()
    if run.listener is not None:
        ls = run.listener.stats
        summary += f"; {ls.messages} messages received, {ls.dropped} datagrams dropped by the kernel"
    print(f"shadowtap capture {kind}: {summary}", file=sys.stderr)
    if stats.dead and not opts.dead_letter:
        print(f"shadowtap: first dead letter: {dead_letters.first} (keep them with --dead-letter PATH)",
              file=sys.stderr)
    if run.interrupted:
        return EXIT_INTERRUPTED
    if stats.dead and not stats.records and not opts.follow and not opts.listen:
        print("shadowtap: error: no line could be parsed: check --format against the log", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR if stats.unreadable else EXIT_OK
