"""The shipper options of `capture nginx` and `capture haproxy` as a user runs them: filters and
sampling accounted for, checkpoints across runs, the stats line, SIGTERM, and one sentence
(exit 2) for every wrong option value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from tests.conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "nginx-access.log"


def read_jsonl(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line] if path.exists() else []


def summary_counts(stderr: bytes) -> str:
    return stderr.decode().strip().splitlines()[-1]


def test_filters_and_sampling_are_counted_skips(tmp_path):
    out = tmp_path / "r.jsonl"
    total = len(EXAMPLE.read_bytes().splitlines())
    res = run_cli("capture", "nginx", str(EXAMPLE), "-o", str(out), "--method", "GET,HEAD", "--status", "2xx",
                  "--exclude-path", r"^/static/", "--sample", "50%", "--sample-key", "header:User-Agent")
    assert res.returncode == 0, res.stderr
    recs = read_jsonl(out)
    line = summary_counts(res.stderr)
    assert line.startswith(f"shadowtap capture nginx: {total} lines read, {len(recs)} records written; skipped: ")
    skipped = int(line.split("skipped: ")[1].split(" ")[0])
    assert len(recs) + skipped == total and "dead letters: 0" in line
    for reason in ("filtered_method", "filtered_path", "sampled_out"):
        assert reason in line
    assert all(r["method"] in ("GET", "HEAD") and not r["target"].startswith("/static/") for r in recs)
    agents = {}
    for r in recs:
        agent = dict(r["headers"])["User-Agent"]
        agents.setdefault(agent, set()).add(r["session"])
    assert all(len(sessions) == 1 for sessions in agents.values())


def test_checkpoint_resumes_a_batch_capture(tmp_path):
    log, out, cp = tmp_path / "access.log", tmp_path / "r.jsonl", tmp_path / "cp.json"
    lines = EXAMPLE.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:100]))
    args = ("capture", "nginx", str(log), "-o", str(out), "--checkpoint", str(cp))
    assert run_cli(*args).returncode == 0
    res = run_cli(*args)
    assert res.returncode == 0 and b"0 lines read" in res.stderr
    with open(log, "ab") as f:
        f.write(b"".join(lines[100:150]))
    res = run_cli(*args)
    assert res.returncode == 0 and b"50 lines read, 50 records written" in res.stderr
    recs = read_jsonl(out)
    assert len(recs) == 150 and len({r["id"] for r in recs}) == 150
    saved = orjson.loads(cp.read_bytes())
    [(fp, entry)] = saved["files"].items()
    assert entry["offset"] == log.stat().st_size and entry["line"] == 150 and recs[0]["id"].startswith(fp)


def test_stats_interval_prints_the_stats_line(tmp_path):
    res = run_cli("capture", "nginx", str(EXAMPLE), "-o", str(tmp_path / "r.jsonl"), "--stats-interval", "0.001")
    assert res.returncode == 0
    stats = [line for line in res.stderr.decode().splitlines() if ": stats: " in line]
    assert stats, res.stderr
    assert "lines (" in stats[-1] and "/s)" in stats[-1] and "records" in stats[-1]
    assert "skipped" in stats[-1] and "dead letters" in stats[-1] and "checkpoint lag" in stats[-1]


def test_sigterm_flushes_checkpoints_and_exits_0(tmp_path):
    log, out, cp = tmp_path / "access.log", tmp_path / "r.jsonl", tmp_path / "cp.json"
    log.write_bytes(EXAMPLE.read_bytes())
    total = len(log.read_bytes().splitlines())
    process = subprocess.Popen(
        [sys.executable, "-m", "shadowtap", "capture", "nginx", str(tmp_path / "*.log"), "--follow", "-o", str(out),
         "--checkpoint", str(cp), "--poll-interval", "0.05", "--checkpoint-interval", "60"],
        cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while len(read_jsonl(out)) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(read_jsonl(out)) == total  # flushed when the input went idle
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    [entry] = orjson.loads(cp.read_bytes())["files"].values()
    assert entry["offset"] == log.stat().st_size
    assert f"{total} lines read, {total} records written".encode() in stderr


SCRUB_KEY = {"SHADOWTAP_SCRUB_KEY": ""}


@pytest.mark.parametrize("command, extra, named", [
    ("nginx", ["--sample", "200%"], "'200%'"),
    ("nginx", ["--status", "2x"], "'2x'"),
    ("nginx", ["--path", "("], "'('"),
    ("nginx", ["--method", "G T"], "'G T'"),
    ("nginx", ["--sample-key", "user"], "'user'"),
    ("nginx", ["--scrub", "hash"], "SHADOWTAP_SCRUB_KEY"),
    ("nginx", ["--checkpoint", "/nonexistent/dir/cp.json"], "/nonexistent/dir/cp.json"),
    ("nginx", ["--checkpoint-interval", "0"], "--checkpoint-interval"),
    ("nginx", ["--follow", "-"], "'-'"),
    ("haproxy", ["--format", "%ci %Zz"], "'%Zz'"),
    ("haproxy", ["--listen", "udp://localhost"], "'udp://localhost'"),
    ("haproxy", ["--listen", "ftp://127.0.0.1:1"], "'ftp://127.0.0.1:1'"),
    ("haproxy", ["--listen", "udp://127.0.0.1:1", "--follow"], "--follow"),
    ("haproxy", ["--listen", "udp://127.0.0.1:1", "FILE"], "udp://127.0.0.1:1"),
    ("haproxy", ["--capture-headers", "Host", "--listen", "udp://127.0.0.1:1", "--checkpoint", "cp"], "cp"),
])
def test_wrong_options_are_one_sentence_exit_2(tmp_path, command, extra, named):
    log = tmp_path / "access.log"
    log.write_bytes(EXAMPLE.read_bytes()[:2000])
    args = ["capture", command, *[str(log) if a == "FILE" else a for a in extra], "-o", str(tmp_path / "r.jsonl")]
    if "--listen" not in extra and "-" not in extra:
        args.insert(2, str(log))
    env = {**os.environ, **SCRUB_KEY}
    res = subprocess.run([sys.executable, "-m", "shadowtap", *args], capture_output=True, cwd=REPO, env=env,
                         timeout=60)
    err = res.stderr.decode()
    assert res.returncode == 2, (extra, err)
    first = err.splitlines()[0]
    assert first.startswith("shadowtap: error: ") and named in first, (extra, err)
    assert "Traceback" not in err


def test_scrub_hash_with_a_key_keeps_cardinality(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(
        b'127.0.0.1 - - [27/Nov/2026:10:00:0%d +0000] "GET /a?token=t%d HTTP/1.1" 200 3 "-" "curl"\n' % (i, i % 2)
        for i in range(4)))
    env = {**os.environ, "SHADOWTAP_SCRUB_KEY": "0123456789abcdef0123"}
    res = subprocess.run([sys.executable, "-m", "shadowtap", "capture", "nginx", str(log), "-o", "-", "--scrub",
                          "hash"], capture_output=True, cwd=REPO, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    targets = [orjson.loads(line)["target"] for line in res.stdout.splitlines()]
    assert targets[0] == targets[2] != targets[1] == targets[3]
    assert all(t.startswith("/a?token=SCRUBBED:") for t in targets)


def test_secrets_from_a_real_nginx_never_reach_any_output(tmp_path):
    """A request with Authorization, a session cookie and ?token= through a real nginx whose
    log_format logs all three; plus a broken line holding them: no output, dead letter or log
    line shows them."""
    import http.client

    from scripts.local_nginx import LocalNginx

    fmt = ('$remote_addr [$time_local] "$request" $status $body_bytes_sent "$http_authorization" '
           '"$http_cookie" "$http_referer" $cookie_sid $arg_token')
    with LocalNginx(fmt, workdir=str(tmp_path / "nginx")) as nginx:
        conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
        conn.request("GET", "/account?token=s3cr3t-token&page=2", headers={
            "Authorization": "Bearer s3cr3t-auth", "Cookie": "theme=dark; sid=s3cr3t-cookie",
            "Referer": "http://shop.test/login?password=s3cr3t-password"})
        conn.getresponse().read()
        conn.close()
        [logged] = nginx.log_lines(1)
    log = tmp_path / "access.log"
    log.write_bytes(logged + b"\n" + logged.replace(b"GET", b"G(T") + b"\n" + logged[:60] + b" broken\n")
    out, dead = tmp_path / "r.jsonl", tmp_path / "dead.jsonl"
    for extra in ([], ["--stats-interval", "0.001"], ["--scrub", "hash"]):
        env = {**os.environ, "SHADOWTAP_SCRUB_KEY": "0123456789abcdef0123"}
        res = subprocess.run([sys.executable, "-m", "shadowtap", "capture", "nginx", str(log), "--format", fmt,
                              "-o", str(out), "--dead-letter", str(dead), *extra],
                             capture_output=True, cwd=REPO, env=env, timeout=60)
        assert res.returncode == 0, res.stderr
        assert b"1 records written" in res.stderr and b"dead letters: 2" in res.stderr
        for where in (out.read_bytes(), dead.read_bytes(), res.stderr, res.stdout):
            assert b"s3cr3t" not in where
    [record] = read_jsonl(out)[:1]
    assert dict(record["headers"])["Authorization"] == "SCRUBBED"
    assert record["target"] == "/account?token=SCRUBBED&page=2"
    assert record["fields"]["cookie_sid"] == "SCRUBBED" and record["fields"]["arg_token"] == "SCRUBBED"
    letters = read_jsonl(dead)
    assert {d["reason"] for d in letters} == {"bad_request_line", "no_match"}
    assert all(d["raw"] is None and d["redacted"] and d["length"] > 0 for d in letters)
    res = run_cli("capture", "nginx", str(log), "--format", fmt, "-o", str(tmp_path / "s.jsonl"), "--on-error",
                  "fail")
    assert res.returncode == 1 and b"s3cr3t" not in res.stderr and b"(--on-error fail)" in res.stderr
