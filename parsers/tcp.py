"""TCP reassembly: captured segments into ordered byte streams, with every gap reported.

`TcpTracker` keys connections by the 4-tuple and decides which side is the client; each
direction is a `HalfStream` that hands its bytes to a receiver in sequence order:

- retransmitted and overlapping bytes are dropped (the first copy is kept) and counted;
- out-of-order segments wait until the hole before them is filled;
- a hole is declared a **gap** (the receiver is told how many bytes are missing, then gets
  the data after it) when the peer acknowledges bytes the capture never saw (they will never
  be retransmitted), when too much data waits behind it, on FIN/RST, on idle expiry, or at
  the end of the capture;
- a capture that starts mid-connection (no SYN) starts the stream at the first segment seen
  and tells the receiver so (`midstream`), so it can look for a message boundary.

Sequence numbers are compared modulo 2**32. Receivers are plain callables, so this module
knows nothing about HTTP: `on_data(payload, ts, frame, seq, ack)`, `on_gap(size, ts)`,
`on_end(ts, reason)`. Data that waited for a hole to fill is delivered with the time the
hole was filled (when a receiving application could first have read it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from parsers.pcap import ACK, FIN, RST, SYN, flow_ports, flow_reverse

MASK = 0xFFFFFFFF
HALF = 1 << 31
MAX_PENDING_BYTES = 16 << 20
"""Out-of-order bytes one direction may hold before the hole in front of them is a gap."""
MAX_PENDING_SEGMENTS = 4096
CLOSED_LINGER = 2.0
"""Seconds (capture time) a closed connection stays known, to absorb its last ACKs."""


@dataclass(slots=True)
class TcpStats:
    """Reassembly counters for a whole capture."""

    connections: int = 0
    retransmitted_segments: int = 0
    retransmitted_bytes: int = 0
    out_of_order: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    truncated_packets: int = 0
    """Packets the capture cut short (snaplen): their missing bytes become a gap."""


DataFn = Callable[[bytes, float, int, int, int], None]
"""on_data(payload, ts, frame, seq, ack): `seq` numbers payload[0]; `ack` is the segment's ACK field."""
GapFn = Callable[[int, float], None]
EndFn = Callable[[float, str], None]


