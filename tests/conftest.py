"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

DATA_DIR = Path(__file__).resolve().parent / "data"
ARCHIVE_DIR = DATA_DIR / "archive"


def _load_make_fixtures() -> ModuleType:
    """Import tests/data/make_fixtures.py as a module (tests/data is not a package)."""
    spec = importlib.util.spec_from_file_location("make_fixtures", DATA_DIR / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fixture_archive() -> Path:
    """Path of the tiny committed SAR archive (tests/data/archive), regenerated if it is missing."""
    if not (ARCHIVE_DIR / "manifest.csv").is_file():
        _load_make_fixtures().write_archive(ARCHIVE_DIR)
    return ARCHIVE_DIR
