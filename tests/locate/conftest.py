"""Fixtures of the localisation tests (the scenes are made by locate_scenes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from locate_scenes import SCENE_SIDE, TARGET_CENTRE, speckle, with_target, write_geotiff


@pytest.fixture(scope="session")
def target_scene(tmp_path_factory) -> Path:
    """A 384 x 384 georeferenced float32 (linear power) scene of speckle with one bright 20 px target."""
    folder = tmp_path_factory.mktemp("locate")
    return write_geotiff(folder / "scene.tif", with_target(speckle((SCENE_SIDE, SCENE_SIDE), 1), TARGET_CENTRE))


@pytest.fixture(scope="session")
def target_example(tmp_path_factory) -> Path:
    """A 64 x 64 example of the target on other speckle (another noise draw): what to look for."""
    folder = tmp_path_factory.mktemp("locate-example")
    return write_geotiff(folder / "example.tif", with_target(speckle((64, 64), 2), (32, 32)), georeferenced=False)
