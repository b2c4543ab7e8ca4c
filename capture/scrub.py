"""Removing secrets from records before they leave the capturing process.

On by default: header values of Authorization, Proxy-Authorization, Cookie and Set-Cookie, and
query parameters whose names look like secrets, are replaced by a fixed marker.
"""

from __future__ import annotations

import dataclasses
import re

from shadowtap.record import Record, decode_target

MARKER = "SCRUBBED"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
SECRET_PARAM = re.compile(
    rb"(?i)token|passw(?:or)?d|secret|signature|session|auth|(?:^|[_\-.])(?:key|sig)$|apikey"
)
_PARAM = re.compile(rb"([^&=;]*)=([^&;]*)")


def _scrub_query(target: bytes) -> bytes:
    path, sep, query = target.partition(b"?")
    if not sep:
        return target

    def replace(m: re.Match[bytes]) -> bytes:
        name = m.group(1)
        return name + b"=" + MARKER.encode() if SECRET_PARAM.search(name) else m.group(0)

    return path + b"?" + _PARAM.sub(replace, query)


def scrub(record: Record) -> Record:
    """The record with secret header values and secret-looking query parameters replaced."""
    changes: dict = {}
    if any(name.lower() in SECRET_HEADERS for name, _ in record.headers):
        changes["headers"] = tuple(
            (name, MARKER if name.lower() in SECRET_HEADERS else value) for name, value in record.headers
        )
    if "?" in record.target:
        raw = record.target_bytes
        cleaned = _scrub_query(raw)
        if cleaned != raw:
            changes["target"], changes["target_raw"] = decode_target(cleaned)
    return dataclasses.replace(record, **changes) if changes else record
