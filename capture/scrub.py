"""Removing secrets from records before they leave the capturing process.

On by default. Values of the Authorization, Proxy-Authorization, Cookie and Set-Cookie headers
(request and response), query parameters whose names look like secrets (token, password,
passwd, secret, key, api_key, signature, sig, session, auth), form-encoded request bodies'
parameters of the same kind, and logged fields that carry any of these (nginx `$http_cookie`,
`$cookie_NAME`, `$arg_token`, `$args`, HAProxy captured cookies, ...) are replaced by a fixed
marker or, in hash mode, by a keyed hash that keeps cardinality (equal secrets give equal
replacements, so "how many sessions" survives, the secret does not).

URL headers (Referer, Location) lose their secret query parameters too.

A `Scrubber` works on Records (`scrubber(record)`) and, for the capture fast path that never
builds a Record, on raw bytes (`target`, `header`, `field`, `value`): both give the same
result. `line` scrubs a raw log line for dead letters and messages, where field boundaries are
unknown. Scrubbed URLs are cached, since logs repeat the same URLs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable

from shadowtap.record import Record, decode_target

MARKER = "SCRUBBED"
HASH_PREFIX = "SCRUBBED:"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_WORDS = rb"token|passw(?:or)?d|secret|signature|session|auth|apikey"
"""A parameter whose name contains one of these is secret ..."""
_SECRET_ENDINGS = rb"key|sig"
"""... and so is one named so, or ending so after `_`, `-` or `.` (api_key, X-Amz-Sig)."""
SECRET_PARAM = re.compile(rb"(?i)" + _SECRET_WORDS + rb"|(?:^|[_\-.])(?:" + _SECRET_ENDINGS + rb")$")
"""Searched in a parameter name: a match makes the parameter's value secret."""

# Every name SECRET_PARAM matches contains one of these: a cheap test before the careful one.
_MAYBE_SECRET = rb"token|passw|secret|session|auth|key|sig"
_LINE_PARAM = re.compile(rb"([?&;])([^=&;\s\"'?#]*)=([^&;\s\"'#]*)")
_CREDENTIAL = re.compile(rb"(?i)\b(Bearer|Basic|Digest|Negotiate|Token)(\s+)[A-Za-z0-9._~+/=\-]+")
_FORM = "application/x-www-form-urlencoded"

TARGET_CACHE = 16384
"""URLs whose scrubbed form is remembered (the cache is emptied when full)."""
URL_HEADERS = frozenset({"referer", "location", "content-location"})
"""Headers whose values are URLs: their secret query parameters are replaced."""
# Logged fields (nginx variable names, HAProxy field names) whose values are request targets,
# query strings, cookies, or captured header blocks whose names are unknown.
URL_FIELDS = frozenset({"request_uri", "request", "uri", "http_request"})
QUERY_FIELDS = frozenset({"args", "query_string", "query"})
COOKIE_FIELDS = frozenset({"captured_request_cookie", "captured_response_cookie"})
UNNAMED_FIELDS = frozenset({"captured_request_headers", "captured_response_headers"})


