"""Append-only commits (store/layout.py + index/storage.py): a new generation hard-links the committed one's
vector files and adds a segment; a writer SIGKILLed at any step of such a commit leaves the committed
generation intact and queryable, and the next writer commits over its leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.index import VectorIndex
from sarclip_search.index import segments as segments_module
from sarclip_search.store.layout import IndexStore

from helpers import clustered

DIM, FACTORY = 32, "IVF16,PQ8x8"  # PQ: the float32 copy, ids and subset codes are all segmented
XB = clustered(6000, DIM, seed=11)


def _commit(store: IndexStore, start: int, stop: int) -> dict[str, int]:
    """One commit as `index` makes it: stage from CURRENT, load, add rows [start, stop), save."""
    with store.lock(), store.new_generation(copy_current=start > 0) as generation:
        generation.catalog_path.write_bytes(b"catalog %d" % stop)  # stands for the DuckDB file (copied)
        if generation.vectors_path.is_dir():
            vectors = VectorIndex.load(generation.vectors_path)
        else:
            vectors = VectorIndex.create(DIM, FACTORY)
        vectors.add(np.arange(start, stop), XB[start:stop])
        return vectors.save(generation.vectors_path)


def _files(directory: Path) -> dict[str, os.stat_result]:
    return {path.name: path.stat() for path in directory.iterdir()}


def _contents(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Each file's inode, size and mtime: what a write or a replace would change (not its link count)."""
    return {name: (stat.st_ino, stat.st_size, stat.st_mtime_ns) for name, stat in _files(directory).items()}


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> IndexStore:
    # 4 KiB segment blocks (recorded with the chain, kept by later saves: the child's too), so this small
    # index's copy (384 KB) is a chain of several segments, as a large one's is with the default 2 MiB
    monkeypatch.setattr(segments_module, "ALIGN", 4096)
    store = IndexStore(tmp_path / "db")
    _commit(store, 0, 3000)
    _commit(store, 3000, 4000)  # a chain of two segments of the copy
    return store


def test_a_commit_links_unchanged_files_and_writes_only_the_new_rows(store: IndexStore) -> None:
    before = store.current()
    old_files = _files(before.vectors_path)
    reader = VectorIndex.load(before.vectors_path, mmap=True)  # a reader on the committed generation
    xq = XB[:20]
    expected = reader.search(xq, 10)
    written = _commit(store, 4000, 4100)
    after = store.current()
    assert after.number == before.number + 1 and not before.path.exists()  # the old one is removed
    assert written["segments"] < 100 * (DIM * 4 + 8 + 4) + 3 * (4096 + 64)  # the new rows (+ < 4 KiB overlaps)
    new_files = _files(after.vectors_path)
    kept = [name for name in old_files if name.endswith(".seg") and name in new_files]
    assert kept and all(new_files[name].st_ino == old_files[name].st_ino for name in kept)  # linked, not copied
    assert all(new_files[name].st_nlink == 1 for name in kept)  # the old generation's names are gone, data stays
    assert after.catalog_path.read_bytes() == b"catalog 4100"
    loaded = VectorIndex.load(after.vectors_path, mmap=True)
    assert loaded.ntotal == 4100
    np.testing.assert_array_equal(loaded.vectors(np.arange(4100)), XB[:4100])
    for got, want in zip(reader.search(xq, 10), expected):  # the old reader still sees its generation
        np.testing.assert_array_equal(got, want)


def test_catalog_is_copied_not_linked(store: IndexStore) -> None:
    current = store.current()
    with pytest.raises(RuntimeError, match="abandoned"), store.lock(), store.new_generation() as staged:
        assert staged.catalog_path.stat().st_ino != current.catalog_path.stat().st_ino  # DuckDB writes in place
        for name, stat in _files(staged.vectors_path).items():
            assert stat.st_ino == (current.vectors_path / name).stat().st_ino
        raise RuntimeError("abandoned")
    assert store.current() == current and not list(store.root.glob("gen-*.tmp"))
    assert all(stat.st_nlink == 1 for stat in _files(current.vectors_path).values())  # only the links dropped
    assert VectorIndex.load(current.vectors_path, mmap=True).ntotal == 4000


CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from helpers import clustered
    from sarclip_search.index import VectorIndex
    from sarclip_search.store import layout
    from sarclip_search.store.layout import IndexStore

    db, point = sys.argv[1], sys.argv[2]
    real_replace, real_write = os.replace, layout.write_atomic

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def replace(source, target):
        name = os.path.basename(str(target))
        if (point == "segment" and name.endswith(".seg")) or (point == "info" and name == "index_info.json"):
            die()
        if point == "faiss" and name == "vectors.faiss":
            real_replace(source, target)
            die()
        real_replace(source, target)

    def write_atomic(path, data, **kw):
        if point == "current" and os.path.basename(str(path)) == "CURRENT":
            die()
        return real_write(path, data, **kw)

    os.replace = replace
    layout.write_atomic = write_atomic
    if point == "publish":
        layout.publish_dir = lambda staging, target: die()
    xb = clustered(6000, 32, seed=11)
    store = IndexStore(db)
    with store.lock(), store.new_generation() as generation:
        vectors = VectorIndex.load(generation.vectors_path)
        vectors.add(np.arange(4000, 5000), xb[4000:5000])
        vectors.save(generation.vectors_path)
    print("not killed")
""")


@pytest.mark.parametrize("point", ["faiss", "segment", "info", "publish", "current"])
def test_kill_9_during_an_appending_commit_keeps_the_committed_generation(store: IndexStore, point: str) -> None:
    committed = store.current()
    files = _contents(committed.vectors_path)
    reference = VectorIndex.load(committed.vectors_path, mmap=True).search(XB[:5], 3)
    helpers_dir = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(store.root), point, helpers_dir],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, (done.stdout, done.stderr[-2000:])
    assert store.current() == committed  # CURRENT untouched
    assert len(list(store.root.glob("gen-*"))) == 2  # the killed writer's staged (or unpointed) generation
    assert _contents(committed.vectors_path) == files  # not one byte or name of the committed files changed
    loaded = VectorIndex.load(committed.vectors_path, mmap=True)
    assert loaded.ntotal == 4000
    np.testing.assert_array_equal(loaded.vectors(np.arange(4000)), XB[:4000])
    for got, want in zip(loaded.search(XB[:5], 3), reference):  # queryable, the same answers
        np.testing.assert_array_equal(got, want)
    _commit(store, 4000, 5000)  # the next writer removes the leftovers and commits
    assert not list(store.root.glob("gen-*.tmp")) and len(list(store.root.glob("gen-*"))) == 1
    final = VectorIndex.load(store.current().vectors_path, mmap=True)
    np.testing.assert_array_equal(final.vectors(np.arange(5000)), XB[:5000])
