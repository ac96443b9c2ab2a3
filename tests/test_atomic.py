"""Atomic writes: a failed write leaves the previous file and no temp file behind."""

import pytest

from care_core import atomic


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "results.json"
    atomic.write_json(target, {"step": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text('{"step": 2, "half')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "step": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]


def test_text_round_trip_keeps_undecodable_path_bytes(tmp_path):
    name = "CaFE/Col\udc8are/01-C-1-1.wav"  # a CP437 byte as Python's surrogateescape gives it
    atomic.write_text(tmp_path / "m.csv", name, errors="surrogateescape")
    assert (tmp_path / "m.csv").read_text(errors="surrogateescape") == name
