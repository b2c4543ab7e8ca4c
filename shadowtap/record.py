"""The Record and Outcome types and their wire codec (format v1, JSON via orjson).

Field names are a public contract: see the record table in DESIGN.md.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import orjson

from shadowtap.errors import RecordError, VersionError

FORMAT_VERSION = 1

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record was read from."""

    kind: str
    """Source kind: `nginx`, `haproxy`, `pcap`, `sniff`, `gor`, ..."""
    name: str | None = None
    """File name or interface."""
    pos: int | None = None
    """Position inside the source: byte offset of the line for log files."""


@dataclass(frozen=True, slots=True)
class Response:
    """The original response, as far as the source knows it."""

    status: int | None = None
    """HTTP status code."""
    elapsed_ms: float | None = None
    """How long the original server took, in milliseconds, as the source measured it."""
    bytes: int | None = None
    """Response size in bytes, as the source counted it."""
    headers: Headers | None = None
    """Response headers in order (packet sources only)."""
    body: bytes | None = None
    """Response body (packet sources only)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept so that a round trip loses nothing."""


@dataclass(frozen=True, slots=True)
class Record:
    """One captured HTTP request: what every parser returns and every stream carries."""

    id: str
    """Unique and stable for the same input position."""
    ts: float
    """When the request arrived, Unix seconds."""
    method: str
    """Request method as on the wire."""
    target: str
    """Request-target as on the wire; invalid UTF-8 bytes are written `%HH`."""
    version: str = "HTTP/1.1"
    """Protocol version as logged."""
    host: str | None = None
    """Host header or :authority."""
    headers: Headers = ()
    """Request headers in original order, duplicates kept."""
    body: bytes | None = None
    """Request body, when the source has it."""
    client: str | None = None
    """Client address as the server saw it."""
    session: str | None = None
    """Ordering and sampling key."""
    origin: Origin = Origin("unknown")
    """Where the record came from."""
    response: Response | None = None
    """The original response, when the source has one."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Every other logged field by its source name."""
    target_raw: bytes | None = None
    """Exact target bytes when they are not valid UTF-8 (else None)."""

    @property
    def target_bytes(self) -> bytes:
        """The request-target exactly as received."""
        return self.target_raw if self.target_raw is not None else self.target.encode()


def decode_target(raw: bytes) -> tuple[str, bytes | None]:
    """Return (target, target_raw) for raw target bytes, per the v1 contract."""
    try:
        return raw.decode(), None
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")
        escaped = "".join(
            f"%{ord(ch) - 0xDC00:02X}" if "\udc80" <= ch <= "\udcff" else ch for ch in text
        )
        return escaped, raw


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one replayed request got from one target."""

    id: str
    """The record's id."""
    target: str
    """Target name."""
    url: str
    """The URL the request was sent to."""
    intended: float
    """When the schedule wanted it sent, Unix seconds."""
    sent: float | None
    """When it was actually sent (None if never sent)."""
    done: float
    """When the response ended or the request failed."""
    status: int | None = None
    """Response status, None when there was no response."""
    error: str | None = None
    """Short error class: `timeout`, `connect`, `reset`, `protocol`, ..."""
    bytes: int = 0
    """Response body bytes received."""
    method: str = "GET"
    """Request method (kept for per-endpoint reports)."""
    path: str = "/"
    """Request target (kept for per-endpoint reports)."""
    reason: str | None = None
    """What exactly went wrong, when `error` is set (written only then)."""

    @property
    def latency_ms(self) -> float | None:
        """done − sent: the service time as the sender saw it."""
        return None if self.sent is None else (self.done - self.sent) * 1000.0

    @property
    def corrected_ms(self) -> float:
        """done − intended: latency free of coordinated omission."""
        return (self.done - self.intended) * 1000.0


_RECORD_KEYS = frozenset(
    "v id ts method target target_raw version host headers body client session origin response fields".split()
)
_RESPONSE_KEYS = frozenset("status elapsed_ms bytes headers body".split())


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: Any, name: str) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise RecordError(f"field '{name}' is not valid base64") from e


def _headers_out(headers: Headers | None) -> list[list[str]] | None:
    return None if headers is None else [[k, v] for k, v in headers]


def _headers_in(value: Any, name: str) -> Headers:
    try:
        return tuple([(k, v) if type(k) is str and type(v) is str else (str(k), str(v)) for k, v in value])
    except (TypeError, ValueError) as e:
        raise RecordError(f"field '{name}' must be a list of [name, value] pairs") from e


def record_to_dict(rec: Record) -> dict[str, Any]:
    """The v1 wire object for a record."""
    out: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "id": rec.id,
        "ts": round(rec.ts, 6),
        "method": rec.method,
        "target": rec.target,
        "version": rec.version,
        "host": rec.host,
        "headers": _headers_out(rec.headers),
        "body": _b64(rec.body),
        "client": rec.client,
        "session": rec.session,
        "origin": {"kind": rec.origin.kind, "name": rec.origin.name, "pos": rec.origin.pos},
        "response": None,
        "fields": rec.fields,
    }
    if rec.target_raw is not None:
        out["target_raw"] = _b64(rec.target_raw)
    if rec.response is not None:
        r = rec.response
        resp: dict[str, Any] = {"status": r.status, "elapsed_ms": r.elapsed_ms, "bytes": r.bytes}
        if r.headers is not None:
            resp["headers"] = _headers_out(r.headers)
        if r.body is not None:
            resp["body"] = _b64(r.body)
        resp.update(r.extra)
        out["response"] = resp
    return out


