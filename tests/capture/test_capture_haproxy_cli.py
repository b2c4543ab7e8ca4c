"""`shadowtap capture haproxy` on the real sample files, as a user runs it: each line a record,
a counted skip or a dead letter, and the summary line accounting for all of them."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import SHARED_DATA, run_cli

REAL = SHARED_DATA / "haproxy"


def read_jsonl(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line] if path.exists() else []


@pytest.mark.parametrize("name, args, lines, records, skipped, dead", [
    ("haproxy-doc-configuration-examples.log", [], 17, 10,
     "skipped: 6 (2 tcplog, 2 empty_request, 1 connect_notice, 1 connection_error)", "dead letters: 1 (1 no_match)"),
    ("beats-haproxy-haproxy.log", ["--capture-headers", "Host,X-A,X-B"], 10, 1, "skipped: 0",
     "dead letters: 9 (9 no_match)"),
    ("beats-haproxy-httplog-no-headers.log", [], 4, 3, "skipped: 1 (1 blank_line)", "dead letters: 0"),
    ("beats-haproxy-tcplog.log", ["--format", "tcplog"], 1, 0, "skipped: 1 (1 tcplog)", "dead letters: 0"),
    ("beats-haproxy-default.log", [], 1, 0, "skipped: 1 (1 connect_notice)", "dead letters: 0"),
    ("elastic-integrations-haproxy-test-bad-req.log", [], 1, 0, "skipped: 1 (1 bad_request)", "dead letters: 0"),
    ("elastic-integrations-haproxy-test-https.log", ["--format", "httpslog"], 1, 1, "skipped: 0", "dead letters: 0"),
])
def test_real_files_are_fully_accounted_for(tmp_path, name, args, lines, records, skipped, dead):
    out, dl = tmp_path / "r.jsonl", tmp_path / "dead.jsonl"
    res = run_cli("capture", "haproxy", str(REAL / name), "-o", str(out), "--dead-letter", str(dl), *args)
    assert res.returncode == 0, res.stderr
    summary = res.stderr.decode().strip().splitlines()[-1]
    assert summary == (f"shadowtap capture haproxy: {lines} lines read, {records} records written; "
                       f"{skipped}; {dead}")
    assert len(read_jsonl(out)) == records
    for letter in read_jsonl(dl):
        assert letter["file"] == str(REAL / name) and letter["reason"] == "no_match" and letter["raw"]
        assert letter["line"] >= 1 and letter["offset"] >= 0


def test_records_of_the_doc_examples(tmp_path):
    out = tmp_path / "r.jsonl"
    res = run_cli("capture", "haproxy", str(REAL / "haproxy-doc-configuration-examples.log"), "-o", str(out))
    assert res.returncode == 0
    recs = read_jsonl(out)
    assert [(r["method"], r["target"], r["response"]["status"]) for r in recs][:3] == [
        ("GET", "/image.iso", 200), ("GET", "/index.html", 200), ("GET", "/", 200)]
    assert recs[0]["origin"] == {"kind": "haproxy", "name": str(REAL / "haproxy-doc-configuration-examples.log"),
                                 "pos": 0}
    assert len({r["id"] for r in recs}) == len(recs)
    assert recs[1]["fields"]["captured_request_headers"] == ["1wt.eu"]


def test_dead_letters_do_not_keep_captured_secrets(tmp_path):
    log = tmp_path / "haproxy.log"
    log.write_bytes(
        b"haproxy[1]: 10.0.0.1:1 [06/Feb/2009:12:14:14.655] fe be/s 1/0/0/1/2 200 5 sid=s3cr3tcookie - ---- "
        b'1/1/1/1/0 0/0 {shop.test|Bearer s3cr3ttoken} "GET /a?token=s3cr3tparam HTTP/1.1" extra\n')
    dl = tmp_path / "dead.jsonl"
    res = run_cli("capture", "haproxy", str(log), "-o", str(tmp_path / "r.jsonl"), "--dead-letter", str(dl))
    assert res.returncode == 1  # the only line did not parse
    [letter] = read_jsonl(dl)
    assert letter["reason"] == "no_match" and letter["raw"].startswith("haproxy[1]: 10.0.0.1:1 [")
    everything = dl.read_bytes() + res.stderr + res.stdout
    assert b"s3cr3t" not in everything
