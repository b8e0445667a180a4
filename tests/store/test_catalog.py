"""The DuckDB catalog: schema, ids, dynamic columns, reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.errors import ArtifactMismatchError, CatalogError, FilterError
from sarclip_search.ingest.metadata import load_manifest, scene_metadata
from sarclip_search.store.catalog import QUERY_THREADS, Catalog
from sarclip_search.store.schema import SCHEMA_VERSION, V3_TILE_COLUMNS

REAL_ARCHIVE = Path("/work/shared/data")


def tiles_for(n: int, bbox: tuple[float, float, float, float] | None = (0.0, 0.0, 1.0, 1.0)) -> list[dict]:
    return [{"col_off": 32 * i, "row_off": 0, "width": 32, "height": 32, "bbox": bbox} for i in range(n)]


def manifest_rows(n: int = 4) -> list[dict[str, object]]:
    """A few real manifest rows as scene dicts (inline rows when the shared data is absent)."""
    if (REAL_ARCHIVE / "manifest.csv").is_file():
        manifest = load_manifest(REAL_ARCHIVE)
        by_dataset: dict[str, str] = {}
        for path, row in manifest.items():
            by_dataset.setdefault(str(row["dataset"]), path)
        paths = list(by_dataset.values())[:n]
        return [scene_metadata(p, manifest[p], {}, {}) for p in paths]
    return [
        scene_metadata("mstar/a.jpg", {"dataset": "MSTAR-SOC", "label": "T72", "n_objects": 1,
                                       "depression_deg": 17, "polarization": "HH", "width": 128}, {}, {}),
        scene_metadata("s1/b.tif", {"dataset": "Sen1Floods11", "label": "flood_water", "n_objects": None,
                                    "depression_deg": None, "polarization": "VV+VH (2 bands, float32 dB)",
                                    "width": 512}, {}, {}),
    ]


def test_schema_create_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as catalog:
        assert catalog.get_meta("schema_version") == str(SCHEMA_VERSION)
        scene_id = catalog.add_scene({"path": "a.tif", "label": "T72"})
        catalog.add_tiles(scene_id, tiles_for(2))
        catalog.set_meta("model", "sarclip-b16")
    with Catalog(path) as catalog:
        assert catalog.counts() == {"scenes": 1, "tiles": 2}
        assert catalog.get_meta("model") == "sarclip-b16"
        assert "label" in catalog.columns()


def test_schema_version_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as catalog:
        catalog.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(ArtifactMismatchError, match="--rebuild"):
        Catalog(path)
    with pytest.raises(ArtifactMismatchError, match="--rebuild"):
        Catalog(path, read_only=True)


def test_read_only_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="sarsearch index"):
        Catalog(tmp_path / "nope.duckdb", read_only=True)


def test_ids_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as catalog:
        a = catalog.add_scene({"path": "a.tif"})
        ids_a = catalog.add_tiles(a, tiles_for(3))
        b = catalog.add_scene({"path": "b.tif"})
        ids_b = catalog.add_tiles(b, tiles_for(2))
        assert ids_a.dtype == np.int64 and ids_a.tolist() == [1, 2, 3] and ids_b.tolist() == [4, 5]
        removed = catalog.remove_scene("b.tif")
        assert removed.dtype == np.int64 and removed.tolist() == [4, 5]
        assert catalog.remove_scene("b.tif").tolist() == []
        assert catalog.tile_ids().tolist() == [1, 2, 3]
    with Catalog(path) as catalog:  # counters survive a reopen
        b2 = catalog.add_scene({"path": "b.tif"})
        assert b2 > b
        assert catalog.add_tiles(b2, tiles_for(1)).tolist() == [6]
        assert catalog.counts() == {"scenes": 2, "tiles": 4}


def test_add_scene_twice_and_unknown_scene() -> None:
    with Catalog() as catalog:
        catalog.add_scene({"path": "a.tif"})
        with pytest.raises(CatalogError, match="already"):
            catalog.add_scene({"path": "a.tif"})
        with pytest.raises(CatalogError, match="scene_id"):
            catalog.add_tiles(999, tiles_for(1))
        assert catalog.counts() == {"scenes": 1, "tiles": 0}


def test_transaction_rolls_back() -> None:
    with Catalog() as catalog:
        with pytest.raises(RuntimeError), catalog.transaction():
            scene_id = catalog.add_scene({"path": "a.tif", "label": "x"})
            catalog.add_tiles(scene_id, tiles_for(2))
            raise RuntimeError("boom")
        assert catalog.counts() == {"scenes": 0, "tiles": 0}


def test_dynamic_columns_from_manifest_rows() -> None:
    rows = manifest_rows()
    with Catalog() as catalog:
        for row in rows:
            catalog.add_scene(row)
        types = dict(catalog._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'scenes'").fetchall())
        assert types["label"] == "VARCHAR"
        assert types["n_objects"] == "BIGINT"
        assert types["sar:polarizations"] == "VARCHAR"
        assert types["width"] == "INTEGER"  # a fixed column keeps its type
        assert catalog.summary()["scenes"] == len(rows)
        assert sum(catalog.summary()["dataset"].values()) == len(rows)


def test_dynamic_column_types_and_widening() -> None:
    with Catalog() as catalog:
        catalog.add_scene({"path": "a", "n": 1, "x": 1.5, "flag": True, "pols": ["VV", "VH"], 'odd"name': "q"})
        catalog.add_scene({"path": "b", "n": 2.5, "flag": "maybe"})
        catalog.add_scene({"path": "c", "N": 3})  # case-insensitive: same column as n
        types = dict(catalog._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'scenes'").fetchall())
        assert types["n"] == "DOUBLE" and types["x"] == "DOUBLE" and types["flag"] == "VARCHAR"
        assert types["pols"] == "VARCHAR" and types['odd"name'] == "VARCHAR"
        scene_id = catalog.add_scene({"path": "d", "pols": ["HH"]})
        [tile_id] = catalog.add_tiles(scene_id, tiles_for(1))
        [record] = catalog.fetch_tiles([tile_id])
        assert json.loads(record["pols"]) == ["HH"]
        assert catalog._con.execute("SELECT n FROM scenes ORDER BY path").fetchall() == [(1.0,), (2.5,), (3.0,), (None,)]


def _dump(catalog: Catalog) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Every scene and tile row (in id order) and the scene column types of a catalog."""
    con = catalog._con
    types = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'scenes' ORDER BY ordinal_position").fetchall()
    return (types, con.execute("SELECT * FROM scenes ORDER BY scene_id").fetchall(),
            con.execute("SELECT * FROM tiles ORDER BY tile_id").fetchall())


