"""Manifest and sidecar edits on unchanged files: `index` re-labels the scene without re-embedding it.

And places chips without CRS by their manifest point (footprint_source = manifest_point).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from sarclip_search.cli.app import EXIT_OK
from sarclip_search.index import VectorIndex
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.query.engine import Engine
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.filters import Filters, build_predicate
from sarclip_search.store.layout import IndexStore, write_json_atomic
from sarclip_search.store.schema import SCHEMA_VERSION

from helpers import index, link_encoders, reindex

# an OpenSARShip-like chip: no CRS, no time inside; its folder is the Sentinel-1 product it was cut from
SHIP_PNG = "S1A_IW_GRDH_1SDV_20150823T221233_20150823T221258_007396_00A2CA_54D0/chip_ship_0001.png"
FIELD_PNG = "chip_field_0001.png"
S1_TIF = "S1A_IW_GRDH_1SDV_20210101T054512_20210101T054537_035951_043656_1A2B_tiny.tif"
# chip_ship has no CRS; the manifest places it at a point, boxed by its size at 10 m per pixel
MANIFEST = (
    "path,label,split,lon,lat,resolution_m\n"
    f"{SHIP_PNG},ship,train,118.0476,38.87066,10 (GRD pixel spacing)\n"
    f"{FIELD_PNG},field,test,,,\n"
    f"{S1_TIF},ship,train,,,\n"
)
NEAR_SHIP = (118.0, 38.8, 118.1, 38.9)


@pytest.fixture
def archive_db(tmp_path, fixture_archive, indexed_db, checkpoint, sarclip) -> tuple[Path, Path]:
    """(archive, db): three files with a manifest, indexed (the ONNX encoders copied from `indexed_db`)."""
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / SHIP_PNG).parent.mkdir()
    shutil.copy2(fixture_archive / "chips" / "chip_ship_0001.png", archive / SHIP_PNG)
    shutil.copy2(fixture_archive / "chips" / FIELD_PNG, archive / FIELD_PNG)
    for name in (S1_TIF, S1_TIF + ".json"):
        shutil.copy2(fixture_archive / "sentinel1" / name, archive / name)
    (archive / "manifest.csv").write_text(MANIFEST)
    db = tmp_path / "db"
    link_encoders(indexed_db[0], db)  # so no run here exports (loads) the model
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
    assert (report.indexed, report.relabelled, report.failed) == (3, 0, [])
    return archive, db


def edit_manifest(archive: Path, old: str, new: str) -> None:
    manifest = archive / "manifest.csv"
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new, 1))


def tile_of(engine: Engine, path: str) -> int:
    [tile_id] = engine.catalog.tile_ids("path = ?", [path]).tolist()
    return tile_id


def matching(engine: Engine, **filters) -> list[int]:
    """Tile ids matching shortcut filters, as a query's filter step finds them."""
    return engine.catalog.tile_ids(*build_predicate(Filters(**filters), engine.catalog.columns())).tolist()


def state(db: Path) -> tuple[dict[int, dict], np.ndarray, np.ndarray]:
    """(tile_id -> tile_view row, sorted vector ids, their vectors) of the committed generation."""
    with Engine.open(db) as engine:
        ids = np.sort(engine.vectors.ids())
        rows = {row["tile_id"]: row for row in engine.catalog.fetch_tiles(ids.tolist())}
        return rows, ids, engine.vectors.vectors(ids)


