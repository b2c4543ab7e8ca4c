"""HAProxy log lines (`option httplog`, `httplog clf`, `httpslog`, `tcplog`, or any `log-format`)
into Records.

A log-format string is compiled once into one anchored regex over bytes, preceded by an
optional syslog prefix (RFC 3164, RFC 5424, a bare `haproxy[pid]: `, or none: see
parsers/syslog.py), plus a plan saying which match group feeds which Record part. The rules
follow HAProxy's documentation and what HAProxy 2.6 writes (shared/reference/
log-and-http-formats.md section 2):

- Spaces in the format are separators; consecutive separators are written once, so a captured
  header block (`%hr`, `%hs`, `%hrl`, `%hsl`) that is empty takes its separator with it.
- Values of the `%X` aliases have every byte outside 32-126, `#` and `"` (and `{|}` in header
  captures) written `#HH`; `%[sample]` values are written raw. `-` means "no value", and so
  does `""` in a quoted item.
- `%{+Q}` quotes strings (names, IPs, the request line, samples), not numbers, dates or the
  termination state; `%{+Q}o` sets the default for the items after it.
- The request line `%r` is usually the last item: when HAProxy's line-length limit cut it, the
  closing quote is missing and the line is a `truncated` dead letter.

Lines without an HTTP request are skips, not dead letters (`SkipLine`): a `tcplog` line, the
legacy `Connect from` notice, a connection error (`frt/f1: SSL handshake failure`), proxy and
server state notices, `<BADREQ>` and empty requests.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

import orjson

from parsers.encode import Codegen, LineEncoder, Part, ScrubRules, lit, var
from parsers.requestline import HTTP_VERSION, RequestWords
from parsers.syslog import PREFIX
from shadowtap.errors import FormatError, ParseError, SkipLine
from shadowtap.record import Origin, Record, Response, decode_target

HTTPLOG = ("%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc "
           "%sq/%bq %hr %hs %{+Q}r")
PRESETS: dict[str, str] = {
    "httplog": HTTPLOG,
    "httpslog": HTTPLOG + (" %[fc_err]/%[ssl_fc_err,hex]/%[ssl_c_err]/%[ssl_c_ca_err]/%[ssl_fc_is_resumed] "
                           "%[ssl_fc_sni]/%sslv/%sslc"),
    "clf": ('%{+Q}o %{-Q}ci - - [%trg] %r %ST %B "" "" %cp %ms %ft %b %s %TR %Tw %Tc %Tr %Ta %tsc %ac '
            '%fc %bc %sc %rc %sq %bq %CC %CS %hrl %hsl'),
    "tcplog": "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq",
}
"""HAProxy's built-in formats (1.7 and later): `option httplog`, `option httpslog`, `option
httplog clf`, `option tcplog`."""

ALIASES: dict[str, str] = {
    "ci": "client_ip", "cp": "client_port", "fi": "frontend_ip", "fp": "frontend_port",
    "bi": "backend_source_ip", "bp": "backend_source_port", "si": "server_ip", "sp": "server_port",
    "t": "accept_date", "tr": "request_date", "trg": "request_date_gmt", "trl": "request_date_local",
    "T": "accept_date_gmt", "Tl": "accept_date_local", "Ts": "accept_ts", "ms": "accept_ms",
    "ft": "frontend_name", "f": "frontend", "b": "backend_name", "s": "server_name",
    "TR": "TR", "Tw": "Tw", "Tc": "Tc", "Tr": "Tr", "Ta": "Ta", "Th": "Th", "Ti": "Ti", "Tq": "Tq",
    "Tt": "Tt", "Td": "Td", "Tu": "Tu",
    "ST": "status_code", "B": "bytes_read", "U": "bytes_uploaded",
    "CC": "captured_request_cookie", "CS": "captured_response_cookie",
    "H": "hostname", "HM": "method", "HU": "uri", "HP": "path", "HPO": "path_only", "HQ": "query",
    "HV": "http_version", "ID": "unique_id",
    "ac": "actconn", "fc": "feconn", "bc": "beconn", "sc": "srv_conn", "rc": "retries",
    "sq": "srv_queue", "bq": "backend_queue",
    "hr": "captured_request_headers", "hs": "captured_response_headers",
    "hrl": "captured_request_headers", "hsl": "captured_response_headers",
    "r": "http_request", "rt": "request_counter", "lc": "log_counter", "pid": "pid",
    "sslc": "ssl_ciphers", "sslv": "ssl_version", "ts": "termination_state", "tsc": "termination_state",
    "OG": "log_origin",
}
"""Every `%X` alias HAProxy documents, with the field name its value gets in `fields` (the names
of the HAProxy manual's log field tables where it has one)."""

_NUMBER = rb"([+-]?\d+|-)"
_HEX = rb"([0-9A-Fa-f]+|-)"
_DATE = rb"(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d(?:\.\d{3})?)"
_DATE_TZ = rb"(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})"
_NUMERIC = ("cp", "fp", "bp", "sp", "TR", "Tw", "Tc", "Tr", "Ta", "Th", "Ti", "Tq", "Tt", "Td", "Tu", "ST",
            "B", "U", "ac", "fc", "bc", "sc", "rc", "sq", "bq", "rt", "lc", "pid", "Ts", "ms")
_PATTERNS: dict[str, bytes] = {
    **dict.fromkeys(_NUMERIC, _NUMBER),
    **dict.fromkeys(("t", "tr"), _DATE),
    **dict.fromkeys(("trg", "trl", "T", "Tl"), _DATE_TZ),
    "b": rb"([^\s/]+)", "ts": rb"(\S\S)", "tsc": rb"(\S{4})",
    "r": rb"(.*?)", "hr": rb"\{([^}]*)\}", "hs": rb"\{([^}]*)\}",
    "hrl": rb'("[^"]*"(?: "[^"]*")*)', "hsl": rb'("[^"]*"(?: "[^"]*")*)',
}
"""Unquoted value patterns of the aliases; the others are `(\\S+)`."""
# The fast path's strict variants (parsers/encode.py): printable ASCII without `"`, `\\` and `#`
# (HAProxy's escape), so a value needs no unescaping and can be copied into JSON as it is.
_SAFE = rb"\x20\x21\x24-\x5b\x5d-\x7e"
_WORD = rb"\x21\x24-\x5b\x5d-\x7e"
_FAST_NUMBER = rb"(0|[1-9]\d{0,14})"
_FAST_PATTERNS: dict[str, bytes] = {
    **_PATTERNS,
    **dict.fromkeys(_NUMERIC, rb"([+-]?\d+)"),  # never `-`: a value, so no null to write
    "ST": _FAST_NUMBER, "B": _FAST_NUMBER, "Ta": _FAST_NUMBER,
    "t": rb"(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3})",
    "tr": rb"(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3})",
    "b": rb"([\x21\x24-\x2e\x30-\x5b\x5d-\x7e]+)", "ts": rb"([" + _WORD + rb"]{2})",
    "tsc": rb"([" + _WORD + rb"]{4})",
    "hr": rb"\{([\x20\x21\x24-\x5b\x5d-\x7a\x7c\x7e]*)\}", "hs": rb"\{([\x20\x21\x24-\x5b\x5d-\x7a\x7c\x7e]*)\}",
}
_FAST_CAPTURE = rb"([\x20\x21\x24-\x5b\x5d-\x7a\x7e]*)"
"""One value of a named captured header block on the fast path (no `|`, `{`, `}` either)."""
_FAST_WHEN = rb"(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d)\.(\d{3})"
"""The fast path's time item: whole seconds (the date cache's key) and milliseconds."""
_FAST_REQUEST = rb'"([!$%&\'*+\-.^_`|~0-9A-Za-z]+) (/[' + _WORD + rb']*) (HTTP/\d+(?:\.\d+)?)"'
_QUOTABLE = frozenset("ci fi bi si ft f b s CC CS r HM HU HP HPO HQ HV ID H sslc sslv OG".split())
_MAY_BE_EMPTY = frozenset({"hr", "hs", "hrl", "hsl"})
_TIME_PREFERENCE = ("tr", "trg", "trl", "t", "T", "Tl", "Ts")
_UNSUPPORTED_FLAGS = frozenset({"json", "cbor", "bin"})
_HEADER_SAMPLE = re.compile(r"(?:req\.)?f?hdr\(\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*\)")
_CAPTURE_SAMPLE = re.compile(r"capture\.req\.hdr\(\s*(\d+)\s*\)")
_ITEM = re.compile(r"%(?:\{([^}]*)\})?(?:\(([A-Za-z0-9_.-]+)\))?(?:\[([^\]]*)\]|([A-Za-z]+)|(%))")

