"""The packet fast path (parsers/pcap_fast.py) writes exactly what the general path writes.

Both paths run on the same capture: the general one through a sink that takes only Records,
the fast one through a JSONL sink. Their lines must be byte-equal, in the same order, with
the same summary line and the same dead letters: on every real capture in shared/data/real/pcap,
on real ab/curl traffic (test_pcap_tcpdump.py), and on keep-alive captures built here whose
connections leave the fast path at every stage (retransmissions, reordering, gaps, cut
packets, RST, FIN, idle expiry, port reuse, missing handshakes, chunked bodies, interim
responses, upgrades, pipelining, HTTP/0.9, bare line feeds, secrets to scrub, ...).
"""

from __future__ import annotations

import asyncio
import random
import re
import struct
from pathlib import Path

import pytest

from capture.pcap import HttpCapture, PacketCaptureOptions, capture_pcap
from parsers.pcap import (
    ACK,
    FIN,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PSH,
    RST,
    SYN,
)
from shadowtap.streams.jsonl import JsonlSink
from tests.capture.test_pcap_synthetic import V4, V6, ip, link, tcp
from tests.conftest import SHARED_DATA

PCAPS = sorted(p for p in (SHARED_DATA / "pcap").iterdir() if p.suffix in (".pcap", ".pcapng"))


class RecordsOnly:
    """A JSONL sink that takes only Records: the capture must use the general path."""

    def __init__(self, path: str) -> None:
        self._sink = JsonlSink(path)

    async def send(self, record) -> None:
        await self._sink.send(record)

    async def flush(self) -> None:
        await self._sink.flush()

    async def close(self) -> None:
        await self._sink.close()


def run_path(paths: list[Path], out: Path, fast: bool, capsys, monkeypatch, **options) -> tuple[bytes, str, int]:
    """(lines written, stderr, records the fast path wrote) of one in-process `capture pcap`."""
    fast_records = []
    finish = HttpCapture.finish

    def spy(self, ts):
        fast_records.append(self.fast.records if self.fast is not None else 0)
        finish(self, ts)

    monkeypatch.setattr(HttpCapture, "finish", spy)
    dead = out.with_suffix(".dead")
    opts = PacketCaptureOptions(output=str(out), dead_letter=str(dead), **options)
    sink = JsonlSink(str(out)) if fast else RecordsOnly(str(out))
    asyncio.run(capture_pcap(tuple(map(str, paths)), opts, sink))
    err = capsys.readouterr().err
    monkeypatch.setattr(HttpCapture, "finish", finish)
    return out.read_bytes() + b"--\n" + (dead.read_bytes() if dead.exists() else b""), err, fast_records[0]


def compare(paths: list[Path], tmp_path: Path, capsys, monkeypatch, **options) -> tuple[bytes, int]:
    """Run both paths and check they agree; (lines, records the fast path wrote)."""
    general, general_err, none = run_path(paths, tmp_path / "general.jsonl", False, capsys, monkeypatch, **options)
    fast, fast_err, taken = run_path(paths, tmp_path / "fast.jsonl", True, capsys, monkeypatch, **options)
    assert none == 0
    assert general_err == fast_err
    if fast != general:
        a, b = general.splitlines(), fast.splitlines()
        i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        pytest.fail(f"the paths differ at line {i}:\ngeneral {a[i:i + 1]!r}\nfast    {b[i:i + 1]!r}")
    return fast, taken


@pytest.mark.parametrize("pcap", PCAPS, ids=lambda p: p.name)
@pytest.mark.parametrize("scrub", [True, False], ids=["scrub", "no-scrub"])
def test_both_paths_agree_on_every_real_capture(pcap, scrub, tmp_path, capsys, monkeypatch):
    compare([pcap], tmp_path, capsys, monkeypatch, scrub=scrub)


