"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import DATA_DIR, load_make_fixtures

# Every CLI test sees the same wide console (cli/render.py reads COLUMNS at each print), so no assertion
# depends on the terminal the suite runs in or on how long pytest's temp paths are.
os.environ["COLUMNS"] = "250"

ARCHIVE_DIR = DATA_DIR / "archive"


@pytest.fixture(scope="session")
def fixture_archive() -> Path:
    """Path of the tiny committed SAR archive (tests/data/archive), regenerated if it is missing."""
    if not (ARCHIVE_DIR / "manifest.csv").is_file():
        load_make_fixtures().write_archive(ARCHIVE_DIR)
    return ARCHIVE_DIR


# --- model and index fixtures (session scope: building the model is the expensive part) ---------------


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained SARCLIP checkpoint (ImageNet image tower, frozen MiniLM text tower), built once (~4 s)."""
    import torch

    from sarclip_search.model.sarclip import new_model, save_checkpoint

    path = tmp_path_factory.mktemp("model") / "untrained.pt"
    torch.manual_seed(0)  # the untrained heads are random: the same embeddings in every test session
    save_checkpoint(new_model(), path, run_config={"test": True})
    return path


@pytest.fixture(scope="session")
def sarclip(checkpoint: Path):
    """The `checkpoint` loaded as the indexer and engine load it (checkpoint_sha256 set)."""
    from sarclip_search.model.sarclip import load_model

    return load_model(checkpoint)


@pytest.fixture
def fast_model(monkeypatch: pytest.MonkeyPatch, sarclip):
    """The CLI's load_model answers with the session model (same checkpoint, same hash): no 6 s load a run."""
    monkeypatch.setattr("sarclip_search.model.sarclip.load_model", lambda *_, **__: sarclip)
    return sarclip


@pytest.fixture(scope="session")
def indexed_db(tmp_path_factory: pytest.TempPathFactory, fixture_archive: Path, checkpoint: Path, sarclip) -> tuple[Path, Path, Path]:
    """(db, archive copy, checkpoint): a copy of the fixture archive indexed with `checkpoint`.

    Treat it as read-only; a test that changes the archive or the index copies it first (`copy_indexed`).
    """
    import shutil

    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.store.layout import IndexStore

    root = tmp_path_factory.mktemp("indexed")
    archive = root / "archive"
    shutil.copytree(fixture_archive, archive)
    db = root / "db"
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
    assert report.indexed == 10 and not report.failed, report
    return db, archive, checkpoint


@pytest.fixture(scope="module")
def engine(indexed_db):
    """The engine over `indexed_db` (one tile per image: tile size 256 > every image)."""
    from sarclip_search.query.engine import Engine

    db, _, _ = indexed_db
    with Engine.open(db) as opened:
        yield opened