_HASH_ESC = re.compile(rb"#([0-9A-Fa-f]{2})")
_HEX_BYTES = {b"%02X" % i: bytes([i]) for i in range(256)} | {b"%02x" % i: bytes([i]) for i in range(256)}
_BACKSLASH_ESC = re.compile(rb"\\(.)", re.DOTALL)
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)
_DATE_PARTS = re.compile(rb"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d)(?:\.(\d{3}))?(?: ([+-])(\d\d)(\d\d))?")
_MONTH_NAMES = tuple(m.encode() for m in "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}

_SKIPS = [
    (re.compile(PREFIX + rb"Connect from \S+ to \S+ \(\S+\)\r?"), "connect_notice",
     "legacy `Connect from` notice (no HTTP request)"),
    (re.compile(PREFIX + rb"\S+:(?:\d+|-) \[[^\]]+\] [^\s/]+/\S+?: .+"), "connection_error",
     "connection error notice (no HTTP request)"),
    (re.compile(PREFIX + rb"(?:Server|Proxy|Backup Server|Health check for|backend|Stopping|Pausing|"
                         rb"Enabling|Disabling|Resuming) .+"), "notice",
     "HAProxy state notice (no HTTP request)"),
]
_CACHE_MAX = 4096
_PREFIX_MATCH = re.compile(PREFIX).match


def _unescape(value: bytes) -> bytes:
    """Undo HAProxy's `#HH` encoding."""
    return _HASH_ESC.sub(lambda m: _HEX_BYTES[m[1]], value)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


class _Item:
    """One `%` item of a log-format: an alias or a sample expression, with its flags."""

    __slots__ = ("alias", "escaped", "expr", "name", "quoted")

    def __init__(self, alias: str | None, expr: str | None, name: str, quoted: bool, escaped: bool) -> None:
        self.alias = alias
        self.expr = expr
        self.name = name
        self.quoted = quoted
        self.escaped = escaped

    def pattern(self, last: bool) -> bytes:
        """The regex group for this item's value."""
        if self.alias in ("hr", "hs", "hrl", "hsl"):
            return _PATTERNS[self.alias]
        if self.quoted:
            if self.escaped:
                inner = rb'((?:[^"\\]|\\.)*)'
            elif self.alias is None:
                inner = rb"(.*?)"
            else:
                inner = rb'([^"]*)'
            # A request line cut by the line-length limit has no closing quote.
            return b'"' + inner + (b'("?)' if last and self.alias == "r" else b'"')
        if self.escaped:
            return rb"((?:[^\s\\]|\\.)*)"
        if self.alias is None:
            return rb"(.*?)"
        return _PATTERNS.get(self.alias, rb"(\S+)")

    def fast_pattern(self) -> bytes:
        """The strict variant of `pattern` (an alias, not `+E`): the request line is three groups."""
        if self.alias == "r":
            return _FAST_REQUEST
        if self.quoted:
            return rb'"([' + _SAFE + rb']*)"'
        return _FAST_PATTERNS.get(self.alias, rb"([" + _WORD + rb"]+)")


def _flags(text: str, current: set[str], where: str) -> set[str]:
    """Apply `+Q,-X`-style flags to `current`."""
    flags = set(current)
    for part in re.findall(r"([+-])([A-Za-z]+)", text):
        sign, flag = part
        if flag.lower() in _UNSUPPORTED_FLAGS:
            raise FormatError(f"log-format flag '{sign}{flag}' ({where}) is not supported: use a text format")
        (flags.add if sign == "+" else flags.discard)(flag.upper())
    return flags


def _tokenize(fmt: str) -> list[str | _Item | None]:
    """Split a log-format into literal text (str), items (_Item) and separators (None)."""
    tokens: list[str | _Item | None] = []
    defaults: set[str] = set()
    names: dict[str, int] = {}
    pos = 0

    def literal(text: str) -> None:
        for k, chunk in enumerate(re.split(r" +", text)):
            if k:
                tokens.append(None)
            if chunk:
                tokens.append(chunk)

    for m in _ITEM.finditer(fmt):
        literal(fmt[pos:m.start()])
        pos = m.end()
        flag_text, given_name, expr, alias, percent = m.groups()
        if percent:
            tokens.append("%")
            continue
        if alias == "o":
            defaults = _flags(flag_text or "", defaults, f"at position {m.start()}")
            continue
        if alias is not None and alias not in ALIASES:
            raise FormatError(f"log-format {fmt!r} has an unknown variable '%{alias}' at position {m.start()}")
        flags = _flags(flag_text or "", defaults, f"at position {m.start()}")
        name = given_name or (ALIASES[alias] if alias else expr.strip())
        if name in names:
            names[name] += 1
            name = f"{name}_{names[name]}"
        else:
            names[name] = 1
        quotable = alias is None or alias in _QUOTABLE
        tokens.append(_Item(alias, expr, name, "Q" in flags and quotable, "E" in flags))
    literal(fmt[pos:])
    if "%" in "".join(t for t in tokens if isinstance(t, str) and t != "%"):
        raise FormatError(f"log-format {fmt!r} has a '%' that starts no variable")
    # HAProxy writes a separator only after something that is not one: none at the start, and
    # one for a run (a `%o` between two separators leaves two).
    return [t for k, t in enumerate(tokens) if t is not None or (k and tokens[k - 1] is not None)]


def _date(text: bytes) -> float:
    """A HAProxy date as Unix seconds: `dd/Mmm/yyyy:HH:MM:SS[.mmm]` in the shipper's local time
    zone, or with a `+zzzz` offset."""
    m = _DATE_PARTS.fullmatch(text)
    if m is None or m[2] not in _MONTHS:
        raise ParseError("bad_time", f"date {text!r} is not a HAProxy date")
    day, month, year = int(m[1]), _MONTHS[m[2]], int(m[3])
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    try:
        if m[8] is None:
            datetime(year, month, day, hour, minute, second)  # mktime would roll 31/Feb over silently
            ts = time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
        else:
            offset = (int(m[9]) * 60 + int(m[10])) * (-1 if m[8] == b"-" else 1)
            ts = datetime(year, month, day, hour, minute, second,
                          tzinfo=timezone(timedelta(minutes=offset))).timestamp()
    except (ValueError, OverflowError):
        raise ParseError("bad_time", f"date {text!r} is not a valid time") from None
    return round(ts + int(m[7]) / 1000, 3) if m[7] else float(ts)


class HaproxyFormat:
    """One compiled HAProxy log-format: `parse` turns a log line into a Record.

    `capture_headers` names the request headers of `%hr`/`%hrl` (HAProxy's `capture request
    header` lines, in order); `capture_response_headers` those of `%hs`/`%hsl`. Named captures
    become Record headers (request) and `response.headers`; without names the values are kept
    as a list in `fields`. Sample expressions that read a request header (`%[req.hdr(host)]`,
    `%[capture.req.hdr(0)]`) become Record headers too. A non-empty `skip_reason` makes every
    matching line a SkipLine with that reason (used for `tcplog`, which has no HTTP request).
    """

    def __init__(self, fmt: str, capture_headers: Sequence[str] = (),
                 capture_response_headers: Sequence[str] = (), skip_reason: str = "") -> None:
        self.fmt = fmt
        self.capture_headers = tuple(capture_headers)
        self.capture_response_headers = tuple(capture_response_headers)
        self.skip_reason = skip_reason
        tokens = _tokenize(fmt)
        self.items: tuple[_Item, ...] = tuple(t for t in tokens if isinstance(t, _Item))
        """The `%` items in format order."""
        if not self.items:
            raise FormatError(f"log-format {fmt!r} has no %variables")
        self._tokens = tokens
        self._regex, groups = self._compile(fast=False)
        self._match = re.compile(self._regex, re.DOTALL).fullmatch
        self._groups = tuple(groups)
        self._plan()
        self._date_cache: dict[bytes, float] = {}
        self._words = RequestWords()

    def _compile(self, fast: bool) -> tuple[bytes, list[_Item]]:
        """The line regex (the optional syslog prefix, then the message) and the item of each
        group; `fast` gives the strict regex of the fast path for the message alone, without the
        closing-quote group, with the request line in three groups, the time item in two and the
        named request captures in one each."""
        tokens = self._tokens
        regex = [] if fast else [PREFIX]
        groups: list[_Item] = []
        when = self._groups[self._i_time] if fast and self._i_time >= 0 else None
        named = self._groups[self._i_req_caps] if fast and self.capture_headers and self._i_req_caps >= 0 else None
        k = 0
        while k < len(tokens):
            token = tokens[k]
            if token is None:
                regex.append(b" ")
            elif isinstance(token, str):
                regex.append(re.escape(token.encode("utf-8", "surrogateescape")))
            else:
                trailing = token is self.items[-1] and all(t is None for t in tokens[k + 1:])
                pattern = token.fast_pattern() if fast else token.pattern(trailing)
                if fast and token.alias is None and not token.quoted:
                    pattern = _fast_sample(tokens[k + 1] if k + 1 < len(tokens) else None)
                groups.append(token)
                if fast and token.alias == "r":
                    groups += [token, token]
                elif token is when:  # seconds and milliseconds
                    pattern = _FAST_WHEN
                    groups.append(token)
                elif token is named:  # one group per name
                    pattern = rb"\{" + rb"\|".join([_FAST_CAPTURE] * len(self.capture_headers)) + rb"\}"
                    groups += [token] * (len(self.capture_headers) - 1)
                elif trailing and token.alias == "r" and token.quoted:
                    groups.append(_CLOSING)
                elif not fast and (count := self._clf_names(token)):
                    # CLF lists are quoted values separated by spaces, so two lists in a row
                    # split only by their number of names.
                    pattern = rb'("[^"]*"' + rb'(?: "[^"]*"){%d})' % (count - 1)
                if token.alias in _MAY_BE_EMPTY:
                    # An empty capture block takes its separator with it.
                    if k + 1 < len(tokens) and tokens[k + 1] is None:
                        pattern += b" "
                        k += 1
                    # A block the named pattern refuses must not be taken by the next block's.
                    pattern = b"(?:" + pattern + (rb"|(?!\{))" if token is named else b")?")
                regex.append(pattern)
            k += 1
        regex.append(rb"\r?")
        return b"".join(regex), groups

    def _clf_names(self, token: _Item) -> int:
        """How many names a CLF header list (`%hrl`, `%hsl`) was given, else 0."""
        return len(self.capture_headers if token.alias == "hrl" else self.capture_response_headers
                   if token.alias == "hsl" else ())

    def __repr__(self) -> str:
        return f"HaproxyFormat({self.fmt!r})"

    # -- compile-time plan -------------------------------------------------------------------

    def _plan(self) -> None:
        """Give each match group its role: request, time, client, response, headers, or fields."""
        groups = self._groups
        first: dict[str, int] = {}
        for i, item in enumerate(groups):
            if item.alias and item.alias not in first:
                first[item.alias] = i
        index = first.get
        self._i_request = index("r", -1)
        self._i_closing = groups.index(_CLOSING) if _CLOSING in groups else -1
        self._i_method = self._i_uri = self._i_path = self._i_query = self._i_version = -1
        if self._i_request < 0:
            self._i_method, self._i_version = index("HM", -1), index("HV", -1)
            self._i_uri = index("HU", -1)
            if self._i_uri < 0:
                self._i_path, self._i_query = index("HP", -1), index("HQ", -1)
        self._time_alias = next((a for a in _TIME_PREFERENCE if a in first), "")
        self._i_time = index(self._time_alias, -1) if self._time_alias else -1
        self._i_ms = index("ms", -1) if self._time_alias == "Ts" else -1
        self._i_client = index("ci", -1)
        self._i_status, self._i_bytes, self._i_active = index("ST", -1), index("B", -1), index("Ta", -1)
        self._i_req_caps = index("hr", index("hrl", -1))
        self._i_res_caps = index("hs", index("hsl", -1))
        self._has_response = self._i_status >= 0 or self._i_bytes >= 0 or self._i_active >= 0

        roles = {self._i_request, self._i_closing, self._i_method, self._i_uri, self._i_path, self._i_query,
                 self._i_version, self._i_time, self._i_ms, self._i_client, self._i_status, self._i_bytes,
                 self._i_active}
        if self.capture_headers:
            roles.add(self._i_req_caps)
        if self.capture_response_headers:
            roles.add(self._i_res_caps)
        header_samples: list[tuple[int, str]] = []
        fields: list[tuple[int, str, int]] = []
        for i, item in enumerate(groups):
            if i in roles:
                continue
            if item.expr is not None and (header := self._sample_header(item.expr)) is not None:
                header_samples.append((i, header))
                continue
            kind = _RAW if item.alias is None else _BLOCK if item.alias in ("hr", "hs") else \
                _CLF_BLOCK if item.alias in ("hrl", "hsl") else _ALIAS
            fields.append((i, item.name, kind))
        self._header_samples = tuple(header_samples)
        self._fields = tuple(fields)
        """(group, field name, kind) of every value that goes to `fields`."""
        self._field_plan = tuple((i, key, kind, groups[i].quoted, kind == _RAW and not groups[i].escaped)
                                 for i, key, kind in fields)
        """`_fields` with what `parse` checks per value: quoted (`""` is no value), and taken as
        it is (a sample value without `+E`: no escapes to undo)."""

    def _sample_header(self, expr: str) -> str | None:
        """The request header a sample expression reads (`req.hdr(host)`, `capture.req.hdr(0)`)."""
        if m := _HEADER_SAMPLE.fullmatch(expr.strip()):
            return "-".join(part.capitalize() for part in m[1].split("-"))
        if (m := _CAPTURE_SAMPLE.fullmatch(expr.strip())) and int(m[1]) < len(self.capture_headers):
            return self.capture_headers[int(m[1])]
        return None

    # -- per line ----------------------------------------------------------------------------

    def _missing(self, i: int, value: bytes | None) -> bool:
        """`-` is "no value", and so is `""` in a quoted item (and an absent optional group)."""
        return value is None or value == b"-" or (not value and self._groups[i].quoted)

    def _value(self, i: int, value: bytes) -> str:
        """An alias or sample value as text: escapes undone, non-UTF-8 bytes as `\\xHH`."""
        item = self._groups[i]
        if item.escaped and b"\\" in value:
            value = _BACKSLASH_ESC.sub(rb"\1", value)
        if item.alias is not None and b"#" in value:
            value = _unescape(value)
        return _text(value)

    def _request(self, g: tuple[bytes | None, ...]) -> tuple[str, bytes, str]:
        """(method, target, version) from `%r` or `%HM` + `%HU` (or `%HP` + `%HQ`) + `%HV`."""
        if self._i_request >= 0:
            raw = g[self._i_request]
            if self._i_closing >= 0 and not g[self._i_closing]:
                raise ParseError("truncated", "the request line has no closing quote: HAProxy cut the line "
                                              "at its length limit (`log ... len`)")
            if raw == b"<BADREQ>":
                raise SkipLine("bad_request", "HAProxy could not parse the request (<BADREQ>)")
            if raw in (b"", b"-"):
                raise SkipLine("empty_request", "no request was received (empty request line)")
            if b"#" in raw:
                raw = _unescape(raw)
            first = raw.find(b" ")
            if first <= 0:
                raise ParseError("bad_request_line", f"request line {raw!r} has no method and target")
            method_b = raw[:first]
            last = raw.rfind(b" ")
            if last > first and HTTP_VERSION.fullmatch(raw, last + 1):
                target, version = raw[first + 1:last], self._words.version(raw[last + 1:])
            else:
                target, version = raw[first + 1:], "HTTP/0.9"
        else:
            method_b = g[self._i_method] if self._i_method >= 0 else b"-"
            if self._i_uri >= 0:
                target = g[self._i_uri]
            elif self._i_path >= 0:
                target = g[self._i_path] + (g[self._i_query] if self._i_query >= 0 else b"")
            else:
                target = b"-"
            if method_b == b"<BADREQ>":
                raise SkipLine("bad_request", "HAProxy could not parse the request (<BADREQ>)")
            if method_b in (b"-", b"") or target in (b"-", b""):
                raise ParseError("no_request", "line has no request (%r, or %HM with %HU or %HP)")
            if b"#" in target:
                target = _unescape(target)
            version_b = g[self._i_version] if self._i_version >= 0 else b"-"
            version = "HTTP/1.1" if version_b in (b"-", b"") else self._words.version(version_b)
        if not target:
            raise ParseError("bad_request_line", f"request line has an empty target after {method_b!r}")
        return self._words.method(method_b), target, version

    def _time(self, raw: bytes, ms: bytes | None) -> float:
        """Unix seconds of the record's time item; dates are cached by the second."""
        if self._time_alias == "Ts":
            if not raw.isdigit():
                raise ParseError("bad_time", f"%Ts value {raw!r} is not a number")
            return round(int(raw) + int(ms) / 1000, 3) if ms and ms.isdigit() else float(int(raw))
        key = raw[:20] if len(raw) == 24 else raw
        ts = self._date_cache.get(key)
        if ts is None:
            ts = _date(key)
            if len(self._date_cache) >= _CACHE_MAX:
                self._date_cache.clear()
            self._date_cache[key] = ts
        return round(ts + int(raw[21:]) / 1000, 3) if len(raw) == 24 else ts

    def _captures(self, i: int, block: bytes) -> list[str]:
        """The values of a captured header block, unescaped."""
        values = block[1:-1].split(b'" "') if self._groups[i].alias in ("hrl", "hsl") else block.split(b"|")
        return [_text(_unescape(v) if b"#" in v else v) for v in values]

    def _named(self, i: int, block: bytes | None, names: tuple[str, ...], what: str) -> list[tuple[str, str]]:
        """(name, value) pairs of a captured header block, leaving out empty (absent) values."""
        if block is None:
            return []
        values = self._captures(i, block)
        if len(values) != len(names):
            raise ParseError("capture_mismatch", f"{len(values)} captured {what} headers, but "
                             f"{len(names)} names were given ({', '.join(names)})")
        return [(n, v) for n, v in zip(names, values, strict=True) if v]

    def _classify(self, line: bytes) -> ParseError:
        """Why a line did not match: a SkipLine for known non-HTTP lines, else a dead letter."""
        for pattern, reason, message in _SKIPS:
            if pattern.fullmatch(line):
                return SkipLine(reason, message)
        if not self.skip_reason and _tcplog().fullmatch(line):
            return SkipLine("tcplog", "tcplog line (a TCP connection, no HTTP request)")
        return ParseError("no_match", "line does not match the log format")

    def parse(self, line: bytes, *, name: str | None, offset: int, fingerprint: str) -> Record:
        """One log line (without its newline) as a Record; ParseError (or SkipLine) otherwise.

        ts is the request date (`%tr`, else another date item); HAProxy's local dates carry no
        offset and are read in this process's local time zone (set TZ when HAProxy's differs).
        An absolute-form target (HTTP/2, proxies) becomes origin-form with the authority as host.
        """
        m = self._match(line)
        if m is None:
            raise self._classify(line)
        if self.skip_reason:
            raise SkipLine(self.skip_reason, "line has no HTTP request")
        g = m.groups()
        method, target_b, version = self._request(g)
        host = None
        if not target_b.startswith(b"/") and (absolute := _ABSOLUTE.fullmatch(target_b)):
            host = _text(absolute[2]) or None
            target_b = absolute[3] or b"/"
        target, target_raw = decode_target(target_b)
        ts = self._time(g[self._i_time], g[self._i_ms] if self._i_ms >= 0 else None) if self._i_time >= 0 else 0.0
        client = None
        if self._i_client >= 0 and not self._missing(self._i_client, g[self._i_client]):
            client = self._value(self._i_client, g[self._i_client])

        headers: list[tuple[str, str]] = []
        if self.capture_headers and self._i_req_caps >= 0:
            headers = self._named(self._i_req_caps, g[self._i_req_caps], self.capture_headers, "request")
        for i, header in self._header_samples:
            if not self._missing(i, g[i]):
                headers.append((header, self._value(i, g[i])))
        if host is None:
            host = next((v for n, v in headers if n.lower() == "host"), None)

        fields: dict[str, object] = {}
        for i, key, kind, quoted, as_is in self._field_plan:
            v = g[i]
            if v is None or v == b"-" or (quoted and not v):  # see _missing
                fields[key] = None
            elif as_is or (kind == _ALIAS and b"#" not in v and b"\\" not in v):
                fields[key] = v.decode("utf-8", "backslashreplace")
            elif kind in (_ALIAS, _RAW):
                fields[key] = self._value(i, v)
            else:
                fields[key] = self._captures(i, v)

        response = None
        if self._has_response:
            status = self._number(g, self._i_status, fields)
            size = self._number(g, self._i_bytes, fields)
            elapsed = self._number(g, self._i_active, fields)
            response_headers = None
            if self.capture_response_headers and self._i_res_caps >= 0:
                response_headers = tuple(self._named(self._i_res_caps, g[self._i_res_caps],
                                                     self.capture_response_headers, "response"))
            response = Response(status, None if elapsed is None else float(elapsed), size, response_headers)

        return Record(
            f"{fingerprint}-{offset}", ts, method, target, version, host, tuple(headers), None,
            client, None, Origin("haproxy", name, offset), response, fields, target_raw,
        )

    def _number(self, g: tuple[bytes | None, ...], i: int, fields: dict[str, object]) -> int | None:
        """A response number (status, bytes, active time); a value that is not one (`-1`, a
        logasap `+123`) goes to `fields` under its name instead."""
        if i < 0:
            return None
        v = g[i]
        if v.isdigit() and len(v) < 16:
            return int(v)
        if v != b"-":
            fields[self._groups[i].name] = _text(v)
        return None

    # -- the fast path -----------------------------------------------------------------------

    def fast_encoder(self, fingerprint: str, name: str | None, rules: ScrubRules | None) -> LineEncoder | None:
        """A LineEncoder for this format (see parsers/encode.py), or None when the format has
        parts the fast path does not handle (no `%r`, CLF header lists, `+E`, header samples,
        an unquoted `%[sample]` right before another item, named response captures, skip
        formats, dates other than `%tr`/`%t`)."""
        tokens = self._tokens
        if (self.skip_reason or self._i_request < 0 or self._time_alias not in ("tr", "t")
                or self.capture_response_headers or any(item.escaped for item in self._groups)
                or any(item.alias in ("hrl", "hsl") for item in self._groups) or self._header_samples
                or any(isinstance(t, _Item) and t.alias is None and not t.quoted and isinstance(after, _Item)
                       for t, after in itertools.pairwise(tokens))):
            return None
        return _fast_encoder(self, fingerprint, name, rules)


def _fast_sample(following: str | None) -> bytes:
    """The strict pattern of an unquoted `%[sample]` value. The general one is lazy (`(.*?)`):
    its first try ends at the first byte of the literal that follows, so the strict class
    leaves that byte out (a value holding it goes to the general path)."""
    stop = following.encode()[0] if isinstance(following, str) else 0x20
    allowed = set(range(0x21, 0x7F)) - {0x22, 0x23, 0x5C, stop}
    return b"([" + b"".join(re.escape(bytes([c])) for c in sorted(allowed)) + b"]+)"


_RAW, _ALIAS, _BLOCK, _CLF_BLOCK = range(4)
_CLOSING = _Item(None, None, "", False, False)
"""The pseudo-item of the optional closing quote after a trailing `%{+Q}r`."""


@functools.cache
def _tcplog():
    """The tcplog regex (with prefix), to recognise tcplog lines under another format."""
    return re.compile(HaproxyFormat(PRESETS["tcplog"])._regex, re.DOTALL)


def compile_format(fmt: str, capture_headers: Sequence[str] = (),
                   capture_response_headers: Sequence[str] = ()) -> HaproxyFormat:
    """Compile a preset (`httplog`, `httpslog`, `clf`, `tcplog`) or a log-format string.

    Every line of `tcplog` is a skip (a TCP connection has no HTTP request to replay).
    """
    if not fmt.strip():
        raise FormatError("the log format is empty: give a preset name or a log-format string")
    if fmt in PRESETS:
        return HaproxyFormat(PRESETS[fmt], capture_headers, capture_response_headers,
                             skip_reason="tcplog" if fmt == "tcplog" else "")
    if "%" not in fmt:
        raise FormatError(f"unknown log format {fmt!r}: not a preset ({', '.join(PRESETS)}) and it has "
                          "no %variables")
    return HaproxyFormat(fmt, capture_headers, capture_response_headers)


def _fast_encoder(fmt: HaproxyFormat, fingerprint: str, name: str | None, rules: ScrubRules | None) -> LineEncoder:
    """Generate the LineEncoder of `fmt` (see parsers/encode.py and HaproxyFormat.fast_encoder).

    The strict regex admits only values without `#` (HAProxy escaped nothing), backslash,
    quotes or control bytes, a request line in origin form, plain numbers for status, size and
    active time, and dates with milliseconds: they are copied into JSON as they are. What the
    general path does per value (`-` or `""` becomes null, captured headers by name, scrubbing,
    the date cache) is written out per group.

    Where the strict regex matches, it must split the line as the general regex does: its
    groups admit fewer bytes than the general ones and are tried in the same order, and where
    a refused value could slide into the next group (a request capture block that does not
    have one value per name, into the response block), a lookahead forbids it.
    tests/capture/test_capture_fast_equivalence.py compares both paths on every real sample.
    """
    regex, fast_groups = fmt._compile(fast=True)
    index: dict[int, int] = {}  # group of the general regex -> group of the strict one
    k = 0
    for i, item in enumerate(fmt._groups):
        if item is _CLOSING:
            continue
        while fast_groups[k] is not item:
            k += 1
        index[i] = k
        k += 3 if item.alias == "r" else 1

    def group(i: int) -> str:
        return f"g{index[i]}"

    gen = Codegen()
    null, dash = gen.const(b"null"), gen.const(b"-")

    def missing(i: int) -> str:
        g = group(i)
        return f"({g} == {dash} or not {g})" if fmt._groups[i].quoted else f"{g} == {dash}"

    def value(g: str, absent: str, scrub: Callable[[bytes], bytes] | None = None) -> list[Part]:
        """A present value as a JSON string (scrubbed only where present)."""
        expression = g if scrub is None else f"({g} if {absent} else {gen.scrubbed(g, scrub, rules)})"
        return [lit(b'"'), var(expression), lit(b'"')]

    # The syslog prefix ends where the prefix regex alone stops: the first split the general
    # regex tries, and the one it takes when the strict message regex matches after it. A
    # prefix that ends with a tag (`...haproxy[pid]: `) is decided by its own bytes only, so
    # lines that start with the same bytes (the same second, host and process) reuse it.
    gen.before("known, known_end = b'\\n', 1")
    gen.line("if line.startswith(known):")
    gen.line("    end = known_end")
    gen.line("else:")
    gen.line(f"    end = {gen.const(_PREFIX_MATCH)}(line).end()")
    gen.line("    if line[end - 2:end] == b': ':")
    gen.line("        known, known_end = line[:end], end")
    gen.line(f"m = {gen.const(re.compile(regex, re.DOTALL).fullmatch)}(line, end)")
    gen.line("if m is None:")
    gen.bail(1)
    gen.line(f"{', '.join(f'g{n}' for n in range(len(fast_groups)))}, = m.groups()")
    method, target, version = (f"g{index[fmt._i_request] + n}" for n in range(3))
    if rules is not None:
        gen.scrub_target(target, rules)
    when = group(fmt._i_time)
    seconds = _Seconds()
    gen.line(f"seconds = {gen.const(seconds.cache)}.get({when})")
    gen.line("if seconds is None:")
    gen.line(f"    seconds = {gen.const(seconds)}({when})")
    gen.line("    if seconds is None:")
    gen.bail(2)

    names = fmt.capture_headers
    captured = [f"g{index[fmt._i_req_caps] + n}" for n in range(len(names))]
    if names:  # a line without the block has no headers
        gen.line(f"if {captured[0]} is None:")
        gen.line(f"    {', '.join(captured)}, = {gen.const((b'',) * len(names))}")

    gen.lit(b'{"v":1,"id":"' + fingerprint.encode() + b"-")
    gen.offset()
    gen.lit(b'","ts":')
    gen.var("seconds")
    gen.lit(b".")
    gen.var(f"g{index[fmt._i_time] + 1}")
    gen.request_line(method, target, version)
    host: Part = lit(b"null")
    for n in reversed([n for n, header in enumerate(names) if header.lower() == "host"]):  # the first present
        host = gen.choice(f"not {captured[n]}", [host], value(captured[n], f"not {captured[n]}"))
    gen.emit(host)
    gen.lit(b',"headers":[')
    gen.emit(gen.listing([
        (f"not {c}", [lit(b"[" + orjson.dumps(header) + b","),
                      *value(c, f"not {c}", rules.header(header) if rules is not None else None), lit(b"]")])
        for c, header in zip(captured, names, strict=True)]))
    gen.lit(b'],"body":null,"client":')
    client = fmt._i_client
    gen.emit(gen.choice(missing(client), [lit(b"null")], value(group(client), missing(client))) if client >= 0
             else lit(b"null"))
    gen.lit(b',"session":null,"origin":{"kind":"haproxy","name":' + orjson.dumps(name) + b',"pos":')
    gen.offset()
    gen.lit(b'},"response":')
    if fmt._has_response:
        for n, (i, suffix) in enumerate(((fmt._i_status, b""), (fmt._i_active, b".0"), (fmt._i_bytes, b""))):
            gen.lit((b'{"status":', b',"elapsed_ms":', b',"bytes":')[n])
            if i >= 0:
                gen.var(group(i))
                gen.lit(suffix)
            else:
                gen.lit(b"null")
        gen.lit(b"}")
    else:
        gen.lit(b"null")
    gen.lit(b',"fields":{')
    for n, (i, key, kind) in enumerate(fmt._fields):
        scrub = rules.field(key) if rules is not None else None
        gen.lit((b"," if n else b"") + orjson.dumps(key) + b":")
        g = group(i)
        if kind == _ALIAS and fmt._groups[i].alias in _NUMERIC and not fmt._groups[i].quoted and scrub is None:
            gen.lit(b'"')
            gen.var(g)  # the strict regex admits only digits here
            gen.lit(b'"')
        elif kind in (_ALIAS, _RAW):
            gen.emit(gen.choice(missing(i), [lit(b"null")], value(g, missing(i), scrub)))
        else:
            items = f"[{gen.const(scrub)}(x) for x in {g}.split(b'|')]" if scrub else f"{g}.split(b'|')"
            gen.var(f"({null} if {g} is None or {g} == {dash} else b'[\"' + b'\",\"'.join({items}) + b'\"]')")
    gen.lit(b"}}")
    return gen.build(f"haproxy {fmt.fmt!r}")


class _Seconds:
    """Whole seconds of a HAProxy date (`dd/Mmm/yyyy:HH:MM:SS`, local time) as JSON digits,
    learned into `cache`.

    Each minute is converted once (`_date`, which calls mktime): a new second of it is the
    minute's start plus the seconds, which is what mktime gives for a minute that exists and
    holds no time-zone transition. A minute whose second 59 is not 59 seconds after its second
    0, or that local time never shows (skipped by a transition), is converted second by second.
    """

    def __init__(self) -> None:
        self.cache: dict[bytes, bytes] = {}
        self.minutes: dict[bytes, int | None] = {}

    def _minute(self, raw: bytes) -> int | None:
        """Unix seconds at second 0 of the minute `dd/Mmm/yyyy:HH:MM`, or None when the minute
        is not a valid time or holds a transition."""
        try:
            start, last = _date(raw + b":00"), _date(raw + b":59")
        except ParseError:
            return None
        shown = time.localtime(start)
        if last - start != 59 or b"%02d/%s/%04d:%02d:%02d" % (
                shown.tm_mday, _MONTH_NAMES[shown.tm_mon - 1], shown.tm_year, shown.tm_hour, shown.tm_min) != raw:
            return None
        return int(start)

    def __call__(self, raw: bytes) -> bytes | None:
        minute, second = raw[:17], raw[18:]
        if minute not in self.minutes:
            if len(self.minutes) >= _CACHE_MAX:
                self.minutes.clear()
            self.minutes[minute] = self._minute(minute)
        start = self.minutes[minute]
        if start is not None and raw[17:18] == b":" and second.isdigit() and len(second) == 2 and second < b"60":
            ts = float(start + int(second))
        else:
            try:
                ts = _date(raw)
            except ParseError:
                return None
        if ts != int(ts) or ts < 0:
            return None
        if len(self.cache) >= _CACHE_MAX:
            self.cache.clear()
        self.cache[raw] = b"%d" % int(ts)
        return self.cache[raw]
