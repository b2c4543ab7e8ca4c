"""Syslog framing: the prefixes a log line may carry, and message boundaries on a TCP stream.

HAProxy writes its log line after a header that depends on `log ... format` (see
shared/reference/log-and-http-formats.md 2.6): RFC 5424 `<PRI>1 TIMESTAMP HOST APP PID MSGID
SD `, RFC 3164 `<PRI>Mmm dd HH:MM:SS [HOST ]TAG[PID]: ` (`local` leaves out the host),
`priority`/`short` `<PRI>`, `timed`/`iso` an ISO date, and `raw` nothing. A syslog daemon that
writes the messages to a file puts its own `Mmm dd HH:MM:SS HOST TAG[PID]: ` (or an ISO date) in
front. `PREFIX` matches any of these or nothing, so a parser can put it before its own pattern
and detect the prefix line by line (backtracking picks the split that lets the rest match).
"""

from __future__ import annotations

import re

from shadowtap.errors import ParseError

_PRI = rb"<\d{1,3}>"
_TS3164 = rb"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
_ISO = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)"
_TAG = rb"[A-Za-z0-9_./-]+(?:\[\d+\])?: "
_SD = rb'(?:-|(?:\[[^\]"\s]+(?: [^=\s\]]+="(?:[^"\\]|\\.)*")*\])+)'
_RFC5424 = _PRI + rb"1 \S+ \S+ \S+ \S+ \S+ " + _SD + rb"(?: |$)(?:\xef\xbb\xbf)?"
# A host is only looked for after a timestamp, and may not hold ':' (so a client `ip:port`
# that starts the message is never taken for one).
_RFC3164 = (rb"(?:" + _PRI + rb")?(?:(?:" + _TS3164 + rb"|" + _ISO + rb") (?:[^\s:\[\]]+ )?)?(?:"
            + _TAG + rb")?")

PREFIX = rb"(?:" + _RFC5424 + rb"|" + _RFC3164 + rb")"
"""A regex (bytes, no groups) for an optional syslog prefix: RFC 5424, RFC 3164 and its
variants, a bare `tag[pid]: `, or nothing."""

MAX_FRAME = 1 << 20
"""Longest syslog message accepted on a TCP stream (bytes)."""
_OCTETS = re.compile(rb"[1-9]\d{0,6}")


class StreamFramer:
    """Splits a syslog TCP stream into messages (RFC 6587), detecting the framing per message.

    Octet counting (`LEN SP MSG`, what HAProxy's ring forwarding and rsyslog's `omfwd` with
    octet-counted framing send) starts with digits and a space; anything else is a message
    ended by LF (non-transparent framing, `\\r\\n` accepted; a message longer than MAX_FRAME
    without LF is cut there). `feed` returns the complete messages so far. A length above
    MAX_FRAME breaks the stream (it cannot be resynchronised): `broken` then holds the
    ParseError (reason `bad_frame`), `rest` the bytes from the bad frame on, and `feed` takes
    nothing more.
    """

    def __init__(self) -> None:
        self._buf = b""
        self.broken: ParseError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages they completed."""
        if self.broken is not None:
            return []
        buf = self._buf + data if self._buf else data
        messages: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end:
            m = _OCTETS.match(buf, pos)
            if m is not None and m.end() < end and buf[m.end()] == 0x20:
                length = int(m.group())
                if length > MAX_FRAME:
                    self.broken = ParseError("bad_frame", f"octet count {length} is above {MAX_FRAME}")
                    break
                stop = m.end() + 1 + length
                if stop > end:
                    break
                messages.append(buf[m.end() + 1:stop].rstrip(b"\n"))
                pos = stop
            elif m is not None and m.end() == end:
                break  # digits so far: wait for what follows them
            else:
                newline = buf.find(b"\n", pos)
                if newline < 0:
                    if end - pos > MAX_FRAME:
                        messages.append(buf[pos:])
                        pos = end
                    break
                messages.append(buf[pos:newline].rstrip(b"\r"))
                pos = newline + 1
        self._buf = buf[pos:]
        return messages

    def rest(self) -> bytes:
        """Bytes of an unfinished message (when the connection closes)."""
        return self._buf
