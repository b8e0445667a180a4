"""`sarsearch locate` and `sarsearch eval --locate` from the command line: outputs, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
from locate_scenes import CRS, SCENE_SIDE, TARGET_CENTRE

from helpers import assert_user_error, run


def test_locate_by_example_writes_heat_overlay_and_peaks(indexed_db, target_scene, target_example, tmp_path):
    import rasterio
    from PIL import Image

    db, _, _ = indexed_db
    out = tmp_path / "out"
    result = run("locate", target_scene, "--image", target_example, "--scales", "64,128", "--db", db,
                 "--out", out, "--json", "-q", "--no-cache")
    assert result.exit_code == 0, (result.output, result.exception)
    peaks = json.loads(result.stdout)
    assert peaks["sarsearch:coordinates"] == "lonlat"
    best = peaks["features"][0]["properties"]
    assert abs(best["peak"][0] - TARGET_CENTRE[0]) < 40 and abs(best["peak"][1] - TARGET_CENTRE[1]) < 40
    assert json.loads((out / "peaks.geojson").read_text()) == peaks
    with rasterio.open(out / "heat.tif") as heat:
        assert heat.crs.to_string() == CRS and (heat.width, heat.height) == (SCENE_SIDE, SCENE_SIDE)
        assert np.nanmax(heat.read(1)) == 1.0
    with Image.open(out / "overlay.png") as overlay:
        assert overlay.mode == "RGB" and max(overlay.size) == 1024


def test_a_second_phrase_on_the_scene_uses_the_cache(indexed_db, target_scene, tmp_path):
    import shutil

    db, _, _ = indexed_db
    copy = tmp_path / "db"
    shutil.copytree(db, copy, symlinks=True)
    first = run("locate", "a ship", target_scene, "--scales", "64", "--db", copy, "--out", tmp_path / "a")
    second = run("locate", "a tank", target_scene, "--scales", "64", "--db", copy, "--out", tmp_path / "b")
    assert first.exit_code == 0 and second.exit_code == 0, (first.output, second.output)
    assert "windows embedded" in first.stderr and "from the cache" in second.stderr
    assert "#" in second.stdout and "heat" in second.stdout  # the peaks table


def test_bad_input_is_one_line(indexed_db, target_scene, tmp_path):
    db, _, _ = indexed_db
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("not an image")
    assert_user_error(run("locate", "ship", not_raster, "--db", db, "--out", tmp_path / "o"), "notes.tif",
                      "not a readable raster")
    assert_user_error(run("locate", "   ", target_scene, "--db", db, "--out", tmp_path / "o"), "blank")
    assert_user_error(run("locate", "ship", target_scene, "--scales", "64,512", "--db", db, "--out", tmp_path / "o"),
                      "--scales 512", "larger than the 384 x 384 scene")
    assert_user_error(run("locate", "ship", tmp_path / "missing.tif", "--db", db), "missing.tif")
    assert_user_error(run("locate", target_scene, "--db", db), "--image")
    assert_user_error(run("locate", "ship", target_scene, "--stride", "2", "--db", db, "--out", tmp_path / "o"),
                      "--stride")


def test_a_scene_of_the_index_is_found_by_its_archive_path(indexed_db, tmp_path):
    from helpers import BIG_SCENE

    db, _, _ = indexed_db
    result = run("locate", "a ship", BIG_SCENE, "--scales", "32", "--db", db, "--out", tmp_path / "o", "--json", "-q",
                 "--no-cache")
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.stdout)["sarsearch:scene"].endswith(BIG_SCENE)


def test_eval_locate_needs_a_labelled_archive(indexed_db):
    db, _, _ = indexed_db
    assert_user_error(run("eval", "--locate", "--db", db), "--data")
