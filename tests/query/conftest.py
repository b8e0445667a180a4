"""Fixtures of the query tests (the session's model and index fixtures are in tests/conftest.py)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="module")
def hits(indexed_db):
    """All 10 tiles of the fixture archive as ranked hits."""
    from sarclip_search.query.engine import Engine

    db, _, _ = indexed_db
    with Engine.open(db) as engine:
        return engine.query(like=[int(engine.vectors.ids()[0])], k=10)


@pytest.fixture(scope="session")
def small_tiles(tmp_path_factory, fixture_archive, checkpoint, sarclip):
    """(engine, archive, db): the fixture archive indexed with 64 px tiles at stride 32 (overlapping windows:
    the 160 x 96 scene BIG_SCENE is 8 tiles). Treat it as read-only."""
    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.query.engine import Engine
    from sarclip_search.store.layout import IndexStore

    root = tmp_path_factory.mktemp("small-tiles")
    archive = root / "archive"
    shutil.copytree(fixture_archive, archive)
    index_archive(archive, IndexStore(root / "db"), sarclip, model_path=str(checkpoint),
                  tile_size=64, stride=32)
    with Engine.open(root / "db") as opened:
        yield opened, archive, root / "db"
