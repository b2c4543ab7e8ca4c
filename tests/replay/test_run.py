"""`shadowtap run CONFIG.toml` as cron runs it: a subprocess replaying a real JSONL file to real
HTTP servers, deciding PASS, FAIL or INCONCLUSIVE, with its exit code, stdout and run folder."""

from __future__ import annotations

import asyncio
import fcntl
import subprocess
import sys
import time

import orjson
import pytest
from aiohttp import web

from replay.verdict import Criteria, decide
from shadowtap.record import Record, encode_record

SHADOWTAP = [sys.executable, "-m", "shadowtap"]
WAIT_S = 60.0


def feed(path, n: int) -> str:
    path.write_bytes(b"".join(encode_record(Record(id=f"r{i}", ts=1_700_000_000.0 + i / 100, method="GET",
                                                   target=f"/item/{i}")) + b"\n" for i in range(n)))
    return str(path)


def app(fail_every: int = 0, delay: float = 0.0, extra: bool = False):
    async def handle(request: web.Request, _server) -> web.StreamResponse:
        n = int(request.path.rsplit("/", 1)[1])
        if delay:
            await asyncio.sleep(delay)
        if fail_every and n % fail_every == 0:
            return web.Response(status=503, text="down")
        body = {"id": n, "price": n * 2}
        if extra and n % 4 == 0:
            body["price"] = n * 2 + 1
        return web.json_response(body)

    return handle


