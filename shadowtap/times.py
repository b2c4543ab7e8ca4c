"""Points in time as users write them on the command line."""

from __future__ import annotations

import re
import time

from shadowtap.errors import UsageError

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, option: str, now: float | None = None) -> float:
    """A point in time: Unix seconds, ISO 8601 (UTC unless it says), `now`, or relative like `-15m`."""
    now = time.time() if now is None else now
    text = text.strip()
    if text == "now":
        return now
    if m := _RELATIVE.match(text):
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"cannot parse {option} {text!r}: expected a Unix time, an ISO 8601 time, 'now' or '-15m'"
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
