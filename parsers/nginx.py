"""nginx access-log lines (any `log_format`) into Records.

A format string is compiled once into one anchored regex over bytes plus a plan saying which
match group feeds which Record part; `NginxFormat.parse` is the hot path and does only the
per-line work the format needs. Escaping follows `ngx_http_log_module` (see
shared/reference/log-and-http-formats.md section 1): `default` writes `\\xHH` and `-` for a
variable that is not found, `json` writes JSON string escapes and `""` for not found, `none`
writes values verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import orjson

from parsers.encode import FAST_REQUEST, SAFE, SAFE_WORD, Codegen, LineEncoder, Part, ScrubRules, lit, var
from parsers.requestline import HTTP_VERSION, RequestWords
from shadowtap.errors import FormatError, ParseError
from shadowtap.record import Origin, Record, Response, decode_target

PRESETS: dict[str, str] = {
    "combined": (
        '$remote_addr - $remote_user [$time_local] '
        '"$request" $status $body_bytes_sent '
        '"$http_referer" "$http_user_agent"'
    ),
    "main": (
        '$remote_addr - $remote_user [$time_local] "$request" '
        '$status $body_bytes_sent "$http_referer" '
        '"$http_user_agent" "$http_x_forwarded_for"'
    ),
    "upstreaminfo": (
        '$remote_addr - $remote_user [$time_local] "$request" '
        '$status $body_bytes_sent "$http_referer" "$http_user_agent" '
        '$request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] '
        '$upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id'
    ),
}
"""Named formats: nginx's predefined `combined`, the `main` of the stock nginx.conf, and
ingress-nginx's `upstreaminfo`."""

ESCAPES = ("default", "json", "none")

_NAME = re.compile(r"[A-Za-z0-9_]+")

# Unquoted variables whose values have a known shape get tight patterns, so that a line of
# another format fails instead of shifting fields (e.g. a leading `$host` before `$remote_addr`).
_TIGHT = {
    "status": rb"(\d{3}|-)",
    "body_bytes_sent": rb"(\d+|-)",
    "bytes_sent": rb"(\d+|-)",
    "request_length": rb"(\d+|-)",
    "request_time": rb"([\d.]+|-)",
    "msec": rb"([\d.]+)",
    "time_iso8601": rb"(\S+)",
    "time_local": rb"(\S+ \S+)",
    "remote_addr": rb"(\S+)",
    "host": rb"(\S*)",
}
# The upstream variables hold lists: items separated by ", " (servers tried) and " : " (groups
# after an internal redirect), each item free of spaces and commas.
_UPSTREAM_LIST = rb"((?:[^ ,]+(?:(?:, | : )[^ ,]+)*)?)"
_UPSTREAM_LISTS = frozenset(
    "upstream_addr upstream_status upstream_response_time upstream_connect_time "
    "upstream_header_time upstream_response_length upstream_bytes_received "
    "upstream_bytes_sent".split()
)
_QUOTED = {"default": rb'([^"]*)', "json": rb'((?:[^"\\]|\\.)*)', "none": rb"(.*?)"}

# The same shapes for the fast path's strict regex (parsers/encode.py): only JSON-safe bytes,
# and plain numbers where the Record takes a number.
_FAST_NUMBER = rb"(0|[1-9]\d{0,14})"
_FAST_TIGHT = {
    **_TIGHT,
    "status": rb"([1-9]\d\d)",
    "body_bytes_sent": _FAST_NUMBER,
    "time_iso8601": rb"([" + SAFE_WORD + rb"]+)",
    "time_local": rb"([" + SAFE_WORD + rb"]+ [" + SAFE_WORD + rb"]+)",
    "remote_addr": rb"([" + SAFE_WORD + rb"]+)",
    "host": rb"([" + SAFE_WORD + rb"]*)",
}
_FAST_ITEM = rb"[" + SAFE_WORD.replace(b"\\x23-\\x5b", b"\\x23-\\x2b\\x2d-\\x5b") + rb"]+"
_FAST_UPSTREAM_LIST = rb"((?:" + _FAST_ITEM + rb"(?:(?:, | : )" + _FAST_ITEM + rb")*)?)"