def test_batched_writes_equal_one_transaction_per_scene() -> None:
    # In one transaction add_scene/add_tiles hold rows back and write them in bulk; columns added and
    # widened mid-batch, a removal and reads inside the batch must give the rows one-by-one writes give.
    scenes = [
        {"path": "a", "n": 1, "label": "x"}, {"path": "b", "n": 2, "label": "y"},
        {"path": "c", "n": 2.5, "flag": True}, {"path": "d", "N": 3, "pols": ["VV"]},
        {"path": "e", "label": 7, "bbox": (1.0, 2.0, 3.0, 4.0)},
    ]
    one_by_one, batched = Catalog(), Catalog()
    seen: list[tuple[int, list[int]]] = []
    for scene_no, scene in enumerate(scenes):
        scene_id = one_by_one.add_scene(scene)
        seen.append((scene_id, one_by_one.add_tiles(scene_id, tiles_for(scene_no + 1)).tolist()))
    one_by_one.remove_scene("b")
    with batched.transaction():
        for scene_no, scene in enumerate(scenes):
            scene_id = batched.add_scene(scene)
            assert (scene_id, batched.add_tiles(scene_id, tiles_for(scene_no + 1)).tolist()) == seen[scene_no]
        assert batched.counts() == {"scenes": 5, "tiles": 15}  # a read sees the held-back rows
        assert sorted(batched.remove_scene("b").tolist()) == seen[1][1]
    assert _dump(batched) == _dump(one_by_one)
    assert batched.add_scene({"path": "f"}) == one_by_one.add_scene({"path": "f"})


