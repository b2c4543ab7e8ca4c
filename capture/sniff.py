"""`capture sniff`: live HTTP/1.x capture from a network interface, with every drop counted.

The packet socket (AF_PACKET) gets the kernel BPF filter compiled by scapy (libpcap), a
TPACKET_V3 receive ring of `RING_BLOCKS` x `BLOCK_SIZE` bytes (the kernel's buffer: packets
wait there while we are busy), and kernel timestamps. A reader thread walks the ring and
does nothing per packet but cut out its bytes and timestamp; whole blocks go through a
queue to the main thread, which decodes, reassembles and writes records exactly as
`capture pcap` does (capture/pcap.py).

Drops: the kernel's count comes from PACKET_STATISTICS (packets the ring had no room for);
our own is the packets the reader threw away because the queue to the decoder held more
than `MAX_BACKLOG_BYTES`. Both are in the summary line.

On loopback every packet passes the packet taps twice (leaving and arriving): the socket
asks the kernel to skip outgoing copies (PACKET_IGNORE_OUTGOING), so each is seen once.

Needs root or CAP_NET_RAW. Stops at --duration, --count records, SIGTERM or SIGINT; every
connection is then flushed (requests still waiting for a response are written incomplete).
"""

from __future__ import annotations

import asyncio
import hashlib
import mmap
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from capture.pcap import HttpCapture, PacketCaptureOptions, PacketDeadLetters
from parsers.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, decoder_for
from shadowtap.errors import EXIT_OK, ShadowtapError, UsageError
from shadowtap.stream import Sink

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
SO_RCVBUFFORCE = 33

BLOCK_SIZE = 1 << 20
RING_BLOCKS = 64
"""64 MiB of ring: at 10,000 requests/s of small exchanges that is many seconds of backlog."""
BLOCK_TIMEOUT_MS = 20
"""A block is handed over after this long even when not full (bounds the added latency)."""
MAX_BACKLOG_BYTES = 512 << 20
"""Packet bytes allowed to wait between the reader thread and the decoder."""
FLUSH_SECONDS = 1.0

ARPHRD_LINKTYPES = {1: LINKTYPE_ETHERNET, 772: LINKTYPE_ETHERNET, 65534: LINKTYPE_RAW}
"""Interface types (/sys/class/net/IF/type) and the link type of their frames on a packet socket."""

_BLOCK_HDR = struct.Struct("=III")  # block_status, num_pkts, offset_to_first_pkt (at byte 8)
_PKT_HDR = struct.Struct("=IIIIIIH")  # next_offset, sec, nsec, snaplen, len, status, mac


@dataclass(frozen=True, slots=True)
class SniffOptions:
    """Everything `capture sniff` needs; the CLI fills it in."""

    iface: str
    packets: PacketCaptureOptions
    bpf: str | None = None
    duration: float | None = None
    """Seconds to capture; None: until --count, SIGTERM or SIGINT."""
    count: int | None = None
    """Stop once this many records were written."""


def bpf_expression(opts: SniffOptions) -> str:
    """The kernel filter: --bpf as given, else the server ports, else all of TCP."""
    if opts.bpf:
        return opts.bpf
    if opts.packets.ports:
        return " or ".join(f"tcp port {p}" for p in sorted(opts.packets.ports))
    return "tcp"


def link_type(iface: str) -> int:
    """The pcap link type of frames read from `iface`; UsageError for unknown or unsupported
    interfaces."""
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            arphrd = int(f.read().strip())
    except (OSError, ValueError):
        names = ", ".join(sorted(os.listdir("/sys/class/net"))) if os.path.isdir("/sys/class/net") else "?"
        raise UsageError(f"no network interface named {iface!r} (there are: {names})") from None
    if arphrd not in ARPHRD_LINKTYPES:
        raise UsageError(f"interface {iface!r} has hardware type {arphrd}, which capture sniff cannot decode "
                         "(Ethernet, loopback and raw-IP interfaces can be sniffed)")
    return ARPHRD_LINKTYPES[arphrd]