# Variables with a place in the Record; every other one goes to `fields`.
_TIME_VARS = ("msec", "time_iso8601", "time_local")  # in order of preference
_RESPONSE_VARS = ("status", "body_bytes_sent", "request_time")

_TIME_CACHE_MAX = 4096
_DAYS_MAX = 64

_HEX_ESC = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_HEX_BYTES = {b"%02X" % i: bytes([i]) for i in range(256)} | {b"%02x" % i: bytes([i]) for i in range(256)}
_JSON_ESC = re.compile(rb'\\(?:u([0-9A-Fa-f]{4})|(["\\nrtbf]))')
_JSON_SIMPLE = {b'"': b'"', b"\\": b"\\", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}

_TIME_LOCAL = re.compile(rb"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_MONTHS = {m.encode(): i for i, m in enumerate(
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), start=1)}


def _unescape_default(value: bytes) -> bytes:
    """Undo nginx's default escaping: `\\xHH` back to the byte."""
    return _HEX_ESC.sub(lambda m: _HEX_BYTES[m[1]], value)


def _json_repl(m: re.Match[bytes]) -> bytes:
    if m[1] is None:
        return _JSON_SIMPLE[m[2]]
    code = int(m[1], 16)
    return bytes([code]) if code < 0x100 else chr(code).encode("utf-8", "surrogatepass")


def _unescape_json(value: bytes) -> bytes:
    """Undo `ngx_escape_json`: `\\"`, `\\\\`, `\\n`, `\\r`, `\\t`, `\\b`, `\\f`, `\\u00XX`."""
    return _JSON_ESC.sub(_json_repl, value)


# `bytes` returns a bytes object unchanged: escape=none values are verbatim.
_UNESCAPE = {"default": _unescape_default, "json": _unescape_json, "none": bytes}


def _header_name(var: str) -> str:
    """`http_x_forwarded_for` -> `X-Forwarded-For`."""
    return "-".join(part.capitalize() for part in var[5:].split("_"))


def _tokenize(fmt: str) -> list[str | tuple[str]]:
    """Split a log_format string into literal text (str) and variables ((name,))."""
    pieces: list[str | tuple[str]] = []
    pos = 0
    while (dollar := fmt.find("$", pos)) >= 0:
        if dollar > pos:
            pieces.append(fmt[pos:dollar])
        if fmt.startswith("{", dollar + 1):
            close = fmt.find("}", dollar + 2)
            name = fmt[dollar + 2:close] if close >= 0 else ""
            if close < 0 or not _NAME.fullmatch(name):
                raise FormatError(
                    f"log format {fmt!r} has an unclosed or invalid '${{...}}' at position {dollar}"
                )
            pos = close + 1
        else:
            m = _NAME.match(fmt, dollar + 1)
            if m is None:
                raise FormatError(
                    f"log format {fmt!r} has a '$' without a variable name at position {dollar}"
                )
            name = m[0]
            pos = m.end()
        pieces.append((name,))
    if pos < len(fmt):
        pieces.append(fmt[pos:])
    return pieces


def _var_pattern(name: str, before: str, after: str, escape: str, fast: bool = False) -> bytes:
    """The regex group for one variable, from its kind and the literal text around it; `fast`
    gives the strict variant of the fast path (a quoted `$request` is then three groups)."""
    quoted = before.endswith('"') and after.startswith('"')
    if not fast:
        if quoted:
            return _QUOTED[escape]
        if name == "time_local" and before.endswith("[") and after.startswith("]"):
            return rb"([^\]]*)"
        return _TIGHT.get(name) or (_UPSTREAM_LIST if name in _UPSTREAM_LISTS else rb"(.*?)")
    if quoted:
        return FAST_REQUEST if name == "request" else rb"([" + SAFE + rb"]*)"
    if name == "time_local" and before.endswith("[") and after.startswith("]"):
        return rb"([" + SAFE.replace(b"\\x5d", b"\\x5e") + rb"]*)"
    return _FAST_TIGHT.get(name) or (_FAST_UPSTREAM_LIST if name in _UPSTREAM_LISTS else rb"([" + SAFE + rb"]*?)")


