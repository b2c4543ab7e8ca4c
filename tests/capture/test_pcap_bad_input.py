"""Bad capture files: empty, not a capture, missing, truncated, corrupt, unsupported link
type, random bytes and mutated real captures. Each ends with one clear message and the records
that could be read; nothing raises; every packet read is accounted for in the summary."""

from __future__ import annotations

import asyncio
import gzip
import random
import re
import struct

import pytest

from capture.pcap import PacketCaptureOptions, capture_pcap
from shadowtap.streams.memory import MemorySink
from tests.capture.pcap_helpers import capture, summary, tshark
from tests.conftest import SHARED_DATA

PCAP_DIR = SHARED_DATA / "pcap"
THOUSAND = PCAP_DIR / "zeek-1000-requests-one-dropped-response.pcap"
SUMMARY = re.compile(r"(\d+) packets read \((\d+) in HTTP connections, skipped (\d+)")


def accounted(text: str) -> int:
    """Packets read, checked to be the sum of packets in HTTP connections and skipped ones."""
    line = next(x for x in reversed(text.splitlines()) if x.startswith("shadowtap capture pcap: "))
    total, http, skipped = map(int, SUMMARY.search(line).groups())
    assert http + skipped == total, line
    return total


def errors(res) -> list[str]:
    return [line for line in res.stderr.decode().splitlines() if line.startswith("shadowtap: error:")]


def frame_offsets(data: bytes) -> list[int]:
    """Byte offsets of the packet records of a little-endian classic pcap."""
    offsets, pos = [], 24
    while pos + 16 <= len(data):
        offsets.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    return offsets


@pytest.mark.parametrize("content,message", [
    (b"", "is empty: not a pcap or pcapng capture"),
    (b"GET / HTTP/1.1\r\n\r\n" * 3, "is not a pcap or pcapng capture (it starts with 0x47455420)"),
    (b"\xd4\xc3", "is too short to be a pcap or pcapng capture"),
])
def test_files_that_are_no_capture_say_so_in_one_sentence(tmp_path, content, message):
    path = tmp_path / "in.pcap"
    path.write_bytes(content)
    records, res = capture(path, tmp_path / "out.jsonl")
    assert res.returncode == 1 and records == []
    assert errors(res) == [f"shadowtap: error: '{path}' {message}"], res.stderr
    assert b"Traceback" not in res.stderr and accounted(summary(res)) == 0


def test_missing_file_and_directory(tmp_path):
    records, res = capture([tmp_path / "nope.pcap", tmp_path, PCAP_DIR / "zeek-get.pcap"], tmp_path / "out.jsonl")
    assert res.returncode == 1 and len(records) == 1  # the readable file is still read
    assert [e.split(": ", 2)[2] for e in errors(res)] == [
        f"cannot read '{tmp_path / 'nope.pcap'}': No such file or directory",
        f"cannot read '{tmp_path}': is a directory"]


def test_truncated_inside_a_packet_keeps_what_came_before(tmp_path):
    data = THOUSAND.read_bytes()
    offsets = frame_offsets(data)
    cut = offsets[2000] + 16 + 10  # ten bytes into packet 2001
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:cut])
    records, res = capture(path, tmp_path / "out.jsonl")
    assert res.returncode == 1
    (error,) = errors(res)
    assert error.endswith(f"'{path}' is truncated: it ends inside packet 2001 (10 of "
                          f"{struct.unpack_from('<I', data, offsets[2000] + 8)[0]} bytes)")
    assert accounted(summary(res)) == 2001
    full, _ = capture(THOUSAND, tmp_path / "full.jsonl")
    complete = {r["id"] for r in full if r["origin"]["pos"] < 1900 and not r["fields"].get("incomplete")}
    assert complete <= {r["id"] for r in records} and len(records) >= len(complete) > 400


def test_truncated_inside_a_record_header(tmp_path):
    data = THOUSAND.read_bytes()
    cut = frame_offsets(data)[100] + 7
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:cut])
    records, res = capture(path, tmp_path / "out.jsonl")
    assert res.returncode == 1 and records
    assert errors(res)[0].endswith("is truncated: 7 bytes after packet 100 are not a whole packet record")
    assert accounted(summary(res)) == 100


def test_a_corrupt_record_header_stops_the_file_with_the_records_before_it(tmp_path):
    data = bytearray(THOUSAND.read_bytes())
    at = frame_offsets(bytes(data))[300]
    struct.pack_into("<I", data, at + 8, 0x7FFFFFF0)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    records, res = capture(path, tmp_path / "out.jsonl")
    assert res.returncode == 1 and 50 < len(records) < 1000
    assert errors(res)[0].endswith(f"packet 301 has a corrupt record header (length {0x7FFFFFF0} at byte {at}); "
                                   "the rest of the file was not read")
    assert accounted(summary(res)) == 300


