"""Manifest, STAC sidecar and metadata merging."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime
from pathlib import Path

import pytest

from sarclip_search.errors import MetadataError
from sarclip_search.ingest import metadata
from sarclip_search.ingest.metadata import (
    METRES_PER_DEGREE,
    STAC_FIELD_MAP,
    load_manifest,
    load_stac_sidecar,
    metadata_hash,
    missing_paths,
    pixel_spacing_m,
    point_footprint,
    point_location,
    scene_footprint,
    scene_metadata,
    scene_times,
    sentinel1_name_metadata,
)

REAL_ARCHIVE = Path("/work/shared/data")


def write_manifest(root: Path, text: str) -> Path:
    path = root / "manifest.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_manifest_is_empty(tmp_path: Path) -> None:
    assert load_manifest(tmp_path) == {}


def test_manifest_types_and_paths(tmp_path: Path) -> None:
    write_manifest(
        tmp_path,
        "path,label,n,res,serial,code,empty\n"
        "./a/x.tif,T72,1,0.5,b01,007,\n"
        "a\\y.tif,BMP2,,3,9563,010,\n",
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.tif").write_bytes(b"")
    manifest = load_manifest(tmp_path)
    assert list(manifest) == ["a/x.tif", "a/y.tif"]
    assert manifest["a/x.tif"] == {"label": "T72", "n": 1, "res": 0.5, "serial": "b01", "code": "007", "empty": None}
    assert manifest["a/y.tif"]["n"] is None
    assert manifest["a/y.tif"]["res"] == 3.0 and isinstance(manifest["a/y.tif"]["res"], float)
    assert missing_paths(manifest, tmp_path) == ["a/y.tif"]


def test_manifest_without_path_column(tmp_path: Path) -> None:
    manifest_file = write_manifest(tmp_path, "file,label\nx.tif,T72\n")
    with pytest.raises(MetadataError, match="path") as info:
        load_manifest(tmp_path)
    assert str(manifest_file) in str(info.value)


def test_manifest_duplicate_paths(tmp_path: Path) -> None:
    manifest_file = write_manifest(tmp_path, "path,label\nx.tif,T72\ny.tif,A\n./x.tif,BMP2\n")
    with pytest.raises(MetadataError, match="duplicate path 'x.tif'") as info:
        load_manifest(tmp_path)
    assert str(manifest_file) in str(info.value)


def test_manifest_path_outside_archive(tmp_path: Path) -> None:
    write_manifest(tmp_path, "path\n../secret.tif\n")
    with pytest.raises(MetadataError, match="relative to the archive root"):
        load_manifest(tmp_path)


@pytest.mark.skipif(not (REAL_ARCHIVE / "manifest.csv").is_file(), reason="shared data not present")
def test_real_manifest() -> None:
    manifest = load_manifest(REAL_ARCHIVE)
    with open(REAL_ARCHIVE / "manifest.csv", newline="", encoding="utf-8") as handle:
        data_rows = sum(1 for _ in csv.DictReader(handle))
    assert len(manifest) == data_rows > 3000  # one entry per row, none dropped
    row = next(iter(manifest.values()))
    assert isinstance(row["width"], int) and isinstance(row["n_objects"], int)
    assert all(isinstance(r["serial_number"], (str, type(None))) for r in manifest.values())
    assert "path" not in row


def write_item(raster: Path, item: object) -> None:
    raster.with_name(raster.name + ".json").write_text(json.dumps(item), encoding="utf-8")


def test_stac_sidecar(tmp_path: Path) -> None:
    raster = tmp_path / "s1.tif"
    assert load_stac_sidecar(raster) == {}
    write_item(raster, {
        "type": "Feature", "stac_version": "1.0.0", "id": "s1", "bbox": [5.0, 45.0, 6.0, 46.0],
        "geometry": None,
        "properties": {"datetime": "2021-06-30T12:00:00Z", "sar:polarizations": ["VV", "VH"],
                       "sar:instrument_mode": "IW"},
    })
    stac = load_stac_sidecar(raster)
    assert stac["bbox"] == (5.0, 45.0, 6.0, 46.0)
    assert stac["datetime"] == "2021-06-30T12:00:00Z"
    assert stac["sar:polarizations"] == ["VV", "VH"]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"type": "FeatureCollection", "features": []}),
                                     json.dumps([1, 2])])
def test_stac_sidecar_malformed(tmp_path: Path, content: str) -> None:
    raster = tmp_path / "s1.tif"
    (tmp_path / "s1.tif.json").write_text(content, encoding="utf-8")
    with pytest.raises(MetadataError, match="s1.tif.json"):
        load_stac_sidecar(raster)


def test_scene_metadata_precedence() -> None:
    assert STAC_FIELD_MAP["polarization"] == "sar:polarizations"
    tags = {"TIFFTAG_DATETIME": "2019:09:17 10:00:00", "TIFFTAG_SOFTWARE": "gdal", "sensor": "from-tags"}
    stac = {"sar:polarizations": ["VV", "VH"], "sensor": "from-stac", "datetime": "2019-09-17T06:00:00+02:00",
            "bbox": (1.0, 2.0, 3.0, 4.0)}
    row = {"polarization": "VV+VH (2 bands, float32 dB)", "label": "flood_water", "band": "C", "sensor": None}
    merged = scene_metadata("s/x.tif", row, stac, tags)
    assert merged["path"] == "s/x.tif"
    assert merged["sar:polarizations"] == "VV+VH (2 bands, float32 dB)"
    assert merged["sar:frequency_band"] == "C"
    assert merged["sensor"] == "from-stac"  # a None manifest cell does not override
    assert merged["datetime"] == datetime(2019, 9, 17, 4, 0)  # UTC
    assert merged["bbox"] == (1.0, 2.0, 3.0, 4.0)
    assert "TIFFTAG_SOFTWARE" not in merged and "polarization" not in merged


# --- acquisition time -------------------------------------------------------------------------------------

KOMPSAT_TAGS = {"TIFFTAG_DATETIME": "2020:07:21 07:55:31", "TIFFTAG_SOFTWARE": "GDAL"}  # when the file was written


def test_tiff_datetime_is_the_processing_time_never_the_acquisition() -> None:
    merged = scene_metadata("k5/WTR00001_K5_NIA0184.tif", {"datetime": "2015-06-03T17:14:36Z"}, {}, KOMPSAT_TAGS)
    assert merged["datetime"] == datetime(2015, 6, 3, 17, 14, 36)
    assert merged["processing:datetime"] == "2020-07-21T07:55:31"
    assert "start_datetime" not in merged and "TIFFTAG_DATETIME" not in merged
    alone = scene_metadata("x.tif", None, {}, KOMPSAT_TAGS)  # nothing else knows: unknown, not 2020
    assert alone["datetime"] is None and alone["processing:datetime"] == "2020-07-21T07:55:31"
    assert scene_metadata("x.tif", None, {}, {"DATETIME": "2020-07-21T07:55:31Z"})["datetime"] is None  # no tag
    assert scene_metadata("x.tif", None, {}, {"TIFFTAG_DATETIME": "garbage"})["processing:datetime"] == "garbage"


def test_scene_metadata_bad_datetime() -> None:
    merged = scene_metadata("x.tif", {"datetime": "yesterday"}, {}, {})
    assert merged["datetime"] is None and "start_datetime" not in merged


@pytest.mark.parametrize(("manifest", "stac", "expected"), [
    ({"datetime": "2016-05-18T08:41:27Z"}, {"datetime": "2001-01-01T00:00:00Z"}, datetime(2016, 5, 18, 8, 41, 27)),
    ({"datetime": None}, {"datetime": "2001-01-01T00:00:00Z"}, datetime(2001, 1, 1)),  # empty cell: next source
    ({"datetime": "soon"}, {"datetime": "2001-01-01T00:00:00Z"}, datetime(2001, 1, 1)),  # unreadable: next source
    ({"DateTime": "2016-05-18T10:41:27+02:00"}, {}, datetime(2016, 5, 18, 8, 41, 27)),  # any case; to UTC
    ({}, {}, datetime(2015, 8, 23, 22, 12, 33)),  # only the Sentinel-1 name knows
])
def test_datetime_precedence(manifest: dict, stac: dict, expected: datetime) -> None:
    assert scene_metadata(S1_FOLDER, manifest, stac, KOMPSAT_TAGS)["datetime"] == expected


def test_a_date_alone_is_its_whole_day() -> None:
    merged = scene_metadata("sen1floods11/images/Spain_7370579_S1Hand.tif", {"datetime": "2019-09-17"}, {}, {})
    assert merged["datetime"] == datetime(2019, 9, 17)
    assert (merged["start_datetime"], merged["end_datetime"]) == ("2019-09-17T00:00:00", "2019-09-17T23:59:59.999999")
    # the product name gives the time of that day: the time wins; another day: the manifest's date stays
    assert scene_times(S1_FOLDER, {"datetime": "2015-08-23"}, {}, datetime(2015, 8, 23, 22, 12, 33)) == {
        "datetime": datetime(2015, 8, 23, 22, 12, 33)}
    assert scene_times(S1_FOLDER, {"datetime": "2015-08-24"}, {}, datetime(2015, 8, 23, 22, 12, 33))["end_datetime"] \
        == "2015-08-24T23:59:59.999999"


@pytest.mark.parametrize(("manifest", "stac", "expected"), [
    ({"start_datetime": "2019-01-01", "end_datetime": "2019-01-31"}, {},  # end date: to the end of that day
     {"datetime": None, "start_datetime": "2019-01-01T00:00:00", "end_datetime": "2019-01-31T23:59:59.999999"}),
    ({}, {"start_datetime": "2019-01-01T10:00:00Z", "end_datetime": "2019-01-01T10:00:25Z"},  # a sidecar range
     {"datetime": None, "start_datetime": "2019-01-01T10:00:00", "end_datetime": "2019-01-01T10:00:25"}),
    ({"start_datetime": "2019-01-01", "end_datetime": None},  # half a range: the next source's pair
     {"start_datetime": "2018-01-01T00:00:00Z", "end_datetime": "2018-02-01T00:00:00Z"},
     {"datetime": None, "start_datetime": "2018-01-01T00:00:00", "end_datetime": "2018-02-01T00:00:00"}),
    ({"start_datetime": "2019-02-01", "end_datetime": "2019-01-01"}, {}, {"datetime": None}),  # reversed
    ({"datetime": "2019-01-05", "start_datetime": "2019-01-01", "end_datetime": "2019-01-31"}, {},  # a given range
     {"datetime": datetime(2019, 1, 5), "start_datetime": "2019-01-01T00:00:00",  # beats the day's
      "end_datetime": "2019-01-31T23:59:59.999999"}),
])
def test_start_and_end_datetime(manifest: dict, stac: dict, expected: dict) -> None:
    assert scene_times("x.tif", manifest, stac) == expected
    merged = scene_metadata("x.tif", manifest, stac, KOMPSAT_TAGS)
    assert {k: merged[k] for k in merged if k in expected} == expected and set(expected) <= set(merged)


# --- time and place of chips that carry them outside the raster -------------------------------------------

S1_FOLDER = "opensarship/images/S1A_IW_GRDH_1SDV_20150823T221233_20150823T221258_007396_00A2CA_54D0/Visual_x1_vv.tif"


@pytest.mark.parametrize(("path", "expected"), [
    (S1_FOLDER, {"datetime": datetime(2015, 8, 23, 22, 12, 33), "sar:instrument_mode": "IW",
                 "platform": "sentinel-1a", "sar:product_type": "GRD"}),
    ("x/S1B_IW_SLC__1SSV_20150217T204257_20150217T204324_004668_005C34_2DC9.SAFE/c.tif",
     {"datetime": datetime(2015, 2, 17, 20, 42, 57), "sar:instrument_mode": "IW", "platform": "sentinel-1b",
      "sar:product_type": "SLC"}),
    ("S1A_S3_GRDH_1SDH_20200101T000000_20200101T000025_030000_036000_ABCD_tiny.tif",
     {"datetime": datetime(2020, 1, 1), "sar:instrument_mode": "SM", "platform": "sentinel-1a",
      "sar:product_type": "GRD"}),
    ("chips/chip_ship_0001.png", {}),
    ("XS1A_IW_GRDH_1SDV_20150823T221233_20150823T221258_x.tif", {}),  # part of a longer word
    ("S1A_IW_GRDH_1SDV_20151345T221233_20151345T221258_x.tif", {}),  # month 13
])
def test_sentinel1_name_metadata(path: str, expected: dict) -> None:
    assert sentinel1_name_metadata(path) == expected


def test_product_name_fills_only_what_no_other_source_gives() -> None:
    merged = scene_metadata(S1_FOLDER, {"instrument_mode": "EW", "sensor": "Sentinel-1A"}, {}, {})
    assert merged["datetime"] == datetime(2015, 8, 23, 22, 12, 33)
    assert merged["sar:instrument_mode"] == "EW" and merged["platform"] == "sentinel-1a"
    tagged = scene_metadata(S1_FOLDER, None, {}, {"TIFFTAG_DATETIME": "2019:09:17 10:00:00", "PLATFORM": "x"})
    assert tagged["datetime"] == datetime(2015, 8, 23, 22, 12, 33) and tagged["PLATFORM"] == "x"  # name, not tag
    assert "platform" not in tagged  # one column, spelled as the higher source spells it
    unreadable = scene_metadata(S1_FOLDER, {"datetime": "yesterday"}, {}, {})
    assert unreadable["datetime"] == datetime(2015, 8, 23, 22, 12, 33)  # the name still knows


NOTES = ("OpenSARShip 8-bit visual chip; AIS length 179 m; ship centre lon/lat 118.04760,38.87066 (EPSG:4326); "
         "chip centre = scene pixel x10661 y11170")


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"lon": 5.5, "lat": 45.25}, (5.5, 45.25)),
    ({"LON": "5.5", "Lat": "45.25"}, (5.5, 45.25)),  # case-insensitive, text read as numbers
    ({"center_lon": -70.0, "center_lat": -33.5}, (-70.0, -33.5)),
    ({"lon": 5.5, "lat": None, "center_lon": 1.0, "center_lat": 2.0}, (1.0, 2.0)),
    ({"notes": NOTES}, (118.0476, 38.87066)),
    ({"lon": 1.0, "lat": 2.0, "notes": NOTES}, (1.0, 2.0)),  # columns before notes
    ({"notes": "ship centre lon/lat 118.04760,38.87066"}, None),  # no EPSG:4326: no claim about the datum
    ({"lon": 200.0, "lat": 10.0}, None),
    ({"lon": float("nan"), "lat": 10.0}, None),
    ({}, None),
])
def test_point_location(metadata: dict, expected: tuple | None) -> None:
    assert point_location(metadata) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (10, (10.0, 10.0)), (0.3, (0.3, 0.3)), ("10 (GRD pixel spacing)", (10.0, 10.0)),
    ("2.3x13.9 (SLC range x azimuth)", (2.3, 13.9)), ("1.11 (pixel spacing)", (1.11, 1.11)),
    ("0.5-3", None), ("", None), (None, None), (0, None), ("about ten", None),
])
def test_pixel_spacing(value: object, expected: tuple | None) -> None:
    assert pixel_spacing_m({"resolution_m": value}) == expected


def test_point_footprint() -> None:
    minlon, minlat, maxlon, maxlat = point_footprint(118.0, 60.0, 100, 50, (10.0, 20.0))
    assert (maxlat - minlat) * METRES_PER_DEGREE == pytest.approx(50 * 20.0)
    assert (maxlon - minlon) * METRES_PER_DEGREE * math.cos(math.radians(60.0)) == pytest.approx(100 * 10.0)
    assert ((minlon + maxlon) / 2, (minlat + maxlat) / 2) == (pytest.approx(118.0), pytest.approx(60.0))
    assert point_footprint(118.0, 60.0, 100, 50, None) == (118.0, 60.0, 118.0, 60.0)
    assert point_footprint(179.99, 89.99, 1000, 1000, (100.0, 100.0))[2:] == (180.0, 90.0)  # clamped


def test_scene_footprint_sources() -> None:
    raster_box, stac_box = (1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)
    point = {"lon": 10.0, "lat": 20.0, "resolution_m": 10}
    assert scene_footprint(raster_box, 8, 8, {**point, "bbox": stac_box}) == (raster_box, "raster")
    assert scene_footprint(None, 8, 8, {**point, "bbox": stac_box}) == (stac_box, "stac")
    box, source = scene_footprint(None, 8, 8, point)
    assert source == "manifest_point" and box[0] < 10.0 < box[2] and box[1] < 20.0 < box[3]
    assert scene_footprint(None, 8, 8, {"lon": 10.0, "lat": 20.0}) == ((10.0, 20.0, 10.0, 20.0), "manifest_point")
    assert scene_footprint(None, 8, 8, {"bbox": "1,2,3,4"}) == (None, None)  # a manifest text is no bbox


def test_metadata_hash_follows_manifest_row_and_sidecar() -> None:
    row, stac = {"label": "T72", "split": "train"}, {"sar:instrument_mode": "IW", "bbox": (1.0, 2.0, 3.0, 4.0)}
    digest = metadata_hash(row, stac)
    assert digest == metadata_hash(dict(reversed(row.items())), dict(stac))  # order does not matter
    assert digest != metadata_hash({**row, "label": "BMP2"}, stac)
    assert digest != metadata_hash(row, {**stac, "sar:instrument_mode": "EW"})
    assert digest != metadata_hash({**row, "notes": None}, stac)  # a new (empty) column counts
    assert metadata_hash(None, {}) != metadata_hash({}, {})


def test_metadata_hash_follows_the_rules_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rules change (here: datetime no longer from TIFFTAG_DATETIME) re-labels every scene once."""
    row = {"label": "water", "datetime": "2015-06-03T17:14:36Z"}
    current = metadata_hash(row, {})
    assert metadata.METADATA_RULES_VERSION >= 2
    monkeypatch.setattr(metadata, "METADATA_RULES_VERSION", 1)
    assert metadata_hash(row, {}) != current