class NginxFormat:
    """One compiled nginx log_format: `parse` turns a log line into a Record."""

    __slots__ = (
        "_days", "_fast_groups", "_fast_match", "_fast_request", "_hot", "_i_args", "_i_method", "_i_protocol",
        "_i_target", "_i_uri", "_match", "_methods", "_missing", "_time_cache", "_time_kind", "_unescape",
        "_versions", "_words", "escape", "fmt", "variables",
    )

    def __init__(self, fmt: str, escape: str) -> None:
        """Compile `fmt` (a log_format string, not a preset name); see `compile_format`."""
        self.fmt = fmt
        self.escape = escape
        pieces = _tokenize(fmt)
        self.variables: tuple[str, ...] = tuple(p[0] for p in pieces if isinstance(p, tuple))
        """Variable names in format order."""
        if not self.variables:
            raise FormatError(f"log format {fmt!r} has no variables")
        if fmt.count('"') % 2:
            # nginx would accept it, but a quoted field that never closes is always a typo.
            last_quote = fmt.rfind('"')
            raise FormatError(f"log format {fmt!r} has an unclosed '\"' at position {last_quote}")

        def literal(k: int) -> str:
            piece = pieces[k] if 0 <= k < len(pieces) else ""
            return piece if isinstance(piece, str) else ""

        regex, fast = [], []
        self._fast_groups: list[int] = []
        """For each variable, its first group in the fast regex."""
        self._fast_request = False
        """Whether the (first) `$request` is quoted: three groups in the fast regex."""
        group = 0
        for k, piece in enumerate(pieces):
            if isinstance(piece, str):
                regex.append(re.escape(piece.encode("utf-8", "surrogateescape")))
                fast.append(regex[-1])
            else:
                before, after = literal(k - 1), literal(k + 1)
                regex.append(_var_pattern(piece[0], before, after, escape))
                fast.append(_var_pattern(piece[0], before, after, escape, fast=True))
                if piece[0] == "request" and "request" not in self.variables[:len(self._fast_groups)]:
                    self._fast_request = fast[-1] is FAST_REQUEST
                self._fast_groups.append(group)
                group += re.compile(fast[-1]).groups
        regex.append(rb"\r?")
        self._match = re.compile(b"".join(regex), re.DOTALL).fullmatch
        self._fast_match = re.compile(b"".join(fast)).fullmatch
        self._missing = b"-" if escape == "default" else b""
        self._unescape = _UNESCAPE[escape]
        self._time_cache: dict[bytes, float] = {}
        self._days: dict[bytes, float] = {}
        """Unix seconds at the start of each `$time_local` day seen (date and offset)."""
        self._words = RequestWords()
        self._methods, self._versions = self._words.methods, self._words.versions  # for inline lookups
        self._plan(self.variables)

    def _plan(self, names: tuple[str, ...]) -> None:
        """Give each match group its role; the first occurrence of a special variable wins.

        `$request` wins over its parts, `$request_uri` over `$uri` + `$args` (or `$query_string`),
        `$msec` over `$time_iso8601` over `$time_local`, and `$http_host` over `$host`; the
        variables that lose go to `fields`.
        """
        first: dict[str, int] = {}
        for i, variable in enumerate(names):
            first.setdefault(variable, i)
        self._time_kind = next((t for t in _TIME_VARS if t in first), "")
        roles = {"remote_addr", "http_host", "request_body", self._time_kind, *_RESPONSE_VARS}
        if "request" in first:
            roles.add("request")
        else:
            roles |= {"request_method", "server_protocol"}
            if "request_uri" in first:
                roles.add("request_uri")
            elif "uri" in first:
                roles |= {"uri", "args" if "args" in first else "query_string"}
        if "http_host" not in first:
            roles.add("host")

        def index(var: str) -> int:
            return first.get(var, -1) if var in roles else -1

        self._i_method = index("request_method")
        self._i_target = index("request_uri")
        self._i_uri = index("uri")
        self._i_args = index("args") if "args" in first else index("query_string")
        self._i_protocol = index("server_protocol")
        special = {first[v] for v in roles if v in first}
        header_plan = tuple(
            (i, _header_name(v)) for i, v in enumerate(names) if v.startswith("http_") and len(v) > 5
        )
        headers = {i for i, _ in header_plan}
        field_plan = tuple((i, v) for i, v in enumerate(names) if i not in special and i not in headers)
        # Everything `parse` needs per line, unpacked there in one step.
        self._hot = (
            self._missing, self._unescape, self._methods, self._versions, self._time_cache,
            index("request"), index(self._time_kind), index("status"), index("body_bytes_sent"),
            index("request_time"), index("remote_addr"), index("request_body"),
            tuple(first[v] for v in ("http_host", "host") if v in first), header_plan, field_plan,
        )

    def __repr__(self) -> str:
        return f"NginxFormat({self.fmt!r}, escape={self.escape!r})"

    def _text(self, value: bytes) -> str:
        """An unescaped value as text; bytes that are not UTF-8 become `\\xHH`."""
        if b"\\" in value:
            value = self._unescape(value)
        return value.decode("utf-8", "backslashreplace")

    def _time_miss(self, text: bytes) -> float:
        """Parse a time value not in the cache (and cache it, except `$msec`)."""
        try:
            if self._time_kind == "msec":
                return float(text)
            if self._time_kind == "time_local":
                return self._cache_time(text, self._time_local(text))
            dt = datetime.fromisoformat(text.decode("ascii"))
            if dt.tzinfo is None:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise ParseError("bad_time", f"${self._time_kind} value {text!r} is not a valid time") from None
        return self._cache_time(text, dt.timestamp())

    def _cache_time(self, text: bytes, ts: float) -> float:
        if len(self._time_cache) >= _TIME_CACHE_MAX:
            self._time_cache.clear()
        self._time_cache[text] = ts
        return ts

    def _time_local(self, text: bytes) -> float:
        """`$time_local` (`10/Oct/2000:13:55:36 -0700`) as Unix seconds; ValueError when it is not
        one. The start of each day (per offset) is computed once: a new second costs additions,
        not a datetime (the log of a busy server has a new second every few hundred lines)."""
        m = _TIME_LOCAL.fullmatch(text)
        if m is None or m[2] not in _MONTHS:
            raise ValueError
        hour, minute, second = int(m[4]), int(m[5]), int(m[6])
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError
        day = text[:12] + text[20:]
        start = self._days.get(day)
        if start is None:
            offset = (int(m[8]) * 60 + int(m[9])) * (-1 if m[7] == b"-" else 1)
            zone = timezone(timedelta(minutes=offset))
            start = datetime(int(m[3]), _MONTHS[m[2]], int(m[1]), tzinfo=zone).timestamp()
            if len(self._days) >= _DAYS_MAX:
                self._days.clear()
            self._days[day] = start
        return start + (hour * 3600 + minute * 60 + second)

    def _request_line(self, raw: bytes) -> tuple[str, bytes, str]:
        """Split `$request` into (method, target, version) on the first and the last space.

        The target may hold raw spaces (nginx accepts them). Without a trailing `HTTP/x` token
        the line is HTTP/0.9 and everything after the method is the target. Methods and
        versions seen are cached (bounded) for the fast path in `parse`.
        """
        first = raw.find(b" ")
        if first <= 0:
            raise ParseError("bad_request_line", f"request line {raw!r} has no method and target")
        method = self._words.method(raw[:first])
        last = raw.rfind(b" ")
        if last > first and HTTP_VERSION.fullmatch(raw, last + 1):
            target, version = raw[first + 1:last], self._words.version(raw[last + 1:])
        else:
            target, version = raw[first + 1:], "HTTP/0.9"
        if not target:
            raise ParseError("bad_request_line", f"request line {raw!r} has an empty target")
        return method, target, version

    def _request_from_parts(self, g: tuple[bytes, ...]) -> tuple[str, bytes, str]:
        """(method, target, version) from `$request_method`, `$request_uri` or `$uri`+`$args`,
        `$server_protocol`: the formats that do not log `$request`."""
        miss = self._missing
        method_b = g[self._i_method] if self._i_method >= 0 else miss
        if self._i_target >= 0:
            target = g[self._i_target]
        elif self._i_uri >= 0:
            target = g[self._i_uri]
            args = g[self._i_args] if self._i_args >= 0 else miss
            if args != miss:
                target += b"?" + args
        else:
            target = miss
        if method_b == miss or target == miss or not method_b or not target:
            raise ParseError("no_request", "line has no request method and target ($request or "
                             "$request_method with $request_uri or $uri)")
        if b"\\" in target:
            target = self._unescape(target)
        if self._i_protocol >= 0 and (proto := g[self._i_protocol]) != miss:
            version = self._words.version(proto)
        else:
            version = "HTTP/1.1"
        return self._words.method(method_b), target, version

    def parse(self, line: bytes, *, name: str | None, offset: int, fingerprint: str) -> Record:
        """One log line (without its newline) as a Record; ParseError when it cannot be one.

        ts is the arrival time: the logged time minus `$request_time` when both are there.
        A format with no time variable at all ($msec, $time_iso8601, $time_local) gives ts 0.0.
        """
        m = self._match(line)
        if m is None:
            raise ParseError("no_match", "line does not match the log format")
        g = m.groups()
        (miss, unescape, methods, versions, time_cache, i_request, i_time, i_status, i_bytes,
         i_request_time, i_client, i_body, host_plan, header_plan, field_plan) = self._hot

        if i_request >= 0:
            raw = g[i_request]
            if b"\\" in raw:
                raw = unescape(raw)
            # The common case: three words, a method and a version seen before.
            parts = raw.split(b" ")
            if (len(parts) == 3 and parts[1] and (method := methods.get(parts[0])) is not None
                    and (version := versions.get(parts[2])) is not None):
                target_b = parts[1]
            else:
                method, target_b, version = self._request_line(raw)
        else:
            method, target_b, version = self._request_from_parts(g)
        try:
            target, target_raw = target_b.decode(), None
        except UnicodeDecodeError:
            target, target_raw = decode_target(target_b)

        ts = 0.0
        if i_time >= 0:
            t = g[i_time]
            ts = time_cache.get(t) or self._time_miss(t)

        fields = {}
        for i, key in field_plan:
            v = g[i]
            fields[key] = (
                None if v == miss
                else (unescape(v) if b"\\" in v else v).decode("utf-8", "backslashreplace")
            )

        headers = []
        for i, h in header_plan:
            v = g[i]
            if v != miss:
                headers.append((h, (unescape(v) if b"\\" in v else v).decode("utf-8", "backslashreplace")))

        host = None
        for i in host_plan:
            v = g[i]
            if v != miss:
                host = (unescape(v) if b"\\" in v else v).decode("utf-8", "backslashreplace")
                break

        client = None
        if i_client >= 0 and (v := g[i_client]) != miss:
            client = (unescape(v) if b"\\" in v else v).decode("utf-8", "backslashreplace")

        body = None
        if i_body >= 0 and (v := g[i_body]) != miss:
            body = unescape(v) if b"\\" in v else v

        response = None
        if i_status >= 0 or i_bytes >= 0 or i_request_time >= 0:
            status = size = elapsed = None
            if i_status >= 0:
                v = g[i_status]
                if v.isdigit():
                    status = int(v)
                elif v != miss:
                    fields["status"] = self._text(v)
            if i_bytes >= 0:
                v = g[i_bytes]
                if v.isdigit() and len(v) < 16:  # JSON encoders stop at 64 bits
                    size = int(v)
                elif v != miss:
                    fields["body_bytes_sent"] = self._text(v)
            if i_request_time >= 0:
                v = g[i_request_time]
                try:
                    seconds = float(v)
                except ValueError:
                    if v != miss:
                        fields["request_time"] = self._text(v)
                else:
                    elapsed = round(seconds * 1000.0, 3)
                    if i_time >= 0:
                        ts -= seconds
            response = Response(status, elapsed, size)

        # Positional: this is the hot path, and keyword passing costs ~0.4 us a line.
        return Record(
            f"{fingerprint}-{offset}", ts, method, target, version, host, tuple(headers), body,
            client, None, Origin("nginx", name, offset), response, fields, target_raw,
        )

    def fast_encoder(self, fingerprint: str, name: str | None, rules: ScrubRules | None) -> LineEncoder | None:
        """A LineEncoder for this format (see parsers/encode.py), or None when the format has
        parts the fast path does not handle (escape=none, no quoted `$request`, `$request_body`)."""
        if self.escape == "none" or not self._fast_request or self._hot[11] >= 0:
            return None
        return _fast_encoder(self, fingerprint, name, rules)


