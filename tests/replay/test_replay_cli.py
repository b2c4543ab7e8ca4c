"""`shadowtap replay shadow` as a user runs it: a subprocess, real files, a real target."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import orjson
import pytest

from shadowtap.record import encode_record

SHADOWTAP = [sys.executable, "-m", "shadowtap"]
RUN_TIMEOUT_S = 30


def write_input(path, recs) -> str:
    path.write_bytes(b"".join(encode_record(r) + b"\n" for r in recs))
    return str(path)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--rate", "fast"], "'fast'"),
        (["--rate", "-3"], "'-3'"),
        (["--speed", "0"], "'0'"),
        (["--speed", "2", "--rate", "10"], "--speed and --rate"),
        (["--arrival", "poisson"], "--arrival poisson"),
        (["--timeout", "soon"], "'soon'"),
        (["--marker", "no colon"], "'no colon'"),
        (["--target", "ftp://127.0.0.1/"], "'ftp://127.0.0.1/'"),
        (["--target", "http://127.0.0.1:99999"], "http://127.0.0.1:99999"),
        (["--target", "x=http://127.0.0.1:1", "--target", "x=http://127.0.0.1:2"], "'x'"),
        (["--max-inflight", "0"], "0"),
        (["--ramp", "100:2000"], "'100:2000'"),
        (["--ramp", "0:0:10s"], "'0:0:10s'"),
        (["--ramp", "100:2000:soon"], "'soon'"),
        (["--stages", "30s:500,60s"], "'30s:500,60s'"),
        (["--stages", "30s:-5"], "'-5'"),
        (["--rate", "10", "--stages", "30s:500"], "--rate and --stages"),
        (["--duration", "0s"], "'0s'"),
        (["--loop"], "--loop needs --duration or --limit"),
        (["--set-header", "X Bad=1"], "'X Bad=1'"),
        (["--set-header", "nosuch:X-Env=dark"], "'nosuch'"),
        (["--drop-header", "bad header"], "'bad header'"),
        (["--timeout", "nosuch=1"], "'nosuch'"),
        (["--timeout", "t1=-1"], "'-1'"),
        (["--rewrite-path", "^/a"], "'^/a'"),
        (["--rewrite-path", "([a-z]=>x"], "bad regular expression"),
        (["--rewrite-path", "^/a=>/b/\\2"], "refers to a group"),
        (["--abort-on-error-rate", "150%"], "'150%'"),
        (["--abort-on-error-rate", "lots"], "'lots'"),
        (["--client", "curl"], "'curl'"),
        (["--client", "lean", "--target", "https://127.0.0.1:1"], "plain http only"),
    ],
)
def test_bad_values_are_one_sentence_and_exit_2(tmp_path, args, named):
    src = write_input(tmp_path / "in.jsonl", [])
    base = ["replay", "shadow", "-i", src]
    if "--target" not in args:
        base += ["--target", "http://127.0.0.1:1"]
    proc = subprocess.run([*SHADOWTAP, *base, *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("shadowtap: error:")]
    assert len(errors) == 1 and named in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_missing_input_is_one_sentence(tmp_path):
    proc = subprocess.run(
        [*SHADOWTAP, "replay", "shadow", "-i", str(tmp_path / "nope.jsonl"), "--target", "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 2 and "nope.jsonl" in proc.stderr and "Traceback" not in proc.stderr


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *SHADOWTAP, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    return proc.returncode, out.decode(), err.decode()


async def test_happy_path_writes_report_and_outcomes(serve, records, tmp_path):
    recs = records(30, host="shop.example") + records(2, method="POST", prefix="p")
    src = write_input(tmp_path / "in.jsonl", recs)
    report_path, outcomes_path = tmp_path / "report.json", tmp_path / "outcomes.jsonl"
    async with serve() as a, serve() as b:
        code, out, err = await run_cli(
            "replay", "shadow", "-i", src, "--target", f"primary={a.url}", "--target", b.url,
            "--rate", "max", "--report", str(report_path), "--outcomes", str(outcomes_path),
        )
    assert code == 0, err
    assert len(a.seen) == len(b.seen) == 30
    report = orjson.loads(report_path.read_bytes())
    assert set(report) == {"schedule", "targets"}
    s = report["schedule"]
    assert set(s) == {"planned", "sent", "dropped", "skipped", "achieved_rps", "lag_ms", "late", "late_ms", "stopped"}
    assert (s["planned"], s["sent"], s["dropped"], s["skipped"]) == (60, 60, 0, {"write_method": 2})
    assert set(s["lag_ms"]) == {"p50", "p90", "p99", "p999", "max"} and s["achieved_rps"] > 0
    assert (s["late"], s["stopped"]) == (0, "input ended")
    assert set(report["targets"]) == {"primary", "t2"}
    for name, server in (("primary", a), ("t2", b)):
        t = report["targets"][name]
        assert set(t) == {"url", "requests", "responses", "errors", "status", "latency_ms", "corrected_ms",
                          "endpoints"}
        assert list(t["endpoints"]) == ["GET /item/{id}"]
        assert t["url"] == server.url
        assert (t["requests"], t["responses"], t["errors"], t["status"]) == (30, 30, {}, {"200": 30})
        for key in ("latency_ms", "corrected_ms"):
            assert set(t[key]) == {"p50", "p90", "p99", "p999", "max"}
            assert 0 < t[key]["p50"] <= t[key]["p99"] <= t[key]["max"]
    lines = [orjson.loads(x) for x in outcomes_path.read_bytes().splitlines()]
    assert len(lines) == 60 and {o["status"] for o in lines} == {200}
    table = out.splitlines()
    assert table[0].startswith("schedule: planned 60, sent 60, dropped 0")
    assert table[1].startswith("schedule lag ms: p50 ")
    assert table[2].split()[0] == "target" and [r.split()[0] for r in table[3:5]] == ["primary", "t2"]
    assert err == ""


async def test_sigint_exits_130_and_still_writes_the_report(serve, records, tmp_path):
    src = write_input(tmp_path / "in.jsonl", records(2000))
    report_path, outcomes_path = tmp_path / "report.json", tmp_path / "outcomes.jsonl"
    async with serve() as srv:
        proc = await asyncio.create_subprocess_exec(
            *SHADOWTAP, "replay", "shadow", "-i", src, "--target", srv.url, "--rate", "100",
            "--report", str(report_path), "--outcomes", str(outcomes_path),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for _ in range(RUN_TIMEOUT_S * 100):  # until the replay is under way, at most RUN_TIMEOUT_S
            if len(srv.seen) >= 10:
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    assert proc.returncode == 130, err
    assert "Traceback" not in err.decode()
    report = orjson.loads(report_path.read_bytes())
    sent = report["schedule"]["sent"]
    assert 10 <= sent < 2000 and sent == len(srv.seen) == report["targets"]["t1"]["requests"]
    assert len(outcomes_path.read_bytes().splitlines()) == sent
    assert out.decode().startswith("schedule: planned")


async def test_per_target_options_stages_and_loop_from_the_command_line(serve, records, tmp_path):
    src = write_input(tmp_path / "in.jsonl", records(3))
    report_path = tmp_path / "report.json"
    async with serve() as a, serve() as b:
        code, _, err = await run_cli(
            "replay", "shadow", "-i", src, "--target", f"stable={a.url}", "--target", f"canary={b.url}",
            "--set-header", "canary:X-Env=dark", "--drop-header", "X-Drop", "--timeout", "canary=0.5",
            "--rewrite-path", "^/item/=>/v2/item/", "--stages", "0.5s:20,0.5s:40", "--loop",
            "--duration", "5", "--report", str(report_path),
        )
    assert code == 0, err
    report = orjson.loads(report_path.read_bytes())
    s = report["schedule"]
    assert s["stopped"] == "profile ended" and s["sent"] == 2 * 30
    assert len(a.seen) == len(b.seen) == 30
    assert all(x.target.startswith("/v2/item/") for x in a.seen + b.seen)
    assert {x.header("X-Env") for x in b.seen} == {"dark"} and {x.header("X-Env") for x in a.seen} == {None}


async def test_circuit_breaker_stops_the_run_and_says_why(serve, records, tmp_path):
    from aiohttp import web

    async def broken(_request, _server):
        return web.Response(status=503, text="down")

    src = write_input(tmp_path / "in.jsonl", records(3000))
    report_path = tmp_path / "report.json"
    async with serve(broken) as srv:
        code, out, err = await run_cli(
            "replay", "shadow", "-i", src, "--target", f"candidate={srv.url}", "--rate", "1000",
            "--abort-on-error-rate", "50%", "--error-window", "20", "--report", str(report_path),
        )
    assert code == 3, err
    assert "shadowtap: aborted: target 'candidate': 20 of its last 20 requests failed (503: 20)" in err
    report = orjson.loads(report_path.read_bytes())
    assert report["schedule"]["stopped"] == "aborted" and report["aborted"].startswith("target 'candidate'")
    assert report["schedule"]["sent"] < 500
    assert "aborted: target 'candidate'" in out
