"""The filter columns are built when a generation is committed (store/column_arrays.py `build_at_commit`, called by
`IndexStore.new_generation`): after `index` they lie in the generation and the first filtered query maps them
instead of building them; a build that fails or is killed never costs the committed generation."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sarclip_search.ingest.indexer import index_archive
from sarclip_search.query.engine import Engine
from sarclip_search.store import column_arrays
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.column_arrays import COLUMNS, FOLDER, ColumnArrays
from sarclip_search.store.filters import Filters, build_predicate
from sarclip_search.store.layout import IndexStore

CHIPS = {"chip_ship_0001.png": "ship", "chip_field_0001.png": "field"}


def duckdb_ids(catalog: Catalog, filters: Filters) -> list[int]:
    predicate = build_predicate(filters, catalog.columns())
    return sorted(int(i) for i in catalog.tile_ids(predicate.sql, predicate.params))


@pytest.fixture
def db(tmp_path: Path, fixture_archive: Path, checkpoint: Path, sarclip) -> Path:
    """Two PNG chips indexed, with a manifest giving their label, dataset and split."""
    archive = tmp_path / "archive"
    archive.mkdir()
    lines = ["path,dataset,split,label,sensor"]
    for name, label in CHIPS.items():
        shutil.copy2(fixture_archive / "chips" / name, archive / name)
        lines.append(f"{name},chips,train,{label},Sentinel-1A")
    (archive / "manifest.csv").write_text("\n".join(lines) + "\n")
    db = tmp_path / "db"
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
    assert report.indexed == 2 and not report.failed
    return db


def _records(generation: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in (generation / FOLDER).glob("*.json")}


def _no_build(self, column):
    raise AssertionError(f"filter column {column} built by a query")


def test_index_commits_the_filter_columns_and_the_first_query_maps_them(db: Path, monkeypatch) -> None:
    generation = IndexStore(db).require_current().path
    records = _records(generation)
    assert len(records) == len(COLUMNS)  # one record per column, every one made by this generation's catalog
    assert {record["column"] for record in records.values()} == set(COLUMNS)
    assert all(record["stamp"]["generation"] == generation.name for record in records.values())  # not "...tmp"
    monkeypatch.setattr(ColumnArrays, "_build", _no_build)
    with Engine.open(db) as engine:
        for filters in (Filters(label="ship", split="train"), Filters(dataset="chips", bbox=(-180, -90, 180, 90)),
                        Filters(sensor="TINEL", after="2000-01-01", min_objects=0)):
            assert engine.filter_ids(filters).tolist() == duckdb_ids(engine.catalog, filters)
        filters = Filters(label="ship")
        found = engine.filter_ids(filters)
        assert found.tolist() == duckdb_ids(engine.catalog, filters) and len(found)
        hits = engine.query("a ship", filters=filters, k=3)
        assert hits and {hit.id for hit in hits} <= set(found.tolist())


def test_a_failed_build_commits_without_the_arrays_and_a_query_builds_them(db: Path, monkeypatch, caplog) -> None:
    store = IndexStore(db)
    before = store.require_current()

    def fail(self, column):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ColumnArrays, "_build", fail)
    with caplog.at_level(logging.WARNING, logger=column_arrays.__name__), store.lock(), \
            store.new_generation() as staging:
        shutil.copy2(before.info_path, staging.info_path)  # catalog and vectors staged from the committed one
    committed = store.require_current()
    assert committed.number == before.number + 1  # committed all the same
    assert "not built at commit" in caplog.text and not _records(committed.path)
    monkeypatch.undo()
    with Engine.open(db) as engine:  # built on first use, as before
        filters = Filters(split="train")
        assert engine.filter_ids(filters).tolist() == duckdb_ids(engine.catalog, filters)
    assert {record["column"] for record in _records(committed.path).values()} == {"ids", "split"}  # by that query


def test_switched_off_or_without_a_catalog_nothing_is_built(tmp_path: Path, monkeypatch) -> None:
    generation = tmp_path / "gen-000001.tmp"
    generation.mkdir()
    (generation / "catalog.duckdb").touch()  # an empty file stands for the catalog in some tools' commits
    assert not column_arrays.build_at_commit(generation, generation / "catalog.duckdb")
    assert not (generation / FOLDER).exists()
    monkeypatch.setenv(column_arrays.ENV_SWITCH, "0")
    assert not column_arrays.build_at_commit(generation, generation / "missing.duckdb")


CHILD = textwrap.dedent("""
    import os, signal, sys
    from sarclip_search.store import column_arrays
    from sarclip_search.store.layout import IndexStore

    real_save = column_arrays.ColumnArrays._save
    saved = []

    def save(self, column, arrays, record):
        real_save(self, column, arrays, record)
        saved.append(column)
        if len(saved) == 3:  # some columns written, the rest not
            os.kill(os.getpid(), signal.SIGKILL)

    column_arrays.ColumnArrays._save = save
    store = IndexStore(sys.argv[1])
    with store.lock(), store.new_generation() as staging:
        pass
    print("not killed")
""")


def test_kill_9_during_the_build_keeps_the_committed_generation(db: Path) -> None:
    store = IndexStore(db)
    committed = store.require_current()
    files = {p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in (committed.path / FOLDER).iterdir()}
    with Engine.open(db) as engine:
        filters = Filters(label="field")
        expected = engine.filter_ids(filters).tolist()
        assert expected
    done = subprocess.run([sys.executable, "-c", CHILD, str(db)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, (done.stdout, done.stderr[-2000:])
    staged = list(db.glob("gen-*.tmp"))
    assert len(staged) == 1 and len(list((staged[0] / FOLDER).glob("*.json"))) == 3  # killed mid-build
    assert store.require_current() == committed  # CURRENT untouched
    assert {p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in (committed.path / FOLDER).iterdir()} == files
    with Engine.open(db) as engine:  # queryable, its arrays still its own
        monkeypatch = pytest.MonkeyPatch()
        monkeypatch.setattr(ColumnArrays, "_build", _no_build)
        try:
            assert engine.filter_ids(filters).tolist() == expected
            assert engine.query("a ship", filters=filters, k=2)
        finally:
            monkeypatch.undo()
    with store.lock(), store.new_generation() as staging:  # the next writer removes the leftover, commits arrays
        shutil.copy2(committed.info_path, staging.info_path)
    assert not list(db.glob("gen-*.tmp")) and len(_records(store.require_current().path)) == len(COLUMNS)


def test_only_the_last_commit_of_a_run_builds_the_filter_columns(
    tmp_path: Path, fixture_archive: Path, checkpoint: Path, sarclip, monkeypatch
) -> None:
    """A run committing every file builds the columns once, for the generation it leaves current."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in CHIPS:
        shutil.copy2(fixture_archive / "chips" / name, archive / name)
    built: list[Path] = []
    real = column_arrays.build_at_commit
    monkeypatch.setattr(column_arrays, "build_at_commit", lambda path, catalog: built.append(path) or real(path, catalog))
    store = IndexStore(tmp_path / "db")
    report = index_archive(archive, store, sarclip, model_path=str(checkpoint), commit_every=1)
    assert report.committed == 2
    assert len(built) == 1
    generation = store.require_current().path
    assert built == [generation.with_name(generation.name + ".tmp")]  # staged under .tmp, then published
    assert {record["column"] for record in _records(generation).values()} == set(COLUMNS)