class PacketRing:
    """An AF_PACKET socket bound to one interface, with a BPF filter and a TPACKET_V3 ring.

    The socket is created for no protocol and bound (with ETH_P_ALL) only once the filter is
    attached, so no unfiltered packet is ever queued.
    """

    def __init__(self, iface: str, bpf: str) -> None:
        self.iface = iface
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise ShadowtapError(
                f"capture sniff needs root or the CAP_NET_RAW capability to open a packet socket on {iface!r}"
            ) from None
        try:
            self._setup(bpf)
        except BaseException:
            self.sock.close()
            raise

    def _setup(self, bpf: str) -> None:
        sock = self.sock
        if self.iface == "lo":
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        req = struct.pack("=7I", BLOCK_SIZE, RING_BLOCKS, 1 << 11, (BLOCK_SIZE >> 11) * RING_BLOCKS,
                          BLOCK_TIMEOUT_MS, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.ring = mmap.mmap(sock.fileno(), BLOCK_SIZE * RING_BLOCKS, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        _attach(sock, bpf, self.iface)
        sock.bind((self.iface, ETH_P_ALL))
        self.stats()  # reset the kernel counters: count from here

    def stats(self) -> tuple[int, int]:
        """(packets, drops) since the last call, from the kernel (reading resets them)."""
        packets, drops, _freeze = struct.unpack("=III", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        return packets, drops

    def close(self) -> None:
        self.ring.close()
        self.sock.close()


def _attach(sock: socket.socket, bpf: str, iface: str) -> None:
    """Compile `bpf` with libpcap (through scapy) for the interface's link type and attach it."""
    try:
        from scapy.arch.linux import attach_filter
        from scapy.error import Scapy_Exception
    except ImportError as e:  # pragma: no cover - scapy is a dependency
        raise ShadowtapError(f"cannot load scapy to compile the BPF filter: {e}") from None
    try:
        attach_filter(sock, bpf, iface)
    except ImportError as e:
        raise ShadowtapError(f"cannot compile the BPF filter: {e} (install libpcap)") from None
    except (Scapy_Exception, OSError) as e:
        raise UsageError(f"cannot use the BPF filter {bpf!r}: {e}") from None


class Reader(threading.Thread):
    """Walks the ring: per packet only its bytes and timestamp; per block one queue entry."""

    def __init__(self, ring: PacketRing) -> None:
        super().__init__(name="shadowtap-sniff-reader", daemon=True)
        self.ring = ring
        self.batches: deque[tuple[int, list[tuple[float, bytes]]]] = deque()
        """(bytes, [(ts, frame), ...]) per ring block."""
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.queued_bytes = 0
        """Packet bytes handed to the decoder so far (written by this thread only)."""
        self.taken_bytes = 0
        """Packet bytes the decoder took so far (written by the decoder only)."""
        self.own_drops = 0
        self.packets = 0

    def run(self) -> None:
        mm = self.ring.ring
        poller = select.poll()
        poller.register(self.ring.sock.fileno(), select.POLLIN | select.POLLERR)
        unpack_block, unpack_pkt = _BLOCK_HDR.unpack_from, _PKT_HDR.unpack_from
        block = 0
        while not self.stop.is_set():
            base = block * BLOCK_SIZE
            status, count, first = unpack_block(mm, base + 8)
            if not status & TP_STATUS_USER:
                poller.poll(50)
                continue
            batch = []
            size = 0
            pos = base + first
            for _ in range(count):
                nxt, sec, nsec, snaplen, _wirelen, _st, mac = unpack_pkt(mm, pos)
                start = pos + mac
                batch.append((sec + nsec * 1e-9, mm[start:start + snaplen]))
                size += snaplen
                pos += nxt
            struct.pack_into("=I", mm, base + 8, TP_STATUS_KERNEL)
            block = (block + 1) % RING_BLOCKS
            self.packets += count
            if self.queued_bytes - self.taken_bytes + size > MAX_BACKLOG_BYTES:
                self.own_drops += count
                continue
            self.queued_bytes += size
            self.batches.append((size, batch))
            self.ready.set()


async def capture_sniff(opts: SniffOptions, sink: Sink | None = None) -> int:
    """Capture until a stop condition; print one summary line on stderr; return the exit code."""
    from shadowtap.streams import open_sink

    linktype = link_type(opts.iface)
    decode = decoder_for(linktype)
    assert decode is not None
    expression = bpf_expression(opts)
    ring = PacketRing(opts.iface, expression)
    dead_letters = PacketDeadLetters(opts.packets.dead_letter)
    run_id = hashlib.blake2b(f"{opts.iface} {time.time_ns()} {os.getpid()}".encode(), digest_size=6).hexdigest()
    capture = HttpCapture("sniff", opts.packets, lambda frame: (opts.iface, frame, run_id), dead_letters)
    out = sink if sink is not None else open_sink(opts.packets.output)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    reader = Reader(ring)
    written = not_written = 0
    kernel_packets = kernel_drops = 0
    print(f"shadowtap capture sniff: listening on {opts.iface} (filter: {expression})", file=sys.stderr, flush=True)
    reader.start()
    started = time.monotonic()
    deadline = started + opts.duration if opts.duration is not None else None
    frame = 1
    last_flush = last_expiry = started
    try:
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if opts.count is not None and written >= opts.count:
                break
            if not reader.batches:
                reader.ready.wait(0.05)
                reader.ready.clear()
            while reader.batches:
                size, batch = reader.batches.popleft()
                reader.taken_bytes += size
                frame = capture.feed(batch, decode, frame)
            written, not_written = await _write(capture, out, written, not_written, opts.count)
            if now - last_expiry >= 1.0:
                capture.tracker.expire(time.time())
                last_expiry = now
            if now - last_flush >= FLUSH_SECONDS:
                await out.flush()
                last_flush = now
    finally:
        reader.stop.set()
        reader.join(2.0)
        while reader.batches:
            frame = capture.feed(reader.batches.popleft()[1], decode, frame)
        kernel_packets, kernel_drops = ring.stats()
        ring.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        capture.finish(time.time())
        written, not_written = await _write(capture, out, written, not_written, opts.count)
        await out.close()
        dead_letters.close()
    summary = capture.summary()
    extra = f"; {not_written} records not written (--count reached)" if not_written else ""
    print(f"shadowtap capture sniff: {summary}{extra}; drops: kernel {kernel_drops} (of {kernel_packets} packets "
          f"the filter passed), own {reader.own_drops}", file=sys.stderr)
    return EXIT_OK


async def _write(capture: HttpCapture, sink: Sink, written: int, not_written: int, count: int | None
                 ) -> tuple[int, int]:
    ready = capture.ready
    if not ready:
        return written, not_written
    capture.ready = []
    for record in ready:
        if count is not None and written >= count:
            not_written += 1
            continue
        await sink.send(record)
        written += 1
    await asyncio.sleep(0)
    return written, not_written