def config(tmp_path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


async def run(path: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*SHADOWTAP, "run", path, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    return proc.returncode, out.decode(), err.decode()


def verdict_of(report_dir) -> dict:
    (folder,) = [p for p in report_dir.iterdir() if p.is_dir()]
    assert {p.name for p in folder.iterdir()} >= {"verdict.json", "report.json", "report.html"}
    return orjson.loads((folder / "verdict.json").read_bytes())


async def test_pass_fail_and_inconclusive_against_real_servers(serve, tmp_path):
    records = feed(tmp_path / "in.jsonl", 300)
    reports = tmp_path / "runs"
    async with serve(app()) as good, serve(app(fail_every=10)) as flaky, serve(app(delay=0.03)) as slow, \
            serve(app(fail_every=2)) as broken:

        def shadow(name: str, baseline: str, candidate: str, extra: str = "") -> str:
            return config(tmp_path, f'name = "{name}"\ninput = "{records}"\nreport = "{reports / name}"\n'
                                    f'[targets]\nbaseline = "{baseline}"\ncandidate = "{candidate}"\n'
                                    f'[replay]\nrate = 600\n[pass]\n{extra}')

        passed = await run(shadow("ok", good.url, good.url))
        failed = await run(shadow("errors", good.url, flaky.url))
        slower = await run(shadow("slow", good.url, slow.url, "max_p99_ratio = 3\nmax_p99_ms = 20\n"))
        thin = await run(shadow("thin", good.url, good.url, "min_requests = 1000\n"))
        unhealthy = await run(shadow("base", broken.url, good.url))

    code, out, err = passed
    assert code == 0, out + err
    assert out.startswith("shadowtap run ok: PASS\n") and "candidate: 300 requests, error rate 0.00%" in out
    assert "target" in err and "baseline" in err  # the replay's table goes to stderr
    record = verdict_of(reports / "ok")
    assert record["verdict"] == "PASS" and record["measures"]["candidate"]["requests"] == 300

    code, out, _ = failed
    assert code == 3
    assert "shadowtap run errors: FAIL\n  - candidate error rate 10.00% > 1.00% (max_error_rate)\n" in out
    assert verdict_of(reports / "errors")["reasons"] == ["candidate error rate 10.00% > 1.00% (max_error_rate)"]

    code, out, _ = slower
    assert code == 3
    assert "(max_p99_ms)" in out and "(max_p99_ratio)" in out

    code, out, _ = thin
    assert code == 4
    assert "INCONCLUSIVE\n  - 300 requests reached the candidate < 1000 (min_requests)" in out

    code, out, _ = unhealthy
    assert code == 4
    assert "baseline error rate 50.00% > 5.00% (baseline_max_error_rate)" in out


async def test_compare_mode_fails_on_real_differences(serve, tmp_path):
    records = feed(tmp_path / "in.jsonl", 200)
    async with serve(app()) as primary, serve(app()) as secondary, serve(app(extra=True)) as candidate:
        path = config(tmp_path, f'name = "cmp"\nmode = "compare"\ninput = "{records}"\nreport = "{tmp_path}/r"\n'
                                f'[targets]\nprimary = "{primary.url}"\nsecondary = "{secondary.url}"\n'
                                f'candidate = "{candidate.url}"\n[replay]\nrate = 500\n'
                                f'[pass]\nmax_diff_rate = "10%"\n')
        code, out, err = await run(path)
    assert code == 3, out + err
    assert "GET /item/{id}: 25.00% of requests really differ > 10.00% (max_diff_rate)" in out
    assert "REAL  body.price  candidate 25.00%  secondary 0.00%" in out
    (folder,) = (tmp_path / "r").iterdir()
    page = (folder / "report.html").read_text()
    assert "<title>shadowtap run cmp</title>" in page and "<code>body.price</code>" in page
    endpoints = orjson.loads((folder / "compare.json").read_bytes())["endpoints"]
    assert endpoints["GET /item/{id}"]["real_diff_requests"] == 50


async def test_a_second_run_of_the_same_name_does_not_start(serve, tmp_path):
    lock = tmp_path / "run.lock"
    async with serve(app()) as good:
        path = config(tmp_path, f'name = "locked"\ninput = "{feed(tmp_path / "in.jsonl", 10)}"\nlock = "{lock}"\n'
                                f'[targets]\ncandidate = "{good.url}"\n')
        with open(lock, "a+") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            code, out, err = await run(path)
        assert not good.seen  # nothing was sent
    assert code == 1 and out == ""
    assert err.strip() == (f"shadowtap: error: another run named 'locked' is still going (lock {lock} is held): "
                           "not starting this one")


@pytest.mark.parametrize(("text", "message"), [
    ('input = "x"\n[targets]\ncandidate = "http://a"\n', "name is required"),
    ('name = "n"\ninput = "x"\n[targets]\nbaseline = "http://a"\n', "targets.candidate is required in shadow mode"),
    ('name = "n"\ninput = "x"\nmode = "canary"\n', "mode = 'canary' must be one of shadow, compare"),
    ('name = "n"\ninput = "x"\n[targets]\ncandidate = "ftp://a"\n', "targets.candidate = 'ftp://a' must be an http"),
    ('name = "n"\ninput = "x"\n[targets]\ncandidate = "http://a"\n[pass]\nmax_error_rate = "lots"\n',
     "pass.max_error_rate = 'lots' must be a percentage"),
    ('name = "n"\ninput = "x"\n[targets]\ncandidate = "http://a"\n[replay]\nrate = 5\nspeed = 2\n',
     "replay.rate and replay.speed exclude each other"),
    ('name = "n"\ninput = "x"\n[targets]\ncandidate = "http://a"\n[replay]\nduration = "soon"\n',
     "replay.duration = 'soon' must be a duration"),
    ('name = "n"\ninput = "x"\nretries = 3\n', "unknown key 'retries'"),
    ('name = "n"\ninput = "x"\n[targets]\ncandidate = "http://a"\n[pass]\nmax_diff_rate = 0\n',
     "pass.max_diff_rate applies to compare mode only"),
    ('name = "n"\ninput = "x"\n[targets\n', "not valid TOML"),
    ('name = "n"\ninput = "x"\n[targets]\ncandidate = "http://a"\n[kafka]\nfrom = "yesterday"\n', "kafka.from"),
    ('name = "n"\ninput = "x"\n[targets]\ncandidate = "http://a"\n[kafka]\nsettings = 5\n',
     "kafka.settings must be a table"),
])
def test_a_bad_config_is_one_sentence_and_exit_2(tmp_path, text, message):
    path = config(tmp_path, text)
    proc = subprocess.run([*SHADOWTAP, "run", path, "--check"], capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"shadowtap: error: {path}: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2


def test_check_describes_the_run(tmp_path):
    path = config(tmp_path, 'name = "nightly"\ninput = "spool/"\n[targets]\nbaseline = "http://a"\n'
                            'candidate = "http://b"\n[replay]\nrate = 50\nduration = "10m"\n[pass]\nmax_p99_ms = 250\n')
    proc = subprocess.run([*SHADOWTAP, "run", path, "--check"], capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "run nightly: shadow mode, spool/ to baseline http://a, candidate http://b; 50 requests/s, for 600 s; "
        "GET, HEAD and OPTIONS only; pass when min_requests 100, max_error_rate 1%, max_p99_ms 250, "
        "max_dropped_rate 1%, baseline_max_error_rate 5%; report (none)")


def test_the_rules_in_order():
    def report(requests: int, fives: int = 0, p99: float = 10.0, planned: int = 100, dropped: int = 0) -> dict:
        side = {"requests": requests, "status": {"200": requests - fives, "503": fives} if fives else {"200": requests},
                "errors": {}, "corrected_ms": {"p99": p99}}
        return {"schedule": {"planned": planned, "dropped": dropped}, "targets": {"candidate": side, "baseline": side}}

    c = Criteria(min_requests=50)
    assert decide(report(100), c, "candidate", "baseline").status == "PASS"
    assert decide(report(100), c, "candidate", "baseline", interrupted=True).status == "INCONCLUSIVE"
    both_broken = report(100, fives=60)
    assert decide(both_broken, c, "candidate", "baseline").status == "INCONCLUSIVE"  # nothing to blame
    assert decide(both_broken, c, "candidate").status == "FAIL"  # without a baseline the candidate is to blame
    few_but_failing = report(10, fives=5)
    assert decide(few_but_failing, Criteria(min_requests=50, baseline_max_error_rate=None), "candidate",
                  "baseline").status == "FAIL"
    assert decide(report(10), c, "candidate").status == "INCONCLUSIVE"
    assert decide(report(100, dropped=5), c, "candidate").status == "INCONCLUSIVE"


async def test_a_run_reads_a_kafka_topic_with_its_group_and_start(serve, kafka, tmp_path):
    from shadowtap.streams.kafka import KafkaSink
    from shadowtap.streams.kafka_admin import create_topic

    topic = f"kafka://{kafka.bootstrap}/run-{time.time_ns()}"
    create_topic(topic, partitions=2, retention_ms=None)
    sink = KafkaSink(topic)
    for i in range(60):
        await sink.send(Record(id=f"k{i}", ts=1_700_000_000.0 + i / 100, method="GET", target=f"/item/{i}",
                               client=f"10.0.0.{i % 7}"))
    await sink.flush()
    await sink.close()
    async with serve(app()) as good:
        path = config(tmp_path, f'name = "from-kafka"\ninput = "{topic}"\nreport = "{tmp_path}/runs"\n'
                                f'[targets]\ncandidate = "{good.url}"\n[replay]\nrate = 300\n'
                                f'[kafka]\ngroup = "run-{time.time_ns()}"\nfrom = "earliest"\nuntil = "now"\n'
                                f'settings = {{ "session.timeout.ms" = "6000" }}\n[pass]\nmin_requests = 60\n')
        code, out, err = await run(path)
        assert sorted(s.target for s in good.seen) == sorted(f"/item/{i}" for i in range(60))
    assert code == 0, out + err
    assert out.startswith("shadowtap run from-kafka: PASS\n")