def _fast_encoder(fmt: NginxFormat, fingerprint: str, name: str | None, rules: ScrubRules | None) -> LineEncoder:
    """Generate the LineEncoder of `fmt` (see parsers/encode.py and NginxFormat.fast_encoder).

    The strict regex admits only values without backslash (so nginx escaped nothing), quotes or
    control bytes, and only plain numbers for status and size: they are copied between JSON
    quotes as they are. What the general path does per value (a not-found `-` or `""` becomes
    null or leaves the header out, scrubbing, the time cache) is written out per group.
    """
    (miss, _, _, _, _, i_request, i_time, i_status, i_bytes, i_request_time, i_client, _,
     host_plan, header_plan, field_plan) = fmt._hot
    fast = fmt._fast_groups
    gen = Codegen()
    match, miss_c = gen.const(fmt._fast_match), gen.const(miss)
    gen.line(f"m = {match}(line)")
    gen.line("if m is None:")
    gen.bail(1)
    gen.line(f"{', '.join(f'g{i}' for i in range(fmt._fast_match.__self__.groups))}, = m.groups()")
    method, target, version = (f"g{fast[i_request] + k}" for k in range(3))

    if rules is not None:
        gen.scrub_target(target, rules)
    if i_time < 0:
        gen.line("ts = b'0.0'")
    elif i_request_time < 0 and fmt._time_kind != "msec":
        times = _TimeJson(fmt)
        gen.line(f"ts = {gen.const(times.cache)}.get(g{fast[i_time]})")
        gen.line("if ts is None:")
        gen.line(f"    ts = {gen.const(times)}(g{fast[i_time]})")
        gen.line("    if ts is None:")
        gen.bail(2)
    else:
        request_time = f"g{fast[i_request_time]}" if i_request_time >= 0 else miss_c
        gen.line(f"ts, elapsed = {gen.const(_timing(fmt))}(g{fast[i_time]}, {request_time})")
        gen.line("if ts is None:")
        gen.bail(1)

    def value(i: int, scrub: Callable[[bytes], bytes] | None = None) -> list[Part]:
        """A present value as a JSON string (scrubbed), for a choice with its absence."""
        group = f"g{fast[i]}"
        if scrub is None:
            return [lit(b'"'), var(group), lit(b'"')]
        expression = f"({gen.scrubbed(group, scrub, rules)} if {group} != {miss_c} else {group})"
        return [lit(b'"'), var(expression), lit(b'"')]

    gen.lit(b'{"v":1,"id":"' + fingerprint.encode() + b"-")
    gen.offset()
    gen.lit(b'","ts":')
    gen.var("ts")
    gen.request_line(method, target, version)
    host: Part = lit(b"null")
    for i in reversed(host_plan):  # the first one logged
        host = gen.choice(f"g{fast[i]} == {miss_c}", [host], value(i))
    gen.emit(host)
    gen.lit(b',"headers":[')
    gen.emit(gen.listing([
        (f"g{fast[i]} == {miss_c}",
         [lit(b"[" + orjson.dumps(header) + b","), *value(i, rules.header(header) if rules is not None else None),
          lit(b"]")])
        for i, header in header_plan]))
    gen.lit(b'],"body":null,"client":')
    gen.emit(gen.choice(f"g{fast[i_client]} == {miss_c}", [lit(b"null")], value(i_client)) if i_client >= 0
             else lit(b"null"))
    gen.lit(b',"session":null,"origin":{"kind":"nginx","name":' + orjson.dumps(name) + b',"pos":')
    gen.offset()
    gen.lit(b'},"response":')
    if i_status >= 0 or i_bytes >= 0 or i_request_time >= 0:
        for label, expression in ((b'{"status":', f"g{fast[i_status]}" if i_status >= 0 else None),
                                  (b',"elapsed_ms":', "elapsed" if i_request_time >= 0 else None),
                                  (b',"bytes":', f"g{fast[i_bytes]}" if i_bytes >= 0 else None)):
            gen.lit(label)
            if expression is None:
                gen.lit(b"null")
            else:
                gen.var(expression)
        gen.lit(b"}")
    else:
        gen.lit(b"null")
    gen.lit(b',"fields":{')
    for k, (i, key) in enumerate(field_plan):
        gen.lit((b"," if k else b"") + orjson.dumps(key) + b":")
        gen.emit(gen.choice(f"g{fast[i]} == {miss_c}", [lit(b"null")],
                            value(i, rules.field(key) if rules is not None else None)))
    gen.lit(b"}}")
    return gen.build(f"nginx {fmt.fmt!r}")