class HalfStream:
    """One direction of a connection, delivering its bytes in order to `on_data`."""

    __slots__ = ("_pending_bytes", "ended", "fin_seq", "midstream", "next_seq", "on_data", "on_end", "on_gap",
                 "pending", "stats")

    def __init__(self, stats: TcpStats, on_data: DataFn, on_gap: GapFn, on_end: EndFn) -> None:
        self.stats = stats
        self.on_data = on_data
        self.on_gap = on_gap
        self.on_end = on_end
        self.next_seq: int | None = None
        """Sequence number of the next byte to deliver (None before the first segment)."""
        self.pending: dict[int, tuple[bytes, float, int, int]] = {}
        """Out-of-order segments by sequence number: (payload, ts, frame, ack)."""
        self._pending_bytes = 0
        self.fin_seq: int | None = None
        self.ended = False
        self.midstream = False
        """True when the stream's start was not captured (no SYN)."""

    def segment(self, seq: int, flags: int, payload: bytes, ts: float, frame: int, ack: int) -> None:
        """Take one captured segment of this direction."""
        if self.ended:
            return
        nxt = self.next_seq
        if flags & SYN:
            seq = (seq + 1) & MASK
            if nxt is None:
                self.next_seq = nxt = seq
        elif nxt is None:
            if not payload and not flags & FIN:
                return  # a bare ACK says nothing about where the data starts
            self.next_seq = nxt = seq
            self.midstream = True
        if payload:
            if seq == nxt and not self.pending:
                self.next_seq = (seq + len(payload)) & MASK
                self.on_data(payload, ts, frame, seq, ack)
            else:
                self._place(seq, payload, ts, frame, ack)
        if flags & FIN:
            self.fin_seq = (seq + len(payload)) & MASK
        if flags & RST:
            self.flush(ts, "reset")
        elif self.fin_seq is not None and self.next_seq == self.fin_seq and not self.pending:
            self._end(ts, "fin")

    def _place(self, seq: int, payload: bytes, ts: float, frame: int, ack: int) -> None:
        """A segment that is not simply the next one: old, overlapping, or ahead of a hole."""
        stats = self.stats
        ahead = (seq - self.next_seq) & MASK
        n = len(payload)
        if ahead >= HALF:  # starts before next_seq
            behind = MASK + 1 - ahead
            if behind >= n:
                stats.retransmitted_segments += 1
                stats.retransmitted_bytes += n
                return
            stats.retransmitted_bytes += behind
            payload = payload[behind:]
            seq = self.next_seq
            if not self.pending:
                self.next_seq = (seq + len(payload)) & MASK
                self.on_data(payload, ts, frame, seq, ack)
                return
        if ahead and ahead < HALF:
            stats.out_of_order += 1
        old = self.pending.get(seq)
        if old is None or len(old[0]) < len(payload):
            self._pending_bytes += len(payload) - (len(old[0]) if old else 0)
            self.pending[seq] = (payload, ts, frame, ack)
        elif old is not None:
            stats.retransmitted_segments += 1
            stats.retransmitted_bytes += n
        self._drain(ts)
        if self.pending and (self._pending_bytes > MAX_PENDING_BYTES or len(self.pending) > MAX_PENDING_SEGMENTS):
            self._skip_to(self._lowest_pending(), ts)

    def _lowest_pending(self) -> int:
        nxt = self.next_seq
        return min(self.pending, key=lambda s: (s - nxt) & MASK)

    def _drain(self, ts: float) -> None:
        """Deliver waiting segments that have become contiguous with the stream."""
        pending = self.pending
        while pending:
            nxt = self.next_seq
            item = pending.pop(nxt, None)
            if item is None:
                for s in list(pending):
                    behind = (nxt - s) & MASK
                    if behind < HALF:  # s <= next_seq: overlaps or is old
                        item = pending.pop(s)
                        self._pending_bytes -= len(item[0])
                        if behind < len(item[0]):
                            self.stats.retransmitted_bytes += behind
                            item = (item[0][behind:], *item[1:])
                            break
                        self.stats.retransmitted_segments += 1
                        self.stats.retransmitted_bytes += len(item[0])
                        item = None
                if item is None:
                    return
            else:
                self._pending_bytes -= len(item[0])
            payload, seg_ts, frame, ack = item
            self.next_seq = (nxt + len(payload)) & MASK
            self.on_data(payload, max(ts, seg_ts), frame, nxt, ack)

    def _skip_to(self, seq: int, ts: float) -> None:
        """Declare the bytes up to `seq` lost, then deliver what waits after them."""
        size = (seq - self.next_seq) & MASK
        if size == 0 or size >= HALF:
            return
        self.stats.gaps += 1
        self.stats.gap_bytes += size
        self.next_seq = seq
        self.on_gap(size, ts)
        self._drain(ts)

    def acked(self, ack: int, ts: float) -> None:
        """The peer acknowledged everything before `ack`: bytes it has that we lack are a gap."""
        nxt = self.next_seq
        if nxt is None or self.ended:
            return
        limit = ack if self.fin_seq is None or ((ack - self.fin_seq) & MASK) >= HALF else self.fin_seq
        while True:
            nxt = self.next_seq
            ahead = (limit - nxt) & MASK
            if ahead == 0 or ahead >= HALF:
                break
            target = limit
            if self.pending:
                low = self._lowest_pending()
                if (low - nxt) & MASK < ahead:
                    target = low
            self._skip_to(target, ts)
        if self.fin_seq is not None and self.next_seq == self.fin_seq and not self.pending:
            self._end(ts, "fin")

    def missing(self, seq: int, size: int, ts: float) -> None:
        """`size` bytes right after a truncated segment ending at `seq` were not captured."""
        self.stats.truncated_packets += 1
        if seq == self.next_seq and not self.pending:
            self._skip_to((seq + size) & MASK, ts)

    def flush(self, ts: float, reason: str) -> None:
        """Stop waiting: deliver everything held, with gaps for the holes, and end the stream."""
        if self.ended:
            return
        while self.pending:
            self._skip_to(self._lowest_pending(), ts)
            self._drain(ts)
        self._end(ts, reason)

    def _end(self, ts: float, reason: str) -> None:
        self.ended = True
        self.on_end(ts, reason)


