"""Test helpers: a raw HTTP/1.1 server that records the exact bytes of every request head."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass(frozen=True)
class SeenRequest:
    """One request as it arrived on the wire."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> bytes | None:
        values = [v for k, v in self.headers if k.lower() == name.lower().encode()]
        return values[-1] if values else None


class RecordingServer:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 in a background thread.

    It parses request heads itself (no framework that could normalise the target) and answers
    every request with `200 ok` (no body for HEAD).
    """

    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].split(b"\r\n")
                method, _, rest = lines[0].partition(b" ")
                target, _, version = rest.rpartition(b" ")
                headers = [tuple(h.split(b":", 1)) for h in lines[1:]]
                headers = [(k, v.strip()) for k, v in headers]
                length = next((int(v) for k, v in headers if k.lower() == b"content-length"), 0)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(SeenRequest(method, target, version, headers, body))
                body = b"" if method == b"HEAD" else b"ok"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("recording server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def complete_jsonl(path: Path) -> list[dict]:
    """The JSON lines of a file another process may be writing right now: a last line without
    its newline is still being written, so it is left for the next read."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [orjson.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines() if line]


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll `predicate` until it returns something true (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
