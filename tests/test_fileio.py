"""Atomic writes (idcompress.fileio): whole or old, normal permissions, no temporaries left."""

import os
import stat

import pytest

from idcompress.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, writing


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_the_umask_mode_and_overwrite_keeps_the_old_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "one")
        assert _mode(tmp_path / "a.txt") == 0o640  # not mkstemp's 0600
        os.chmod(tmp_path / "a.txt", 0o604)
        atomic_write_bytes(tmp_path / "a.txt", b"two")
        assert _mode(tmp_path / "a.txt") == 0o604
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"x": 1})
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"x": float("nan")})  # NaN is refused
    with pytest.raises(RuntimeError), writing(tmp_path / "r.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert (tmp_path / "r.json").read_text() == '{\n  "x": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_writing_a_folder_replaces_a_non_empty_one(tmp_path):
    old = os.umask(0o022)
    try:
        for text in ("first", "second"):
            with writing(tmp_path / "ckpt", directory=True) as tmp:
                (tmp / "f.txt").write_text(text)
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt" / "f.txt").read_text() == "second"
    assert _mode(tmp_path / "ckpt") == 0o755 and _mode(tmp_path / "ckpt" / "f.txt") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