def test_label_edit_relabels_without_embedding(archive_db, checkpoint):
    archive, db = archive_db
    rows_before, ids_before, vectors_before = state(db)
    edit_manifest(archive, f"{SHIP_PNG},ship,", f"{SHIP_PNG},tanker,")

    report = reindex(archive, db, checkpoint)  # the model loader raises if called
    assert (report.relabelled, report.indexed, report.unchanged, report.tiles_added) == (1, 0, 2, 0)
    rows, ids, vectors = state(db)
    assert np.array_equal(ids, ids_before) and np.array_equal(vectors, vectors_before)  # not re-embedded
    with Engine.open(db) as engine:
        ship = tile_of(engine, SHIP_PNG)
        assert matching(engine, label="tanker") == [ship]
        assert ship not in matching(engine, label="ship")
        assert ship not in matching(engine, where="label = 'ship'")
        hits = engine.query(like=[ship], filters=Filters(label="tanker"), k=5)
        assert [hit.id for hit in hits] == [ship] and hits[0].metadata["label"] == "tanker"
    assert rows[ship]["scene_id"] == rows_before[ship]["scene_id"]
    assert (rows_before[ship]["tile_label"], rows[ship]["tile_label"]) == ("ship", "tanker")  # no boxes: the scene's
    assert {k: v for k, v in rows[ship].items() if k not in ("label", "tile_label", "metadata_hash")} == \
        {k: v for k, v in rows_before[ship].items() if k not in ("label", "tile_label", "metadata_hash")}

    again = reindex(archive, db, checkpoint)  # nothing changed since: nothing re-labelled
    assert (again.relabelled, again.unchanged, again.tiles_added) == (0, 3, 0)


def test_removed_column_is_cleared_and_touched_file_relabelled(archive_db, checkpoint):
    archive, db = archive_db
    manifest = archive / "manifest.csv"
    manifest.write_text("\n".join(",".join(line.split(",")[:2] + line.split(",")[3:])  # drop `split`
                                  for line in manifest.read_text().splitlines()) + "\n")
    os.utime(archive / FIELD_PNG, (1_600_000_000, 1_600_000_000))  # touched too: hashed, same bytes

    report = reindex(archive, db, checkpoint)
    assert (report.relabelled, report.indexed, report.tiles_added) == (3, 0, 0)
    rows, _, _ = state(db)
    assert {row["split"] for row in rows.values()} == {None}
    assert reindex(archive, db, checkpoint).unchanged == 3  # the touched file's new mtime was recorded


def test_sidecar_edit_relabels(archive_db, checkpoint):
    archive, db = archive_db
    sidecar = archive / (S1_TIF + ".json")
    item = json.loads(sidecar.read_text())
    item["properties"]["sar:instrument_mode"] = "EW"  # the file name says IW; the sidecar wins over it
    sidecar.write_text(json.dumps(item))

    report = reindex(archive, db, checkpoint)
    assert (report.relabelled, report.tiles_added) == (1, 0)
    with Engine.open(db) as engine:
        assert engine.catalog.tile_ids("\"sar:instrument_mode\" = 'EW'").tolist() == [tile_of(engine, S1_TIF)]


def test_interrupted_relabel_keeps_the_previous_state(archive_db, checkpoint, monkeypatch):
    archive, db = archive_db
    before = state(db)
    edit_manifest(archive, f"{SHIP_PNG},ship,", f"{SHIP_PNG},tanker,")

    def failing_save(self, directory):
        (Path(directory) / ".vectors.faiss.x1.tmp").write_bytes(b"half written")  # saves write new files
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(VectorIndex, "save", failing_save)
        with pytest.raises(OSError, match="No space left"):
            reindex(archive, db, checkpoint)
    after = state(db)
    assert after[0] == before[0] and np.array_equal(after[2], before[2])
    assert not list(db.glob("*.tmp"))
    assert reindex(archive, db, checkpoint).relabelled == 1  # the next run does it


