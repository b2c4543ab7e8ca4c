"""A syslog listener on UDP or TCP: what HAProxy sends with `log 127.0.0.1:5140 local0` (UDP)
or through a ring to `tcp@...` (TCP, octet-counted or newline framing).

Messages become chunks of lines (capture.follow.Chunk) for the shipper; the position of a
message is its byte offset in the stream of all messages received since the listener started,
and its fingerprint is new for every run, so record ids are unique across restarts.

UDP has no flow control: a burst larger than the socket's receive buffer is dropped by the
kernel. The buffer is enlarged (RCVBUF, beyond net.core.rmem_max when running as root) and the
kernel's drop counter is read with every datagram (SO_RXQ_OVFL) and from /proc/net/udp for
the stats line and the summary, so drops are reported, never silent. TCP pushes back on the
sender instead: a connection is read only as fast as records are shipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from capture.follow import Chunk, FileSource
from capture.ship import fingerprint
from parsers.syslog import StreamFramer
from shadowtap.errors import ShadowtapError, UsageError

RCVBUF = 16 << 20
"""Receive buffer asked for on a UDP socket (the kernel may grant less; reported at start)."""
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux; Python does not export it
DATAGRAM = 65536
BATCH = 4096
"""Messages read before they are handed to the shipper."""
QUEUE = 64
"""TCP message batches waiting for the shipper before connections are read no further."""


@dataclass(slots=True)
class ListenStats:
    """What the listener saw: messages, datagrams dropped by the kernel, TCP connections."""

    messages: int = 0
    dropped: int = 0
    connections: int = 0
    rcvbuf: int = 0


def parse_listen(address: str) -> tuple[str, str, int]:
    """`udp://HOST:PORT` or `tcp://HOST:PORT` as (scheme, host, port); UsageError naming it."""
    scheme, sep, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or scheme not in ("udp", "tcp") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"cannot parse --listen {address!r}: expected udp://HOST:PORT or tcp://HOST:PORT")
    return scheme, host, int(port)


class SyslogListener:
    """Receives syslog messages on `address`; `chunks(stop)` yields them until `stop` is set."""

    def __init__(self, address: str, idle: float = 0.2) -> None:
        self.address = address
        self.scheme, self.host, self.port = parse_listen(address)
        self.idle = idle
        self.stats = ListenStats()
        run = f"{address} {time.time_ns()} {os.getpid()}".encode()
        self.source = FileSource(address, fingerprint(run))
        self._offset = 0
        self._line = 0
        self._sock: socket.socket | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = asyncio.Event()
        self._queue: asyncio.Queue[list[bytes] | tuple[str, bytes]] = asyncio.Queue(QUEUE)

    async def start(self) -> None:
        """Bind the socket; ShadowtapError naming the address when that fails."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            if self.scheme == "udp":
                self._sock = sock = socket.socket(family, socket.SOCK_DGRAM)
                self._size_buffer(sock)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
                sock.bind((self.host, self.port))
                sock.setblocking(False)
                asyncio.get_running_loop().add_reader(sock.fileno(), self._ready.set)
            else:
                self._server = await asyncio.start_server(self._connection, self.host, self.port, family=family)
        except OSError as e:
            raise ShadowtapError(f"cannot listen on {self.address}: {e.strerror or e}") from e

    def _size_buffer(self, sock: socket.socket) -> None:
        for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, RCVBUF)
                break
            except OSError:
                continue
        self.stats.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def count_drops(self) -> int:
        """The kernel's drop count for the UDP socket, read from /proc/net/udp: the ancillary
        data only tells it with the next datagram received, which may never come."""
        if self._sock is not None:
            inode = str(os.fstat(self._sock.fileno()).st_ino)
            for table in ("/proc/net/udp", "/proc/net/udp6"):
                try:
                    with open(table) as f:
                        rows = [row.split() for row in f.read().splitlines()[1:]]
                except OSError:
                    continue
                for row in rows:
                    if len(row) > 12 and row[9] == inode:
                        self.stats.dropped = max(self.stats.dropped, int(row[-1]))
        return self.stats.dropped

    async def close(self) -> None:
        if self._sock is not None:
            self.count_drops()
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def chunks(self, stop: asyncio.Event) -> AsyncIterator[Chunk | None]:
        """Chunks of received messages; None when nothing came for `idle` seconds."""
        while not stop.is_set():
            if self._sock is not None:
                messages = self._drain_udp()
                if not messages:
                    self._ready.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._ready.wait(), self.idle)
                    yield None
                    continue
                yield self._chunk(messages)
            else:
                try:
                    item = await asyncio.wait_for(self._queue.get(), self.idle)
                except TimeoutError:
                    yield None
                    continue
                if isinstance(item, tuple):
                    reason, raw = item
                    chunk = Chunk(self.source, self._offset, self._line, [], raw, reason)
                    self._offset += len(raw) + 1
                    self._line += 1
                    yield chunk
                else:
                    yield self._chunk(item)

    def _chunk(self, messages: list[bytes]) -> Chunk:
        chunk = Chunk(self.source, self._offset, self._line, messages)
        self._offset += sum(len(m) for m in messages) + len(messages)
        self._line += len(messages)
        self.stats.messages += len(messages)
        return chunk

    def _drain_udp(self) -> list[bytes]:
        messages: list[bytes] = []
        sock = self._sock
        space = socket.CMSG_SPACE(4)
        for _ in range(BATCH):
            try:
                data, ancillary, _flags, _addr = sock.recvmsg(DATAGRAM, space)
            except BlockingIOError:
                break
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                    self.stats.dropped = max(self.stats.dropped, struct.unpack("=I", value[:4])[0])
            messages.extend(data.rstrip(b"\r\n").split(b"\n"))
        return messages

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        framer = StreamFramer()
        try:
            while framer.broken is None and (data := await reader.read(DATAGRAM)):
                if messages := framer.feed(data):
                    await self._queue.put(messages)
            if framer.broken is not None:
                await self._queue.put((framer.broken.reason, framer.rest()[:1024]))
            elif rest := framer.rest():
                await self._queue.put(("torn_line", rest))
        except ConnectionError:
            pass
        finally:
            writer.close()
