"""The capture fast path (log line → JSON without a Record) writes exactly what the general path
(parse → Record → scrub → encode_record) writes, for every line it takes: on every real sample
file, in several formats and scrub settings, and on lines built to be awkward."""

from __future__ import annotations

import asyncio
import random
import zlib
from pathlib import Path

import orjson
import pytest

from capture.follow import Chunk, FileSource
from capture.scrub import Scrubber
from capture.ship import Shipper
from parsers import haproxy, nginx
from shadowtap.errors import ParseError
from shadowtap.record import decode_record, encode_record
from shadowtap.streams.memory import MemorySink
from tests.conftest import SHARED_DATA

NAME = "/var/log/odd %s näme.log"
FP = "0a1b2c3d4e5f"
SCRUBBERS = {
    "none": None,
    "marker": Scrubber(),
    "hash": Scrubber("hash", b"k" * 32, headers=("X-Api-Key",), params=("q",)),
}


def general(fmt, rules, line: bytes, offset: int) -> bytes | None:
    try:
        record = fmt.parse(line, name=NAME, offset=offset, fingerprint=FP)
    except ParseError:
        return None
    return encode_record(rules(record) if rules is not None else record)


def check(fmt, lines: list[bytes], rules) -> int:
    """Compare both paths line by line; the number of lines the fast path took."""
    encode = fmt.fast_encoder(FP, NAME, rules)
    assert encode is not None
    taken = 0
    offset = 0
    for line in lines:
        slow = general(fmt, rules, line, offset)
        fast = encode([line], offset, lambda index, line, offset: None)
        if fast:
            taken += 1
            assert slow is not None, line
            assert orjson.loads(fast[0]) == orjson.loads(slow), line
            assert decode_record(fast[0]) == decode_record(slow), line
        offset += len(line) + 1
    return taken


def real_lines(folder: str) -> dict[str, list[bytes]]:
    return {p.name: p.read_bytes().splitlines() for p in sorted((SHARED_DATA / folder).glob("*.log"))}


@pytest.mark.parametrize("rules", SCRUBBERS.values(), ids=SCRUBBERS.keys())
def test_real_nginx_files(rules):
    files = real_lines("nginx")
    files["example"] = (Path(__file__).resolve().parents[2] / "examples/nginx-access.log").read_bytes().splitlines()
    taken = {}
    for name, lines in files.items():
        for preset in ("combined", "main", "upstreaminfo"):
            taken[name, preset] = check(nginx.compile_format(preset), lines, rules)
    # The fast path is not vacuous: it takes the lines of the format they were written in.
    assert taken["example", "combined"] == len(files["example"])
    assert taken["beats-nginx-ingress_controller-test.log", "upstreaminfo"] == 29
    assert taken["beats-nginx-access.log", "combined"] == 12


@pytest.mark.parametrize("rules", SCRUBBERS.values(), ids=SCRUBBERS.keys())
def test_real_haproxy_files(rules):
    taken = 0
    for lines in real_lines("haproxy").values():
        taken += check(haproxy.compile_format("httplog"), lines, rules)
        taken += check(haproxy.compile_format("httplog", ("Host", "User-Agent", "Referer")), lines, rules)
    assert taken >= 15
    https = real_lines("haproxy")["elastic-integrations-haproxy-test-https.log"]
    assert check(haproxy.compile_format("httpslog", ("Host",)), https, rules) == 1


NGINX_FORMATS = [
    'combined',
    '$remote_addr [$time_local] "$request" $status $body_bytes_sent $request_time "$http_host" '
    '"$http_cookie" "$http_authorization" $args "$http_referer" $cookie_session $arg_token',
    '$msec $remote_addr "$request" $status $body_bytes_sent $request_time $upstream_addr',
    '$time_iso8601 "$request" $status "$host" "$http_x_forwarded_for"',
    '"$request" $status',
]


def awkward_values(rng: random.Random) -> dict[str, str]:
    choice = rng.choice
    return {
        "addr": choice(["203.0.113.9", "-", "unix:", "2001:db8::1"]),
        "time": choice(["10/Oct/2000:13:55:36 -0700", "01/Jan/2026:00:00:00 +0000", "31/Dec/1999:23:59:59 +1400"]),
        "request": choice(["GET /a HTTP/1.1", "GET /a?token=s3cr3t&page=2 HTTP/1.1", "POST /x?Api_Key=1 HTTP/2.0",
                           "GET /caf\\xC3\\xA9 HTTP/1.1", "GET /a\\x22b HTTP/1.1", "GET /a b HTTP/1.1", "hello",
                           "GET http://h/p HTTP/1.0", "-", "", "GET /% HTTP/1.1", "PATCHp /x HTTP/1.1",
                           "GET /?q=1&sig=2;session_id=3 HTTP/1.1"]),
        "status": choice(["200", "404", "-", "099", "2000"]),
        "size": choice(["0", "612", "-", "007", "123456789012345678901234"]),
        "rt": choice(["0.000", "1.5", "-", "12"]),
        "quoted": choice(["-", "", "Mozilla/5.0 (X11)", 'say \\x22hi\\x22', "caf\\xC3\\xA9", "a\\x5Cb",
                          "sid=abc; session=def", "Bearer zzz", "https://r/?token=t&x=1", "tab\tin", "%s%d"]),
        "word": choice(["-", "q=1&password=p", "abc", "x%y"]),
    }


