"""Kafka benchmark: `shadowtap cat` into and out of a topic, beside a bare confluent-kafka loop.

    .venv/bin/python scripts/bench_kafka.py [--records N]

One local Tansu broker (scripts/local_kafka.py, memory storage), two 4-partition topics.
200,000 v1 records (~20 sessions, a few small headers) are written to a JSONL file in a
temporary directory. Every run is its own process (interpreter start and imports included on
both sides), timed by wall clock from here. Measured, in this order:

1. produce: `shadowtap cat -i FILE -o kafka://.../A` vs a bare Producer loop over the same
   lines into topic B (same settings: idempotent, lz4, linger.ms 20, key = session; each line
   parsed once for its key, produced as is, flush() at the end; no delivery callbacks, no header).
2. consume: `shadowtap cat -i kafka://.../A -o /dev/null --from earliest --group bench-cat` vs a
   bare Consumer loop over topic A (group bench-bare, consume(1000, 1.0) until all 4 partitions hit
   EOF and every message is read; no decoding). Both include the group join, which Tansu delays
   by about half of session.timeout.ms (6000: ~3 s). To show the rate without it, the time to the
   first message is taken: the bare loop reports it; for shadowtap a second run (group
   bench-cat-first) writes to a pipe read here (`-o -`), and the first bytes on the pipe mark the
   first message (output is batched by 512 records, a few ms).

Figures from one run on a noisy machine: only same-run ratios mean anything.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.local_kafka import LocalKafka  # noqa: E402
from shadowtap.record import Origin, Record, Response, encode_record  # noqa: E402
from shadowtap.streams.kafka_admin import create_topic, partition_ends  # noqa: E402

SHADOWTAP = [sys.executable, "-m", "shadowtap"]
PARTITIONS = 4
SESSIONS = 20
RUN_TIMEOUT_S = 90
GOAL = 0.8

BARE_PRODUCE = r'''
import sys, orjson
from confluent_kafka import Producer
path, bootstrap, topic = sys.argv[1:4]
p = Producer({"bootstrap.servers": bootstrap, "log_level": 0, "enable.idempotence": True,
              "compression.type": "lz4", "linger.ms": 20})
n = 0
with open(path, "rb") as f:
    for line in f:
        line = line.rstrip(b"\n")
        obj = orjson.loads(line)
        key = obj.get("session") or obj.get("client")
        while True:
            try:
                p.produce(topic, value=line, key=key.encode() if key else None)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        n += 1
left = p.flush(60)
print(n, left)
'''

BARE_CONSUME = r'''
import sys, time
from confluent_kafka import Consumer, KafkaError
bootstrap, topic, total, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "log_level": 0, "group.id": "bench-bare",
              "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "enable.partition.eof": True})
c.subscribe([topic])
n, eof, first = 0, set(), None
deadline = time.monotonic() + 60
while (len(eof) < partitions or n < total) and time.monotonic() < deadline:
    for m in c.consume(1000, 1.0):
        err = m.error()
        if err is None:
            if first is None:
                first = time.time()
            n += 1
        elif err.code() == KafkaError._PARTITION_EOF:
            eof.add(m.partition())
c.close()
print(n, first, time.time())
'''

AGENTS = ["Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1.15",
          "okhttp/4.12.0"]


def write_records(path: Path, count: int) -> None:
    """`count` records from SESSIONS clients, a millisecond apart (seeded)."""
    rng = random.Random(20261127)
    sessions = [(f"sess-{i:02d}-{rng.getrandbits(32):08x}", f"10.1.{i}.{rng.randint(1, 254)}", rng.choice(AGENTS))
                for i in range(SESSIONS)]
    ts0 = 1_795_000_000.0
    pos = 0
    with open(path, "wb") as f:
        for i in range(count):
            session, client, agent = sessions[rng.randrange(SESSIONS)]
            post = rng.random() < 0.1
            target = (f"/api/cart?session={session}" if post
                      else f"/api/products/{rng.randint(1, 5000)}?page={rng.randint(1, 20)}")
            headers = (("Host", "shop.example.test"), ("User-Agent", agent), ("Accept", "application/json"),
                       ("Accept-Language", "en-GB,en;q=0.8"), ("Cookie", f"sid={session}"))
            if post:
                headers += (("Content-Type", "application/json"),)
            rec = Record(id=f"bench:{i}", ts=ts0 + i / 1000, method="POST" if post else "GET", target=target,
                         host="shop.example.test", headers=headers,
                         body=b'{"sku":%d,"qty":1}' % rng.randint(1, 5000) if post else None,
                         client=client, session=session, origin=Origin("nginx", "access.log", pos),
                         response=Response(200, round(rng.uniform(0.2, 40), 3), rng.randint(200, 20000)))
            line = encode_record(rec) + b"\n"
            pos += len(line)
            f.write(line)


def copied(stderr: str) -> int:
    m = re.search(r"copied (\d+) records", stderr)
    return int(m.group(1)) if m else -1


def run(argv: list[str]) -> tuple[float, str, str]:
    """(wall seconds, stdout, stderr) of one command; exits naming it when it fails."""
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise SystemExit(f"{' '.join(argv[:4])} ...: timed out after {RUN_TIMEOUT_S} s") from e
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def cat_first_message(argv: list[str]) -> tuple[float, float, int]:
    """(start, first output byte, exit) wall-clock times of `shadowtap cat ... -o -`, and the lines read."""
    start = time.time()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
        first, lines = None, 0
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while chunk := process.stdout.read1(1 << 20):
            first = first or time.time()
            lines += chunk.count(b"\n")
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit("shadowtap cat (first-message run): timed out")
        code = process.wait(timeout=RUN_TIMEOUT_S)
        end = time.time()
        if code != 0 or first is None:
            err.seek(0)
            raise SystemExit(f"shadowtap cat (first-message run) failed ({code}): {err.read().decode()[-2000:]}")
    return first - start, end - first, lines


def topic_records(address: str) -> int:
    return sum(high - low for low, high in partition_ends(address).values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    n = args.records

    with tempfile.TemporaryDirectory(prefix="shadowtap-bench-kafka-") as tmp, LocalKafka() as kafka:
        records = Path(tmp) / "records.jsonl"
        t = time.perf_counter()
        write_records(records, n)
        print(f"{n} records, {records.stat().st_size / n:.0f} bytes each on average, "
              f"written in {time.perf_counter() - t:.1f} s; broker {kafka.bootstrap}", flush=True)
        topic_a, topic_b = f"kafka://{kafka.bootstrap}/bench-a", f"kafka://{kafka.bootstrap}/bench-b"
        for address in (topic_a, topic_b):
            create_topic(address, partitions=PARTITIONS, retention_ms=None)
        records.read_bytes()  # into the page cache

        # 1. produce
        ours_p, _, err = run([*SHADOWTAP, "cat", "-i", str(records), "-o", topic_a])
        if copied(err) != n:
            raise SystemExit(f"shadowtap cat into kafka: {err.strip()}")
        bare_p, out, _ = run([sys.executable, "-c", BARE_PRODUCE, str(records), kafka.bootstrap, "bench-b"])
        sent, left = map(int, out.split())
        if sent != n or left:
            raise SystemExit(f"bare producer: {sent} produced, {left} not delivered")
        in_a, in_b = topic_records(topic_a), topic_records(topic_b)
        if in_a != n or in_b != n:
            raise SystemExit(f"topics hold {in_a} (shadowtap) and {in_b} (bare) records, expected {n}")

        # 2. consume
        ours_c, _, err = run([*SHADOWTAP, "cat", "-i", topic_a, "-o", "/dev/null", "--from", "earliest",
                              "--group", "bench-cat"])
        if copied(err) != n:
            raise SystemExit(f"shadowtap cat from kafka: {err.strip()}")
        ours_join, ours_after, lines = cat_first_message(
            [*SHADOWTAP, "cat", "-i", topic_a, "-o", "-", "--from", "earliest", "--group", "bench-cat-first"])
        if lines != n:
            raise SystemExit(f"shadowtap cat from kafka (first-message run): {lines} records, expected {n}")
        started = time.time()
        bare_c, out, _ = run([sys.executable, "-c", BARE_CONSUME, kafka.bootstrap, "bench-a", str(n),
                              str(PARTITIONS)])
        got, first, end = out.split()
        if int(got) != n or first == "None":
            raise SystemExit(f"bare consumer: {got} messages, expected {n}")
        bare_join, bare_after = float(first) - started, float(end) - float(first)

    rows = [
        ("produce, records/s (wall)", n / ours_p, n / bare_p, True),
        ("consume, records/s (wall, incl. join)", n / ours_c, n / bare_c, False),
        ("consume, records/s (after 1st message)", n / ours_after, n / bare_after, True),
    ]
    print(f"\n{'measure':40s} {'shadowtap':>10s} {'bare loop':>10s} {'ratio':>6s}  goal")
    for label, ours, bare, goal in rows:
        ratio = ours / bare
        verdict = (f">= {GOAL} {'met' if ratio >= GOAL else 'NOT met'}") if goal else "-"
        print(f"{label:40s} {ours:>10.0f} {bare:>10.0f} {ratio:>6.2f}  {verdict}")
    print(f"\nseconds: produce {ours_p:.2f} vs {bare_p:.2f}; consume {ours_c:.2f} vs {bare_c:.2f} "
          f"(wall, each a fresh process)")
    print(f"time to the first message (group join + start): shadowtap {ours_join:.2f} s "
          f"(separate `-o -` run, group bench-cat-first), bare {bare_join:.2f} s")
    print("the consume goal is judged on the rate after the first message (the join is Tansu's fixed "
          "~3 s delay, the same for both); the wall row includes it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