def encode_record(rec: Record) -> bytes:
    """One JSON line (without the newline) for a record."""
    return orjson.dumps(record_to_dict(rec))


def _response_from(obj: Any) -> Response | None:
    if obj is None:
        return None
    if type(obj) is not dict:
        raise RecordError("field 'response' must be an object or null")
    get = obj.get
    headers = get("headers")
    body = get("body")
    return Response(
        get("status"),
        get("elapsed_ms"),
        get("bytes"),
        None if headers is None else _headers_in(headers, "response.headers"),
        None if body is None else _unb64(body, "response.body"),
        {k: v for k, v in obj.items() if k not in _RESPONSE_KEYS} if obj.keys() - _RESPONSE_KEYS else {},
    )


def record_from_dict(obj: Any) -> Record:
    """Build a Record from a wire object, checking the version; unknown keys go to `fields`.

    This runs once per record on every read (a replay reads tens of thousands a second), so it
    checks and converts only what is not already of the right type, and builds positionally.
    """
    if type(obj) is not dict:
        raise RecordError("not a JSON object")
    get = obj.get
    v = get("v")
    if type(v) is not int:
        raise RecordError("no format version 'v': not a shadowtap record")
    if v > FORMAT_VERSION:
        raise VersionError(
            f"record format v{v} is newer than this shadowtap reads (v{FORMAT_VERSION}): upgrade shadowtap"
        )
    if v < 1:
        raise RecordError(f"unknown record format version v{v}")
    try:
        origin = get("origin") or {}
        fields = get("fields") or {}
        if type(fields) is not dict or obj.keys() - _RECORD_KEYS:
            fields = dict(fields)
            fields.update((k, val) for k, val in obj.items() if k not in _RECORD_KEYS)
        ident, ts, method, target = obj["id"], obj["ts"], obj["method"], obj["target"]
        headers = get("headers")
        body = get("body")
        target_raw = get("target_raw")
        return Record(
            ident if type(ident) is str else str(ident),
            ts if type(ts) is float else float(ts),
            method if type(method) is str else str(method),
            target if type(target) is str else str(target),
            str(get("version") or "HTTP/1.1"),
            get("host"),
            _headers_in(headers, "headers") if headers else (),
            None if body is None else _unb64(body, "body"),
            get("client"),
            get("session"),
            Origin(str(origin.get("kind", "unknown")), origin.get("name"), origin.get("pos")),
            _response_from(get("response")),
            fields,
            None if target_raw is None else _unb64(target_raw, "target_raw"),
        )
    except KeyError as e:
        raise RecordError(f"missing required field {e.args[0]!r}") from e
    except (TypeError, ValueError, AttributeError) as e:
        raise RecordError(f"malformed record: {e}") from e


def decode_record(line: bytes | str) -> Record:
    """Parse one JSON line into a Record."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise RecordError(f"not valid JSON ({e.msg})") from e
    return record_from_dict(obj)


def outcome_to_dict(o: Outcome) -> dict[str, Any]:
    """The v1 wire object for an outcome."""
    lat = o.latency_ms
    return {
        "v": FORMAT_VERSION,
        "id": o.id,
        "target": o.target,
        "url": o.url,
        "method": o.method,
        "path": o.path,
        "intended": round(o.intended, 6),
        "sent": None if o.sent is None else round(o.sent, 6),
        "done": round(o.done, 6),
        "status": o.status,
        "error": o.error,
        "bytes": o.bytes,
        "latency_ms": None if lat is None else round(lat, 3),
        "corrected_ms": round(o.corrected_ms, 3),
        **({"reason": o.reason} if o.reason is not None else {}),
    }


def encode_outcome(o: Outcome) -> bytes:
    """One JSON line (without the newline) for an outcome."""
    return orjson.dumps(outcome_to_dict(o))


def decode_outcome(line: bytes | str) -> Outcome:
    """Parse one outcome JSON line."""
    try:
        obj = orjson.loads(line)
        if not isinstance(obj, dict):
            raise RecordError("outcome line is not a JSON object")
        if obj.get("v", 0) > FORMAT_VERSION:
            raise VersionError(
                f"outcome format v{obj['v']} is newer than this shadowtap reads: upgrade shadowtap"
            )
        return Outcome(
            id=obj["id"], target=obj["target"], url=obj["url"], intended=obj["intended"],
            sent=obj.get("sent"), done=obj["done"], status=obj.get("status"), error=obj.get("error"),
            bytes=obj.get("bytes", 0), method=obj.get("method", "GET"), path=obj.get("path", "/"),
            reason=obj.get("reason"),
        )
    except orjson.JSONDecodeError as e:
        raise RecordError(f"outcome line is not valid JSON ({e.msg})") from e
    except (KeyError, TypeError) as e:
        raise RecordError(f"malformed outcome: {e}") from e
