"""Files written all or nothing, and sha256 digests: the only copies in the core.

Every file the core writes for others to read (info.json and CURRENT of an index directory,
checkpoints, query results, thumbnails) is written to a temporary name in the same folder, fsynced,
then renamed over its final name (`atomic_file`, `write_atomic`): a reader sees the old file or the new
one, never half of one, and a crash leaves the old one in place. Folders (a generation of an index
directory, an ONNX export) are written under a temporary name and renamed into place (`publish_dir`).

`sarclip_search.index` keeps its own (one) atomic save in `index/storage.py`: it imports nothing of the
core (tests/system/test_layering.py). This module imports nothing of sarclip_search either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHARED_FILE_MODE = 0o644  # a fresh temporary file is private (0600); what we publish is readable by all


def fsync_dir(path: str | Path) -> None:
    """Make the renames in a folder durable (its entry list reaches the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_files(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def publish_dir(staging: str | Path, target: str | Path) -> None:
    """Rename the complete folder `staging` to `target` at once: every file in it fsynced first, a folder
    already at `target` moved aside (`.NAME.PID.old`) and deleted, the parent folder fsynced after."""
    staging, target = Path(staging), Path(target)
    _fsync_files(staging)
    if target.exists():
        stale = target.with_name(f".{target.name}.{os.getpid()}.old")
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(staging, target)
    fsync_dir(target.parent)


@contextmanager
def atomic_file(path: str | Path, *, unique: bool = True) -> Iterator[Path]:
    """A temporary path beside `path` for the caller to write; on a normal exit it is fsynced and renamed
    over `path`, on an exception deleted (`path` untouched).

    `unique` (default): a fresh name per call (`.NAME.XXXX.tmp`, made readable by all), for writers that
    may run at the same time (two queries writing one result file). `unique=False`: the fixed name
    `.NAME.tmp`, created by the caller (usual permissions), for writers that hold a lock or own the file:
    a killed run leaves one file that the next run overwrites.
    """
    target = Path(path)
    if unique:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        temporary = Path(name)
        os.chmod(temporary, SHARED_FILE_MODE)
    else:
        temporary = target.with_name(f".{target.name}.tmp")
    try:
        yield temporary
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes, *, unique: bool = True) -> Path:
    """Write `data` to `path` all or nothing (`atomic_file`); returns `path` as a Path."""
    target = Path(path)
    with atomic_file(target, unique=unique) as temporary:
        temporary.write_bytes(data)
    return target


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes: checkpoints, archive files, written thumbnails."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    """sha256 (hex) of bytes in memory (a file about to be written, a canonical JSON text)."""
    return hashlib.sha256(data).hexdigest()
