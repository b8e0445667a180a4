"""A re-run of `index` over an unchanged archive commits nothing.

CURRENT and the generation folders stay as they are, the run still reports "0 embedded, N unchanged",
loads no model, and still writes what lives outside generations (the ONNX query encoders). A run whose
only work fails (a bad file listed again) drops its staged copy instead of committing it; a touched
file's new mtime is committed once, then the runs are no-ops again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sarclip_search.cli.app import EXIT_OK, EXIT_PARTIAL
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.store.layout import IndexStore

from helpers import GOOD, SHIP_PNG, good_archive, index, link_encoders, reindex, scenes


@pytest.fixture
def indexed(tmp_path, fixture_archive, indexed_db, checkpoint, sarclip) -> tuple[Path, Path]:
    """(archive, db): the three good files indexed; the ONNX encoders hard-linked from `indexed_db`."""
    archive = good_archive(fixture_archive, tmp_path / "archive")
    db = tmp_path / "db"
    link_encoders(indexed_db[0], db)
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
    assert (report.indexed, report.committed, report.failed) == (3, 1, [])
    return archive, db


def generations(db: Path) -> tuple[str, list[str]]:
    """(CURRENT, the names of every gen-* entry)."""
    return (db / "CURRENT").read_text(), sorted(p.name for p in db.glob("gen-*"))


def test_unchanged_archive_commits_nothing(indexed, checkpoint):
    archive, db = indexed
    before = generations(db)

    report = reindex(archive, db, checkpoint)  # the model loader raises if called

    assert (report.indexed, report.unchanged, report.removed, report.committed, report.failed) == (0, 3, 0, 0, [])
    assert generations(db) == before
    assert report.totals == {"scenes": 3, "tiles": 3, "vectors": 3} and report.index_factory == "Flat"


def test_unchanged_archive_through_the_cli(indexed, checkpoint, fast_model):
    archive, db = indexed
    before = generations(db)
    result = index(archive, db, checkpoint)
    assert result.exit_code == EXIT_OK, result.output
    assert "0 embedded, 3 unchanged, 0 removed, 0 failed" in result.stderr
    assert "total: 3 scenes, 3 tiles" in result.stderr
    assert generations(db) == before


def test_a_failing_file_alone_commits_nothing(indexed, checkpoint, fast_model):
    archive, db = indexed
    (archive / "broken.png").write_bytes(b"")
    before = generations(db)
    for _ in range(2):
        result = index(archive, db, checkpoint)
        assert result.exit_code == EXIT_PARTIAL, result.output
        assert "0 embedded, 3 unchanged, 0 removed, 1 failed" in result.stderr
        assert generations(db) == before  # the staged copy was dropped, no gen-*.tmp left
    assert sorted(scenes(db)) == sorted(GOOD)


def test_touched_file_is_committed_once_then_nothing(indexed, checkpoint):
    archive, db = indexed
    os.utime(archive / SHIP_PNG, (1_600_000_000, 1_600_000_000))  # same bytes, new mtime
    before = generations(db)

    first = reindex(archive, db, checkpoint)
    assert (first.indexed, first.unchanged, first.relabelled, first.committed) == (0, 3, 0, 1)
    after_first = generations(db)
    assert after_first != before

    second = reindex(archive, db, checkpoint)  # the new mtime was recorded: nothing hashed, nothing committed
    assert (second.unchanged, second.committed) == (3, 0) and generations(db) == after_first


def test_changes_still_commit(indexed, checkpoint, fast_model, fixture_archive, tmp_path):
    archive, db = indexed
    moved = tmp_path / "moved.pt"
    shutil.copy2(checkpoint, moved)  # the same checkpoint elsewhere: compatible, but info.json names the new path
    assert reindex(archive, db, moved).committed == 1
    assert reindex(archive, db, moved).committed == 0

    (archive / SHIP_PNG).unlink()  # a removal alone
    removed = reindex(archive, db, moved)
    assert (removed.removed, removed.committed) == (1, 1) and len(scenes(db)) == 2

    shutil.copy2(fixture_archive / SHIP_PNG, archive / SHIP_PNG)
    result = index(archive, db, moved)
    assert result.exit_code == EXIT_OK and "1 embedded" in result.stderr, result.output
    rebuilt = index_archive(archive, IndexStore(db), fast_model, model_path=str(moved), rebuild=True)
    assert (rebuilt.indexed, rebuilt.committed) == (3, 1)  # --rebuild always writes a fresh generation


def test_unchanged_run_still_exports_missing_encoders_and_tidies(indexed, checkpoint, sarclip, monkeypatch):
    """Encoders live outside generations: a no-change run exports them when missing (loading the model
    for that only), and removes what a run killed after its last commit left (a staged and an old
    generation)."""
    from sarclip_search.model import encoder_export

    archive, db = indexed
    current, _ = generations(db)
    (db / "gen-000000").mkdir()  # superseded, not yet removed
    (db / "gen-000009.tmp").mkdir()  # staged by a killed run
    shutil.rmtree(db / "encoders")
    exported = []
    monkeypatch.setattr(encoder_export, "export_encoders", lambda model, root: exported.append(Path(root)))
    loads = []

    def loader():
        loads.append(1)
        return sarclip

    report = index_archive(archive, IndexStore(db), loader, model_path=str(checkpoint))

    assert report.committed == 0 and exported == [db] and loads == [1]
    assert generations(db) == (current, [current.strip()])
