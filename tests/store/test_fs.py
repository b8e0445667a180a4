"""sarclip_search._fs: all-or-nothing writes of files and folders, sha256 of files and bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sarclip_search._fs import atomic_file, bytes_sha256, file_sha256, publish_dir, write_atomic


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.mark.parametrize("unique", [True, False])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, unique):
    target = tmp_path / "info.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk gone"), atomic_file(target, unique=unique) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("disk gone")
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["info.json"]


def test_unique_temporaries_are_readable_by_all_and_gone_after(tmp_path):
    old_umask = os.umask(0o077)  # a private umask must not make a result file private
    try:
        path = write_atomic(tmp_path / "hits.json", b"{}")
    finally:
        os.umask(old_umask)
    assert path == tmp_path / "hits.json" and path.read_bytes() == b"{}"
    assert path.stat().st_mode & 0o777 == 0o644
    assert listing(tmp_path) == ["hits.json"]


def test_a_fixed_temporary_left_by_a_killed_writer_is_overwritten(tmp_path):
    (tmp_path / ".CURRENT.tmp").write_bytes(b"gen-000001 (killed half way")
    with atomic_file(tmp_path / "CURRENT", unique=False) as temporary:
        assert temporary.name == ".CURRENT.tmp"
        temporary.write_bytes(b"gen-000002\n")
    assert (tmp_path / "CURRENT").read_bytes() == b"gen-000002\n"
    assert listing(tmp_path) == ["CURRENT"]


def test_publish_dir_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "encoders" / "abc"
    target.mkdir(parents=True)
    (target / "stale.onnx").write_bytes(b"damaged")
    staging = tmp_path / "encoders" / ".abc.tmp"
    (staging / "sub").mkdir(parents=True)
    (staging / "text.onnx").write_bytes(b"new")
    (staging / "sub" / "deep.bin").write_bytes(b"deep")
    publish_dir(staging, target)
    assert listing(tmp_path / "encoders") == ["abc"]  # no staging, no stale copy left
    assert listing(target) == ["sub", "text.onnx"] and (target / "sub" / "deep.bin").read_bytes() == b"deep"


def test_sha256_of_a_file_and_of_bytes_agree(tmp_path):
    data = os.urandom(3 << 20)  # more than one read block
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(data)
    assert file_sha256(path) == bytes_sha256(data) == hashlib.sha256(data).hexdigest()
    assert bytes_sha256(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
