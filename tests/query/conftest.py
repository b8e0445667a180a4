"""Fixtures of the query tests (the session's model and index fixtures are in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def hits(indexed_db):
    """All 10 tiles of the fixture archive as ranked hits."""
    from sarclip_search.query.engine import Engine

    db, _, _ = indexed_db
    with Engine.open(db) as engine:
        return engine.query(like=[int(engine.vectors.ids()[0])], k=10)
