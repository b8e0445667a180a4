"""Result files of a query: GeoJSON footprints, a STAC ItemCollection, quicklook PNGs, atomic writes.

Hits come from the indexed fixture archive: Sentinel-1 GeoTIFFs with a CRS and a STAC sidecar (footprints,
sar:/sat: fields, datetimes), PNG chips and a KOMPSAT-5 GeoTIFF without CRS (no footprint, no datetime).
STAC items are validated with pystac offline (tests/stac_offline.py: vendored extension schemas, no fetching).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise

import pystac
import pytest
from PIL import Image
from pystac.errors import STACValidationError
from pystac.extensions.sar import SarExtension
from pystac.extensions.sat import SatExtension

from sarclip_search.cli.app import EXIT_ERROR, EXIT_OK
from sarclip_search.query.engine import Engine
from sarclip_search.query.export import (
    EARLIEST_SAR_TIME,
    EXTENSIONS,
    GEOTIFF,
    ExportError,
    geojson,
    media_type,
    parse_frequency_band,
    parse_polarizations,
    stac_item,
    write_atomic,
    write_geojson,
    write_stac,
)
from sarclip_search.query.quicklook import CAPTION_HEIGHT, SHEET_NAME, THUMBNAIL_SIZE, write_thumbnails

from helpers import run
from stac_offline import validate_offline

S1_WITH_SIDECAR = "sentinel1/S1A_IW_GRDH_1SDV_20210101T054512_20210101T054537_035951_043656_1A2B_tiny.tif"
NO_CRS = "kompsat5/K5_ES_GTC_HH_20150603T171436_nocrs_tiny.tif"


def by_path(hits, path):
    return next(h for h in hits if h.path == path)


# --- GeoJSON ----------------------------------------------------------------------------------------------


def test_geojson_feature_collection(hits, tmp_path):
    path = write_geojson(hits, tmp_path / "hits.geojson")
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == len(hits)
    for rank, (feature, hit) in enumerate(zip(collection["features"], hits), start=1):
        assert feature["type"] == "Feature" and feature["id"] == hit.id
        assert feature["properties"]["rank"] == rank and feature["properties"]["score"] == round(hit.score, 6)
        assert feature["properties"]["label"] == hit.metadata["label"]
        if hit.bbox is None:
            assert feature["geometry"] is None and "bbox" not in feature
            continue
        assert feature["geometry"]["type"] == "Polygon"
        (ring,) = feature["geometry"]["coordinates"]
        assert len(ring) == 5 and ring[0] == ring[-1]  # closed
        area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairwise(ring))
        assert area2 > 0  # counter-clockwise exterior ring (RFC 7946)
        minlon, minlat, maxlon, maxlat = hit.bbox
        assert {tuple(p) for p in ring} == {(minlon, minlat), (maxlon, minlat), (maxlon, maxlat), (minlon, maxlat)}
        assert feature["bbox"] == list(hit.bbox)
    assert by_path(hits, NO_CRS).bbox is None and by_path(hits, S1_WITH_SIDECAR).bbox is not None


def test_geojson_of_no_hits_is_empty():
    assert geojson([]) == {"type": "FeatureCollection", "features": []}


# --- STAC -------------------------------------------------------------------------------------------------


SAR_SCHEMA, SAT_SCHEMA, VIEW_SCHEMA, PROCESSING_SCHEMA = (EXTENSIONS[p][0] for p in ("sar", "sat", "view", "processing"))


def test_stac_item_collection_validates_offline(hits, tmp_path, monkeypatch):
    path = write_stac(hits, tmp_path / "hits.json")
    written = json.loads(path.read_text())
    for item in written["features"]:  # every item as written, against core + each extension it declares
        used = validate_offline(item, monkeypatch)
        assert set(item["stac_extensions"]) <= set(used)
    collection = pystac.ItemCollection.from_dict(written)
    items = list(collection)
    assert len(items) == len(hits) and len({item.id for item in items}) == len(items)
    for rank, (item, hit) in enumerate(zip(items, hits), start=1):
        assert item.properties["sarsearch:rank"] == rank and item.properties["sarsearch:tile_id"] == hit.id
        assert item.assets["data"].href.endswith(hit.path)
        assert (item.geometry is None) == (hit.bbox is None)
        expected_type = {".png": "image/png", ".tif": GEOTIFF if hit.metadata.get("crs") else "image/tiff"}
        assert item.assets["data"].media_type == expected_type[os.path.splitext(hit.path)[1]]

    s1 = items[hits.index(by_path(hits, S1_WITH_SIDECAR))]
    assert set(s1.stac_extensions) == {SAR_SCHEMA, SAT_SCHEMA, PROCESSING_SCHEMA}
    assert SarExtension.has_extension(s1) and SatExtension.has_extension(s1)
    sar = SarExtension.ext(s1)
    assert [p.value for p in sar.polarizations] == ["VV", "VH"]  # manifest "VV+VH" parsed
    assert sar.frequency_band.value == "C" and sar.instrument_mode == "IW" and sar.product_type == "GRD"
    assert SatExtension.ext(s1).orbit_state.value == "descending" and s1.properties["sat:absolute_orbit"] == 35951
    assert s1.datetime == datetime(2021, 1, 1, 5, 45, 12, tzinfo=UTC)
    assert "start_datetime" not in s1.properties and "sarsearch:datetime_unknown" not in s1.properties
    assert s1.properties["processing:datetime"] == "2021-01-01T05:45:12Z"  # its TIFFTAG_DATETIME: file written

    k5 = items[hits.index(by_path(hits, NO_CRS))]
    assert k5.stac_extensions == [SAR_SCHEMA]  # band and polarization known: SAR v1.3.0 requires no field
    assert k5.properties["sar:polarizations"] == ["HH"] and k5.properties["sar:frequency_band"] == "X"
    assert "sar:instrument_mode" not in k5.properties
    assert k5.datetime is None and k5.properties["sarsearch:datetime_unknown"] is True
    assert k5.common_metadata.start_datetime == EARLIEST_SAR_TIME
    assert k5.common_metadata.end_datetime <= datetime.now(UTC)


def with_metadata(hit, **changes):
    """`hit` with catalog columns changed (None removes one)."""
    metadata = {**hit.metadata, **changes}
    return replace(hit, metadata={k: v for k, v in metadata.items() if v is not None})


EXPORTED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.mark.parametrize(("times", "expected"), [
    ({"datetime": "2015-06-03T17:14:36"},  # known to the second: that time, no range, no flag
     ("2015-06-03T17:14:36Z", None, None, False)),
    ({"datetime": "2019-09-17T00:00:00", "start_datetime": "2019-09-17T00:00:00",  # a date alone: its day
      "end_datetime": "2019-09-17T23:59:59.999999"},
     ("2019-09-17T00:00:00Z", "2019-09-17T00:00:00Z", "2019-09-17T23:59:59.999999Z", False)),
    ({"start_datetime": "2019-01-01T00:00:00", "end_datetime": "2019-02-01T00:00:00"},  # only a range
     (None, "2019-01-01T00:00:00Z", "2019-02-01T00:00:00Z", False)),
    ({}, (None, "1951-01-01T00:00:00Z", "2024-05-06T07:08:09Z", True)),  # unknown: the interval STAC forces
    ({"start_datetime": "2019-02-01T00:00:00", "end_datetime": "2019-01-01T00:00:00"},  # reversed: unknown
     (None, "1951-01-01T00:00:00Z", "2024-05-06T07:08:09Z", True)),
])
def test_stac_times_follow_the_catalog(hits, monkeypatch, times, expected):
    base = by_path(hits, NO_CRS)
    hit = with_metadata(base, **{"datetime": None, **times})
    item = stac_item(hit, 1, exported_at=EXPORTED).to_dict(transform_hrefs=False)
    validate_offline(item, monkeypatch)
    properties = item["properties"]
    assert (properties["datetime"], properties.get("start_datetime"), properties.get("end_datetime"),
            properties.get("sarsearch:datetime_unknown", False)) == expected


def test_stac_extension_fields_are_cleaned_and_declared(hits, monkeypatch):
    base = by_path(hits, NO_CRS)
    hit = with_metadata(
        base,
        **{"sar:frequency_band": "C or X",  # two bands: not a SAR band value
           "sar:polarizations": "VV+VH (2 bands, float32 dB)", "sar:looks_range": "5", "sar:looks_azimuth": "many",
           "sar:resolution_range": 2.5, "sar:observation_direction": "Right", "sar:beam_ids": '["IW1", "IW2"]',
           "sar:scale": "dB",  # not a SAR extension field
           "sat:orbit_state": "Ascending", "sat:relative_orbit": 0,  # orbits count from 1
           "view:incidence_angle": "35.5", "processing:datetime": "2020-07-21T07:55:31"})
    item = stac_item(hit, 1, exported_at=EXPORTED).to_dict(transform_hrefs=False)
    used = validate_offline(item, monkeypatch)
    assert item["stac_extensions"] == [SAR_SCHEMA, SAT_SCHEMA, VIEW_SCHEMA, PROCESSING_SCHEMA]
    assert set(item["stac_extensions"]) <= set(used)
    properties = item["properties"]
    assert {k: v for k, v in properties.items() if k.partition(":")[0] in EXTENSIONS} == {
        "sar:polarizations": ["VV", "VH"], "sar:looks_range": 5, "sar:resolution_range": 2.5,
        "sar:observation_direction": "right", "sar:beam_ids": ["IW1", "IW2"], "sat:orbit_state": "ascending",
        "view:incidence_angle": 35.5, "processing:datetime": "2020-07-21T07:55:31Z"}

    plain = with_metadata(base, **{k: None for k in base.metadata if k.startswith("sar:")})
    item = stac_item(plain, 1, exported_at=EXPORTED).to_dict(transform_hrefs=False)
    assert item["stac_extensions"] == []  # no extension field, nothing declared
    validate_offline(item, monkeypatch)


def test_offline_validation_catches_an_undeclared_schema_violation(hits, monkeypatch):
    """The validator is not vacuous: a SAR field of the wrong type fails against the declared schema."""
    item = stac_item(by_path(hits, NO_CRS), 1, exported_at=EXPORTED).to_dict(transform_hrefs=False)
    item["properties"]["sar:polarizations"] = "HH"  # a string, not a list
    with pytest.raises(STACValidationError, match="sar"):
        validate_offline(item, monkeypatch)
    del item["properties"]["start_datetime"]  # datetime null without its range: core schema fails
    item["properties"]["sar:polarizations"] = ["HH"]
    with pytest.raises(STACValidationError):
        validate_offline(item, monkeypatch)


@pytest.mark.parametrize(("path", "georeferenced", "expected"), [
    ("a/b.tif", True, GEOTIFF), ("a/b.TIFF", True, GEOTIFF), ("a/b.tif", False, "image/tiff"),
    ("x.png", False, "image/png"), ("x.jpg", False, "image/jpeg"), ("x.JPEG", True, "image/jpeg"),
    ("x.h5", False, None),
])
def test_media_type_by_suffix(path, georeferenced, expected):
    assert media_type(path, georeferenced=georeferenced) == expected


@pytest.mark.parametrize("value, expected", [
    ("VV+VH", ["VV", "VH"]), ('["HH", "HV"]', ["HH", "HV"]), ("VV+VH (2 bands, float32 dB)", ["VV", "VH"]),
    ("hh", ["HH"]), ("unknown", None), (None, None),
])
def test_parse_polarizations(value, expected):
    assert parse_polarizations(value) == expected


def test_parse_frequency_band():
    assert parse_frequency_band("C") == "C" and parse_frequency_band("ku") == "Ku"
    assert parse_frequency_band("C or X") is None and parse_frequency_band(None) is None


# --- thumbnails -------------------------------------------------------------------------------------------


def test_thumbnails_one_png_per_hit_and_a_contact_sheet(hits, tmp_path):
    report = write_thumbnails(hits[:7], tmp_path / "thumbs")
    written = sorted(p.name for p in (tmp_path / "thumbs").glob("*.png"))
    assert len(written) == 8 and SHEET_NAME in written and not report.failed
    for rank, (path, hit) in enumerate(zip(report.paths, hits), start=1):
        assert path.name == f"{rank:03d}_tile{hit.id}.png"
        with Image.open(path) as image:
            image.load()
            assert image.mode == "L" and max(image.size) == THUMBNAIL_SIZE
            assert image.getextrema()[1] > image.getextrema()[0]  # stretched, not blank
    with Image.open(report.contact_sheet) as sheet:
        assert sheet.size == (5 * THUMBNAIL_SIZE, 2 * (THUMBNAIL_SIZE + CAPTION_HEIGHT))  # 7 tiles: 5 + 2, captions under


def test_unreadable_tile_gets_a_placeholder(hits, tmp_path):
    gone = replace(hits[0], metadata={**hits[0].metadata, "abs_path": str(tmp_path / "moved.tif")})
    report = write_thumbnails([gone, hits[1]], tmp_path / "thumbs")
    assert [tile_id for tile_id, _ in report.failed] == [gone.id] and len(report.paths) == 2
    with Image.open(report.paths[0]) as image:
        assert image.getextrema()[0] == image.getextrema()[1]  # flat grey


# --- atomic writes and unwritable paths -------------------------------------------------------------------


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old content that is longer than the new one")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folder_is_a_typed_error(hits, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ExportError, match="no permission"):
            write_geojson(hits, locked / "hits.geojson")
        with pytest.raises(ExportError, match="cannot write"):
            write_atomic(locked / "x.json", b"{}")
    finally:
        locked.chmod(0o700)


def test_folder_or_file_as_folder_is_a_typed_error(hits, tmp_path):
    with pytest.raises(ExportError, match="is a folder"):
        write_stac(hits, tmp_path)
    (tmp_path / "file").write_text("")
    for write in (write_geojson, write_stac):
        with pytest.raises(ExportError, match="is a file, not a folder"):
            write(hits, tmp_path / "file" / "sub" / "hits.json")
    with pytest.raises(ExportError, match="is a file, not a folder"):
        write_thumbnails(hits, tmp_path / "file" / "thumbs")
    assert os.listdir(tmp_path) == ["file"]


def test_missing_folders_are_created_like_thumbnails(hits, tmp_path):
    geo = write_geojson(hits, tmp_path / "a" / "b" / "hits.geojson")
    stac = write_stac(hits, tmp_path / "c" / "hits.json")
    write_thumbnails(hits[:1], tmp_path / "d" / "thumbs")
    assert len(json.loads(geo.read_text())["features"]) == len(hits)
    assert len(json.loads(stac.read_text())["features"]) == len(hits)
    assert sorted(p.name for p in (tmp_path / "d" / "thumbs").glob("*.png")) == [f"001_tile{hits[0].id}.png", SHEET_NAME]


def test_cli_writes_all_outputs(indexed_db, tmp_path):
    db, _, checkpoint = indexed_db
    with Engine.open(db) as engine:
        first = int(engine.vectors.ids()[0])
    result = run("query", "--like", first, "-k", 4, "--json", "--db", db, "--model", checkpoint,
                 "--geojson", tmp_path / "hits.geojson", "--stac", tmp_path / "hits.json", "--thumbnails", tmp_path / "th")
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    assert len(json.loads(result.stdout)) == 4  # stdout stays pure JSON; "wrote ..." lines go to stderr
    assert len(json.loads((tmp_path / "hits.geojson").read_text())["features"]) == 4
    items = list(pystac.ItemCollection.from_dict(json.loads((tmp_path / "hits.json").read_text())))
    assert len(items) == 4 and all(os.path.isfile(item.assets["thumbnail"].href) for item in items)
    assert len(list((tmp_path / "th").glob("*.png"))) == 5
    assert result.stderr.count("wrote") == 3


@pytest.mark.parametrize("option", ["--geojson", "--stac", "--thumbnails"])
def test_cli_unwritable_output_is_one_line_before_the_query(indexed_db, tmp_path, option):
    db, _, checkpoint = indexed_db
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" if option == "--thumbnails" else tmp_path / "file" / "out.json"
    result = run("query", "--like", 1, "--db", db, "--model", checkpoint, option, target)
    assert result.exit_code == EXIT_ERROR, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(target) in lines[0]


@pytest.mark.parametrize("option", ["--geojson", "--stac", "--thumbnails"])
def test_cli_creates_a_missing_output_folder(indexed_db, tmp_path, option):
    db, _, checkpoint = indexed_db
    target = tmp_path / "new" / "folder" / ("thumbs" if option == "--thumbnails" else "out.json")
    result = run("query", "--like", 1, "-k", 2, "--db", db, "--model", checkpoint, option, target)
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    assert target.is_dir() if option == "--thumbnails" else len(json.loads(target.read_text())["features"]) == 2