class _TimeJson:
    """The JSON ts of a time value (no `$request_time` to subtract), learned into `cache`."""

    def __init__(self, fmt: NginxFormat) -> None:
        self.fmt = fmt
        self.cache: dict[bytes, bytes] = {}

    def __call__(self, raw: bytes) -> bytes | None:
        try:
            ts = self.fmt._time_cache.get(raw) or self.fmt._time_miss(raw)
        except ParseError:
            return None
        if len(self.cache) >= _TIME_CACHE_MAX:
            self.cache.clear()
        self.cache[raw] = orjson.dumps(round(ts, 6))
        return self.cache[raw]


def _timing(fmt: NginxFormat) -> Callable[[bytes, bytes], tuple[bytes | None, bytes]]:
    """(ts, elapsed_ms) as JSON for a time value and a `$request_time` (or the not-found value):
    the arrival time is the log time minus the request time, as in `parse`."""
    miss = fmt._missing

    def timing(raw: bytes, request_time: bytes) -> tuple[bytes | None, bytes]:
        try:
            ts = fmt._time_cache.get(raw) or fmt._time_miss(raw)
        except ParseError:
            return None, b""
        if request_time == miss:
            return orjson.dumps(round(ts, 6)), b"null"
        try:
            seconds = float(request_time)
        except ValueError:
            return None, b""
        return orjson.dumps(round(ts - seconds, 6)), orjson.dumps(round(seconds * 1000.0, 3))

    return timing


