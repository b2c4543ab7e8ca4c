"""Adapters that implement the stream protocol, and `open_source`/`open_sink` for addresses."""

from shadowtap.streams.address import open_sink, open_source

__all__ = ["open_sink", "open_source"]
