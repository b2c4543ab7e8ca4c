"""capture.follow: reading files once from a checkpoint, and following them across rename and
copytruncate rotation, identified by fingerprint, with every line read exactly once."""

from __future__ import annotations

import gzip
import os
import shutil
import time

import pytest

import capture.follow as follow
from capture.checkpoint import Checkpoint
from capture.follow import Follower, read_once


def line(n: int) -> bytes:
    return b"line %06d of the log\n" % n


def poll(follower: Follower) -> list[tuple[str, str, int, bytes]]:
    """(path, fingerprint, offset, line) of everything one poll yields (partials with their reason)."""
    out = []
    for chunk in follower.poll():
        offset = chunk.offset
        for text in chunk.lines:
            out.append((chunk.source.name, chunk.source.fingerprint, offset, text))
            offset += len(text) + 1
        if chunk.partial is not None:
            out.append((chunk.source.name, chunk.source.fingerprint, offset, chunk.partial_reason.encode()))
    return out


def texts(items) -> list[bytes]:
    return [item[3] for item in items]


def make_follower(pattern, checkpoint=None, grace=30.0) -> tuple[Follower, list[str]]:
    events: list[str] = []
    return Follower((str(pattern),), checkpoint or Checkpoint(None), report=events.append, grace=grace), events


