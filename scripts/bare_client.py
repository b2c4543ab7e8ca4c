"""The floor for a Python sender: one prebuilt GET rewritten over N keep-alive connections on
uvloop, responses parsed by httptools, nothing else per request (no records, outcomes or
statistics). `bench_replay.py` runs it beside wrk and `replay shadow --rate max`, so the table
shows how much of the gap to wrk is Python itself and how much is shadowtap's per-request work.

    .venv/bin/python scripts/bare_client.py URL REQUESTS CONNECTIONS    # prints requests/s
"""

from __future__ import annotations

import asyncio
import sys
import time
from urllib.parse import urlsplit

import httptools
import uvloop


async def run(url: str, requests: int, connections: int) -> float:
    parts = urlsplit(url)
    request = (f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
               f"Host: {parts.netloc}\r\nUser-Agent: bare-client\r\nX-Shadowtap: 1\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    left = requests
    done = 0
    reconnects: set[asyncio.Task[None]] = set()

    class Connection(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpResponseParser(self)
            self.send()

        def send(self) -> None:
            nonlocal left
            if left > 0:
                left -= 1
                self.transport.write(request)  # type: ignore[attr-defined]
            else:
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            nonlocal done
            done += 1
            if done == requests and not finished.done():
                finished.set_result(None)
            if self.parser.should_keep_alive():
                self.send()
            else:  # nginx closes after keepalive_requests: open another connection
                self.transport.close()
                task = loop.create_task(connect())
                reconnects.add(task)
                task.add_done_callback(reconnects.discard)

    async def connect() -> None:
        await loop.create_connection(Connection, parts.hostname, parts.port or 80)

    started = time.perf_counter()
    await asyncio.gather(*[connect() for _ in range(connections)])
    await asyncio.wait_for(finished, timeout=120)
    return requests / (time.perf_counter() - started)


def main(argv: list[str]) -> int:
    url, requests, connections = argv[0], int(argv[1]), int(argv[2])
    print(f"{uvloop.run(run(url, requests, connections)):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
