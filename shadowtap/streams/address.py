"""Turning an `-i`/`-o` address into a Source or a Sink (see "Addresses" in DESIGN.md)."""

from __future__ import annotations

import os

from shadowtap.errors import UsageError
from shadowtap.stream import Sink, Source
from shadowtap.streams.jsonl import JsonlSink, JsonlSource, SpoolSink, spool_segments


def is_spool(address: str) -> bool:
    """A directory, or a path ending in `/`, is a spool of segments."""
    return address.endswith("/") or os.path.isdir(address)


def _reject_unbuilt(address: str) -> None:
    for scheme in ("kafka://", "gor:"):
        if address.startswith(scheme):
            kind = scheme.rstrip(":/")
            raise UsageError(f"address {address!r}: {kind} streams are not supported by this build yet")
    if "://" in address:
        raise UsageError(f"address {address!r}: unknown scheme (expected a path, '-', kafka:// or gor:)")


def open_source(address: str) -> Source:
    """A Source reading the records at `address`."""
    _reject_unbuilt(address)
    if address == "-":
        return JsonlSource(["-"])
    if is_spool(address):
        if not os.path.isdir(address):
            raise UsageError(f"input spool {address!r} does not exist")
        return JsonlSource(spool_segments(address))
    if not os.path.exists(address):
        raise UsageError(f"input {address!r} does not exist")
    return JsonlSource([address])


def open_sink(address: str) -> Sink:
    """A Sink writing records to `address`."""
    _reject_unbuilt(address)
    if is_spool(address):
        return SpoolSink(address.rstrip("/") or "/")
    return JsonlSink(address)