class Connection:
    """Both directions of one TCP connection, and whatever the application layer keeps on it."""

    __slots__ = ("app", "client", "client_key", "closed_at", "last_ts", "midstream", "packets", "serial", "server")

    def __init__(self, client_key: bytes, ts: float, midstream: bool, serial: int = 0) -> None:
        self.client_key = client_key
        self.serial = serial
        """Rank of the connection's first packet among all connections' (closing order)."""
        self.last_ts = ts
        self.midstream = midstream
        """True when the handshake was not captured: both streams may start inside a message."""
        self.packets = 0
        """Packets of this connection taken so far."""
        self.closed_at: float | None = None
        self.app: object = None
        self.client: HalfStream
        self.server: HalfStream


Receivers = tuple[DataFn, GapFn, EndFn]
Opener = Callable[[Connection], "tuple[object, Receivers, Receivers]"]
"""open(conn) -> (app, client receivers, server receivers) for a new connection."""
RoleGuess = Callable[[bytes], "bool | None"]
"""guess(payload) -> True when a client sent it, False when a server did, None when unsure."""
Closer = Callable[[Connection], None]


class TcpTracker:
    """Connections by 4-tuple: roles, reassembly, closing and idle expiry.

    Roles come from the handshake (the SYN's sender is the client), else from `ports` (the
    server's ports), else from the first payload (`guess`). Packets of a connection whose
    roles cannot be told yet (bare ACKs, data from the middle of a message) are not tracked:
    `packet` returns the reason as a string for the caller to count. `closer(conn)` is called
    once for every connection, after both directions were flushed.

    A connection may also be followed elsewhere from its SYN (the capture fast path) and
    handed over later with `adopt`; `before_expire(now)` lets that follower hand over its idle
    connections before they are expired here.
    """

    def __init__(self, opener: Opener, guess: RoleGuess, closer: Closer, ports: frozenset[int] | None,
                 idle_timeout: float, stats: TcpStats | None = None) -> None:
        self.opener = opener
        self.guess = guess
        self.closer = closer
        self.ports = ports
        self.idle_timeout = idle_timeout
        self.stats = stats or TcpStats()
        self.flows: dict[bytes, tuple[Connection, HalfStream, HalfStream]] = {}
        self.frame = 0
        """Frame number of the packet being processed (for reports about gaps it revealed)."""
        self.next_expiry = 0.0
        """Capture time at or after which `expire` is due (the caller checks, see `packet`)."""
        self.before_expire: Callable[[float], None] | None = None

    def packet(self, key: bytes, seq: int, ack: int, flags: int, payload: bytes, ts: float, frame: int,
               missing: int = 0) -> str | None:
        """Feed one decoded TCP segment; None when it was taken, else why it was not."""
        self.frame = frame
        entry = self.flows.get(key)
        if entry is None or (flags & SYN and not flags & ACK and self._reused(entry, seq)):
            if entry is not None:
                self.close(entry[0], ts, "port_reused")
                self._forget(entry[0])
            opened = self._open(key, flags, payload, ts)
            if isinstance(opened, str):
                return opened
            entry = opened
        conn, half, peer = entry
        conn.packets += 1
        conn.last_ts = ts
        if flags & ACK and peer.next_seq is not None and ack != peer.next_seq:
            peer.acked(ack, ts)
        half.segment(seq, flags, payload, ts, frame, ack)
        if missing:
            half.missing((seq + (1 if flags & SYN else 0) + len(payload)) & MASK, missing, ts)
        if conn.closed_at is None and (flags & RST or (half.ended and peer.ended)):
            self.close(conn, ts, "reset" if flags & RST else "fin")
        if ts >= self.next_expiry:
            self.expire(ts)
        return None

    @staticmethod
    def _reused(entry: tuple[Connection, HalfStream, HalfStream], seq: int) -> bool:
        """A new SYN on a known 4-tuple: a new connection unless it repeats the first SYN."""
        half = entry[1]
        return half.next_seq is None or half.ended or ((seq + 1) & MASK) != half.next_seq

    def _open(self, key: bytes, flags: int, payload: bytes, ts: float):
        from_client = None
        if self.ports is not None:
            sport, dport = flow_ports(key)
            if dport in self.ports:
                from_client = True
            elif sport in self.ports:
                from_client = False
            else:
                return "other_port"
        if flags & SYN:
            from_client = not flags & ACK
        elif from_client is None and payload:
            from_client = self.guess(payload)
        if from_client is None:
            return "unknown_connection"
        client_key = key if from_client else flow_reverse(key)
        if self.ports is not None and flow_ports(client_key)[1] not in self.ports:
            return "other_port"
        self._register(Connection(client_key, ts, not flags & SYN, self.new_serial()))
        return self.flows[key]

    def new_serial(self) -> int:
        """Count a new connection; its serial number."""
        self.stats.connections += 1
        return self.stats.connections

    def _register(self, conn: Connection) -> None:
        app, (c_data, c_gap, c_end), (s_data, s_gap, s_end) = self.opener(conn)
        conn.app = app
        conn.client = client = HalfStream(self.stats, c_data, c_gap, c_end)
        conn.server = server = HalfStream(self.stats, s_data, s_gap, s_end)
        self.flows[conn.client_key] = (conn, client, server)
        self.flows[flow_reverse(conn.client_key)] = (conn, server, client)

    def adopt(self, client_key: bytes, serial: int, packets: int, last_ts: float, client_next: int,
              server_next: int | None) -> Connection:
        """Take over a connection followed elsewhere from its SYN (see `new_serial`), with
        nothing held out of order: each direction goes on at its next sequence number (None:
        the server's SYN was not seen). The caller then hands the application layer what it
        kept of the unfinished messages."""
        conn = Connection(client_key, last_ts, False, serial)
        conn.packets = packets
        self._register(conn)
        conn.client.next_seq = client_next
        conn.server.next_seq = server_next
        return conn

    def close(self, conn: Connection, ts: float, reason: str) -> None:
        """Flush both directions (client first: a request cut short is known before its missing
        response). The connection stays known for `CLOSED_LINGER` seconds so that its last
        ACKs are not taken for a new connection."""
        conn.client.flush(ts, reason)
        conn.server.flush(ts, reason)
        if conn.closed_at is None:
            conn.closed_at = ts

    def _forget(self, conn: Connection) -> None:
        key = conn.client_key
        for k in (key, flow_reverse(key)):
            entry = self.flows.get(k)
            if entry is not None and entry[0] is conn:
                del self.flows[k]
        self.closer(conn)

    def expire(self, now: float) -> None:
        """Close connections idle for longer than the idle timeout (capture time) and forget
        closed ones after their linger time."""
        self.next_expiry = now + min(self.idle_timeout, 1.0)
        if self.before_expire is not None:
            self.before_expire(now)
        idle_limit = now - self.idle_timeout
        linger_limit = now - CLOSED_LINGER
        for conn in self._connections():
            if conn.closed_at is not None:
                if conn.closed_at < linger_limit:
                    self._forget(conn)
            elif conn.last_ts < idle_limit:
                self.close(conn, now, "idle_timeout")
                self._forget(conn)

    def close_all(self, ts: float, reason: str = "capture_end") -> None:
        """End of the capture: flush, close and forget every connection."""
        for conn in self._connections():
            self.close(conn, ts, reason)
            self._forget(conn)

    def _connections(self) -> list[Connection]:
        """Every known connection once, in the order their first packets came."""
        unique = {id(c): c for c, _, _ in self.flows.values()}
        return sorted(unique.values(), key=lambda c: c.serial)
