"""parsers.tcp: ordering, retransmissions and overlaps, sequence wrap-around, gaps declared
from ACKs, FIN/RST, missing SYN, roles, port reuse and idle expiry; parsers.pcap decoding."""

from __future__ import annotations

import random
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
    RST,
    SYN,
    decoder_for,
    flow_endpoints,
    flow_reverse,
)
from parsers.tcp import MASK, HalfStream, TcpStats, TcpTracker


class Sink:
    def __init__(self) -> None:
        self.events = []

    def data(self, payload, ts, frame, seq, ack):
        self.events.append(("data", payload, seq))

    def gap(self, size, ts):
        self.events.append(("gap", size))

    def end(self, ts, reason):
        self.events.append(("end", reason))

    def stream(self) -> bytes:
        return b"".join(e[1] if e[0] == "data" else b"?" * e[1] for e in self.events if e[0] in ("data", "gap"))


def half(stats=None):
    sink = Sink()
    return HalfStream(stats or TcpStats(), sink.data, sink.gap, sink.end), sink


def test_in_order_out_of_order_and_retransmitted_segments_give_the_stream_once():
    stats = TcpStats()
    h, sink = half(stats)
    h.segment(99, SYN, b"", 0, 1, 0)
    h.segment(100, ACK, b"hello ", 0, 2, 0)
    h.segment(112, ACK, b"world", 0, 3, 0)  # ahead of a hole
    h.segment(100, ACK, b"hello ", 0, 4, 0)  # retransmission
    h.segment(104, ACK, b"o brave ", 0, 5, 0)  # overlaps both sides of the hole
    h.segment(112, ACK | FIN, b"world", 0, 6, 0)
    assert sink.stream() == b"hello brave world"
    assert sink.events[-1] == ("end", "fin")
    assert stats.out_of_order == 1 and stats.retransmitted_segments >= 1 and stats.gaps == 0


def test_sequence_numbers_wrap_around():
    h, sink = half()
    start = MASK - 3
    h.segment(start - 1, SYN, b"", 0, 1, 0)
    h.segment(start + 4 & MASK, ACK, b"EFGH", 0, 3, 0)  # after the wrap, out of order
    h.segment(start, ACK, b"ABCD", 0, 2, 0)
    assert sink.stream() == b"ABCDEFGH"


@pytest.mark.parametrize("seed", range(20))
def test_random_order_duplicates_and_resegmentation(seed):
    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(3000))
    segments = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 200)
        segments.append((pos, data[pos:pos + n]))
        pos += n
    # Retransmissions with other boundaries, duplicates, then a shuffle within a window.
    extra = []
    for _ in range(10):
        a = rng.randrange(len(data))
        extra.append((a, data[a:a + rng.randint(1, 300)]))
    all_segments = segments + extra + rng.sample(segments, 5)
    rng.shuffle(all_segments)
    h, sink = half()
    base = rng.randrange(1 << 32)
    h.segment(base - 1 & MASK, SYN, b"", 0, 0, 0)
    for offset, chunk in all_segments:
        h.segment(base + offset & MASK, ACK, chunk, 0, 0, 0)
    assert sink.stream() == data


def test_bytes_the_peer_acknowledged_but_the_capture_missed_are_a_gap_at_once():
    stats = TcpStats()
    h, sink = half(stats)
    h.segment(0, SYN, b"", 0, 1, 0)
    h.segment(1, ACK, b"aaaa", 0, 2, 0)
    h.segment(9, ACK, b"cccc", 0, 3, 0)  # 5..9 missing, waiting
    assert sink.stream() == b"aaaa"
    h.acked(13, 0)  # the receiver has everything up to 13
    assert sink.events[1:] == [("gap", 4), ("data", b"cccc", 9)]
    assert (stats.gaps, stats.gap_bytes) == (1, 4)
    h.acked(20, 0)  # a lost tail: also a gap
    assert sink.events[-1] == ("gap", 7)


def test_flush_delivers_waiting_segments_with_gaps_and_ends():
    h, sink = half()
    h.segment(0, SYN, b"", 0, 1, 0)
    h.segment(11, ACK, b"later", 0, 2, 0)
    h.segment(21, ACK, b"last", 0, 3, 0)
    h.flush(0, "capture_end")
    assert sink.events == [("gap", 10), ("data", b"later", 11), ("gap", 5), ("data", b"last", 21),
                           ("end", "capture_end")]


def test_reset_ends_the_stream():
    h, sink = half()
    h.segment(0, SYN, b"", 0, 1, 0)
    h.segment(1, ACK | RST, b"", 0, 2, 0)
    assert sink.events == [("end", "reset")] and h.ended


def test_missing_syn_starts_at_the_first_data_and_says_midstream():
    h, sink = half()
    h.segment(5000, ACK, b"", 0, 1, 0)  # a bare ACK tells nothing
    assert h.next_seq is None
    h.segment(5000, ACK | PSH, b"mid", 0, 2, 0)
    assert h.midstream and sink.stream() == b"mid"


