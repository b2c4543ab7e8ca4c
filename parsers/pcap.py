"""Link, IP and TCP headers of captured frames, decoded with `struct` (no scapy dissection).

`decoder_for(linktype)` returns a function from one captured frame to either a `Segment` tuple
or a short skip reason (`not_ip`, `not_tcp`, `ip_fragment`, `malformed`, ...). It is the hot
path of pcap reading and live sniffing, so the common cases (Ethernet or cooked or raw IP,
IPv4 without options, IPv6 without extension headers) take one `unpack_from` and a few slices.

A segment is `(key, seq, ack, flags, payload, missing)`:

- `key`: the directional flow key, source address + destination address + source port +
  destination port as raw bytes (12 bytes for IPv4, 36 for IPv6); `flow_reverse(key)` is the
  other direction and `flow_endpoints(key)` gives printable addresses.
- `missing`: payload bytes the IP header announces but the capture did not keep (snaplen).

Checksums are not verified: captures taken on the sending host see offloaded, unfinished
checksums on every outgoing packet.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
DLT_RAW_ALIASES = (12, 14)
"""DLT_RAW as some systems number it in pcap headers (OpenBSD 14, others 12)."""

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "BSD loopback", LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback", LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6", LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
    **dict.fromkeys(DLT_RAW_ALIASES, "raw IP"),
}

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100})
IPV6_EXTENSIONS = frozenset({0, 43, 60})
"""Hop-by-hop, routing and destination options: skipped to reach TCP (fragments are not)."""

Segment = tuple[bytes, int, int, int, bytes, int]
Decoder = Callable[[bytes], "Segment | str"]

_V4_TCP = struct.Struct("!BxH2xHxB14xIIBB")
"""IPv4 header (20 bytes, no options) directly followed by the fixed TCP header."""
_TCP = struct.Struct("!HHIIBB")
_V6 = struct.Struct("!4xHBx")
_U16 = struct.Struct("!H")


def _tcp(frame: bytes, t: int, end: int, key: bytes) -> Segment | str:
    """The TCP header at offset `t` of an IP packet that ends at `end` (maybe past the frame)."""
    if len(frame) < t + 14:
        return "malformed"
    _sport, _dport, seq, ack, off, flags = _TCP.unpack_from(frame, t)
    start = t + (off >> 4) * 4
    if start < t + 20 or start > end:
        return "malformed"
    have = len(frame)
    if end <= have:
        return key, seq, ack, flags, frame[start:end], 0
    return key, seq, ack, flags, frame[start:], end - max(start, have)


def _ipv4(frame: bytes, o: int) -> Segment | str:
    if len(frame) < o + 20:
        return "malformed"
    vihl = frame[o]
    ihl = (vihl & 15) * 4
    if vihl >> 4 != 4 or ihl < 20:
        return "malformed"
    if frame[o + 9] != 6:
        return "not_tcp"
    total, frag = struct.unpack_from("!2xH2xH", frame, o)
    if frag & 0x3FFF:
        return "ip_fragment"
    # A total length of 0 is what TSO-sized packets captured on the sender look like.
    end = o + total if total else len(frame)
    if total and total < ihl:
        return "malformed"
    t = o + ihl
    return _tcp(frame, t, end, frame[o + 12:o + 20] + frame[t:t + 4])


def _ipv6(frame: bytes, o: int) -> Segment | str:
    if len(frame) < o + 40:
        return "malformed"
    if frame[o] >> 4 != 6:
        return "malformed"
    plen, nxt = _V6.unpack_from(frame, o)
    end = o + 40 + plen if plen else len(frame)  # 0: jumbogram or TSO, the frame says
    t = o + 40
    while nxt in IPV6_EXTENSIONS:
        if len(frame) < t + 8:
            return "malformed"
        nxt = frame[t]
        t += (frame[t + 1] + 1) * 8
    if nxt == 44:
        return "ip_fragment"
    if nxt != 6:
        return "not_tcp"
    return _tcp(frame, t, end, frame[o + 8:o + 40] + frame[t:t + 4])


def _ip(frame: bytes, o: int) -> Segment | str:
    """An IP packet of either version at offset `o` (raw-IP link types)."""
    if len(frame) <= o:
        return "malformed"
    version = frame[o] >> 4
    if version == 4:
        return _ipv4(frame, o)
    if version == 6:
        return _ipv6(frame, o)
    return "not_ip"


def _by_ethertype(frame: bytes, ethertype: int, o: int) -> Segment | str:
    while ethertype in VLAN_TAGS:
        if len(frame) < o + 4:
            return "malformed"
        ethertype = _U16.unpack_from(frame, o + 2)[0]
        o += 4
    if ethertype == ETH_IPV4:
        return _ipv4(frame, o)
    if ethertype == ETH_IPV6:
        return _ipv6(frame, o)
    return "not_ip"


def ipv4_segment(buf: bytes, o: int, end: int) -> Segment | None:
    """The common case of an IPv4 packet at buf[o:end], in one unpack: a 20-byte header, TCP,
    not a fragment, whole. None for any other packet (the general decoders read it)."""
    if end >= o + 40 and buf[o] == 0x45:
        _vihl, total, frag, proto, seq, ack, off, flags = _V4_TCP.unpack_from(buf, o)
        if proto == 6 and not frag & 0x3FFF and total >= 40:
            start = o + 20 + (off >> 4) * 4
            stop = o + total
            if o + 40 <= start <= stop <= end:
                return buf[o + 12:o + 24], seq, ack, flags, buf[start:stop], 0
    return None


def _v4_fast(frame: bytes, o: int) -> Segment | str:
    """IPv4 at `o`: the one-unpack path for a 20-byte header, else the general one."""
    return ipv4_segment(frame, o, len(frame)) or _ipv4(frame, o)


def decode_ethernet(frame: bytes) -> Segment | str:
    """Ethernet II, with any number of VLAN tags."""
    if len(frame) < 14:
        return "malformed"
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype == ETH_IPV4:
        return _v4_fast(frame, 14)
    return _by_ethertype(frame, ethertype, 14)


def decode_sll(frame: bytes) -> Segment | str:
    """Linux cooked capture v1 (`tcpdump -i any` before libpcap 1.10)."""
    if len(frame) < 16:
        return "malformed"
    ethertype = (frame[14] << 8) | frame[15]
    if ethertype == ETH_IPV4:
        return _v4_fast(frame, 16)
    return _by_ethertype(frame, ethertype, 16)


def decode_sll2(frame: bytes) -> Segment | str:
    """Linux cooked capture v2 (`tcpdump -i any` with libpcap 1.10+)."""
    if len(frame) < 20:
        return "malformed"
    ethertype = (frame[0] << 8) | frame[1]
    if ethertype == ETH_IPV4:
        return _v4_fast(frame, 20)
    return _by_ethertype(frame, ethertype, 20)


def decode_raw(frame: bytes) -> Segment | str:
    """Raw IP, version from the first nibble."""
    if frame[:1] == b"\x45":
        return _v4_fast(frame, 0)
    return _ip(frame, 0)


def _decode_null(frame: bytes, byteorder: str) -> Segment | str:
    if len(frame) < 4:
        return "malformed"
    family = int.from_bytes(frame[:4], byteorder)  # type: ignore[arg-type]
    if family == 2:
        return _v4_fast(frame, 4)
    if family in (10, 24, 28, 30):  # AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS
        return _ipv6(frame, 4)
    return "not_ip"


def decode_null(frame: bytes) -> Segment | str:
    """BSD loopback: a 4-byte address family in the capturing host's byte order.

    Both orders are tried: the family values are small, so the wrong order gives a huge number.
    """
    if len(frame) >= 4 and frame[0] == 0 and frame[1] == 0:
        return _decode_null(frame, "big")
    return _decode_null(frame, "little")


def decode_loop(frame: bytes) -> Segment | str:
    """OpenBSD loopback: a 4-byte address family in network byte order."""
    return _decode_null(frame, "big")


_DECODERS: dict[int, Decoder] = {
    LINKTYPE_ETHERNET: decode_ethernet,
    LINKTYPE_LINUX_SLL: decode_sll,
    LINKTYPE_LINUX_SLL2: decode_sll2,
    LINKTYPE_RAW: decode_raw,
    LINKTYPE_IPV4: decode_raw,
    LINKTYPE_IPV6: decode_raw,
    LINKTYPE_NULL: decode_null,
    LINKTYPE_LOOP: decode_loop,
    **dict.fromkeys(DLT_RAW_ALIASES, decode_raw),
}


IPV4_LINKS = {LINKTYPE_ETHERNET: (12, 14), LINKTYPE_LINUX_SLL: (14, 16), LINKTYPE_LINUX_SLL2: (0, 20)}
"""Link types with an ethertype: (its offset, the IP header's offset) for `ipv4_segment` when
the ethertype is 0x0800 (the readers of whole files go straight there, without a frame copy)."""


def decoder_for(linktype: int) -> Decoder | None:
    """The frame decoder for a pcap link type, or None when the link type is not supported."""
    return _DECODERS.get(linktype)


def flow_reverse(key: bytes) -> bytes:
    """The key of the opposite direction of the same connection."""
    n = (len(key) - 4) // 2
    return key[n:2 * n] + key[:n] + key[-2:] + key[-4:-2]


def flow_endpoints(key: bytes) -> tuple[str, int, str, int]:
    """(source address, source port, destination address, destination port) of a flow key."""
    n = (len(key) - 4) // 2
    family = socket.AF_INET if n == 4 else socket.AF_INET6
    sport, dport = struct.unpack_from("!HH", key, 2 * n)
    return socket.inet_ntop(family, key[:n]), sport, socket.inet_ntop(family, key[n:2 * n]), dport


def endpoint_text(address: str, port: int) -> str:
    """`ip:port`, with IPv6 addresses in brackets (`[::1]:8080`)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def flow_ports(key: bytes) -> tuple[int, int]:
    """(source port, destination port) of a flow key."""
    return struct.unpack_from("!HH", key, len(key) - 4)