def test_truncated_pcapng(tmp_path):
    data = (PCAP_DIR / "zeek-cooper-grill-dvwa.pcapng").read_bytes()
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[:len(data) * 2 // 3])
    records, res = capture(path, tmp_path / "out.jsonl")
    assert res.returncode == 1 and "is truncated or corrupt after packet" in errors(res)[0]
    assert len(records) >= 1 and accounted(summary(res)) > 0


def test_gzip_compressed_capture_reads_like_the_plain_one(tmp_path):
    path = tmp_path / "p.pcap.gz"
    path.write_bytes(gzip.compress((PCAP_DIR / "zeek-pipelined-requests.pcap").read_bytes()))
    records, res = capture(path, tmp_path / "out.jsonl")
    plain, _ = capture(PCAP_DIR / "zeek-pipelined-requests.pcap", tmp_path / "plain.jsonl")
    assert res.returncode == 0
    assert [(r["method"], r["target"], r["response"]["status"]) for r in records] == \
           [(r["method"], r["target"], r["response"]["status"]) for r in plain]


def test_unsupported_link_type(tmp_path):
    data = bytearray((PCAP_DIR / "zeek-get.pcap").read_bytes())
    struct.pack_into("<I", data, 20, 147)  # LINKTYPE_USER0
    path = tmp_path / "user0.pcap"
    path.write_bytes(bytes(data))
    records, res = capture(path, tmp_path / "out.jsonl")
    assert res.returncode == 1 and records == []
    assert errors(res) == [f"shadowtap: error: '{path}': link type 147 (unknown) is not supported"]


def run_in_process(path, capsys) -> tuple[int, list, str]:
    sink = MemorySink()
    code = asyncio.run(capture_pcap((str(path),), PacketCaptureOptions(output="-"), sink=sink))
    err = capsys.readouterr().err
    return code, sink.records, err


@pytest.mark.parametrize("seed", range(12))
def test_random_bytes_are_only_counted_errors(tmp_path, capsys, seed):
    rng = random.Random(seed)
    path = tmp_path / "random.pcap"
    kind = seed % 3
    if kind == 0:  # nothing like a capture
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000)))
    elif kind == 1:  # a valid pcap header, then random packet records of plausible sizes
        body = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, rng.choice([1, 101, 113, 276, 0]))
        for _ in range(rng.randrange(1, 300)):
            frame = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
            body += struct.pack("<IIII", 1, rng.randrange(1000000), len(frame), len(frame)) + frame
        body += bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
    else:  # a pcapng section header, then random bytes
        body = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
        body += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
    path.write_bytes(body)
    code, _, err = run_in_process(path, capsys)
    assert code in (0, 1)
    assert "Traceback" not in err
    accounted(err)


@pytest.mark.parametrize("seed", range(16))
def test_mutated_real_captures_never_crash_and_account_for_every_packet(tmp_path, capsys, seed):
    rng = random.Random(100 + seed)
    source = rng.choice(["zeek-pipelined-requests.pcap", "zeek-100-continue.pcap", "zeek-http-post-large.pcap",
                         "zeek-zero-length-bodies-with-drops.pcap", "zeek-methods.pcap", "zeek-bro.org.pcap"])
    data = bytearray((PCAP_DIR / source).read_bytes())
    offsets = frame_offsets(bytes(data))
    for _ in range(rng.randrange(1, 60)):  # damage packet contents, keep the record framing
        at = rng.choice(offsets)
        length = struct.unpack_from("<I", data, at + 8)[0]
        if length:
            pos = at + 16 + rng.randrange(length)
            data[pos] = rng.randrange(256)
    # Some packets shuffled and some dropped, as a broken capture could have them.
    records_bytes = [bytes(data[o:o + 16 + struct.unpack_from("<I", data, o + 8)[0]]) for o in offsets]
    for _ in range(rng.randrange(0, 5)):
        i, j = rng.randrange(len(records_bytes)), rng.randrange(len(records_bytes))
        records_bytes[i], records_bytes[j] = records_bytes[j], records_bytes[i]
    kept = [r for r in records_bytes if rng.random() > 0.05]
    path = tmp_path / "mutated.pcap"
    path.write_bytes(bytes(data[:24]) + b"".join(kept))
    code, records, err = run_in_process(path, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert accounted(err) == len(kept)
    assert len({r.id for r in records}) == len(records)


def test_tshark_agrees_on_the_packet_count_of_a_damaged_file(tmp_path):
    data = THOUSAND.read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:len(data) // 3])
    _, res = capture(path, tmp_path / "out.jsonl")
    frames = tshark(path, "frame", ["frame.number"], damaged=True)
    # tshark leaves out the partial last packet; it is read here (what it has is used) and the
    # error says the file ends inside it.
    partial = "ends inside packet" in errors(res)[0]
    assert accounted(summary(res)) == len(frames) + partial