class Scrubber:
    """Secret-removal rules: which headers and parameters are secret, and what replaces them.

    `mode` is `marker` (a fixed `SCRUBBED`) or `hash` (`SCRUBBED:` + 16 hex digits of a keyed
    BLAKE2b of the value, which needs `key`). `headers` and `params` add names to the defaults
    (compared case-insensitively; extra parameter names must match exactly, not by substring).
    """

    def __init__(self, mode: str = "marker", key: bytes | None = None,
                 headers: Iterable[str] = (), params: Iterable[str] = ()) -> None:
        if mode not in ("marker", "hash"):
            raise ValueError(f"unknown scrub mode {mode!r}")
        if mode == "hash" and not key:
            raise ValueError("hash scrubbing needs a key")
        self.mode = mode
        self._key = key or b""
        self.headers = SECRET_HEADERS | {h.strip().lower() for h in headers if h.strip()}
        """Lower-case names of the headers whose values are secret."""
        self.params = frozenset(p.strip().lower().encode() for p in params if p.strip())
        """Extra parameter names (lower case, bytes) whose values are secret."""
        alternatives = [_MAYBE_SECRET, *(re.escape(p) for p in self.params)]
        self.candidates = re.compile(b"|".join(alternatives)).search
        """search(lower-cased text): None means no parameter name in the text can be secret.
        A cheap test before the careful one (lower-casing first is three times faster than a
        case-insensitive regex); the capture fast path calls it inline."""
        self._marker = MARKER.encode()
        # `name=value` pairs of a query whose name is secret (what SECRET_PARAM finds, or an
        # extra name): one regex, so that the replacement needs no test per parameter.
        names = [rb"[^&=;]*(?:" + _SECRET_WORDS + rb")[^&=;]*", rb"(?:[^&=;]*[_\-.])?(?:" + _SECRET_ENDINGS + rb")",
                 *(re.escape(p) for p in self.params)]
        self._assignment = re.compile(rb"(?i)(?:^|(?<=[&;]))((?:" + b"|".join(names) + rb")=)[^&;]*")
        self._marked = lambda m: m[1] + self._marker
        self.targets: dict[bytes, bytes] = {}
        """Cache of `target`: raw URL -> scrubbed URL."""

    # -- bytes -----------------------------------------------------------------------------

    def _maybe(self, text: bytes) -> bool:
        return self.candidates(text.lower()) is not None

    def value(self, raw: bytes) -> bytes:
        """The replacement for one secret value."""
        if self.mode == "marker":
            return self._marker
        digest = hashlib.blake2b(raw, key=self._key[:64], digest_size=8).hexdigest()
        return (HASH_PREFIX + digest).encode()

    def secret_param(self, name: bytes) -> bool:
        """Whether a query or form parameter with this name holds a secret."""
        return bool(SECRET_PARAM.search(name)) or name.lower() in self.params

    def query(self, query: bytes) -> bytes:
        """A query string (or a form body) with secret parameters' values replaced; a leading
        `?` (HAProxy's `%HQ`) is kept."""
        if not self._maybe(query):
            return query
        return self._replace(query)

    def _replace(self, query: bytes) -> bytes:
        if query.startswith(b"?"):
            return b"?" + self._replace(query[1:])
        if self.mode == "marker":
            return self._assignment.sub(self._marked, query)
        return self._assignment.sub(lambda m: m[1] + self.value(m[0][len(m[1]):]), query)

    def target(self, raw: bytes) -> bytes:
        """A request target (or any URL) with secret query parameters' values replaced.

        Results are cached (`targets`, bounded): logs repeat the same URLs, and the capture
        fast path looks them up there before calling this.
        """
        cleaned = self.targets.get(raw)
        if cleaned is None:
            path, sep, query = raw.partition(b"?")
            cleaned = path + b"?" + self._replace(query) if sep and self._maybe(query) else raw
            if len(self.targets) >= TARGET_CACHE:
                self.targets.clear()
            self.targets[raw] = cleaned
        return cleaned

    def header(self, name: str) -> Callable[[bytes], bytes] | None:
        """How to scrub the value of a header named `name`: None when it never holds a secret."""
        lower = name.lower()
        if lower in self.headers:
            return self.value
        if lower in URL_HEADERS:
            return self.target
        return None

    def field(self, key: str) -> Callable[[bytes], bytes] | None:
        """How to scrub a logged field named `key`: None when it never holds a secret.

        nginx names header variables `http_<name>`, cookies `cookie_<name>`, query arguments
        `arg_<name>`, response headers `sent_http_<name>` / `upstream_http_<name>`. Captured
        header blocks whose header names are unknown get the raw-line rules (`line`).
        """
        lower = key.lower()
        for prefix in ("http_", "sent_http_", "upstream_http_"):
            if lower.startswith(prefix):
                return self.header(lower[len(prefix):].replace("_", "-"))
        if lower.startswith("cookie_") or lower in COOKIE_FIELDS:
            return self.value
        if lower.startswith("arg_"):
            return self.value if self.secret_param(lower[4:].encode()) else None
        if lower in QUERY_FIELDS:
            return self.query
        if lower in URL_FIELDS:
            return self.target
        if lower in UNNAMED_FIELDS:
            return self.line
        return None

    def line(self, raw: bytes) -> bytes:
        """A raw log line (or a message quoting one) with everything that looks secret replaced:
        secret-named `name=value` parameters anywhere and `Bearer`/`Basic`/... credentials."""
        if self._maybe(raw):
            raw = _LINE_PARAM.sub(
                lambda m: m.group(1) + m.group(2) + b"=" + self.value(m.group(3))
                if self.secret_param(m.group(2)) else m.group(0), raw)
        return _CREDENTIAL.sub(lambda m: m.group(1) + m.group(2) + self.value(m.group(0)), raw)

    def text(self, message: str) -> str:
        """`line` for text."""
        return self.line(message.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    # -- records ---------------------------------------------------------------------------

    def _str(self, scrub: Callable[[bytes], bytes], value: str) -> str:
        return scrub(value.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def _headers(self, headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...] | None:
        """Scrubbed headers, or None when none changed."""
        out = []
        changed = False
        for name, value in headers:
            if (scrub := self.header(name)) is not None and (cleaned := self._str(scrub, value)) != value:
                value, changed = cleaned, True
            out.append((name, value))
        return tuple(out) if changed else None

    def _field(self, scrub: Callable[[bytes], bytes], value: object) -> object:
        if isinstance(value, str):
            return self._str(scrub, value)
        if isinstance(value, list):
            return [self._str(scrub, v) if isinstance(v, str) else v for v in value]
        return value

    def __call__(self, record: Record) -> Record:
        """The record with every secret replaced; the same object when there was none."""
        changes: dict = {}
        if (headers := self._headers(record.headers)) is not None:
            changes["headers"] = headers
        if "?" in record.target:
            raw = record.target_bytes
            cleaned = self.target(raw)
            if cleaned != raw:
                changes["target"], changes["target_raw"] = decode_target(cleaned)
        form = record.body and any(n.lower() == "content-type" and v.lower().startswith(_FORM)
                                   for n, v in record.headers)
        if form and (body := self.query(record.body)) != record.body:
            changes["body"] = body
        if record.fields:
            fields = None
            for key, value in record.fields.items():
                if (scrub := self.field(key)) is not None:
                    cleaned_value = self._field(scrub, value)
                    if cleaned_value != value:
                        fields = fields or dict(record.fields)
                        fields[key] = cleaned_value
            if fields is not None:
                changes["fields"] = fields
        response = record.response
        if response is not None and response.headers and (cleaned_headers := self._headers(response.headers)):
            changes["response"] = dataclasses.replace(response, headers=cleaned_headers)
        return dataclasses.replace(record, **changes) if changes else record


DEFAULT = Scrubber()
"""The default rules with the fixed marker."""


def scrub(record: Record) -> Record:
    """The record with secrets replaced by the default rules (fixed marker)."""
    return DEFAULT(record)
