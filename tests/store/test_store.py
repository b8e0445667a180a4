"""The index directory: atomic generations, the writer lock, self-describing info.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.errors import ArtifactMismatchError, IndexNotFoundError, LockedError
from sarclip_search.index import VectorIndex
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.query.engine import Engine
from sarclip_search.store.layout import CURRENT_FILE, INFO_FORMAT_VERSION, LOCK_FILE, IndexStore

from helpers import copy_index


def generation_dirs(db: Path) -> list[str]:
    return sorted(p.name for p in db.glob("gen-*"))


def snapshot(db: Path) -> tuple[str, dict, list[tuple[int, float]]]:
    """(CURRENT, counts, top-3 hits of tile 1's own vector): what a reader sees."""
    with Engine.open(db) as engine:
        first = int(engine.vectors.ids()[0])
        hits = engine.search_vector(engine.vectors.vectors([first])[0], k=3)
        return (
            (db / CURRENT_FILE).read_text(),
            {**engine.catalog.counts(), "vectors": engine.vectors.ntotal},
            [(hit.id, round(hit.score, 4)) for hit in hits],
        )


@pytest.fixture
def db_copy(indexed_db, tmp_path) -> Path:
    """A private copy of the indexed fixture's index directory (queries only: its archive root is elsewhere)."""
    return copy_index(indexed_db[0], tmp_path / "db")


@pytest.fixture
def small_index(tmp_path, fixture_archive, checkpoint, sarclip) -> tuple[Path, Path]:
    """(archive, db): two PNG chips (no manifest) indexed; cheap enough to build per test."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("chip_ship_0001.png", "chip_field_0001.png"):
        shutil.copy2(fixture_archive / "chips" / name, archive / name)
    db = tmp_path / "db"
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
    assert report.indexed == 2 and not report.failed
    return archive, db


# --- atomic generations -----------------------------------------------------------------------------------


def test_exception_inside_new_generation_keeps_the_committed_one(db_copy):
    before = snapshot(db_copy)
    gens = generation_dirs(db_copy)
    store = IndexStore(db_copy)
    with pytest.raises(RuntimeError, match="crash"), store.lock(), store.new_generation() as staging:
        assert staging.path.name.endswith(".tmp")
        assert staging.catalog_path.is_file() and staging.vectors_path.is_dir()  # staged from the committed one
        committed = store.require_current().vectors_path
        for path in staging.vectors_path.iterdir():  # hard links, read-only: never written in place
            assert path.stat().st_ino == (committed / path.name).stat().st_ino and not path.stat().st_mode & 0o222
        # a save that dies half way, as saves write: a new temporary file, and a segment renamed into place
        (staging.vectors_path / ".vectors.faiss.x1.tmp").write_bytes(b"half written")
        (staging.vectors_path / "vectors_f16.000009.seg").write_bytes(b"half written")
        with open(staging.catalog_path, "r+b") as catalog:  # the catalog is a copy: DuckDB writes it in place
            catalog.write(b"half written")
        raise RuntimeError("crash while writing")
    assert snapshot(db_copy) == before
    assert generation_dirs(db_copy) == gens  # staging removed, committed generation kept


def test_interrupted_writer_leftovers_are_removed_by_the_next_write(db_copy):
    before = snapshot(db_copy)
    leftover = db_copy / "gen-000099.tmp"  # what a killed writer leaves behind
    (leftover / "vectors").mkdir(parents=True)
    assert snapshot(db_copy) == before  # readers ignore it

    store = IndexStore(db_copy)
    with store.lock(), store.new_generation() as staging:
        vectors = VectorIndex.load(staging.vectors_path)
        vectors.save(staging.vectors_path)
        shutil.copy2(store.require_current().info_path, staging.info_path)
    assert not list(db_copy.glob("*.tmp")) and not list(db_copy.glob(".*.tmp"))
    assert len(generation_dirs(db_copy)) == 1  # the old generation was removed after the switch
    current, counts, hits = snapshot(db_copy)
    assert current != before[0] and (counts, hits) == before[1:]


def test_current_naming_a_missing_generation_is_an_index_error(db_copy):
    (db_copy / CURRENT_FILE).write_text("gen-000777\n")
    with pytest.raises(IndexNotFoundError, match="--rebuild"):
        Engine.open(db_copy)


def test_no_index_is_an_index_error(tmp_path):
    with pytest.raises(IndexNotFoundError, match="sarsearch index"):
        Engine.open(tmp_path / "nothing")


def test_failed_index_run_leaves_previous_generation(small_index, checkpoint, sarclip, fixture_archive, monkeypatch):
    archive, db = small_index
    before = snapshot(db)
    shutil.copy2(fixture_archive / "kompsat5" / "K5_ES_GTC_HH_20150603T171436_nocrs_tiny.tif", archive / "k5.tif")

    def failing_save(self, directory):
        (Path(directory) / ".vectors.faiss.x1.tmp").write_bytes(b"half written")  # a save that dies half way
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(VectorIndex, "save", failing_save)
        with pytest.raises(OSError, match="No space left"):
            index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))

    assert snapshot(db) == before
    assert before[1] == {"scenes": 2, "tiles": 2, "vectors": 2}
    assert not list(db.glob("*.tmp"))
    # the next run picks the new file up as if nothing had happened
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
    assert (report.indexed, report.unchanged, report.totals["vectors"]) == (1, 2, 3)


def test_reader_of_an_old_generation_keeps_working(small_index, checkpoint, sarclip, fixture_archive):
    archive, db = small_index
    engine = Engine.open(db)
    try:
        ids = engine.vectors.ids()
        expected = [hit.id for hit in engine.search_vector(engine.vectors.vectors(ids[:1])[0], k=2)]
        shutil.copy2(fixture_archive / "kompsat5" / "K5_ES_GTC_HH_20150603T171436_nocrs_tiny.tif", archive / "k5.tif")
        index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
        assert not engine.generation.path.exists()  # replaced and deleted
        hits = engine.search_vector(engine.vectors.vectors(ids[:1])[0], k=2)
        assert [hit.id for hit in hits] == expected
        assert all(hit.path for hit in hits)  # catalog rows still readable
    finally:
        engine.close()
    with Engine.open(db) as fresh:
        assert fresh.vectors.ntotal == 3


# --- the writer lock ------------------------------------------------------------------------------------------


def test_second_writer_in_the_same_process_is_locked_out(tmp_path):
    first, second = IndexStore(tmp_path / "db"), IndexStore(tmp_path / "db")
    with first.lock():  # noqa: SIM117 - the comment below belongs between the two
        # flock locks belong to the open file description: a second open() conflicts even in one process
        with pytest.raises(LockedError, match="another"):
            with second.lock():
                pass
    with second.lock():  # released on exit
        pass


def test_second_writer_waits_then_gives_up(tmp_path):
    import time

    first, second = IndexStore(tmp_path / "db"), IndexStore(tmp_path / "db")
    with first.lock():
        started = time.monotonic()
        with pytest.raises(LockedError), second.lock(wait=0.5):
            pass
        assert time.monotonic() - started >= 0.5


def test_lock_held_by_another_process(tmp_path, indexed_db, sarclip):
    db = tmp_path / "db"
    db.mkdir()
    holder = textwrap.dedent(
        f"""
        import fcntl, sys, time
        handle = open({str(db / LOCK_FILE)!r}, "a+")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.readline()
        """
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError), IndexStore(db).lock():
            pass
        _, archive, checkpoint = indexed_db
        with pytest.raises(LockedError):
            index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
        assert not (db / CURRENT_FILE).exists()
    finally:
        process.communicate("\n", timeout=10)
    with IndexStore(db).lock():  # the holder exited
        pass


# --- info.json --------------------------------------------------------------------------------------------


def test_index_of_another_format_version_is_refused(db_copy):
    info_path = IndexStore(db_copy).require_current().info_path
    info = json.loads(info_path.read_text())
    assert info["format_version"] == INFO_FORMAT_VERSION
    info["format_version"] = INFO_FORMAT_VERSION + 1
    info_path.write_text(json.dumps(info))
    with pytest.raises(ArtifactMismatchError, match="rebuild"):
        Engine.open(db_copy)
    with pytest.raises(ArtifactMismatchError):
        IndexStore(db_copy).require_current().read_info()


def test_info_describes_the_index(indexed_db, sarclip):
    db, archive, checkpoint = indexed_db
    info = IndexStore(db).require_current().read_info()
    assert info["model"]["checkpoint_sha256"] == sarclip.checkpoint_sha256
    assert info["model"]["checkpoint_path"] == str(checkpoint)
    assert info["embedding"] == {"dim": sarclip.embed_dim, "metric": info["embedding"]["metric"], "normalized": "l2",
                                 "dtype": "float32"}
    assert info["counts"] == {"scenes": 10, "tiles": 10, "vectors": 10}
    assert info["index"]["ntotal"] == 10
    assert info["archive_root"] == str(archive.resolve())


def test_unreadable_info_is_an_index_error(db_copy):
    IndexStore(db_copy).require_current().info_path.write_text("{not json")
    with pytest.raises(IndexNotFoundError, match="--rebuild"):
        Engine.open(db_copy)


def test_size_bytes_counts_the_committed_generation(db_copy):
    size = IndexStore(db_copy).size_bytes()
    assert size > 0
    assert IndexStore(db_copy.parent / "none").size_bytes() == 0
    assert np.isclose(size, sum(p.stat().st_size for p in IndexStore(db_copy).require_current().path.rglob("*")
                                if p.is_file()))