@pytest.mark.parametrize("name,fast,total", [
    # 13 browser connections: one loses 7240 bytes of a response (the general path reports
    # it), several end with chunked responses; the rest are taken by the fast path.
    ("zeek-bro.org.pcap", 25, 31),
    # The status line comes alone in its first segment: the head is read across segments.
    ("zeek-post.pcap", 1, 1),
    # Despite its name, each request waits for the previous response: plain keep-alive.
    ("zeek-pipelined-requests.pcap", 5, 5),
])
def test_the_fast_path_takes_the_plain_exchanges_of_real_captures(name, fast, total, tmp_path, capsys, monkeypatch):
    lines, taken = compare([SHARED_DATA / "pcap" / name], tmp_path, capsys, monkeypatch)
    assert lines.split(b"--\n")[0].count(b"\n") == total and taken == fast


# -- keep-alive captures built here -------------------------------------------------------------


class Conn:
    """One simulated TCP connection: segments with true sequence and acknowledgement numbers."""

    def __init__(self, rng: random.Random, cport: int, v6: bool, sport: int = 8080) -> None:
        self.addrs = V6 if v6 else V4
        self.cport, self.sport = cport, sport
        # Some connections start close to the sequence number wrap-around.
        self.cseq = rng.choice([rng.randrange(1 << 32), (1 << 32) - rng.randrange(1, 3000)])
        self.sseq = rng.randrange(1 << 32)
        self.segments: list[tuple[bool, int, int, int, bytes]] = []
        """(from client, flags, seq, ack, payload)."""

    def send(self, from_client: bool, payload: bytes, flags: int = ACK | PSH) -> None:
        seq = self.cseq if from_client else self.sseq
        ack = self.sseq if from_client else self.cseq
        self.segments.append((from_client, flags, seq, ack if flags & ACK else 0, payload))
        step = len(payload) + (1 if flags & (SYN | FIN) else 0)
        if from_client:
            self.cseq = (self.cseq + step) & 0xFFFFFFFF
        else:
            self.sseq = (self.sseq + step) & 0xFFFFFFFF

    def pieces(self, from_client: bool, data: bytes, rng: random.Random, split: bool) -> None:
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(1, 4)))) if split and \
            len(data) > 1 else []
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            self.send(from_client, data[a:b])

    def handshake(self) -> None:
        self.send(True, b"", SYN)
        self.send(False, b"", SYN | ACK)
        self.send(True, b"", ACK)

    def packet(self, i: int) -> bytes:
        """Segment `i` as an IP packet."""
        from_client, flags, seq, ack, payload = self.segments[i]
        c, s = self.addrs
        src, dst, sp, dp = (c, s, self.cport, self.sport) if from_client else (s, c, self.sport, self.cport)
        return ip(src, dst, tcp(sp, dp, seq, ack, flags, payload))


def response(status: int, body: bytes, headers: bytes = b"", length: bool = True) -> bytes:
    cl = b"Content-Length: %d\r\n" % len(body) if length else b""
    return b"HTTP/1.1 %d X\r\nServer: sim\r\n%s%s\r\n%s" % (status, cl, headers, body)


