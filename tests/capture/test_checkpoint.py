"""capture.checkpoint: versioned, atomically written positions; read vs confirmed."""

from __future__ import annotations

import orjson
import pytest

from capture.checkpoint import KIND, MAX_ENTRIES, VERSION, Checkpoint
from shadowtap.errors import InputError, UsageError


def test_only_confirmed_positions_are_saved_and_resumed(tmp_path):
    path = tmp_path / "cp.json"
    cp = Checkpoint(str(path))
    cp.advance("aaa", 100, 3, "/log/a")
    assert cp.lag() == 100
    cp.save()
    assert orjson.loads(path.read_bytes())["files"] == {}  # read, not confirmed
    assert cp.confirm() and cp.lag() == 0
    cp.save()
    cp.advance("aaa", 250, 7, "/log/a.1")
    cp.save()
    data = orjson.loads(path.read_bytes())
    assert data["kind"] == KIND and data["version"] == VERSION
    assert data["files"]["aaa"]["offset"] == 100 and data["files"]["aaa"]["line"] == 3
    again = Checkpoint(str(path))
    assert again.saved["aaa"].offset == 100 and again.resume("aaa").offset == 100
    assert again.resume("bbb") is None
    assert not (tmp_path / "cp.json.tmp").exists()
    assert cp.confirm() is True and cp.confirm() is False  # whether anything moved


def test_newer_corrupt_or_foreign_checkpoints_are_errors_naming_the_file(tmp_path):
    path = tmp_path / "cp.json"
    for content, words in [
        (orjson.dumps({"kind": KIND, "version": VERSION + 1, "files": {}}), "upgrade shadowtap"),
        (b"{not json", "move it away"),
        (orjson.dumps({"hello": 1}), "not a shadowtap checkpoint"),
        (orjson.dumps({"kind": KIND, "version": 1, "files": {"x": {"offset": "z"}}}), "malformed entry"),
    ]:
        path.write_bytes(content)
        with pytest.raises(InputError) as e:
            Checkpoint(str(path))
        assert str(path) in e.value.message and words in e.value.message
    with pytest.raises(UsageError) as e:
        Checkpoint(str(tmp_path / "missing-dir" / "cp.json"))
    assert "missing-dir" in e.value.message


def test_old_entries_are_pruned(tmp_path):
    cp = Checkpoint(str(tmp_path / "cp.json"))
    for i in range(MAX_ENTRIES + 10):
        cp.advance(f"fp{i}", i + 1, 1, "x")
    cp.confirm()
    assert len(cp.read) == MAX_ENTRIES and "fp0" not in cp.read and f"fp{MAX_ENTRIES + 9}" in cp.confirmed
