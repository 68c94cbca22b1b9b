"""The one atomic writer: whole files with the usual permissions, nothing left behind on failure."""

import os
import stat

import pytest

from autocolor.atomic import atomic_open, atomic_write_bytes
from autocolor.checkpoint import atomic_write_bytes as checkpoint_atomic_write_bytes


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_get_0644_under_umask_022_not_mkstemps_0600(tmp_path, umask_022):
    atomic_write_bytes(tmp_path / "a.bin", b"data")
    with atomic_open(tmp_path / "b.jpg") as f:
        f.write(b"streamed")
    assert _mode(tmp_path / "a.bin") == 0o644
    assert _mode(tmp_path / "b.jpg") == 0o644
    assert (tmp_path / "b.jpg").read_bytes() == b"streamed"


def test_the_umask_is_respected(tmp_path):
    previous = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "private", b"x")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "private") == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "manifest.csv"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="encoder broke"):
        with atomic_open(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("encoder broke")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "text is not bytes")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]


def test_missing_folders_are_made_and_checkpoint_keeps_its_import(tmp_path):
    checkpoint_atomic_write_bytes(tmp_path / "deep" / "er" / "latest", b"step-000000001")
    assert (tmp_path / "deep" / "er" / "latest").read_text() == "step-000000001"
    assert checkpoint_atomic_write_bytes is atomic_write_bytes


def test_photo_corpus_files_are_world_readable(tmp_path, umask_022):
    from PIL import Image

    from autocolor.photos import save_jpeg, write_manifest

    save_jpeg(Image.new("RGB", (8, 8), (120, 60, 30)), tmp_path / "test" / "p.jpg")
    write_manifest(tmp_path / "manifest.csv", [])
    assert _mode(tmp_path / "test" / "p.jpg") == 0o644
    assert _mode(tmp_path / "manifest.csv") == 0o644
    assert (tmp_path / "manifest.csv").read_text().startswith("split,file,")
