"""Manifest, STAC sidecar and metadata merging."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from sarclip_search.errors import MetadataError
from sarclip_search.metadata import (
    STAC_FIELD_MAP,
    load_manifest,
    load_stac_sidecar,
    missing_paths,
    scene_metadata,
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
    assert len(manifest) == 3474
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


def test_scene_metadata_tags_only_and_bad_datetime() -> None:
    merged = scene_metadata("x.tif", None, {}, {"TIFFTAG_DATETIME": "2019:09:17 10:00:00"})
    assert merged["datetime"] == datetime(2019, 9, 17, 10, 0)
    merged = scene_metadata("x.tif", {"datetime": "yesterday"}, {}, {})
    assert merged["datetime"] is None
