import os

import pytest

from kdq_tf import files


def test_atomic_write_replaces_and_keeps_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        p = files.write_bytes(tmp_path / "a" / "m.bin", b"one")
        files.write_bytes(p, b"two")
    finally:
        os.umask(old)
    assert p.read_bytes() == b"two"
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)
    assert [f.name for f in p.parent.iterdir()] == ["m.bin"]  # no temp files left


def test_failed_write_leaves_old_file(tmp_path):
    p = files.write_text(tmp_path / "x.json", "{}")
    with pytest.raises(TypeError):
        files.write_bytes(p, 12345)  # fails inside write(), after the temp file exists
    assert p.read_text() == "{}" and len(list(tmp_path.iterdir())) == 1
