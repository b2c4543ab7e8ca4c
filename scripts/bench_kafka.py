"""Kafka benchmark: `shadowtap cat` into and out of a topic, beside a bare confluent-kafka loop.

    .venv/bin/python scripts/bench_kafka.py [--records N] [--rounds N]

One local Tansu broker (scripts/local_kafka.py, memory storage), two new 4-partition topics per
round. 200,000 v1 records (~20 sessions, a few small headers) are written to a JSONL file in a
temporary directory. Every run is its own process (interpreter start and imports included on
both sides), timed by wall clock from here. Each round measures, shadowtap first in odd
rounds and the bare loop first in even ones (so a drift in the machine's load favours neither):

1. produce: `shadowtap cat -i FILE -o kafka://.../A` vs a bare Producer loop over the same
   lines into topic B, producing the same messages with the same settings: idempotent, lz4,
   linger.ms 20, a local queue of 1,000,000 records or 256 MiB, key = session (else client),
   the header `shadowtap-v: 1`; each line parsed
   once for its key, produced as is, flush() at the end, no delivery callbacks.
2. consume: `shadowtap cat -i kafka://.../A -o /dev/null --from earliest` vs a bare Consumer
   loop over topic A (consume(1000, 1.0) until all 4 partitions hit EOF and every message is
   read; no decoding; librdkafka's default fetch and queue settings, as shadowtap uses). Both
   include the group join, which Tansu delays by about half of session.timeout.ms (6000: ~3 s).
   To show the rate without it, both run a second time writing every value as a line to a
   pipe read here (shadowtap `-o -`; the bare loop one write per consume() batch), and are
   timed the same way: from the first byte on the pipe to the process's exit.

With several rounds every figure is printed as a range (lowest–highest) beside the median
ratio. Figures from a noisy machine: only same-run ratios mean anything.
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
              "compression.type": "lz4", "linger.ms": 20,
              "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 262144})
headers = [("shadowtap-v", b"1")]
n = 0
with open(path, "rb") as f:
    for line in f:
        line = line.rstrip(b"\n")
        obj = orjson.loads(line)
        key = obj.get("session") or obj.get("client")
        while True:
            try:
                p.produce(topic, value=line, key=key.encode() if key else None, headers=headers)
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
bootstrap, topic, total, partitions, group, mode = sys.argv[1:7]
total, partitions = int(total), int(partitions)
c = Consumer({"bootstrap.servers": bootstrap, "log_level": 0, "group.id": group,
              "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "enable.partition.eof": True})
c.subscribe([topic])
out = sys.stdout.buffer if mode == "write" else None
n, eof, first = 0, set(), None
deadline = time.monotonic() + 60
while (len(eof) < partitions or n < total) and time.monotonic() < deadline:
    values = []
    for m in c.consume(1000, 1.0):
        err = m.error()
        if err is None:
            if first is None:
                first = time.time()
            n += 1
            values.append(m.value())
        elif err.code() == KafkaError._PARTITION_EOF:
            eof.add(m.partition())
    if out is not None and values:
        values.append(b"")
        out.write(b"\n".join(values))
c.close()
print(n, first, time.time(), file=sys.stderr)
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


def pipe_run(argv: list[str], what: str) -> tuple[float, float, int]:
    """Run a command writing records as lines to a pipe read here: (seconds to its first byte,
    seconds from the first byte to its exit, lines read)."""
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
                raise SystemExit(f"{what} (pipe run): timed out")
        code = process.wait(timeout=RUN_TIMEOUT_S)
        end = time.time()
        if code != 0 or first is None:
            err.seek(0)
            raise SystemExit(f"{what} (pipe run) failed ({code}): {err.read().decode()[-2000:]}")
    return first - start, end - first, lines


def topic_records(address: str) -> int:
    return sum(high - low for low, high in partition_ends(address).values())


def produce_round(records: Path, n: int, topic_a: str, topic_b: str, bootstrap: str,
                  ours_first: bool) -> tuple[float, float]:
    """(shadowtap seconds, bare seconds) producing the file into A and B; both topics are checked."""
    def ours() -> float:
        seconds, _, err = run([*SHADOWTAP, "cat", "-i", str(records), "-o", topic_a])
        if copied(err) != n:
            raise SystemExit(f"shadowtap cat into kafka: {err.strip()}")
        return seconds

    def bare() -> float:
        seconds, out, _ = run([sys.executable, "-c", BARE_PRODUCE, str(records), bootstrap,
                               topic_b.rsplit("/", 1)[1]])
        sent, left = map(int, out.split())
        if sent != n or left:
            raise SystemExit(f"bare producer: {sent} produced, {left} not delivered")
        return seconds

    if ours_first:
        ours_s, bare_s = ours(), bare()
    else:
        bare_s, ours_s = bare(), ours()
    in_a, in_b = topic_records(topic_a), topic_records(topic_b)
    if in_a != n or in_b != n:
        raise SystemExit(f"topics hold {in_a} (shadowtap) and {in_b} (bare) records, expected {n}")
    return ours_s, bare_s


def consume_round(n: int, topic_a: str, bootstrap: str, k: int, ours_first: bool) -> dict[str, float]:
    """Seconds of shadowtap and the bare loop reading A: wall (to /dev/null, or counting), and
    to and from the first byte written to a pipe."""
    name = topic_a.rsplit("/", 1)[1]

    def ours() -> dict[str, float]:
        wall, _, err = run([*SHADOWTAP, "cat", "-i", topic_a, "-o", "/dev/null", "--from", "earliest",
                            "--group", f"bench-cat-{k}"])
        if copied(err) != n:
            raise SystemExit(f"shadowtap cat from kafka: {err.strip()}")
        join, after, lines = pipe_run([*SHADOWTAP, "cat", "-i", topic_a, "-o", "-", "--from", "earliest",
                                       "--group", f"bench-cat-pipe-{k}"], "shadowtap cat")
        if lines != n:
            raise SystemExit(f"shadowtap cat from kafka (pipe run): {lines} records, expected {n}")
        return {"ours_wall": wall, "ours_join": join, "ours_after": after}

    def bare() -> dict[str, float]:
        wall, _, err = run([sys.executable, "-c", BARE_CONSUME, bootstrap, name, str(n), str(PARTITIONS),
                            f"bench-bare-{k}", "count"])
        if int(err.split()[0]) != n:
            raise SystemExit(f"bare consumer: {err.strip()}, expected {n} messages")
        join, after, lines = pipe_run([sys.executable, "-c", BARE_CONSUME, bootstrap, name, str(n), str(PARTITIONS),
                                       f"bench-bare-pipe-{k}", "write"], "bare consumer")
        if lines != n:
            raise SystemExit(f"bare consumer (pipe run): {lines} lines, expected {n}")
        return {"bare_wall": wall, "bare_join": join, "bare_after": after}

    return {**ours(), **bare()} if ours_first else {**bare(), **ours()}


def span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.0f}" if len(values) == 1 or round(low) == round(high) else f"{low:.0f}–{high:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the measurements (each 15-30 s)")
    args = parser.parse_args()
    n = args.records
    if n < 1 or not 1 <= args.rounds <= 20:
        raise SystemExit(f"--records {n} / --rounds {args.rounds}: expected at least 1 record and 1-20 rounds")

    produced: list[tuple[float, float]] = []
    consumed: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="shadowtap-bench-kafka-") as tmp, LocalKafka() as kafka:
        records = Path(tmp) / "records.jsonl"
        t = time.perf_counter()
        write_records(records, n)
        print(f"{n} records, {records.stat().st_size / n:.0f} bytes each on average, "
              f"written in {time.perf_counter() - t:.1f} s; broker {kafka.bootstrap}", flush=True)
        records.read_bytes()  # into the page cache
        for k in range(1, args.rounds + 1):
            topic_a, topic_b = f"kafka://{kafka.bootstrap}/bench-a{k}", f"kafka://{kafka.bootstrap}/bench-b{k}"
            for address in (topic_a, topic_b):
                create_topic(address, partitions=PARTITIONS, retention_ms=None)
            produced.append(produce_round(records, n, topic_a, topic_b, kafka.bootstrap, k % 2 == 1))
            consumed.append(consume_round(n, topic_a, kafka.bootstrap, k, k % 2 == 1))
            p, c = produced[-1], consumed[-1]
            print(f"round {k}: produce {n / p[0]:.0f} vs {n / p[1]:.0f}/s ({p[1] / p[0]:.2f}); consume after "
                  f"the 1st byte {n / c['ours_after']:.0f} vs {n / c['bare_after']:.0f}/s "
                  f"({c['bare_after'] / c['ours_after']:.2f})", flush=True)

    rows = [
        ("produce, records/s (wall)", [n / o for o, _ in produced], [n / b for _, b in produced], True),
        ("consume, records/s (wall, incl. join)", [n / c["ours_wall"] for c in consumed],
         [n / c["bare_wall"] for c in consumed], False),
        ("consume to a pipe, records/s (after 1st byte)", [n / c["ours_after"] for c in consumed],
         [n / c["bare_after"] for c in consumed], True),
    ]
    print(f"\n{'measure':40s} {'shadowtap':>15s} {'bare loop':>15s} {'ratio':>11s}  goal (median ratio)")
    for label, ours, bare, goal in rows:
        ratios = sorted(o / b for o, b in zip(ours, bare, strict=True))
        median = ratios[len(ratios) // 2]
        ratio = f"{ratios[0]:.2f}" if len(ratios) == 1 else f"{ratios[0]:.2f}–{ratios[-1]:.2f}"
        verdict = (f">= {GOAL} {'met' if median >= GOAL else 'NOT met'}") if goal else "-"
        print(f"{label:40s} {span(ours):>15s} {span(bare):>15s} {ratio:>11s}  {verdict}")
    joins = [c["ours_join"] for c in consumed], [c["bare_join"] for c in consumed]
    print(f"\ntime to the first byte on the pipe (start, group join, first fetch): shadowtap "
          f"{min(joins[0]):.2f}–{max(joins[0]):.2f} s, bare {min(joins[1]):.2f}–{max(joins[1]):.2f} s")
    print("the consume goal is judged on the rate after the first byte (the join is Tansu's fixed "
          "~3 s delay, the same for both); the wall row includes it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
