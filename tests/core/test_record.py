"""The v1 wire codec: round trips, version checks, unknown keys, non-UTF-8 targets."""

import orjson
import pytest

from shadowtap.errors import RecordError, VersionError
from shadowtap.record import (
    Origin,
    Outcome,
    Record,
    Response,
    decode_outcome,
    decode_record,
    decode_target,
    encode_outcome,
    encode_record,
    record_to_dict,
)


def full_record() -> Record:
    return Record(
        id="abc-1", ts=1764265200.123456, method="GET", target="/a?b=1", version="HTTP/1.1",
        host="shop.test", headers=(("User-Agent", "x"), ("X-Dup", "1"), ("X-Dup", "2")),
        body=b"\x00\xffbody", client="10.0.0.1", session="s1",
        origin=Origin("nginx", "access.log", 42),
        response=Response(status=200, elapsed_ms=12.5, bytes=3, headers=(("Server", "n"),), body=b"ok"),
        fields={"upstream_addr": "127.0.0.1:80, 127.0.0.2:80"},
    )


def test_round_trip_keeps_every_field():
    rec = full_record()
    assert decode_record(encode_record(rec)) == rec


def test_wire_names_are_the_public_contract():
    wire = orjson.loads(encode_record(full_record()))
    assert set(wire) == {"v", "id", "ts", "method", "target", "version", "host", "headers", "body",
                         "client", "session", "origin", "response", "fields"}
    assert wire["v"] == 1
    assert wire["headers"] == [["User-Agent", "x"], ["X-Dup", "1"], ["X-Dup", "2"]]
    assert wire["body"] == "AP9ib2R5"
    assert wire["origin"] == {"kind": "nginx", "name": "access.log", "pos": 42}
    assert wire["response"]["status"] == 200


def test_newer_version_asks_for_an_upgrade():
    wire = record_to_dict(full_record()) | {"v": 2}
    with pytest.raises(VersionError, match="upgrade shadowtap"):
        decode_record(orjson.dumps(wire))


def test_unknown_keys_are_kept_in_fields():
    wire = record_to_dict(full_record()) | {"trace_id": "t-9"}
    rec = decode_record(orjson.dumps(wire))
    assert rec.fields["trace_id"] == "t-9"
    assert rec.fields["upstream_addr"] == "127.0.0.1:80, 127.0.0.2:80"


@pytest.mark.parametrize("line, message", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"id": "x"}', "no format version"),
    (b'{"v": 1, "id": "x", "ts": 1}', "missing required field 'method'"),
    (b'{"v": 1, "id": "x", "ts": 1, "method": "GET", "target": "/", "body": "***"}', "base64"),
])
def test_bad_lines_raise_record_errors(line, message):
    with pytest.raises(RecordError, match=message):
        decode_record(line)


def test_non_utf8_target_is_percent_escaped_with_exact_raw_bytes():
    raw = b"/caf\xe9?q=\xff\xfe&ok=\xc3\xa9"
    target, target_raw = decode_target(raw)
    assert target == "/caf%E9?q=%FF%FE&ok=é"
    assert target_raw == raw
    rec = Record(id="1", ts=0.0, method="GET", target=target, target_raw=target_raw)
    back = decode_record(encode_record(rec))
    assert back.target_bytes == raw
    assert decode_target(b"/plain")[1] is None


def test_outcome_latencies_and_round_trip():
    o = Outcome(id="r1", target="t1", url="http://127.0.0.1:1/x", intended=100.0, sent=100.25,
                done=100.5, status=200, bytes=3, method="GET", path="/x")
    wire = orjson.loads(encode_outcome(o))
    assert wire["latency_ms"] == 250.0
    assert wire["corrected_ms"] == 500.0
    assert decode_outcome(encode_outcome(o)) == o