# -- the tracker ---------------------------------------------------------------------------------

C, S = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
CLIENT_KEY = C + S + struct.pack("!HH", 40000, 80)


class App:
    def __init__(self, conn):
        self.conn = conn
        self.client, self.server = Sink(), Sink()


def tracker(ports=None, idle=60.0):
    opened, closed = [], []

    def opener(conn):
        app = App(conn)
        opened.append(app)
        return app, (app.client.data, app.client.gap, app.client.end), (app.server.data, app.server.gap,
                                                                         app.server.end)

    def guess(payload):
        return True if payload.startswith(b"GET") else False if payload.startswith(b"HTTP") else None

    return TcpTracker(opener, guess, closed.append, ports, idle), opened, closed


def test_roles_from_the_handshake_then_both_directions_are_delivered():
    t, opened, closed = tracker()
    server_key = flow_reverse(CLIENT_KEY)
    assert t.packet(server_key, 500, 101, SYN | ACK, b"", 1.0, 2) is None  # SYN-ACK first: server sent it
    t.packet(CLIENT_KEY, 101, 501, ACK, b"GET / HTTP/1.1\r\n\r\n", 1.1, 3)
    t.packet(server_key, 501, 119, ACK, b"HTTP/1.1 200 OK\r\n\r\n", 1.2, 4)
    (app,) = opened
    assert app.conn.client_key == CLIENT_KEY
    assert app.client.stream().startswith(b"GET") and app.server.stream().startswith(b"HTTP")
    t.packet(CLIENT_KEY, 119, 520, ACK | FIN, b"", 1.3, 5)
    t.packet(server_key, 520, 120, ACK | FIN, b"", 1.4, 6)
    assert app.conn.closed_at == 1.4 and closed == []  # kept a moment for the last ACK
    assert t.packet(CLIENT_KEY, 120, 521, ACK, b"", 1.5, 7) is None
    t.expire(10.0)
    assert closed == [app.conn] and app.conn.packets == 6 and t.flows == {}


def test_roles_from_ports_and_from_content_without_handshake():
    t, opened, _ = tracker(ports=frozenset({80}))
    t.packet(flow_reverse(CLIENT_KEY), 1, 1, ACK, b"tail of something", 0, 1)  # sent by port 80: the server
    assert opened[0].conn.client_key == CLIENT_KEY and opened[0].conn.midstream
    t2, opened2, _ = tracker()
    assert t2.packet(CLIENT_KEY, 1, 1, ACK, b"no idea", 0, 1) == "unknown_connection"
    t2.packet(flow_reverse(CLIENT_KEY), 1, 1, ACK, b"HTTP/1.1 200 OK\r\n", 0, 2)
    assert opened2[0].conn.client_key == CLIENT_KEY


def test_other_ports_are_skipped_with_a_reason():
    t, opened, _ = tracker(ports=frozenset({8080}))
    assert t.packet(CLIENT_KEY, 1, 0, SYN, b"", 0, 1) == "other_port"
    assert opened == []


def test_idle_connections_are_flushed_and_closed():
    t, opened, closed = tracker(idle=5.0)
    t.packet(CLIENT_KEY, 1, 0, SYN, b"", 0.0, 1)
    t.packet(CLIENT_KEY, 2, 0, ACK, b"GET /", 0.5, 2)
    t.expire(100.0)
    (app,) = opened
    assert app.client.events[-1] == ("end", "idle_timeout") and closed == [app.conn]


def test_a_new_syn_on_a_known_four_tuple_is_a_new_connection():
    t, opened, closed = tracker()
    t.packet(CLIENT_KEY, 1000, 0, SYN, b"", 0.0, 1)
    t.packet(CLIENT_KEY, 1001, 0, ACK, b"GET /a", 0.1, 2)
    t.packet(CLIENT_KEY, 90000, 0, SYN, b"", 0.2, 3)
    assert len(opened) == 2 and closed == [opened[0].conn]
    assert opened[0].client.events[-1] == ("end", "port_reused")


def test_close_all_flushes_everything():
    t, opened, closed = tracker()
    t.packet(CLIENT_KEY, 1, 0, SYN, b"", 0.0, 1)
    t.packet(CLIENT_KEY, 10, 0, ACK, b"late", 0.1, 2)
    t.close_all(1.0)
    assert opened[0].client.events == [("gap", 8), ("data", b"late", 10), ("end", "capture_end")]
    assert closed == [opened[0].conn] and t.flows == {}