def test_a_growing_file_yields_complete_lines_with_their_offsets(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(line(1) + line(2) + b"line 0000")
    follower, _ = make_follower(log)
    first = poll(follower)
    assert texts(first) == [line(1)[:-1], line(2)[:-1]] and [i[2] for i in first] == [0, len(line(1))]
    assert poll(follower) == []
    with open(log, "ab") as f:
        f.write(b"03 of the log\n" + line(4))
    assert texts(poll(follower)) == [line(3)[:-1], line(4)[:-1]]
    assert follower.unread() == 0
    follower.close()


def test_rename_rotation_finishes_the_old_file_first(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(line(1))
    follower, events = make_follower(tmp_path / "access.log*")
    [(_, old_fp, _, _)] = poll(follower)
    writer = open(log, "ab")  # the server's descriptor: it keeps writing to the renamed file
    os.rename(log, tmp_path / "access.log.1")
    log.write_bytes(line(10) + line(11))
    writer.write(line(2) + line(3))
    writer.close()
    items = poll(follower)
    assert texts(items) == [line(2)[:-1], line(3)[:-1], line(10)[:-1], line(11)[:-1]]
    assert {i[1] for i in items[:2]} == {old_fp} and items[0][0] == str(tmp_path / "access.log.1")
    assert items[2][1] != old_fp and items[2][2] == 0
    assert follower.events["renamed"] == 1 and any("renamed" in e for e in events)
    follower.close()


def test_a_renamed_file_outside_the_pattern_is_read_until_it_is_quiet(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(line(1))
    follower, _ = make_follower(log, grace=0.2)
    poll(follower)
    writer = open(log, "ab")
    os.rename(log, tmp_path / "rotated")
    log.write_bytes(line(10))
    writer.write(line(2) + b"torn")
    writer.close()
    assert texts(poll(follower)) == [line(2)[:-1], line(10)[:-1]]
    assert follower.followed() == 2
    deadline = time.monotonic() + 5
    items = []
    while follower.followed() == 2 and time.monotonic() < deadline:
        items += poll(follower)
        time.sleep(0.05)
    assert texts(items) == [b"torn_line"]  # the unterminated end, shipped when the file is given up
    assert follower.followed() == 1 and follower.events["closed"] == 1
    follower.close()


def test_copytruncate_continues_from_the_copy_without_loss_or_repeat(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(line(1) + line(2))
    follower, events = make_follower(tmp_path / "access.log*")
    first = poll(follower)
    fp = first[0][1]
    with open(log, "ab") as f:
        f.write(line(3))
    shutil.copyfile(log, tmp_path / "access.log.1")  # a stale copy: a standby while the original is read
    first += poll(follower)
    assert texts(first)[-1] == line(3)[:-1] and follower.events["standby"] == 1
    with open(log, "ab") as f:
        f.write(line(4) + line(5))  # not read yet when the rotation happens
    shutil.copyfile(log, tmp_path / "access.log.1")
    os.truncate(log, 0)
    with open(log, "ab") as f:
        f.write(line(20))
    items = first + poll(follower)
    assert texts(items).count(line(3)[:-1]) == 1
    assert texts(items) == [line(n)[:-1] for n in (1, 2, 3, 4, 5, 20)]
    old = [i for i in items if i[1] == fp]
    assert [i[2] for i in old] == [n * len(line(0)) for n in range(5)]  # one file, one offset sequence
    assert follower.events["truncated"] == 1 and any("truncated" in e for e in events)
    follower.close()


def test_a_restart_resumes_at_the_confirmed_position(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(line(1) + line(2))
    cp_path = tmp_path / "cp.json"
    follower, _ = make_follower(log, Checkpoint(str(cp_path)))
    poll(follower)
    follower.checkpoint.confirm()
    follower.checkpoint.save()
    with open(log, "ab") as f:
        f.write(line(3))
    poll(follower)  # read but never confirmed: this process "dies" here
    follower.close()
    again, events = make_follower(log, Checkpoint(str(cp_path)))
    items = poll(again)
    assert texts(items) == [line(3)[:-1]] and items[0][2] == 2 * len(line(0))
    assert any("resuming" in e for e in events)
    again.close()


def test_new_files_matching_the_glob_are_picked_up_and_gz_is_not_followed(tmp_path):
    follower, events = make_follower(tmp_path / "*.log*")
    assert poll(follower) == []
    (tmp_path / "a.log").write_bytes(line(1))
    (tmp_path / "old.log.2.gz").write_bytes(gzip.compress(line(0)))
    assert texts(poll(follower)) == [line(1)[:-1]]
    (tmp_path / "b.log").write_bytes(line(2))
    assert texts(poll(follower)) == [line(2)[:-1]]
    assert any("old.log.2.gz" in e for e in events)
    follower.close()


def test_a_line_longer_than_the_maximum_is_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(follow, "MAX_LINE", 64)
    monkeypatch.setattr(follow, "CHUNK", 64)
    log = tmp_path / "access.log"
    log.write_bytes(b"x" * 100 + b"\n" + line(1))
    follower, _ = make_follower(log)
    items = poll(follower)
    assert texts(items)[0] == b"line_too_long" and items[0][2] == 0
    assert texts(items)[-1] == line(1)[:-1] and items[-1][2] == 101
    follower.close()


def test_read_once_resumes_from_the_checkpoint_file_only(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(line(1) + line(2) + line(3))
    cp_path = tmp_path / "cp.json"
    cp = Checkpoint(str(cp_path))
    chunks = list(read_once(str(log), cp))
    assert [c.lines for c in chunks] == [[line(n)[:-1] for n in (1, 2, 3)]]
    cp.confirm()
    cp.save()
    with open(log, "ab") as f:
        f.write(line(4) + b"torn")
    chunks = list(read_once(str(log), Checkpoint(str(cp_path))))
    assert [(c.offset, c.lines, c.partial) for c in chunks] == [(3 * len(line(0)), [line(4)[:-1]], None),
                                                              (4 * len(line(0)), [], b"torn")]
    copy = tmp_path / "copy.log"
    shutil.copyfile(log, copy)  # same first line, same fingerprint: read whole in the same run
    assert sum(len(c.lines) for c in read_once(str(copy), cp)) == 4


@pytest.mark.parametrize("size", [1, 1023, 1024, 5000])
def test_fingerprints_need_the_first_line_or_1024_bytes(size):
    head = b"a" * size
    expected = None if size < 1024 else follow.fingerprint(head[:1024])
    assert follow.first_line_fingerprint(head, at_end=False) == expected
    assert follow.first_line_fingerprint(head + b"\nmore", at_end=False) == follow.fingerprint((head + b"\n")[:1024])
    assert follow.first_line_fingerprint(b"", at_end=True) is None


def test_a_truncated_file_that_starts_with_the_same_line_again_is_read_from_its_start(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(line(1) + line(2) + line(3))
    follower, _ = make_follower(log)
    assert len(poll(follower)) == 3
    os.truncate(log, 0)
    log.write_bytes(line(1) + line(9))  # same first line, so the same fingerprint
    assert texts(poll(follower)) == [line(1)[:-1], line(9)[:-1]]
    assert poll(follower) == []
    follower.close()


def test_a_truncated_file_that_grew_past_the_old_position_is_noticed_by_its_first_line(tmp_path):
    log = tmp_path / "access.log"
    log.write_bytes(line(1) + line(2))
    follower, _ = make_follower(log)
    assert len(poll(follower)) == 2
    with open(log, "r+b") as f:  # truncate and write more than before, between two polls
        f.truncate(0)
        f.write(b"".join(line(n) for n in range(10, 15)))
    assert texts(poll(follower)) == [line(n)[:-1] for n in range(10, 15)]
    assert follower.events["truncated"] == 1
    follower.close()