@pytest.mark.skipif(not (REAL_ARCHIVE / "manifest.csv").is_file(), reason="shared data not present")
def test_real_opensarship_rows_get_time_and_place() -> None:
    manifest = load_manifest(REAL_ARCHIVE)
    ships = {p: r for p, r in manifest.items() if r["dataset"] == "OpenSARShip"}
    assert len(ships) == 354
    for path, row in ships.items():
        merged = scene_metadata(path, row, {}, {})
        box, source = scene_footprint(None, int(row["width"]), int(row["height"]), merged)
        assert source == "manifest_point" and box[0] < box[2] and box[1] < box[3], path
        assert merged["datetime"] is not None and merged["sar:instrument_mode"] == "IW", path
        assert merged["platform"] == "sentinel-1a"
    first = "opensarship/images/S1A_IW_GRDH_1SDV_20150823T221233_20150823T221258_007396_00A2CA_54D0/Visual_Cargo_x10661_y11170_vh.tif"
    merged = scene_metadata(first, manifest[first], {}, {})
    assert merged["datetime"] == datetime(2015, 8, 23, 22, 12, 33)
    box, _ = scene_footprint(None, 77, 77, merged)
    assert ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) == (pytest.approx(118.0476), pytest.approx(38.87066))
    assert (box[3] - box[1]) * METRES_PER_DEGREE == pytest.approx(770.0)
    others = [scene_footprint(None, 8, 8, scene_metadata(p, r, {}, {}))[1]
              for p, r in manifest.items() if r["dataset"] != "OpenSARShip"]
    assert set(others) == {None}  # no other dataset of the corpus claims a point