def compile_format(fmt: str, escape: str = "default") -> NginxFormat:
    """Compile a preset name (`combined`, `main`, `upstreaminfo`) or a log_format string.

    `escape` is the log_format's `escape=` (default, json or none); it decides how values are
    unescaped and what a not-found variable looks like.
    """
    if escape not in ESCAPES:
        raise FormatError(f"unknown log format escaping {escape!r}: expected default, json or none")
    if fmt in PRESETS:
        return NginxFormat(PRESETS[fmt], escape)
    if not fmt.strip():
        raise FormatError("the log format is empty: give a preset name or a log_format string")
    if "$" not in fmt and _NAME.fullmatch(fmt):
        raise FormatError(
            f"unknown log format {fmt!r}: not a preset ({', '.join(PRESETS)}) and it has no $variables"
        )
    return NginxFormat(fmt, escape)


# -- nginx configuration files ------------------------------------------------------------

_CONF_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_CONF_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_CONF_QUOTED = {q: re.compile(rf"{q}((?:[^{q}\\]|\\.)*){q}", re.DOTALL) for q in "\"'"}
_CONF_WORD = re.compile(r"""(?:\$\{[^}]*\}|\\.|[^\s;{}"'])+""", re.DOTALL)


def _conf_unescape(word: str) -> str:
    """nginx config string escapes: `\\"`, `\\'`, `\\\\`, `\\t`, `\\r`, `\\n`; others stay as written."""
    if "\\" not in word:
        return word
    return _CONF_ESCAPE.sub(lambda m: _CONF_ESCAPES.get(m[1], m[0]), word)


