"""The capture fast path against the general path, end to end through the Shipper.

Every real HAProxy and nginx sample (../shared/data/real/, see SOURCES.md) is read by the real
reader and shipped twice into a real JSONL file, once with the fast path (format-specific
encoders, parsers/encode.py) and once with it switched off (parse -> Record -> scrub ->
encode): the records must be equal field for field, in the same order, and the accounting
(lines, records, skips and dead letters by reason) and the dead letters the same. Then the
parts the fast path adds on its own: the cached syslog prefix, the output shapes (null values,
absent captures), and the date arithmetic that replaced a datetime per second.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from capture.checkpoint import Checkpoint
from capture.follow import read_once
from capture.haproxy import redact
from capture.sample import Selection
from capture.scrub import Scrubber
from capture.ship import DeadLetters, Shipper
from parsers import haproxy, nginx
from shadowtap.errors import ParseError
from shadowtap.record import decode_record
from shadowtap.streams.jsonl import JsonlSink
from tests.conftest import SHARED_DATA

SCRUBBERS = {
    "no-scrub": None,
    "marker": Scrubber(),
    "hash": Scrubber("hash", b"k" * 32, headers=("User-Agent",), params=("q",)),
}
HAPROXY_FORMATS = {
    "httplog": ("httplog", ()),
    "httplog-named": ("httplog", ("Host", "User-Agent", "Referer")),
    "httplog-one-name": ("httplog", ("Host",)),
    "httpslog": ("httpslog", ()),
    "clf": ("clf", ()),
    "tcplog": ("tcplog", ()),
    "custom": ("%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc "
               "%sq/%bq %hr %hs %{+Q}r", ("Host",)),
}
NGINX_FORMATS = ("combined", "main", "upstreaminfo")


def ship(fmt, path: Path, out: Path, rules: Scrubber | None, fast: bool, dead: Path,
         selection: Selection | None = None) -> tuple:
    """Ship one file as `capture` does; (records as dicts, stats, dead letters, lines the
    fast path took)."""
    taken = [0]

    def encoders(fingerprint: str, name: str | None):
        encode = fmt.fast_encoder(fingerprint, name, rules)
        if encode is None:
            return None

        def counted(lines, offset, fallback):
            passed = [0]

            def general(index, line, position):
                passed[0] += 1
                return fallback(index, line, position)

            result = encode(lines, offset, general)
            taken[0] += len(lines) - passed[0]
            return result

        return counted

    async def main():
        sink = JsonlSink(str(out))
        letters = DeadLetters(str(dead), rules, redact if isinstance(fmt, haproxy.HaproxyFormat) else None)
        select, select_line = selection.selectors() if selection is not None else (None, None)
        if selection is not None and rules is not None and selection.key_is_secret:
            select_line = None
        shipper = Shipper(parse=fmt.parse, sink=sink, scrubber=rules, fast=encoders if fast else None,
                          dead_letters=letters, select=select, select_line=select_line)
        for chunk in read_once(str(path), Checkpoint(None)):
            await shipper.ship(chunk)
        await sink.close()
        letters.close()
        return shipper.stats

    stats = asyncio.run(main())
    lines = out.read_bytes().splitlines()
    for line in lines:
        decode_record(line)  # a valid v1 record
    records = [orjson.loads(line) for line in lines]
    return records, stats, dead.read_bytes() if dead.exists() else b"", taken[0]


def compare(tmp_path: Path, fmt, path: Path, rules, selection: Selection | None = None) -> int:
    """Ship `path` both ways and compare everything; the number of lines the fast path took."""
    fast = ship(fmt, path, tmp_path / "fast.jsonl", rules, True, tmp_path / "fast-dead.jsonl", selection)
    slow = ship(fmt, path, tmp_path / "slow.jsonl", rules, False, tmp_path / "slow-dead.jsonl", selection)
    for left, right in zip(fast[0], slow[0], strict=True):
        assert left == right, (path.name, left["id"])
    f, s = fast[1], slow[1]
    assert (f.lines, f.records, f.skipped, f.dead) == (s.lines, s.records, s.skipped, s.dead), path.name
    assert f.lines == f.records + sum(f.skipped.values()) + sum(f.dead.values())
    assert fast[2] == slow[2], path.name
    for name in ("fast.jsonl", "slow.jsonl", "fast-dead.jsonl", "slow-dead.jsonl"):
        (tmp_path / name).unlink(missing_ok=True)
    return fast[3]


def real(folder: str) -> list[Path]:
    files = sorted((SHARED_DATA / folder).glob("*.log"))
    assert files, f"no sample files in {SHARED_DATA / folder}"
    return files


@pytest.mark.parametrize("rules", SCRUBBERS.values(), ids=SCRUBBERS.keys())
def test_every_real_haproxy_sample(tmp_path, rules):
    taken = {}
    for path in real("haproxy"):
        for label, (fmt, names) in HAPROXY_FORMATS.items():
            taken[path.name, label] = compare(tmp_path, haproxy.compile_format(fmt, names), path, rules)
    # Not vacuous: the fast path takes the httplog lines of the samples written in that format.
    assert taken["beats-haproxy-httplog-no-headers.log", "httplog"] == 3
    assert taken["haproxy-doc-configuration-examples.log", "httplog"] >= 5
    assert taken["beats-haproxy-haproxy.log", "httplog-named"] == 1


@pytest.mark.parametrize("rules", SCRUBBERS.values(), ids=SCRUBBERS.keys())
def test_every_real_nginx_sample(tmp_path, rules):
    taken = {}
    example = Path(__file__).resolve().parents[2] / "examples" / "nginx-access.log"
    for path in [*real("nginx"), example]:
        for preset in NGINX_FORMATS:
            taken[path.name, preset] = compare(tmp_path, nginx.compile_format(preset), path, rules)
    assert taken["beats-nginx-access.log", "combined"] == 12
    assert taken["beats-nginx-ingress_controller-test.log", "upstreaminfo"] == 29
    assert taken["nginx-access.log", "combined"] == len(example.read_bytes().splitlines())


MESSAGE = (b'10.0.0.1:33317 [06/Feb/2009:12:14:14.655] fe~ be/srv1 10/0/30/69/109 200 2750 - - ---- '
           b'1/1/1/1/0 0/0 {shop.test|curl/8} "GET /a?b=1 HTTP/1.1"')
PREFIXES = [
    b"", b"<134>", b"haproxy[1]: ", b"haproxy: ", b"Feb  6 12:14:14 lb1 haproxy[2345]: ",
    b"<134>Feb  6 12:14:14 lb1 haproxy[2345]: ", b"<134>Feb  6 12:14:14 haproxy[2345]: ",
    b"Feb  6 12:14:14 lb1 ", b"Feb  6 12:14:14 ", b"2009-02-06T12:14:14.123+01:00 lb1 haproxy[7]: ",
    b"<134>1 2009-02-06T12:14:14.655Z lb1 haproxy 2345 - - ",
    b'<134>1 2009-02-06T12:14:14Z lb1 haproxy 2345 - [meta a="1"] ',
    b"Feb  6 12:14:14 lb1 10.0.0.9:80 ",  # looks like a tag, is not one
    b"Feb  6 12:14:14 lb1 haproxy[2345]:", b"x: ",
]


def line_stream(rng: random.Random, count: int) -> Iterator[bytes]:
    """Lines whose prefixes repeat in runs (so the prefix cache is used, and left) and whose
    values switch between present and absent (so every output shape is met)."""
    prefix = rng.choice(PREFIXES)
    for _ in range(count):
        if rng.random() < 0.3:
            prefix = rng.choice(PREFIXES)
        message = MESSAGE
        for old, new in ((b"10.0.0.1", b"-"), (b"fe~", b"-"), (b"be/", b"-/"), (b"/srv1", b"/-"),
                         (b"- - ----", b"sid=1 - ----"), (b"- - ----", b"- sid=2 ----"),
                         (b"{shop.test|", b"{|"), (b"|curl/8}", b"|}"), (b"{shop.test|curl/8} ", b""),
                         (b" 0/0 ", b" 0/0 {a|b} "), (b"?b=1", b"?token=s3cr3t&b=1"), (b"10/0", b"-1/0")):
            if rng.random() < 0.2:
                message = message.replace(old, new, 1)
        yield prefix + message


@pytest.mark.parametrize("rules", SCRUBBERS.values(), ids=SCRUBBERS.keys())
@pytest.mark.parametrize("names", [(), ("Host", "User-Agent"), ("User-Agent", "Host")])
def test_prefixes_and_shapes(tmp_path, rules, names):
    path = tmp_path / "mixed.log"
    path.write_bytes(b"\n".join(line_stream(random.Random(len(names)), 3000)) + b"\n")
    fmt = haproxy.compile_format("httplog", names)
    taken = compare(tmp_path, fmt, path, rules)
    assert taken > 1000
    # Each prefix kind, the ones that end in a tag and the ones that do not, on both paths.
    for prefix in PREFIXES:
        path.write_bytes(b"\n".join([prefix + MESSAGE] * 3 + [MESSAGE, prefix + MESSAGE]) + b"\n")
        compare(tmp_path, fmt, path, rules)


SELECTIONS = {
    "random": Selection(rate=0.3, seed=1),
    "client": Selection(rate=0.5, key="client", seed=3),
    "filters": Selection(methods=frozenset({"GET"}), statuses=frozenset({"2xx", "304"}),
                         exclude_path=re.compile("^/b"), rate=0.7, seed=2),
    "cookie": Selection(rate=0.5, key="cookie:sid", seed=4),
}


@pytest.mark.parametrize("rules", SCRUBBERS.values(), ids=SCRUBBERS.keys())
@pytest.mark.parametrize("selection", SELECTIONS.values(), ids=SELECTIONS.keys())
def test_filters_and_sampling_on_the_fast_path(tmp_path, rules, selection):
    """Selection looks at the records the fast path decoded, and keeps and skips exactly what
    the general path does (the same random draws, in line order); a secret sampling key (a
    cookie) is read before scrubbing, so with a scrubber those lines take the general path."""
    path = tmp_path / "mixed.log"
    lines = list(line_stream(random.Random(5), 3000))
    rng = random.Random(6)
    for n, line in enumerate(lines):  # methods, statuses and paths the filters tell apart
        if rng.random() < 0.3:
            line = line.replace(b'"GET /a', b'"HEAD /b' if n % 2 else b'"GET /b', 1)
        if rng.random() < 0.3:
            line = line.replace(b" 200 ", rng.choice([b" 304 ", b" 404 ", b" 503 "]), 1)
        lines[n] = line
    path.write_bytes(b"\n".join(lines) + b"\n")
    taken = compare(tmp_path, haproxy.compile_format("httplog", ("Host", "User-Agent")), path, rules, selection)
    if selection.key_is_secret and rules is not None:
        assert taken == 0
    else:
        assert taken > 1000
    stats = ship(haproxy.compile_format("httplog"), path, tmp_path / "out.jsonl", rules, True,
                 tmp_path / "dead.jsonl", selection)[1]
    assert stats.skipped["sampled_out"] > 300
    if selection.methods:
        assert stats.skipped["filtered_method"] > 100 and stats.skipped["filtered_status"] > 100
        assert stats.skipped["filtered_path"] > 100
    nginx_log = SHARED_DATA / "nginx" / "beats-nginx-access.log"
    compare(tmp_path, nginx.compile_format("combined"), nginx_log, rules, selection)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Australia/Lord_Howe", "America/St_Johns",
                                  "Africa/Monrovia"])
def test_haproxy_seconds_by_the_minute_equal_mktime(zone):
    """Local dates: a minute's start plus its seconds, as mktime gives for each second,
    including minutes at and inside daylight-saving transitions."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        seconds = haproxy._Seconds()
        rng = random.Random(zone)
        dates = [b"%02d/%s/%04d:%02d:%02d:%02d" % (
            rng.randint(0, 31), rng.choice([b"Jan", b"Mar", b"Oct", b"Nov", b"Foo"]),
            rng.choice([1969, 1970, 1972, 2024, 2026]), rng.randint(0, 24), rng.randint(0, 60), rng.randint(0, 60))
            for _ in range(5000)]
        dates += [b"%s:%02d:%02d:%02d" % (day, hour, minute, second)
                  for day in (b"31/Mar/2024", b"27/Oct/2024", b"07/Apr/2024", b"06/Oct/2024", b"07/Jan/1972")
                  for hour in range(4) for minute in range(60) for second in (0, 1, 30, 59)]
        for raw in dates:
            try:
                ts = haproxy._date(raw)
                expected = b"%d" % ts if ts == int(ts) and ts >= 0 else None
            except ParseError:
                expected = None
            assert seconds(raw) == expected, raw
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_nginx_time_local_by_the_day_equals_datetime():
    """`$time_local`: a day's start plus the time of day, as the datetime of each second."""
    from datetime import datetime, timedelta, timezone

    fmt = nginx.compile_format("combined")
    rng = random.Random(5)
    months = {b"Jan": 1, b"Feb": 2, b"Dec": 12}
    for _ in range(20000):
        day, month, year = rng.randint(0, 32), rng.choice([*months, b"Foo"]), rng.choice([1969, 2000, 2024, 9999, 0])
        hour, minute, second = rng.randint(0, 25), rng.randint(0, 61), rng.randint(0, 61)
        sign, zone_h, zone_m = rng.choice([b"+", b"-"]), rng.randint(0, 14), rng.choice([0, 30, 45, 99])
        raw = b"%02d/%s/%04d:%02d:%02d:%02d %s%02d%02d" % (day, month, year, hour, minute, second, sign, zone_h,
                                                           zone_m)
        try:
            offset = timedelta(hours=zone_h, minutes=zone_m) * (-1 if sign == b"-" else 1)
            expected = datetime(year, months[month], day, hour, minute, second, tzinfo=timezone(offset)).timestamp()
        except (ValueError, KeyError):
            expected = None
        try:
            got = fmt._time_miss(raw)
        except ParseError:
            got = None
        assert got == expected, raw