@pytest.mark.skipif(not (REAL_ARCHIVE / "manifest.csv").is_file(), reason="shared data not present")
def test_real_acquisition_times() -> None:
    """The corpus manifest's `datetime` column, not the GeoTIFFs' TIFFTAG_DATETIME (read from the files)."""
    from sarclip_search.ingest import raster

    manifest = load_manifest(REAL_ARCHIVE)
    kompsat = {p: r for p, r in manifest.items() if r["dataset"] == "KOMPSAT-5-water"}
    assert kompsat
    for path, row in kompsat.items():
        tags = raster.read_info(REAL_ARCHIVE / path).tags
        merged = scene_metadata(path, row, {}, tags)
        assert merged["datetime"] == datetime(2015, 6, 3, 17, 14, 36), path
        if "TIFFTAG_DATETIME" in tags:
            assert merged["processing:datetime"] != merged["datetime"].isoformat()
    [(path, row)] = [(p, r) for p, r in manifest.items() if r["dataset"] == "Sen1Floods11"]
    merged = scene_metadata(path, row, {}, raster.read_info(REAL_ARCHIVE / path).tags)
    assert merged["datetime"] == datetime(2019, 9, 17) and merged["end_datetime"] == "2019-09-17T23:59:59.999999"
    undated = [p for p, r in manifest.items() if r.get("datetime") is None and "S1" not in p]
    assert undated and all(scene_metadata(p, manifest[p], {}, {})["datetime"] is None for p in undated[:50])
