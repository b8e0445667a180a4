"""Fixtures of the API tests: the app over the indexed fixture archive, through FastAPI's TestClient."""

from __future__ import annotations

import pytest

from helpers import SERVER_TOKEN


@pytest.fixture(scope="session")
def api(indexed_db):
    """A TestClient of the app over `indexed_db` (no token), shared by the API tests: they only read."""
    from fastapi.testclient import TestClient

    from sarclip_search.server.app import create_app

    db, _, _ = indexed_db
    with TestClient(create_app(db)) as client:
        yield client


@pytest.fixture(scope="session")
def guarded(indexed_db):
    """A TestClient of the app over `indexed_db` with the token `helpers.SERVER_TOKEN`."""
    from fastapi.testclient import TestClient

    from sarclip_search.server.app import create_app

    db, _, _ = indexed_db
    with TestClient(create_app(db, token=SERVER_TOKEN)) as client:
        yield client


@pytest.fixture(scope="module")
def engine(indexed_db):
    """The engine over `indexed_db`, to compare the API's answers with."""
    from sarclip_search.query.engine import Engine

    db, _, _ = indexed_db
    with Engine.open(db) as opened:
        yield opened
