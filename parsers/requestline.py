"""Request-line words the parsers share: the HTTP token and version grammars, and an interning
cache so each distinct method and version in a log is validated and decoded only once."""

from __future__ import annotations

import re

from shadowtap.errors import ParseError

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token (RFC 9110): what a method must be."""
HTTP_VERSION = re.compile(rb"HTTP/\d+(?:\.\d+)?")
CACHE_MAX = 256
"""Distinct words kept per parser: a log holds a handful, garbage lines must not grow it."""


class RequestWords:
    """Methods and versions as text, checked once and interned (bounded caches)."""

    __slots__ = ("methods", "versions")

    def __init__(self) -> None:
        self.methods: dict[bytes, str] = {}
        self.versions: dict[bytes, str] = {}

    def method(self, raw: bytes) -> str:
        """A method as text; ParseError when it is not an HTTP token."""
        method = self.methods.get(raw)
        if method is None:
            if not TOKEN.fullmatch(raw):
                raise ParseError("bad_request_line", f"method {raw!r} is not an HTTP token")
            method = raw.decode("ascii")
            if len(self.methods) < CACHE_MAX:
                self.methods[raw] = method
        return method

    def version(self, raw: bytes) -> str:
        """A protocol version as text."""
        version = self.versions.get(raw)
        if version is None:
            version = raw.decode("utf-8", "backslashreplace")
            if len(self.versions) < CACHE_MAX:
                self.versions[raw] = version
        return version
