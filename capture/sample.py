"""Choosing which records to ship: filters, then sampling. Every record left out is a counted
skip with its reason (`filtered_method`, `filtered_path`, `filtered_status`, `sampled_out`).

Sampling is random, or consistent by a key (`client`, `header:NAME`, `cookie:NAME`): a record
is kept when a hash of its key falls below the rate, so one user's whole session is either in
or out, on every shipper (the hash is not salted: shippers on many hosts agree). A record
without the key is sampled at random. With a key the record's `session` is set to a digest of
the key value (never the value itself: a cookie is a secret), which orders and partitions the
records of one session together downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson

from shadowtap.errors import UsageError
from shadowtap.record import Record

Selector = Callable[[Record], "tuple[Record | None, str]"]
"""select(record) -> (record, "") to keep it (maybe with its session set) or (None, skip reason)."""
LineSelector = Callable[[bytes], "tuple[bytes | None, str]"]
"""The same for a record encoded as a v1 JSON line: (the line to ship, "") or (None, reason)."""

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(%?)\s*$")
_STATUS = re.compile(r"^(?:[1-5]\d\d|[1-5]xx)$")
_KEY = re.compile(r"^(client|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|cookie:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$")


def parse_rate(text: str) -> float:
    """`10%`, `0.1` or `100%` as a fraction in (0, 1]; UsageError naming the value otherwise."""
    m = _RATE.match(text)
    value = float(m[1]) / (100 if m and m[2] else 1) if m else -1.0
    if not 0 < value <= 1:
        raise UsageError(f"cannot parse --sample {text!r}: expected a percentage like 10% or a fraction "
                         "above 0 and at most 1")
    return value


def parse_statuses(texts: tuple[str, ...]) -> frozenset[str]:
    """`2xx,304` (repeatable) as a set of exact codes and classes (`2xx`)."""
    statuses = set()
    for text in texts:
        for part in text.split(","):
            part = part.strip().lower()
            if not _STATUS.match(part):
                raise UsageError(f"cannot parse --status {text!r}: expected codes or classes like 2xx,304")
            statuses.add(part)
    return frozenset(statuses)


def parse_methods(texts: tuple[str, ...]) -> frozenset[str]:
    """`GET,HEAD` (repeatable) as a set of methods."""
    methods = {part.strip().upper() for text in texts for part in text.split(",") if part.strip()}
    for method in methods:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Z-]+", method):
            raise UsageError(f"cannot parse --method {method!r}: not an HTTP method")
    return frozenset(methods)


def parse_key(text: str) -> str:
    """`client`, `header:NAME` or `cookie:NAME`."""
    if not _KEY.match(text.strip()):
        raise UsageError(f"cannot parse --sample-key {text!r}: expected client, header:NAME or cookie:NAME")
    return text.strip()


def compile_path(text: str | None, option: str) -> re.Pattern[str] | None:
    """A path regex option, compiled; UsageError naming it when it is not a valid regex."""
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as e:
        raise UsageError(f"cannot parse {option} {text!r}: not a regular expression ({e})") from None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """Filters and sampling; `selection(record, rng)` → (record, "") to keep, (None, reason) to
    skip."""

    methods: frozenset[str] = frozenset()
    path: re.Pattern[str] | None = None
    """Keep records whose path (the target without its query) matches (re.search)."""
    exclude_path: re.Pattern[str] | None = None
    statuses: frozenset[str] = frozenset()
    """Exact codes (`304`) and classes (`2xx`); a record without a status is left out."""
    rate: float = 1.0
    key: str | None = None
    seed: int | None = None
    """Seed of the random sampling (tests); None seeds from the OS."""

    @property
    def active(self) -> bool:
        """Whether the selection can leave a record out or change it."""
        return bool(self.methods or self.path or self.exclude_path or self.statuses or self.rate < 1 or self.key)

    @property
    def key_is_secret(self) -> bool:
        """Whether the sampling key may be a value that scrubbing replaces (a header or cookie):
        then records must be sampled before they are scrubbed."""
        return self.key is not None and self.key != "client"

    def key_value(self, client: str | None, headers: Iterable[Sequence[str]], fields: dict) -> str | None:
        """The value of the sampling key in a record (its client, headers and fields), None when
        it has none."""
        if self.key is None:
            return None
        if self.key == "client":
            return client
        kind, _, name = self.key.partition(":")
        lower = name.lower()
        if kind == "header":
            return next((v for n, v in headers if n.lower() == lower), None)
        for n, v in headers:
            if n.lower() == "cookie" and (value := _cookie(v, name)) is not None:
                return value
        logged = fields.get(f"cookie_{name}")  # nginx $cookie_NAME
        if isinstance(logged, str):
            return logged
        captured = fields.get("captured_request_cookie")  # HAProxy %CC is `name=value`
        if isinstance(captured, str) and captured.startswith(f"{name}="):
            return captured[len(name) + 1:]
        return None

    def choose(self, method: str, target: str, status: int | None, key: str | None,
               rng: random.Random) -> tuple[str, str | None]:
        """The decision on one record from what it depends on: (skip reason, or "" to keep;
        the session to give the record, or None)."""
        if self.methods and method not in self.methods:
            return "filtered_method", None
        path = target.partition("?")[0]
        if self.path is not None and not self.path.search(path):
            return "filtered_path", None
        if self.exclude_path is not None and self.exclude_path.search(path):
            return "filtered_path", None
        if self.statuses and (status is None or (str(status) not in self.statuses
                                                 and f"{status // 100}xx" not in self.statuses)):
            return "filtered_status", None
        if key is None:
            return ("sampled_out" if self.rate < 1 and rng.random() >= self.rate else ""), None
        digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
        if self.rate < 1 and int.from_bytes(digest, "big") / 2**64 >= self.rate:
            return "sampled_out", None
        return "", f"{self.key.partition(':')[0]}:{digest.hex()}"

    def __call__(self, record: Record, rng: random.Random) -> tuple[Record | None, str]:
        status = record.response.status if record.response is not None else None
        reason, session = self.choose(record.method, record.target, status,
                                      self.key_value(record.client, record.headers, record.fields), rng)
        if reason:
            return None, reason
        return (record if session is None else dataclasses.replace(record, session=session)), ""

    def selectors(self) -> tuple[Selector | None, LineSelector | None]:
        """The shipper's selectors for this selection, sharing one random source: for Records,
        and for records already encoded as JSON lines (None, None when it selects nothing)."""
        if not self.active:
            return None, None
        rng = random.Random(self.seed)
        reads = bool(self.methods or self.path or self.exclude_path or self.statuses or self.key)

        def select_line(line: bytes) -> tuple[bytes | None, str]:
            if not reads:  # random sampling alone: the same draw as `choose`, without reading the line
                return (line, "") if rng.random() < self.rate else (None, "sampled_out")
            obj = orjson.loads(line)
            response = obj["response"]
            reason, session = self.choose(obj["method"], obj["target"], response and response["status"],
                                          self.key_value(obj["client"], obj["headers"], obj["fields"]), rng)
            if reason:
                return None, reason
            if session is None:
                return line, ""
            obj["session"] = session
            return orjson.dumps(obj), ""

        return (lambda record: self(record, rng)), select_line
