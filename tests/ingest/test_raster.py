"""Raster reader on the committed fixture archive, bad files, and (if present) the shared real data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.errors import InputError, RasterError
from sarclip_search.ingest import raster
from sarclip_search.ingest.raster import (
    read_chip,
    read_info,
    read_window,
    window_bbox_lonlat,
)
from sarclip_search.ingest.tiling import Window, tile_windows
from sarclip_search.ingest.walk import IMAGE_SUFFIXES, iter_rasters

from helpers import load_make_fixtures

SHARED_DATA = Path("/work/shared/data")


def manifest_rows(archive: Path) -> list[dict[str, str]]:
    with open(archive / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def sentinel1_files(archive: Path) -> list[Path]:
    return sorted((archive / "sentinel1").glob("S1A_*_tiny.tif"))


@pytest.fixture(scope="module")
def large_scene(fixture_archive: Path) -> Path:
    return next(p for p in sentinel1_files(fixture_archive) if read_info(p).width == 160)


# --- the fixture archive itself -------------------------------------------------------------


def test_manifest_covers_every_image(fixture_archive: Path) -> None:
    rows = manifest_rows(fixture_archive)
    assert list(rows[0]) == ["path", "dataset", "split", "label", "sensor", "band", "polarization"]
    listed = {row["path"] for row in rows}
    found = {p.relative_to(fixture_archive).as_posix() for p in iter_rasters(fixture_archive)}
    assert listed == found
    assert {row["label"] for row in rows} >= {"ship", "field"}
    assert {row["split"] for row in rows} == {"train", "test"}
    assert len(sentinel1_files(fixture_archive)) >= 6


def test_fixtures_are_small_and_reproducible(fixture_archive: Path, tmp_path: Path) -> None:
    committed = {
        p.relative_to(fixture_archive): p.read_bytes() for p in fixture_archive.rglob("*") if p.is_file()
    }
    assert sum(len(data) for data in committed.values()) < 300_000
    load_make_fixtures().write_archive(tmp_path)
    regenerated = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert regenerated.keys() == committed.keys()
    changed = [str(name) for name in committed if committed[name] != regenerated[name]]
    assert not changed, f"fixtures differ from make_fixtures.py output: {changed}"


def test_stac_sidecar(fixture_archive: Path) -> None:
    sidecars = sorted((fixture_archive / "sentinel1").glob("*.tif.json"))
    assert len(sidecars) == 1
    item = json.loads(sidecars[0].read_text(encoding="utf-8"))
    assert item["type"] == "Feature" and item["stac_version"] == "1.0.0"
    props = item["properties"]
    assert props["sar:polarizations"] == ["VV", "VH"]
    assert props["sar:frequency_band"] == "C" and props["sar:instrument_mode"] == "IW"
    assert props["sat:orbit_state"] == "descending" and props["platform"] == "sentinel-1a"
    assert props["datetime"].startswith("2021-01-01T05:45:12")
    tif = sidecars[0].with_suffix("")
    assert tif.is_file()
    west, south, east, north = read_info(tif).bounds_lonlat
    assert item["bbox"] == pytest.approx([west, south, east, north], abs=1e-5)


# --- read_info ---------------------------------------------------------------------------


def test_sentinel1_info(fixture_archive: Path) -> None:
    for path in sentinel1_files(fixture_archive):
        info = read_info(path)
        assert info.path == str(path)
        assert (info.count, info.dtype, info.driver) == (2, "float32", "GTiff")
        assert info.band_descriptions == ("VV", "VH")
        assert info.crs in ("EPSG:32631", "EPSG:32632")
        assert info.nodata == 0.0
        assert info.scale == "linear_power"
        assert info.tags["TIFFTAG_DATETIME"].startswith("2021:")
        assert info.transform is not None and info.transform[0] == 10.0 and info.transform[4] == -10.0
        minlon, minlat, maxlon, maxlat = info.bounds_lonlat
        assert 2.0 < minlon < maxlon < 10.0 and 51.0 < minlat < maxlat < 53.0
        # 64 px of 10 m is about 0.0058 deg of latitude
        assert (maxlat - minlat) == pytest.approx(info.height * 10 / 111_200, rel=0.05)


def test_png_chip_info(fixture_archive: Path) -> None:
    info = read_info(fixture_archive / "chips" / "chip_ship_0001.png")
    assert (info.driver, info.dtype, info.count, info.scale) == ("PNG", "uint8", 1, "display8")
    assert info.crs is None and info.transform is None and info.bounds_lonlat is None


def test_uint16_without_crs(fixture_archive: Path) -> None:
    path = next((fixture_archive / "kompsat5").glob("*.tif"))
    info = read_info(path)
    assert (info.dtype, info.scale, info.band_descriptions) == ("uint16", "amplitude", ("HH",))
    assert info.crs is None and info.bounds_lonlat is None
    assert window_bbox_lonlat(info, Window(0, 0, 8, 8)) is None
    chip = read_chip(path, size=32)
    assert chip.shape == (32, 32) and 0.0 <= chip.min() and chip.max() <= 1.0


def test_no_warnings_for_plain_images(fixture_archive: Path, recwarn: pytest.WarningsRecorder) -> None:
    for path in iter_rasters(fixture_archive):
        read_info(path)
        read_chip(path, size=16)
    assert not [w for w in recwarn if "georeferenc" in str(w.message).lower()]


# --- read_window ---------------------------------------------------------------------------


def test_nodata_strip_becomes_nan(fixture_archive: Path) -> None:
    for path in sentinel1_files(fixture_archive):
        data = read_window(path)
        info = read_info(path)
        assert data.shape == (2, info.height, info.width) and data.dtype == np.float32
        nan = np.isnan(data[0])
        assert np.array_equal(nan, np.isnan(data[1]))
        edges = {"left": nan[:, :6], "right": nan[:, -6:], "top": nan[:6, :], "bottom": nan[-6:, :]}
        full_edges = [name for name, strip in edges.items() if strip.all()]
        assert len(full_edges) == 1, path.name
        assert nan.sum() == 6 * (info.height if full_edges[0] in ("left", "right") else info.width)
        assert (data[~np.isnan(data)] > 0).all()


def test_windowed_read_equals_slice_of_full_read(large_scene: Path) -> None:
    full = read_window(large_scene)
    for window in tile_windows(160, 96, 64, stride=48):
        part = read_window(large_scene, window)
        expected = full[
            :, window.row_off : window.row_off + window.height, window.col_off : window.col_off + window.width
        ]
        np.testing.assert_array_equal(part, expected)
    np.testing.assert_array_equal(read_window(large_scene, bands=[2]), full[1:2])


def test_window_outside_the_raster_is_a_value_error(large_scene: Path) -> None:
    with pytest.raises(ValueError, match="not inside"):
        read_window(large_scene, Window(150, 0, 64, 64))


def test_band_out_of_range_is_a_raster_error(large_scene: Path) -> None:
    with pytest.raises(RasterError, match="band 3"):
        read_window(large_scene, bands=[3])


def test_window_bbox_lonlat(large_scene: Path) -> None:
    info = read_info(large_scene)
    assert window_bbox_lonlat(info, Window(0, 0, info.width, info.height)) == info.bounds_lonlat
    minlon, minlat, maxlon, maxlat = info.bounds_lonlat
    windows = tile_windows(info.width, info.height, 64)
    boxes = [window_bbox_lonlat(info, w) for w in windows]
    for box in boxes:
        assert minlon - 1e-9 <= box[0] < box[2] <= maxlon + 1e-9
        assert minlat - 1e-9 <= box[1] < box[3] <= maxlat + 1e-9
    # first window is top-left: westmost and northmost
    assert boxes[0][0] == pytest.approx(minlon) and boxes[0][3] == pytest.approx(maxlat)


# --- read_chip and content -----------------------------------------------------------------


def test_read_chip_shape_and_range(fixture_archive: Path, large_scene: Path) -> None:
    for path in iter_rasters(fixture_archive):
        chip = read_chip(path)
        assert chip.shape == (128, 128) and chip.dtype == np.float32
        assert 0.0 <= chip.min() and chip.max() <= 1.0 and chip.max() > 0.5
    window_chip = read_chip(large_scene, Window(96, 32, 64, 64), size=64)
    assert window_chip.shape == (64, 64)


def test_ship_and_field_scenes_differ(fixture_archive: Path) -> None:
    labels = {row["path"]: row["label"] for row in manifest_rows(fixture_archive)}
    for path in sentinel1_files(fixture_archive):
        vv = read_window(path, bands=[1])[0]
        median_db = 10 * np.log10(np.nanmedian(vv))
        label = labels[path.relative_to(fixture_archive).as_posix()]
        if label == "ship":
            assert median_db < -19 and np.nanmax(vv) > 1.0  # dark sea, bright target above 0 dB
        else:
            assert median_db > -17  # brighter land


# --- bad input -----------------------------------------------------------------------------


def _bad_files(tmp_path: Path, fixture_archive: Path) -> dict[str, Path]:
    valid = sentinel1_files(fixture_archive)[0].read_bytes()
    png = (fixture_archive / "chips" / "chip_ship_0001.png").read_bytes()
    files = {
        "zero": (tmp_path / "zero_bytes.tif", b""),
        "text": (tmp_path / "notes_named_as.tif", b"this is a text file, not a GeoTIFF\n"),
        "truncated": (tmp_path / "truncated_half.tif", valid[: len(valid) // 2]),
        "truncated_tail": (tmp_path / "truncated_tail.tif", valid[:-40]),
        "truncated_png": (tmp_path / "truncated_chip.png", png[: len(png) // 2]),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {name: path for name, (path, _) in files.items()}


@pytest.mark.parametrize("kind", ["zero", "text", "truncated", "truncated_tail", "truncated_png"])
@pytest.mark.parametrize("reader", [read_info, read_window, read_chip])
def test_bad_files_raise_raster_error_naming_the_file(
    kind: str, reader, tmp_path: Path, fixture_archive: Path
) -> None:
    path = _bad_files(tmp_path, fixture_archive)[kind]
    with pytest.raises(RasterError) as caught:
        reader(path)
    message = str(caught.value)
    assert path.name in message
    assert "re-download or remove" in message
    assert "\n" not in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(RasterError, match="no such file"):
        read_info(tmp_path / "absent.tif")
    with pytest.raises(RasterError, match="directory"):
        read_info(tmp_path)


def test_too_large_is_refused_before_reading(large_scene: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raster, "MAX_PIXELS", 100)
    with pytest.raises(RasterError, match="more than the limit"):
        read_info(large_scene)
    with pytest.raises(RasterError, match="more than the limit"):
        read_window(large_scene, Window(0, 0, 4, 4))


# --- iter_rasters ----------------------------------------------------------------------------


def test_iter_rasters_sorted_case_insensitive_skips_hidden_and_link_loops(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("b/z.TIF", "a.jpeg", "b/c.PNG", ".hidden/x.tif", ".dot.tif", "notes.txt", "b/y.tif.json"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "b" / "loop")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_rasters(tmp_path)]
    assert found == ["a.jpeg", "b/c.PNG", "b/z.TIF"]
    assert list(iter_rasters(tmp_path / "a.jpeg")) == [tmp_path / "a.jpeg"]
    with pytest.raises(InputError):
        list(iter_rasters(tmp_path / "absent"))
    assert ".tif" in IMAGE_SUFFIXES


# --- real data (only where /work/shared/data exists) -------------------------------------


@pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="shared SAR data not present")
def test_one_file_of_each_shared_dataset() -> None:
    first: dict[str, str] = {}
    with open(SHARED_DATA / "manifest.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            first.setdefault(row["dataset"], row["path"])
    # float32 dB GeoTIFFs, uint16 amplitude GeoTIFFs; every other dataset is 8-bit JPEG/TIFF/PNG
    expected_scale = {"Sen1Floods11": "db", "BigEarthNet-S1": "db", "C2S-MS-Floods": "db",
                      "KOMPSAT-5-water": "amplitude"}
    for dataset, relative in first.items():
        path = SHARED_DATA / relative
        info = read_info(path)
        assert info.scale == expected_scale.get(dataset, "display8"), dataset
        chip = read_chip(path, size=64)
        assert chip.shape == (64, 64) and 0.0 <= chip.min() and chip.max() <= 1.0
        assert chip.std() > 0.01, dataset
        if dataset in expected_scale:
            assert info.bounds_lonlat is not None
        if dataset == "KOMPSAT-5-water":
            minlon, minlat, maxlon, maxlat = info.bounds_lonlat
            assert 10.6 < minlon < maxlon < 11.2 and 59.7 < minlat < maxlat < 60.1  # Oslo area


def test_a_window_larger_than_max_side_is_read_decimated(large_scene: Path) -> None:
    full = read_window(large_scene, Window(0, 0, 160, 96), bands=[1])
    small = read_window(large_scene, Window(0, 0, 160, 96), bands=[1], max_side=40)
    assert full.shape == (1, 96, 160) and small.shape == (1, 24, 40)  # longer side 40, aspect kept
    # nearest-pixel decimation: every value read is one of the window's pixels (NaN for nodata ones)
    assert np.isin(small[np.isfinite(small)], full[np.isfinite(full)]).all()
    assert np.array_equal(read_window(large_scene, Window(0, 0, 160, 96), bands=[1], max_side=160), full,
                          equal_nan=True)  # not larger than max_side: read whole