def nginx_line(fmt: str, rng: random.Random) -> bytes:
    v = awkward_values(rng)
    compiled = nginx.compile_format(fmt)
    values = {
        "remote_addr": v["addr"], "remote_user": rng.choice(["-", "bob"]), "time_local": v["time"],
        "time_iso8601": rng.choice(["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00"]),
        "msec": rng.choice(["1700000000.123", "1700000000"]), "request": v["request"], "status": v["status"],
        "body_bytes_sent": v["size"], "request_time": v["rt"],
        "upstream_addr": rng.choice(["-", "1.2.3.4:80, 5.6.7.8:80"]),
    }
    text = compiled.fmt
    for var in sorted(compiled.variables, key=len, reverse=True):
        value = values.get(var, v["quoted"] if f'"${var}"' in text else v["word"])
        text = text.replace(f"${var}", value)
    data = text.encode("latin-1", "replace")
    return data if rng.random() > 0.05 else data.replace(b"a", b"\xe9", 1)


@pytest.mark.parametrize("fmt", NGINX_FORMATS)
@pytest.mark.parametrize("rules", SCRUBBERS.values(), ids=SCRUBBERS.keys())
def test_awkward_nginx_lines(fmt, rules):
    rng = random.Random(zlib.crc32(fmt.encode()))
    lines = [nginx_line(fmt, rng) for _ in range(600)]
    assert check(nginx.compile_format(fmt), lines, rules) > 10


def test_awkward_haproxy_lines():
    rng = random.Random(7)

    def pick(common: bytes, *odd: bytes) -> bytes:
        return common if rng.random() < 0.8 else rng.choice(odd)

    base = (b'<134>Feb  6 12:14:14 lb haproxy[1]: %s:33317 [06/Feb/2009:12:14:14.%s] fe~ be/%s 10/0/30/69/%s '
            b'%s %s %s - ---- 1/1/1/1/%s 0/0 {%s|%s} "%s"')
    lines = [base % (
        pick(b"10.0.0.1", b"-", b"::1"), pick(b"655", b"000", b"5"), pick(b"srv1", b"<NOSRV>", b"-"),
        pick(b"109", b"+30", b"-1", b"007"), pick(b"200", b"-1", b"404"), pick(b"2750", b"+243", b"0"),
        pick(b"-", b"sid=abc", b"session=x#20y"), pick(b"0", b"+1"), pick(b"shop.test", b"", b"a#7Cb", b"-"),
        pick(b"curl/8", b"Bearer zz", b"", b"x\\y"),
        pick(b"GET /a HTTP/1.1", b"GET /a?token=1&b=2 HTTP/1.1", b"<BADREQ>", b"", b"GET /caf#C3#A9 HTTP/1.1",
             b"GET https://h/x HTTP/2.0", b"POST /x?auth=%41 HTTP/1.0"),
    ) for _ in range(600)]
    for rules in SCRUBBERS.values():
        for names in ((), ("Host", "Authorization")):
            assert check(haproxy.compile_format("httplog", names), lines, rules) > 30


SAMPLE_FORMATS = {  # format: a line of it, `%s` for each sample value
    "httpslog": b'10.0.0.1:33317 [06/Feb/2009:12:14:14.655] fe~ be/srv1 10/0/30/69/109 200 2750 - - ---- '
                b'1/1/1/1/0 0/0 {shop.test} {} "GET /a?token=1&b=2 HTTP/1.1" %s/%s/%s/%s/%s %s/%s/%s',
    "%ci:%cp [%tr] %ST %B %[ssl_fc_sni]:%[fc_err] %{+Q}[ssl_c_s_dn] %[var(txn.id)] %{+Q}r %[src_port]":
        b'10.0.0.1:33317 [06/Feb/2009:12:14:14.655] 200 2750 %s:%s "%s" %s "GET /a?token=1 HTTP/1.1" %s',
    "%ci [%tr] %ST %B %{+Q}r %[ssl_fc_sni]":
        b'10.0.0.1 [06/Feb/2009:12:14:14.655] 200 2750 "GET /a?token=1 HTTP/1.1" %s',
}