def chunked(body: bytes, trailer: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n%s\r\n" % (len(body), body, trailer)


REQUESTS = [
    b"GET /item?id=%d&page=1 HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1\r\nUser-Agent: ab\r\n\r\n",
    b"GET /s?id=%d&token=abc&api_key=k HTTP/1.1\r\nHost: svc\r\nCookie: sid=1\r\nAuthorization: Bearer x\r\n\r\n",
    b"GET /q/%d HTTP/1.1\r\nHost: svc\r\nX-Quote: a\"b\\c\tx\r\nX-Utf8: caf\xc3\xa9\r\nReferer: /p?password=x\r\n\r\n",
    b"GET /latin/%d HTTP/1.1\r\nHost: svc\r\nX-Latin: caf\xe9\r\n\r\n",
    b"GET /raw/%d?q=\xff\xfe HTTP/1.1\r\nHost: svc\r\n\r\n",
    b"GET /bad/%d HTTP/1.1\r\nHost: svc\r\nnot a header line\r\n\r\n",
    b"HEAD /head/%d HTTP/1.1\r\nHost: svc\r\n\r\n",
    b"GET /dup/%d HTTP/1.1\r\nHost: a\r\nhost: b\r\nContent-Length: 0\r\n\r\n",
    b"GET /obs/%d HTTP/1.1\r\nHost: svc\r\nX-Folded: one\r\n two\r\n\r\n",
    b"GET /long/%d HTTP/1.1\r\nHost: svc\r\nCookie: " + b"c" * 5000 + b"\r\n\r\n",  # too long to cache
]


def exchange(conn: Conn, rng: random.Random, n: int) -> bool:
    """One exchange of a random kind; False when the connection cannot carry HTTP after it."""
    kind = rng.randrange(16)
    split = rng.random() < 0.2
    if kind < 6:  # the common case: a GET or HEAD and a Content-Length response
        template = rng.choice(REQUESTS)
        conn.pieces(True, template % n, rng, split and rng.random() < 0.3)
        body = b"" if template.startswith(b"HEAD") else bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        headers = rng.choice([b"", b"Set-Cookie: s=secret\r\n", b"Location: /next?token=t\r\n", b"Date: now\r\n"])
        conn.pieces(False, response(200, body, headers), rng, split)
    elif kind == 6:  # a form POST: scrubbed body parameters
        body = b"user=u%d&password=p&x=%s" % (n, b"y" * rng.randrange(0, 3000))
        conn.pieces(True, b"POST /login HTTP/1.1\r\nHost: svc\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body), rng, split)
        conn.send(False, response(302, b"", b"Location: /home?session=abc\r\n"))
    elif kind == 7:  # 204 and 304: no body whatever the head says
        conn.send(True, b"GET /nb/%d HTTP/1.1\r\nHost: svc\r\n\r\n" % n)
        conn.send(False, rng.choice([b"HTTP/1.1 204 No Content\r\nServer: sim\r\n\r\n",
                                     b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"]))
    elif kind == 8:  # a chunked response, with or without trailers
        conn.send(True, b"GET /chunked/%d HTTP/1.1\r\nHost: svc\r\n\r\n" % n)
        conn.pieces(False, chunked(b"x" * rng.randrange(1, 500), rng.choice([b"", b"X-T: 1\r\n"])), rng, split)
    elif kind == 9:  # Expect: 100-continue
        body = b"z" * rng.randrange(1, 100)
        conn.send(True, b"PUT /up/%d HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                  % (n, len(body)))
        conn.send(False, b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.send(True, body)
        conn.send(False, response(201, b"made"))
    elif kind == 10:  # an interim 103 before the response
        conn.send(True, b"GET /early/%d HTTP/1.1\r\nHost: svc\r\n\r\n" % n)
        conn.send(False, b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + response(200, b"ok"))
    elif kind == 11:  # pipelining: two requests in one segment, the responses together or apart
        conn.send(True, b"GET /p1/%d HTTP/1.1\r\nHost: svc\r\n\r\nGET /p2/%d HTTP/1.1\r\nHost: svc\r\n\r\n" % (n, n))
        both = response(200, b"one") + response(200, b"two")
        conn.pieces(False, both, rng, split)
    elif kind == 12:  # oddities the general reader decides: bare LF, leading CRLF, a huge Content-Length
        conn.send(True, rng.choice([b"GET /lf/%d HTTP/1.1\nHost: svc\n\n", b"\r\nGET /crlf/%d HTTP/1.1\r\n\r\n",
                                    b"GET /big/%d HTTP/1.1\r\nContent-Length: 9999999\r\n\r\nabc"]) % n)
        conn.send(False, response(200, b"ok"))
    elif kind == 13:  # an upgrade, then another protocol
        conn.send(True, b"GET /ws/%d HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" % n)
        conn.send(False, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        conn.send(True, b"\x81\x05hello")
        conn.send(False, b"\x81\x02hi")
        return False
    elif kind == 14:  # a response delimited by the close
        conn.send(True, b"GET /close/%d HTTP/1.1\r\nHost: svc\r\n\r\n" % n)
        conn.pieces(False, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", rng, split)
        return False
    else:  # HTTP/0.9, or not HTTP at all
        conn.send(True, rng.choice([b"GET /old\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]))
        conn.send(False, b"plain bytes")
        return False
    if rng.random() < 0.3:
        conn.send(True, b"")  # a bare ACK
    return True


NOISE = [
    ip(V4[0], V4[1], b"\x00" * 8)[:9] + b"\x11" + ip(V4[0], V4[1], b"\x00" * 8)[10:],  # UDP
    ip(V4[0], V4[1], tcp(40999, 8080, 5, 0, ACK, b"x"))[:6] + b"\x20\x00" + ip(V4[0], V4[1], b"")[8:20]
    + tcp(40999, 8080, 5, 0, ACK, b"x"),  # a first fragment
    b"\x46" + ip(V4[0], V4[1], b"")[1:3] + b"\x00\x00\x40\x00\x40\x06\x00\x00" + V4[0] + V4[1] + b"\x01" * 4
    + tcp(40998, 8080, 9, 0, SYN, b""),  # IP options (the total length is off by 4: malformed or cut)
    b"\x00" * 30,  # not IP
]
"""Packets that are no TCP segment of the common kind, for the decoders' other paths."""


def build(rng: random.Random, connections: int) -> list[tuple[float, bytes, int]]:
    """Interleaved IP packets of many connections, some damaged: (ts, packet, bytes cut off)."""
    conns = []
    for k in range(connections):
        conn = Conn(rng, 40000 + k % 7 if k >= 7 and rng.random() < 0.1 else 40000 + k, rng.random() < 0.2,
                    8080 if rng.random() < 0.9 else 9090)
        if rng.random() < 0.9:
            conn.handshake()
        for n in range(rng.randrange(1, 8)):
            if not exchange(conn, rng, n):
                break
        end = rng.random()
        if end < 0.5:
            conn.send(True, b"", FIN | ACK)
            conn.send(False, b"", FIN | ACK)
            conn.send(True, b"", ACK)
        elif end < 0.6:
            conn.send(rng.random() < 0.5, b"", RST | ACK)
        packets = [(conn, i, 0) for i in range(len(conn.segments))]
        for _ in range(rng.randrange(0, 3)):  # damage
            i = rng.randrange(len(packets))
            what = rng.randrange(5)
            if what == 0:  # retransmission
                packets.insert(min(len(packets), i + rng.randrange(1, 4)), packets[i])
            elif what == 1 and i + 1 < len(packets):  # reordering
                packets[i], packets[i + 1] = packets[i + 1], packets[i]
            elif what == 2 and conn.segments[packets[i][1]][4]:  # a lost segment: a gap
                del packets[i]
            elif what == 3 and len(conn.segments[packets[i][1]][4]) > 4:  # cut short (snaplen)
                packets[i] = (conn, packets[i][1], 3)
            elif what == 4:  # a duplicated SYN or a stray handshake packet
                packets.insert(i, (conn, 0, 0))
        conns.append(packets)
    # Interleave the connections; in half of the captures, everything pauses once for 30 s
    # (past the idle timeout) towards the end.
    out, ts = [], 1700000000.0
    total = sum(map(len, conns))
    pause = int(total * rng.uniform(0.5, 0.95)) if rng.random() < 0.5 else -1
    while any(conns):
        packets = rng.choice([c for c in conns if c])
        conn, i, cut = packets.pop(0)
        ts += rng.choice([0.0, 0.000013, 0.0005, 0.01]) + (30.0 if len(out) == pause else 0.0)
        out.append((ts, conn.packet(i), cut))
        if rng.random() < 0.01:
            out.append((ts, rng.choice(NOISE), 0))
    return out


def write(path: Path, packets: list[tuple[float, bytes, int]], linktype: int = LINKTYPE_ETHERNET,
          ng: bool = False, odd: bool = False, nano: bool = False) -> None:
    """A classic pcap (or pcapng) file; a packet cut short keeps its original length. `odd`:
    some Ethernet frames get a VLAN tag, some a wrong ethertype; `nano`: timestamps in ns."""
    if ng:
        parts = [struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28),
                 struct.pack("<IIHHII", 1, 20, linktype, 0, 262144, 20)]
    else:
        parts = [struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for k, (ts, packet, cut) in enumerate(packets):
        frame = link(linktype, packet)
        if odd and linktype == LINKTYPE_ETHERNET and k % 7 == 3:  # VLAN tags
            frame = frame[:12] + b"\x81\x00\x45\x64" + frame[12:]
        elif odd and linktype == LINKTYPE_ETHERNET and k % 11 == 5 and frame[12:14] == b"\x08\x00":
            frame = frame[:12] + b"\x86\xdd" + frame[14:]  # IPv4 bytes said to be IPv6: malformed
        frame = frame[:len(frame) - cut]
        sec, usec = int(ts), round((ts - int(ts)) * 1e6)
        if ng:
            padded = frame + b"\x00" * (-len(frame) % 4)
            micro = sec * 1000000 + usec
            parts.append(struct.pack("<IIIIIII", 6, 32 + len(padded), 0, micro >> 32, micro & 0xFFFFFFFF,
                                     len(frame), len(frame) + cut) + padded + struct.pack("<I", 32 + len(padded)))
        else:
            frac = round((ts - sec) * 1e9) if nano else usec
            parts.append(struct.pack("<IIII", sec, frac, len(frame), len(frame) + cut) + frame)
    path.write_bytes(b"".join(parts))


@pytest.mark.parametrize("seed", range(24))
def test_both_paths_agree_on_damaged_keep_alive_captures(seed, tmp_path, capsys, monkeypatch):
    rng = random.Random(seed)
    path = tmp_path / "sim.pcap"
    write(path, build(rng, 40), nano=seed % 4 == 3)  # ns: timestamps with more than 6 decimals
    options = [{}, {"scrub": False, "max_body": 300}, {"ports": frozenset({8080}), "idle_timeout": 10.0}][seed % 3]
    lines, taken = compare([path], tmp_path, capsys, monkeypatch, **options)
    assert taken > 0 and lines.count(b"\n") > taken + 1  # both paths wrote records here


def test_a_capture_split_into_files_agrees_too(tmp_path, capsys, monkeypatch):
    packets = build(random.Random(99), 30)
    first, second = tmp_path / "a.pcap", tmp_path / "b.pcap"
    write(first, packets[:len(packets) // 2])
    write(second, packets[len(packets) // 2:])
    _, taken = compare([first, second], tmp_path, capsys, monkeypatch)
    assert taken > 0


def test_a_connection_leaves_the_fast_path_in_the_middle_of_an_exchange(tmp_path, capsys, monkeypatch):
    rng = random.Random(7)
    conn = Conn(rng, 41000, False)
    conn.handshake()
    for n in range(3):
        conn.send(True, REQUESTS[0] % n)
        conn.send(False, response(200, b"ok"))
    conn.send(True, REQUESTS[0] % 3)
    conn.send(False, response(200, b"0123456789")[:-4])
    conn.send(False, b"6789")
    order = list(range(len(conn.segments)))
    order[-2], order[-1] = order[-1], order[-2]  # the response's end comes before its head
    path = tmp_path / "mid.pcap"
    write(path, [(1700000000.0 + i / 1000, conn.packet(i), 0) for i in order])
    lines, taken = compare([path], tmp_path, capsys, monkeypatch)
    assert taken == 3 and lines.count(b'"status":200') == 4


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW,
                                      LINKTYPE_NULL])
def test_classic_pcap_read_in_place_equals_the_frame_decoders(linktype, tmp_path, capsys, monkeypatch):
    # Classic pcap files are decoded where they lie (parsers.pcap.ipv4_segment on the file's
    # bytes); pcapng frames go through the per-frame decoders. The same packets give the same lines.
    packets = build(random.Random(linktype), 30)
    lines = []
    for ng in (False, True):
        path = tmp_path / ("x.pcapng" if ng else "x.pcap")
        write(path, packets, linktype, ng, odd=True)
        out, err, taken = run_path([path], tmp_path / f"{ng}.jsonl", True, capsys, monkeypatch)
        assert taken > 0 and "Traceback" not in err
        lines.append((re.sub(rb'"id":"[0-9a-f]+-|"name":"[^"]*"', b"", out), err.replace(str(path), "")))
    assert lines[0] == lines[1]