def test_an_adopted_connection_goes_on_at_its_sequence_numbers_and_closes_in_first_seen_order():
    # A connection followed elsewhere from its SYN (the capture fast path) is handed over later:
    # it keeps its serial number, so closing at the end of the capture goes by first packets.
    t, opened, closed = tracker()
    other = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0x9C, 0x41, 0, 80])
    early = t.new_serial()
    t.packet(other, 1, 0, SYN, b"", 0.0, 2)
    expired = []
    t.before_expire = expired.append
    conn = t.adopt(CLIENT_KEY, early, 5, 0.5, 1001, 501)
    assert conn.packets == 5 and opened[-1].conn is conn
    t.packet(CLIENT_KEY, 1001, 501, ACK, b"GET / HTTP/1.1\r\n\r\n", 1.0, 7)
    t.packet(flow_reverse(CLIENT_KEY), 501, 1019, ACK, b"HTTP/1.1 200 OK\r\n\r\n", 1.1, 8)
    assert opened[-1].client.stream().startswith(b"GET") and opened[-1].server.stream().startswith(b"HTTP")
    assert conn.packets == 7 and opened[-1].client.events[0] == ("data", b"GET / HTTP/1.1\r\n\r\n", 1001)
    t.close_all(2.0)
    assert closed == [conn, opened[0].conn] and expired == [1.0]  # expiry runs once per second


# -- link and IP decoding ------------------------------------------------------------------------

def ipv4_tcp(payload: bytes, flags: int = ACK | PSH, seq: int = 7, ack: int = 9) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, seq, ack, 5 << 4, flags, 65535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 6, 0, C, S)
    return ip + tcp + payload


def ipv6_tcp(payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 7, 9, 5 << 4, ACK, 65535, 0, 0)
    src, dst = b"\x20\x01" + b"\x00" * 13 + b"\x01", b"\x20\x01" + b"\x00" * 13 + b"\x02"
    # A hop-by-hop options header (8 bytes) before TCP.
    hop = bytes([6, 0]) + b"\x00" * 6
    return struct.pack("!IHBB16s16s", 6 << 28, len(hop) + 20 + len(payload), 0, 64, src, dst) + hop + tcp + payload


ETHER = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb"


@pytest.mark.parametrize("linktype,frame", [
    (LINKTYPE_ETHERNET, ETHER + b"\x08\x00" + ipv4_tcp(b"GET /")),
    (LINKTYPE_ETHERNET, ETHER + b"\x81\x00\x00\x05\x88\xa8\x00\x06\x08\x00" + ipv4_tcp(b"GET /")),  # two VLAN tags
    (LINKTYPE_ETHERNET, ETHER + b"\x08\x00" + ipv4_tcp(b"GET /") + b"\x00" * 6),  # Ethernet padding
    (LINKTYPE_LINUX_SLL, b"\x00\x00\x03\x04\x00\x06" + b"\x00" * 8 + b"\x08\x00" + ipv4_tcp(b"GET /")),
    (LINKTYPE_LINUX_SLL2, b"\x08\x00\x00\x00" + b"\x00" * 16 + ipv4_tcp(b"GET /")),
    (LINKTYPE_RAW, ipv4_tcp(b"GET /")),
    (LINKTYPE_NULL, struct.pack("<I", 2) + ipv4_tcp(b"GET /")),
    (LINKTYPE_NULL, struct.pack(">I", 2) + ipv4_tcp(b"GET /")),
])
def test_ipv4_tcp_through_every_link_type(linktype, frame):
    key, seq, ack, flags, payload, missing = decoder_for(linktype)(frame)
    assert (seq, ack, flags, payload, missing) == (7, 9, ACK | PSH, b"GET /", 0)
    assert flow_endpoints(key) == ("10.0.0.1", 40000, "10.0.0.2", 80)


def test_ipv6_with_an_extension_header():
    key, seq, _, _, payload, _ = decoder_for(LINKTYPE_ETHERNET)(ETHER + b"\x86\xdd" + ipv6_tcp(b"HTTP/1.1"))
    assert seq == 7 and payload == b"HTTP/1.1" and flow_endpoints(key) == ("2001::1", 40000, "2001::2", 80)
    assert flow_endpoints(flow_reverse(key)) == ("2001::2", 80, "2001::1", 40000)


def test_snaplen_cut_packets_report_the_missing_bytes():
    frame = ETHER + b"\x08\x00" + ipv4_tcp(b"x" * 100)
    *_, payload, missing = decoder_for(LINKTYPE_ETHERNET)(frame[:-30])
    assert (len(payload), missing) == (70, 30)


@pytest.mark.parametrize("frame,reason", [
    (ETHER + b"\x08\x06" + b"\x00" * 28, "not_ip"),
    (ETHER + b"\x08\x00" + ipv4_tcp(b"")[:9] + b"\x11" + ipv4_tcp(b"")[10:], "not_tcp"),
    (ETHER + b"\x08\x00" + ipv4_tcp(b"")[:6] + b"\x20\x00" + ipv4_tcp(b"")[8:], "ip_fragment"),
    (ETHER + b"\x08\x00" + b"\x45\x00", "malformed"),
    (b"\x01\x02", "malformed"),
])
def test_what_is_not_tcp_is_a_reason(frame, reason):
    assert decoder_for(LINKTYPE_ETHERNET)(frame) == reason


def test_random_frames_never_raise():
    rng = random.Random(7)
    for linktype in (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_NULL):
        decode = decoder_for(linktype)
        for _ in range(3000):
            frame = bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
            result = decode(frame)
            assert isinstance(result, str | tuple)