@pytest.mark.parametrize("fmt", SAMPLE_FORMATS)
def test_awkward_sample_values(fmt):
    """`%[sample]` values: the general pattern is lazy, the strict one stops before the byte
    that follows; values holding it, `-`, `""`, escapes, quotes and UTF-8 on both paths."""
    rng = random.Random(zlib.crc32(fmt.encode()))
    odd = [b"-", b"", b"a/b", b"a:b", b"x y", b"#41", b'q"q', b"a\\b", b"sni.example.test", b"0", b"TLSv1.3",
           "caf\u00e9".encode()]
    line = SAMPLE_FORMATS[fmt]
    lines = [line % tuple(rng.choice(odd) if rng.random() < 0.3 else b"v%d" % rng.randint(0, 9)
                          for _ in range(line.count(b"%s"))) for _ in range(800)]
    for rules in SCRUBBERS.values():
        assert check(haproxy.compile_format(fmt), lines, rules) > 50


def test_sample_right_before_another_item_takes_the_general_path():
    assert haproxy.compile_format("%ci [%tr] %ST %{+Q}r %[fc_err]%[ssl_fc_sni]").fast_encoder(FP, NAME, None) is None


@pytest.mark.parametrize("rules", SCRUBBERS.values(), ids=SCRUBBERS.keys())
def test_shipper_writes_the_same_with_and_without_the_fast_path(rules):
    """A chunk of mixed lines through the Shipper: the fast path keeps order and accounting."""

    class EncodedSink(MemorySink):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[bytes] = []

        async def send(self, record) -> None:
            self.lines.append(encode_record(record))

        async def send_encoded(self, lines: list[bytes]) -> None:
            self.lines.extend(lines)

    rng = random.Random(3)
    fmt = nginx.compile_format("combined")
    lines = [nginx_line("combined", rng) for _ in range(400)] + [b"", b"   "]
    rng.shuffle(lines)
    chunk = Chunk(FileSource(NAME, FP), 0, 0, lines)
    fast_sink, slow_sink = EncodedSink(), MemorySink()
    fast = Shipper(parse=fmt.parse, sink=fast_sink, scrubber=rules,
                   fast=lambda fp, name: fmt.fast_encoder(fp, name, rules))
    slow = Shipper(parse=fmt.parse, sink=slow_sink, scrubber=rules)
    asyncio.run(fast.ship(chunk))
    asyncio.run(slow.ship(chunk))
    assert [decode_record(line) for line in fast_sink.lines] == [
        decode_record(encode_record(r)) for r in slow_sink.records]
    assert (fast.stats.lines, fast.stats.records, fast.stats.skipped, fast.stats.dead) == (
        slow.stats.lines, slow.stats.records, slow.stats.skipped, slow.stats.dead)
    assert fast.stats.skipped["blank_line"] == 2 and fast.stats.lines == len(lines)


MUTATIONS = [b'"', b"\\", b"#", b"#2", b"{", b"}", b"|", b" ", b"  ", b"-", b"\r", b"\t", b"\x00", b"\xe9",
             b"\xc3\xa9", b"/", b":", b"[", b"]", b"?token=x", b"9", b"+1", b"\\x22", b"%"]


def mutated(lines: list[bytes], rng: random.Random, count: int) -> list[bytes]:
    """Real lines with one to three random edits each: a byte deleted, or an awkward piece
    inserted or written over one."""
    out = []
    for _ in range(count):
        line = bytearray(rng.choice(lines))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(line) + 1)
            roll = rng.random()
            if roll < 0.3 and at < len(line):
                del line[at]
            elif roll < 0.6:
                line[at:at] = rng.choice(MUTATIONS)
            else:
                line[at:at + 1] = rng.choice(MUTATIONS)
        out.append(bytes(line))
    return out


@pytest.mark.parametrize("rules", SCRUBBERS.values(), ids=SCRUBBERS.keys())
def test_mutated_real_lines_never_crash_and_both_paths_agree(rules):
    """Bad input never crashes: real sample lines with random edits are records, skips or dead
    letters (ParseError) on the general path, and where the fast path takes one, it writes
    what the general path writes."""
    rng = random.Random(20261128)
    haproxy_lines = [line for lines in real_lines("haproxy").values() for line in lines if line]
    nginx_lines = [line for lines in real_lines("nginx").values() for line in lines if line]
    taken = 0
    for preset, names in (("httplog", ()), ("httplog", ("Host", "User-Agent")), ("httpslog", ()), ("clf", ()),
                          ("tcplog", ())):
        fmt = haproxy.compile_format(preset, names)
        lines = mutated(haproxy_lines, rng, 5000)
        if fmt.fast_encoder(FP, NAME, rules) is None:
            for offset, line in enumerate(lines):
                general(fmt, rules, line, offset)
        else:
            taken += check(fmt, lines, rules)
    for preset in ("combined", "main", "upstreaminfo"):
        taken += check(nginx.compile_format(preset), mutated(nginx_lines, rng, 5000), rules)
    assert taken > 1000
