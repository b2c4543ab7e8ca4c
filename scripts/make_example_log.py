"""Regenerate examples/nginx-access.log from a real nginx serving real requests.

    .venv/bin/python scripts/make_example_log.py [--seconds 20] [--requests 400]

Starts nginx on a loopback port with the predefined `combined` format, sends a seeded mix of
shop-like requests spread over the given time, and copies the access log it wrote.
"""

from __future__ import annotations

import argparse
import http.client
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.local_nginx import LocalNginx

COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent"')
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1.15",
    "curl/8.5.0",
    "okhttp/4.12.0",
]


def request_mix(rng: random.Random) -> tuple[str, str, bytes | None]:
    """One (method, target, body) drawn from a shop-like mix."""
    roll = rng.random()
    if roll < 0.35:
        return "GET", f"/api/products/{rng.randint(1, 500)}", None
    if roll < 0.55:
        query = rng.choice(["lamp", "desk", "chair%20pad", "caf%C3%A9"])
        return "GET", f"/api/search?q={query}&page={rng.randint(1, 5)}", None
    if roll < 0.70:
        return "GET", f"/api/users/{rng.randint(1000, 9999)}/orders", None
    if roll < 0.80:
        return "GET", rng.choice(["/", "/static/app.js", "/static/app.css", "/healthz"]), None
    if roll < 0.86:
        return "HEAD", f"/static/img/{rng.randint(1, 40)}.png", None
    if roll < 0.90:
        return "OPTIONS", "/api/cart", None
    return "POST", "/api/cart/items", b'{"sku": %d, "qty": 1}' % rng.randint(1, 500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--requests", type=int, default=400)
    default_out = Path(__file__).resolve().parents[1] / "examples/nginx-access.log"
    parser.add_argument("--out", default=str(default_out))
    args = parser.parse_args()
    rng = random.Random(20261127)
    with LocalNginx(COMBINED) as nginx:
        next_at = time.monotonic()
        for _ in range(args.requests):
            next_at += rng.expovariate(args.requests / args.seconds)
            time.sleep(max(0.0, next_at - time.monotonic()))
            method, target, body = request_mix(rng)
            conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=5)
            headers = {"User-Agent": rng.choice(AGENTS), "Host": "shop.example.test"}
            if rng.random() < 0.5:
                headers["Referer"] = "https://shop.example.test/"
            conn.request(method, target, body=body, headers=headers)
            conn.getresponse().read()
            conn.close()
        nginx.log_lines(args.requests)
        shutil.copyfile(nginx.access_log, args.out)
    print(f"wrote {args.requests} lines to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
