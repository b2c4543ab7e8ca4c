"""Turning an `-i`/`-o` address into a Source or a Sink (see "Addresses" in DESIGN.md)."""

from __future__ import annotations

import os

from shadowtap.errors import UsageError
from shadowtap.stream import Sink, Source, StreamOptions
from shadowtap.streams.jsonl import JsonlSink, JsonlSource, SpoolSink, spool_segments

DEFAULT_OPTIONS = StreamOptions()


def is_spool(address: str) -> bool:
    """A directory, or a path ending in `/`, is a spool of segments."""
    return address.endswith("/") or os.path.isdir(address)


def _gor_path(address: str) -> str:
    path = address[len("gor:"):]
    if not path:
        raise UsageError(f"address {address!r}: gor: needs a file path (gor:PATH, or gor:- for stdin/stdout)")
    return path


def _reject_unbuilt(address: str) -> None:
    if "://" in address:
        raise UsageError(f"address {address!r}: unknown scheme (expected a path, '-', kafka:// or gor:)")


def open_source(address: str, options: StreamOptions = DEFAULT_OPTIONS) -> Source:
    """A Source reading the records at `address`."""
    if address.startswith("kafka://"):
        from shadowtap.streams.kafka import KafkaSource

        return KafkaSource(address, options)
    if address.startswith("gor:"):
        from shadowtap.streams.gor import GorSource

        return GorSource(_gor_path(address))
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


def open_sink(address: str, options: StreamOptions = DEFAULT_OPTIONS) -> Sink:
    """A Sink writing records to `address`."""
    if address.startswith("kafka://"):
        from shadowtap.streams.kafka import KafkaSink

        return KafkaSink(address, options.settings)
    if address.startswith("gor:"):
        from shadowtap.streams.gor import GorSink

        return GorSink(_gor_path(address))
    _reject_unbuilt(address)
    if is_spool(address):
        return SpoolSink(address.rstrip("/") or "/")
    return JsonlSink(address)