def test_manifest_point_places_a_chip_without_crs(archive_db, checkpoint):
    archive, db = archive_db
    with Engine.open(db) as engine:
        ship = tile_of(engine, SHIP_PNG)
        [row] = engine.catalog.fetch_tiles([ship])
        assert row["crs"] is None and row["footprint_source"] == "manifest_point"
        # height px x 10 m around the point
        assert row["bbox_maxlat"] - row["bbox_minlat"] == pytest.approx(row["scene_height"] * 10 / 111_320)
        assert (row["bbox_minlat"] + row["bbox_maxlat"]) / 2 == pytest.approx(38.87066)
        assert (row["bbox_minlon"], row["bbox_minlat"]) == (row["scene_bbox_minlon"], row["scene_bbox_minlat"])
        assert matching(engine, bbox=NEAR_SHIP) == [ship]
        [s1] = engine.catalog.fetch_tiles([tile_of(engine, S1_TIF)])
        assert s1["footprint_source"] == "raster"
        [field] = engine.catalog.fetch_tiles([tile_of(engine, FIELD_PNG)])
        assert field["footprint_source"] is None and field["bbox_minlon"] is None

    edit_manifest(archive, "118.0476,38.87066", "10.5,59.9")  # moved: the tile's bbox moves with it
    assert reindex(archive, db, checkpoint).relabelled == 1
    with Engine.open(db) as engine:
        assert matching(engine, bbox=NEAR_SHIP) == []
        assert matching(engine, bbox=(10.4, 59.8, 10.6, 60.0)) == [ship]


def test_v1_index_is_read_and_upgraded_by_relabelling(archive_db, checkpoint):
    archive, db = archive_db
    generation = IndexStore(db).require_current()
    _, ids_before, vectors_before = state(db)
    con = duckdb.connect(str(generation.catalog_path))  # what a v1 index looks like
    con.execute("ALTER TABLE scenes DROP COLUMN metadata_hash")
    con.execute("ALTER TABLE scenes DROP COLUMN footprint_source")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    info = generation.read_info()
    write_json_atomic(generation.info_path, {**info, "catalog_schema_version": 1})
    with Engine.open(db) as engine:  # queries read it as it is
        assert "footprint_source" not in engine.catalog.columns()
        assert len(engine.query(like=[int(ids_before[0])], k=3)) == 3

    report = reindex(archive, db, checkpoint)
    assert (report.relabelled, report.indexed, report.tiles_added) == (3, 0, 0)
    generation = IndexStore(db).require_current()
    assert generation.read_info()["catalog_schema_version"] == SCHEMA_VERSION
    with Catalog(generation.catalog_path, read_only=True) as catalog:
        assert catalog.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert all(state_[3] for state_ in catalog.scene_states().values())
    rows, ids, vectors = state(db)
    assert np.array_equal(ids, ids_before) and np.array_equal(vectors, vectors_before)
    assert sorted(str(row["footprint_source"]) for row in rows.values()) == ["None", "manifest_point", "raster"]


def test_cli_reports_relabelled_files(archive_db, checkpoint):
    archive, db = archive_db
    edit_manifest(archive, f"{FIELD_PNG},field,", f"{FIELD_PNG},flooded_field,")
    result = index(archive, db, checkpoint)
    assert result.exit_code == EXIT_OK, result.output
    assert "files: 0 embedded, 2 unchanged, 0 removed, 0 failed, 1 re-labelled" in result.stderr


def test_placed_chip_filters_and_exports(archive_db, tmp_path):
    from sarclip_search.query.export import write_geojson, write_stac

    _, db = archive_db
    with Engine.open(db) as engine:
        ship = tile_of(engine, SHIP_PNG)
        assert matching(engine, after="2015-08-23", before="2015-08-24") == [ship]  # time from the product name
        assert ship not in matching(engine, after="2015-08-24")
        [hit] = engine.query(like=[ship], filters=Filters(bbox=NEAR_SHIP), k=3)
    assert hit.bbox is not None and hit.metadata["sar:instrument_mode"] == "IW"
    feature = json.loads(write_geojson([hit], tmp_path / "hits.geojson").read_text())["features"][0]
    assert feature["geometry"]["type"] == "Polygon" and feature["bbox"] == list(hit.bbox)
    item = json.loads(write_stac([hit], tmp_path / "hits.json").read_text())["features"][0]
    assert item["properties"]["datetime"].startswith("2015-08-23T22:12:33")
    assert item["bbox"] == list(hit.bbox) and item["properties"]["platform"] == "sentinel-1a"
    assert "metadata_hash" not in item["properties"]
