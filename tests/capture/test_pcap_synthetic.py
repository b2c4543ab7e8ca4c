"""Captures written here with struct: every supported link type (checked with tshark too),
IPv6, VLAN tags, nanosecond timestamps, frames larger than 64 KiB, connections that continue
from one file into the next, out-of-order and duplicated packets, and --port."""

from __future__ import annotations

import base64
import struct

import pytest

from parsers.pcap import (
    ACK,
    FIN,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PSH,
    SYN,
)
from tests.capture.pcap_helpers import capture, summary, tshark, write_pcap

V4 = (bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
V6 = (bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000002"))


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def ip(src: bytes, dst: bytes, segment: bytes) -> bytes:
    if len(src) == 4:
        total = 20 + len(segment)
        # Larger than the 16-bit total length: 0, as TSO-sized packets captured on the sender.
        total = total if total <= 0xFFFF else 0
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 6, 0, src, dst) + segment
    return struct.pack("!IHBB16s16s", 6 << 28, len(segment), 6, 64, src, dst) + segment


def link(linktype: int, packet: bytes, vlan: bool = False) -> bytes:
    v6 = packet[0] >> 4 == 6
    ethertype = b"\x86\xdd" if v6 else b"\x08\x00"
    if linktype == LINKTYPE_ETHERNET:
        tags = b"\x81\x00\x00\x64" if vlan else b""
        return b"\x02" * 6 + b"\x04" * 6 + tags + ethertype + packet
    if linktype == LINKTYPE_LINUX_SLL:
        return struct.pack("!HHH8s", 0, 1, 6, b"\x02" * 6 + b"\x00\x00") + ethertype + packet
    if linktype == LINKTYPE_LINUX_SLL2:
        return ethertype + b"\x00\x00" + struct.pack("!IHBB8s", 1, 1, 0, 6, b"\x02" * 6 + b"\x00\x00") + packet
    if linktype == LINKTYPE_NULL:
        return struct.pack("<I", 30 if v6 else 2) + packet
    return packet


REQUEST = b"POST /form?a=1 HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n\r\nhello=world"
RESPONSE = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Id: 7\r\n\r\ndone"


def exchange(addrs=V4, sport=40001, dport=8080, request=REQUEST, response=RESPONSE, t0=1700000000.25,
             split: int | None = None) -> list[tuple[float, bytes]]:
    """An IP-level HTTP exchange with handshake and close; the request split in two segments."""
    c, s = addrs
    cseq, sseq = 1000, 9000
    split = split or len(request) // 2
    out = [
        (t0, ip(c, s, tcp(sport, dport, cseq, 0, SYN, b""))),
        (t0 + 0.001, ip(s, c, tcp(dport, sport, sseq, cseq + 1, SYN | ACK, b""))),
        (t0 + 0.002, ip(c, s, tcp(sport, dport, cseq + 1, sseq + 1, ACK, b""))),
        (t0 + 0.010, ip(c, s, tcp(sport, dport, cseq + 1, sseq + 1, ACK, request[:split]))),
        (t0 + 0.020, ip(c, s, tcp(sport, dport, cseq + 1 + split, sseq + 1, ACK | PSH, request[split:]))),
        (t0 + 0.050, ip(s, c, tcp(dport, sport, sseq + 1, cseq + 1 + len(request), ACK | PSH, response))),
        (t0 + 0.060, ip(c, s, tcp(sport, dport, cseq + 1 + len(request), sseq + 1 + len(response), ACK | FIN, b""))),
        (t0 + 0.061, ip(s, c, tcp(dport, sport, sseq + 1 + len(response), cseq + 2 + len(request), ACK | FIN, b""))),
        (t0 + 0.062, ip(c, s, tcp(sport, dport, cseq + 2 + len(request), sseq + 2 + len(response), ACK, b""))),
    ]
    return out


def check_record(r, client: str, server: str) -> None:
    assert (r["method"], r["target"], r["host"], base64.b64decode(r["body"])) == (
        "POST", "/form?a=1", "example.test", b"hello=world")
    assert r["client"] == client and r["fields"]["server"] == server
    assert r["ts"] == pytest.approx(1700000000.26, abs=1e-6)
    resp = r["response"]
    assert (resp["status"], base64.b64decode(resp["body"]), resp["bytes"]) == (201, b"done", 4)
    assert resp["elapsed_ms"] == pytest.approx(30.0, abs=0.001)  # 0.050 - 0.020
    assert ["X-Id", "7"] in resp["headers"]


@pytest.mark.parametrize("linktype,addrs,vlan", [
    (LINKTYPE_ETHERNET, V4, False), (LINKTYPE_ETHERNET, V4, True), (LINKTYPE_ETHERNET, V6, True),
    (LINKTYPE_LINUX_SLL, V4, False), (LINKTYPE_LINUX_SLL2, V6, False), (LINKTYPE_RAW, V4, False),
    (LINKTYPE_RAW, V6, False), (LINKTYPE_NULL, V4, False), (LINKTYPE_NULL, V6, False),
], ids=lambda v: str(v) if not isinstance(v, tuple) else ("v6" if len(v[0]) == 16 else "v4"))
def test_every_link_type_and_ip_version(tmp_path, linktype, addrs, vlan):
    path = tmp_path / "x.pcap"
    write_pcap(path, [(t, link(linktype, p, vlan)) for t, p in exchange(addrs)], linktype)
    (r,), res = capture(path, tmp_path / "out.jsonl", "--no-scrub")
    assert res.returncode == 0, res.stderr
    if len(addrs[0]) == 4:
        check_record(r, "192.0.2.1:40001", "192.0.2.2:8080")
    else:
        check_record(r, "[2001:db8::1]:40001", "[2001:db8::2]:8080")
    assert "9 packets read (9 in HTTP connections, skipped 0)" in summary(res)
    # tshark reads the same file the same way.
    rows = tshark(path, "http.request", ["http.request.method", "http.request.uri", "http.host"],
                  ("-d", "tcp.port==8080,http"))
    assert rows == [["POST", "/form?a=1", "example.test"]]


def test_nanosecond_timestamps(tmp_path):
    path = tmp_path / "ns.pcap"
    write_pcap(path, [(t, link(LINKTYPE_ETHERNET, p)) for t, p in exchange()], LINKTYPE_ETHERNET, nano=True)
    (r,), _ = capture(path, tmp_path / "out.jsonl")
    check_record(r, "192.0.2.1:40001", "192.0.2.2:8080")


def test_frames_larger_than_64k_are_read_whole(tmp_path):
    body = bytes(range(256)) * 300  # 76,800 bytes in one loopback-sized frame
    request = b"PUT /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    frames = exchange(request=request, split=len(request) - 1)
    path = tmp_path / "big.pcap"
    write_pcap(path, [(t, link(LINKTYPE_ETHERNET, p)) for t, p in frames], LINKTYPE_ETHERNET)
    (r,), res = capture(path, tmp_path / "out.jsonl")
    assert base64.b64decode(r["body"]) == body and "tcp gaps: 0" in summary(res)


def test_a_connection_continues_into_the_next_file(tmp_path):
    frames = [(t, link(LINKTYPE_ETHERNET, p)) for t, p in exchange()]
    first, second = tmp_path / "a.pcap", tmp_path / "b.pcap"
    write_pcap(first, frames[:4], LINKTYPE_ETHERNET)  # ends in the middle of the request
    write_pcap(second, frames[4:], LINKTYPE_ETHERNET)
    (r,), _ = capture([first, second], tmp_path / "out.jsonl", "--no-scrub")
    check_record(r, "192.0.2.1:40001", "192.0.2.2:8080")
    assert r["origin"]["name"] == str(first) and r["origin"]["pos"] == 4
    later = [(t + 10, p) for t, p in frames[4:]]
    write_pcap(second, later, LINKTYPE_ETHERNET)  # the second file starts 10 s later: still fine
    (r,), _ = capture([first, second], tmp_path / "out2.jsonl", "--idle-timeout", "60")
    assert r["response"]["status"] == 201


def test_reordered_and_duplicated_packets(tmp_path):
    frames = [(t, link(LINKTYPE_ETHERNET, p)) for t, p in exchange()]
    shuffled = [*frames[:3], frames[4], frames[3], frames[3], frames[5], frames[5], *frames[6:]]
    path = tmp_path / "ooo.pcap"
    write_pcap(path, shuffled, LINKTYPE_ETHERNET)
    (r,), res = capture(path, tmp_path / "out.jsonl", "--no-scrub")
    assert base64.b64decode(r["body"]) == b"hello=world" and r["response"]["status"] == 201
    assert "tcp gaps: 0" in summary(res) and r["origin"]["pos"] == 5  # where the request's first bytes were


def test_port_selects_servers_and_counts_the_rest(tmp_path):
    a = exchange(sport=40001, dport=8080)
    b = exchange(sport=40002, dport=9090, t0=1700000001.0)
    path = tmp_path / "two.pcap"
    write_pcap(path, [(t, link(LINKTYPE_ETHERNET, p)) for t, p in sorted(a + b)], LINKTYPE_ETHERNET)
    both, _ = capture(path, tmp_path / "all.jsonl")
    assert sorted(r["fields"]["server"] for r in both) == ["192.0.2.2:8080", "192.0.2.2:9090"]
    (only,), res = capture(path, tmp_path / "one.jsonl", "--port", "9090")
    assert only["fields"]["server"] == "192.0.2.2:9090"
    assert "skipped 9 (9 other_port)" in summary(res)
