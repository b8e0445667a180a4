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


def test_eval_locate_scores_a_boxed_scene_and_writes_the_report(indexed_db, target_scene, tmp_path):
    import csv
    import shutil

    from locate_scenes import TARGET_SIDE

    from helpers import copy_index

    db, _, _ = indexed_db
    archive = tmp_path / "archive"
    (archive / "hrsid" / "images").mkdir(parents=True)
    shutil.copy(target_scene, archive / "hrsid" / "images" / "scene.tif")
    col, row = TARGET_CENTRE
    half = TARGET_SIDE // 2
    with open(archive / "manifest.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["path", "dataset", "split", "label", "boxes_xyxy"])
        writer.writeheader()
        writer.writerow({"path": "hrsid/images/scene.tif", "dataset": "HRSID", "split": "test", "label": "ship",
                         "boxes_xyxy": f"ship:{col - half},{row - half},{col + half - 1},{row + half - 1}"})
        writer.writerow({"path": "hrsid/images/scene.tif", "dataset": "HRSID", "split": "train", "label": "ship",
                         "boxes_xyxy": "ship:0,0,10,10"})  # another split: not evaluated
    out = tmp_path / "report"
    result = run("eval", "--locate", "--data", archive, "--db", copy_index(db, tmp_path / "db"), "--out", out,
                 "--json", "-q")
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads(result.stdout)
    assert [(r["path"], r["query"], r["split"]) for r in report["rows"]] == [("hrsid/images/scene.tif", "ship", "test")]
    scores = report["rows"][0]
    assert 0 <= scores["rsu"] <= 1 and 0 <= scores["ras"] <= 1 and 0 <= scores["rda"] <= 1
    assert abs(scores["rmi"] - (0.4 * scores["rsu"] + 0.35 * (1 - scores["ras"]) + 0.25 * scores["rda"])) < 1e-3
    assert report["summary"]["per_query"]["ship"]["n"] == 1
    markdown = (out / "eval.md").read_text()
    assert "| ship | 1 |" in markdown and "0.7494" in markdown and (out / "locate-ship.png").is_file()
