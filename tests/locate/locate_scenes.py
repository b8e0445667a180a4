"""Synthetic scenes for the localisation tests: speckle with a bright target at a known place (fixtures in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SCENE_SIDE = 384
TARGET_CENTRE = (296, 104)  # (col, row) of the bright target's centre
TARGET_SIDE = 20
CRS = "EPSG:32632"
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 6650000.0)  # 10 m pixels, UTM 32N


def speckle(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Sea-like clutter: single-look intensity speckle (exponential) around a low mean, float32 linear power."""
    return (np.random.default_rng(seed).exponential(0.02, shape)).astype(np.float32)


def with_target(values: np.ndarray, centre: tuple[int, int], side: int = TARGET_SIDE) -> np.ndarray:
    col, row = centre
    out = values.copy()
    out[row - side // 2: row + side // 2, col - side // 2: col + side // 2] = 5.0  # a strong scatterer
    return out


def write_geotiff(path: Path, values: np.ndarray, georeferenced: bool = True) -> Path:
    import warnings

    import rasterio
    from rasterio.crs import CRS as RioCRS
    from rasterio.errors import NotGeoreferencedWarning

    profile = {"driver": "GTiff", "width": values.shape[1], "height": values.shape[0], "count": 1, "dtype": "float32"}
    if georeferenced:
        profile.update(crs=RioCRS.from_string(CRS), transform=rasterio.Affine(*TRANSFORM))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as out:
            out.write(values, 1)
    return path
