"""A small HTTP upstream for `make demo`: a stable version and a slower, flakier candidate
that also adds a field to product responses.

    python scripts/demo_upstream.py --flavor stable|candidate --port-file PATH

Every response carries the time it was served and a request id (noise that compare mode
must cancel) and an `X-Flavor` header naming the version.

It binds a free loopback port, writes the port number to PATH, and serves until killed
(or for --lifetime seconds at most).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
import zlib
from pathlib import Path

from aiohttp import web


def make_app(flavor: str) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        key = zlib.crc32(request.path_qs.encode())
        headers = {"X-Flavor": flavor}
        body = {"path": request.path, "served_at": time.time(), "request_id": uuid.uuid4().hex}
        if flavor == "candidate":
            await asyncio.sleep(0.005 + (key % 25) / 1000)
            if "/orders" in request.path and key % 10 == 0:
                return web.json_response({"error": "orders backend timeout"}, status=500, headers=headers)
            if request.path.startswith("/api/products/"):
                body["currency"] = "EUR"
        return web.json_response(body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(flavor: str, port_file: Path, lifetime: float) -> None:
    runner = web.AppRunner(make_app(flavor), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    port_file.write_text(f"{port}\n")
    try:
        await asyncio.sleep(lifetime)
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavor", choices=["stable", "candidate"], required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--lifetime", type=float, default=600.0, help="seconds before exiting by itself")
    args = parser.parse_args()
    asyncio.run(serve(args.flavor, args.port_file, args.lifetime))


if __name__ == "__main__":
    main()
