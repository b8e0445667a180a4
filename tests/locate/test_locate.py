"""`query.locate`: the heat map finds a target, the GeoTIFF is on the scene's grid, the cache serves a second
query, and the window arithmetic (difference arrays, streamed chips) agrees with the direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from locate_scenes import CRS, SCENE_SIDE, TARGET_CENTRE, TRANSFORM

from sarclip_search.errors import InputError
from sarclip_search.ingest import raster
from sarclip_search.ingest.tiling import Window
from sarclip_search.query import locate as localisation

SCALES = (64, 128)


def test_an_example_of_the_target_peaks_at_the_target(engine, target_scene, target_example):
    query = engine.embed_image_file(target_example)
    result = localisation.locate(engine.encoder, target_scene, query, scales=SCALES)
    assert result.heat.shape == (SCENE_SIDE, SCENE_SIDE)
    assert float(result.heat.min()) == 0.0 and float(result.heat.max()) == 1.0
    best = result.peaks[0]
    assert math.dist((best.col, best.row), TARGET_CENTRE) < 40, best
    col, row, width, height = best.window
    assert col <= TARGET_CENTRE[0] < col + width and row <= TARGET_CENTRE[1] < row + height
    # the target's neighbourhood is hotter than the scene on average (a map that is not just its peak)
    c, r = TARGET_CENTRE
    assert result.heat[r - 10: r + 10, c - 10: c + 10].mean() > result.heat.mean() + 0.3




def test_heat_geotiff_carries_the_scene_crs_and_transform(engine, target_scene, tmp_path):
    import rasterio

    result = localisation.locate(engine.encoder, target_scene, engine.embed_text("a ship"), scales=SCALES)
    written = localisation.write_heat_geotiff(result, tmp_path / "out" / "heat.tif")
    with rasterio.open(written) as heat:
        assert heat.crs.to_string() == CRS
        assert tuple(heat.transform)[:6] == pytest.approx(TRANSFORM)
        assert (heat.width, heat.height, heat.dtypes[0]) == (SCENE_SIDE, SCENE_SIDE, "float32")
        np.testing.assert_allclose(heat.read(1), result.heat)
    # peaks of a placed scene are lon/lat boxes inside the scene's footprint
    info = raster.read_info(target_scene)
    minlon, minlat, maxlon, maxlat = info.bounds_lonlat
    for peak in result.peaks:
        assert peak.bbox is not None
        assert minlon - 1e-6 <= peak.bbox[0] <= peak.bbox[2] <= maxlon + 1e-6
        assert minlat - 1e-6 <= peak.bbox[1] <= peak.bbox[3] <= maxlat + 1e-6
    geojson = localisation.peaks_geojson(result, "a ship")
    assert geojson["sarsearch:coordinates"] == "lonlat" and len(geojson["features"]) == len(result.peaks)


def test_an_unplaced_scene_gives_pixel_boxes(engine, target_example):
    result = localisation.locate(engine.encoder, target_example, engine.embed_text("a ship"), scales=(32,))
    geojson = localisation.peaks_geojson(result)
    assert geojson["sarsearch:coordinates"] == "pixel"
    for feature, peak in zip(geojson["features"], result.peaks):
        col, row, width, height = peak.window
        assert feature["bbox"] == [col, row, col + width, row + height]


def test_the_cache_serves_a_second_query_with_the_same_heat(engine, target_scene, tmp_path):
    cache = tmp_path / "cache"
    first = localisation.locate(engine.encoder, target_scene, engine.embed_text("a ship"), scales=SCALES,
                                cache_root=cache)
    second = localisation.locate(engine.encoder, target_scene, engine.embed_text("a ship"), scales=SCALES,
                                 cache_root=cache)
    assert not first.cached and second.cached and len(list(cache.glob("*.npz"))) == 1
    np.testing.assert_allclose(second.heat, first.heat, atol=1e-6)
    other = localisation.locate(engine.encoder, target_scene, engine.embed_text("a ship"), scales=(64,),
                                cache_root=cache)
    assert not other.cached  # other scales: another key


def test_heat_from_windows_is_the_per_pixel_mean():
    rng = np.random.default_rng(0)
    windows = [Window(int(c), int(r), int(s), int(s)) for c, r, s in
               zip(rng.integers(0, 30, 40), rng.integers(0, 20, 40), rng.integers(4, 16, 40))]
    scores = rng.random(40)
    valid = rng.random(40) > 0.2
    heat = localisation.heat_from_windows(windows, scores, valid, 50, 40)
    total, count = np.zeros((40, 50)), np.zeros((40, 50))
    for window, score, ok in zip(windows, scores, valid):
        if ok:
            total[window.row_off: window.row_off + window.height, window.col_off: window.col_off + window.width] += score
            count[window.row_off: window.row_off + window.height, window.col_off: window.col_off + window.width] += 1
    expected = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    np.testing.assert_allclose(heat, expected, atol=1e-6)


def test_streamed_chips_are_the_chips_read_one_by_one(target_scene):
    windows = localisation.plan_windows(SCENE_SIDE, SCENE_SIDE, SCALES, 0.5)
    chips = dict(raster.stream_window_chips(target_scene, windows, 128))
    for position in (0, 7, len(windows) - 1):
        np.testing.assert_array_equal(chips[position], raster.read_chip(target_scene, windows[position], 128))


def test_scales_and_stride_are_checked():
    assert localisation.scene_scales(800, 800, None) == (64, 128, 256)
    assert localisation.scene_scales(5000, 5000, None) == (128, 256, 512)
    assert localisation.scene_scales(100, 40, None) == (40,)
    with pytest.raises(InputError, match="larger than the 300 x 200 scene"):
        localisation.scene_scales(300, 200, (64, 256))
    with pytest.raises(InputError, match="--stride"):
        localisation.plan_windows(100, 100, (32,), 0.0)
    with pytest.raises(InputError, match="--scales"):
        localisation.parse_scales("64,big")