def _conf_statements(text: str, path: str) -> list[tuple[int, list[str], bool]]:
    """Directives of an nginx config as (line, words, ended by ';'), blocks flattened.

    Words may be single- or double-quoted; `#` at the start of a word begins a comment.
    A statement left open at the end of the file is returned with False.
    """
    statements: list[tuple[int, list[str], bool]] = []
    words: list[str] = []
    start = line = 1
    pos = 0
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch.isspace():
            line += ch == "\n"
            pos += 1
        elif ch == "#":
            end = text.find("\n", pos)
            pos = n if end < 0 else end
        elif ch in ";{}":
            if ch == ";":
                statements.append((start, words, True))
            words = []
            pos += 1
        else:
            if not words:
                start = line
            if ch in "\"'":
                m = _CONF_QUOTED[ch].match(text, pos)
                if m is None:
                    raise FormatError(f"unclosed {ch} quote starting on line {line} of {path}")
                word = m[1]
            else:
                m = _CONF_WORD.match(text, pos)
                word = m[0]
            line += m[0].count("\n")
            words.append(_conf_unescape(word))
            pos = m.end()
    if words:
        statements.append((start, words, False))
    return statements


def read_format_file(path: str, name: str) -> tuple[str, str]:
    """Find `log_format NAME [escape=...] 'string' ...;` in an nginx config file.

    Returns (format string, escape). The quoted pieces are joined as nginx joins them, after
    nginx's own config-string escapes. `combined` is predefined by nginx, so it is found even
    when the file does not define it. FormatError (a usage error: the file is an option value)
    when the file cannot be read or tokenized, or NAME is not defined in it.
    """
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise FormatError(f"cannot read nginx config {path!r}: {e.strerror or e}") from e
    defined = []
    for line, words, ended in _conf_statements(text, path):
        if len(words) < 2 or words[0] != "log_format":
            continue
        defined.append(words[1])
        if words[1] != name:
            continue
        if not ended:
            raise FormatError(f"log_format {name!r} on line {line} of {path} is not terminated by ';'")
        args = words[2:]
        escape = "default"
        if args and args[0].startswith("escape="):
            escape = args.pop(0)[len("escape="):]
            if escape not in ESCAPES:
                raise FormatError(f"unknown escape {escape!r} in log_format {name!r} on line {line} of "
                                  f"{path}: expected default, json or none")
        if not args:
            raise FormatError(f"log_format {name!r} on line {line} of {path} has no format string")
        return "".join(args), escape
    if name == "combined":
        return PRESETS["combined"], "default"
    have = f"it defines {', '.join(repr(d) for d in defined)}" if defined else "it defines no log_format"
    raise FormatError(f"log_format {name!r} is not defined in {path} ({have})")