def test_fetch_tiles_order_and_json() -> None:
    with Catalog() as catalog:
        scene_id = catalog.add_scene({"path": "a.tif", "datetime": "2021-06-30T12:00:00Z", "bbox": (5, 45, 6, 46),
                                      "nan_value": float("nan"), "label": "T72"})
        ids = catalog.add_tiles(scene_id, tiles_for(2, None) + tiles_for(1, (5.0, 45.0, 5.5, 45.5)))
        wanted = [int(ids[2]), 9999, int(ids[0]), int(ids[1])]
        records = catalog.fetch_tiles(wanted)
        assert [r["tile_id"] for r in records] == [ids[2], ids[0], ids[1]]
        json.dumps(records, allow_nan=False)
        first = records[0]
        assert first["datetime"] == "2021-06-30T12:00:00"
        assert first["bbox_minlon"] == 5.0 and first["scene_bbox_maxlat"] == 46.0
        assert first["nan_value"] is None and first["path"] == "a.tif" and first["label"] == "T72"
        assert records[1]["bbox_minlon"] is None
        assert catalog.fetch_tiles([]) == []


def test_scene_states() -> None:
    with Catalog() as catalog:
        catalog.add_scene({"path": "a.tif", "size_bytes": 10, "mtime": 1.5, "content_hash": "abc"})
        catalog.add_scene({"path": "b.tif", "size_bytes": 1, "mtime": 2.0, "content_hash": "d", "metadata_hash": "e"})
        assert catalog.scene_states() == {"a.tif": (10, 1.5, "abc", None), "b.tif": (1, 2.0, "d", "e")}


def test_update_scene_keeps_ids_and_clears_dropped_fields() -> None:
    with Catalog() as catalog:
        scene_id = catalog.add_scene({"path": "a.tif", "label": "T72", "split": "train", "n": 1, "bbox": (0, 0, 1, 1)})
        ids = catalog.add_tiles(scene_id, tiles_for(2))
        other = catalog.add_scene({"path": "b.tif", "label": "BMP2"})
        assert catalog.update_scene({"path": "a.tif", "label": "tanker", "n": 2.5, "new_field": "x"}) == scene_id
        [row] = catalog.fetch_tiles([int(ids[0])])
        assert (row["label"], row["n"], row["new_field"], row["split"]) == ("tanker", 2.5, "x", None)
        assert row["scene_bbox_minlon"] is None  # not given: cleared, like any field the new metadata lacks
        assert catalog.tile_ids().tolist() == ids.tolist() and catalog.counts() == {"scenes": 2, "tiles": 2}
        assert catalog.fetch_tiles([int(ids[1])])[0]["bbox_maxlon"] == 1.0  # tile rows untouched
        assert catalog.tile_ids("scene_id = ?", [other]).tolist() == []
        assert catalog._con.execute("SELECT label FROM scenes WHERE scene_id = ?", [other]).fetchone() == ("BMP2",)
        with pytest.raises(CatalogError, match="not in the catalog"):
            catalog.update_scene({"path": "c.tif"})


def test_set_scene_tiles_bbox() -> None:
    with Catalog() as catalog:
        scene_id = catalog.add_scene({"path": "a.tif"})
        ids = catalog.add_tiles(scene_id, tiles_for(3, None))
        other = catalog.add_tiles(catalog.add_scene({"path": "b.tif"}), tiles_for(1, None))
        catalog.set_scene_tiles_bbox(scene_id, (1.0, 2.0, 3.0, 4.0))
        rows = catalog.fetch_tiles([*ids.tolist(), *other.tolist()])
        assert [r["bbox_minlat"] for r in rows] == [2.0, 2.0, 2.0, None]
        catalog.set_scene_tiles_bbox(scene_id, None)
        assert catalog.tile_ids("bbox_minlat IS NULL").tolist() == [*ids.tolist(), *other.tolist()]
        with pytest.raises(CatalogError, match="bbox"):
            catalog.set_scene_tiles_bbox(scene_id, (1.0, 2.0))


def test_v1_catalog_is_read_as_is_and_upgraded_when_written(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as catalog:
        catalog.add_tiles(catalog.add_scene({"path": "a.tif", "label": "T72", "content_hash": "h"}), tiles_for(1))
        for column in ("metadata_hash", "footprint_source"):
            catalog._con.execute(f"ALTER TABLE scenes DROP COLUMN {column}")
        for column in V3_TILE_COLUMNS:
            catalog._con.execute(f"ALTER TABLE tiles DROP COLUMN {column}")
        catalog.set_meta("schema_version", "1")
    with Catalog(path, read_only=True) as catalog:
        assert catalog.get_meta("schema_version") == "1" and "footprint_source" not in catalog.columns()
        assert catalog.scene_states()["a.tif"][3] is None
        assert catalog.tile_ids("label = ?", ["T72"]).tolist() == [1]
    with Catalog(path) as catalog:
        assert catalog.get_meta("schema_version") == str(SCHEMA_VERSION) == "4"
        assert {"metadata_hash", "footprint_source", *V3_TILE_COLUMNS} <= set(catalog.columns())
        assert catalog.fetch_tiles([1])[0]["label"] == "T72"


def test_v2_catalog_gains_the_tile_columns_and_is_relabelled_when_written(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as catalog:
        scene = catalog.add_scene({"path": "a.tif", "label": "ship", "content_hash": "h", "metadata_hash": "m"})
        catalog.add_tiles(scene, tiles_for(2))
        for column in V3_TILE_COLUMNS:
            catalog._con.execute(f"ALTER TABLE tiles DROP COLUMN {column}")
        catalog.set_meta("schema_version", "2")
    with Catalog(path, read_only=True) as catalog:  # read as it is
        assert "tile_label" not in catalog.columns() and catalog.tile_ids("label = ?", ["ship"]).tolist() == [1, 2]
        assert catalog.scene_states()["a.tif"][3] is None  # planned as a re-label: lacks the newer tile columns
    with Catalog(path) as catalog:
        assert catalog.get_meta("schema_version") == "4"
        assert catalog.tile_ids("tile_label IS NULL").tolist() == [1, 2]
        assert catalog.scene_states()["a.tif"][3] is None  # the next `index` re-labels it: tile columns filled


def test_read_only_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as catalog:
        scene_id = catalog.add_scene({"path": "a.tif", "label": "T72"})
        catalog.add_tiles(scene_id, tiles_for(2))
    with Catalog(path, read_only=True) as catalog:
        with pytest.raises(CatalogError, match="read-only"):
            catalog.add_scene({"path": "b.tif"})
        with pytest.raises(CatalogError, match="read-only"):
            catalog.remove_scene("a.tif")
        with pytest.raises(CatalogError, match="read-only"):
            catalog.set_meta("k", "v")
        assert catalog.tile_ids("label = ?", ["T72"]).tolist() == [1, 2]
        assert catalog.counts() == {"scenes": 1, "tiles": 2}


def test_tile_ids_errors_become_filter_errors() -> None:
    with Catalog() as catalog:
        catalog.add_tiles(catalog.add_scene({"path": "a.tif", "label": "T72"}), tiles_for(1))
        with pytest.raises(FilterError, match="label"):
            catalog.tile_ids("no_such_column = 1")
        with pytest.raises(FilterError):
            catalog.tile_ids("1=1; DROP TABLE tiles")
        assert catalog.counts()["tiles"] == 1


def test_tile_ids_sorted_numpy_and_read_only_caches(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as catalog:
        for i in range(60):
            catalog.add_tiles(catalog.add_scene({"path": f"{i}.tif", "split": "train" if i % 2 else "test"}),
                              tiles_for(5))
    with Catalog(path, read_only=True) as catalog:
        assert catalog._con.execute("SELECT current_setting('threads')").fetchone()[0] == QUERY_THREADS
        ids = catalog.tile_ids("split = ?", ["train"])
        assert isinstance(ids, np.ndarray) and ids.dtype == np.int64 and len(ids) == 150
        assert (np.diff(ids) > 0).all()
        assert catalog.tile_ids("split = ?", ["test"]).tolist() == sorted(set(range(1, 301)) - set(ids.tolist()))
        assert catalog.tile_ids().tolist() == list(range(1, 301))
        assert catalog.columns() == catalog.columns() and "split" in catalog.columns()
        with pytest.raises(FilterError):
            catalog.tile_ids("1=1; DROP TABLE tiles")  # checked predicates are remembered, refused ones are not
        with pytest.raises(FilterError):
            catalog.tile_ids("1=1; DROP TABLE tiles")


def test_column_info_lists_filterable_columns_with_values_and_counts() -> None:
    from sarclip_search.store.columns import LOW_CARDINALITY

    labels = ["T72", "T72", "BMP2", None]
    with Catalog() as catalog:
        for i, label in enumerate(labels):
            scene = {"path": f"s{i}.tif", "label": label, "content_hash": f"h{i}", "OVR_RESAMPLING_ALG": "NEAREST",
                     "serial": f"n{i:03d}" if i else "x", "datetime": f"2020-0{i + 1}-01T00:00:00Z", "n_objects": i}
            catalog.add_tiles(catalog.add_scene(scene), tiles_for(i + 1))  # scene i has i + 1 tiles
        for i in range(LOW_CARDINALITY + 1):  # one more distinct value than are listed
            catalog.add_tiles(catalog.add_scene({"path": f"many{i}.tif", "serial": f"m{i}"}), tiles_for(1))
        infos = {info.name: info for info in catalog.column_info()}
        assert "content_hash" not in infos and "OVR_RESAMPLING_ALG" not in infos and "tile_id" not in infos
        assert {"label", "datetime", "n_objects", "serial", "path", "width"} <= set(infos)
        label = infos["label"]
        assert label.type == "VARCHAR" and label.distinct == 2 and not label.internal
        # tile counts: T72 on scenes 0 and 1 (1 + 2 tiles), BMP2 on scene 2 (3 tiles)
        assert label.values == [("BMP2", 3), ("T72", 3)]  # ties by value
        assert label.tiles == 6 and label.values == catalog.values("label")
        assert infos["n_objects"].values == [(3, 4), (2, 3), (1, 2), (0, 1)]  # integers: listed, by count
        when = infos["datetime"]
        assert when.values is None and (when.minimum, when.maximum) == ("2020-01-01T00:00:00", "2020-04-01T00:00:00")
        assert infos["serial"].distinct == 4 + LOW_CARDINALITY + 1 and infos["serial"].values is None
        every = {info.name: info for info in catalog.column_info(include_internal=True)}
        assert every["content_hash"].internal and every["OVR_RESAMPLING_ALG"].values == [("NEAREST", 10)]
        assert json.loads(json.dumps([info.to_dict() for info in every.values()]))  # JSON-ready
        with pytest.raises(CatalogError, match="no column"):
            catalog.values("no_such_column")


def test_unknown_where_column_suggests_a_filterable_one() -> None:
    with Catalog() as catalog:
        catalog.add_tiles(catalog.add_scene({"path": "a.tif", "label": "T72", "content_hash": "h"}), tiles_for(1))
        with pytest.raises(FilterError, match=r'no column "labl"; did you mean label\?'):
            catalog.tile_ids("labl = 'T72'")
        with pytest.raises(FilterError, match="sarsearch columns") as raised:
            catalog.tile_ids("label = 5")  # a type error, not a missing column
        assert "content_hash" not in str(raised.value)
