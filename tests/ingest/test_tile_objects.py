"""Per-tile objects (ingest/objects.py): which boxed objects each tile holds, and the tile's own label."""

from __future__ import annotations

import pytest

from sarclip_search.errors import FilterError, MetadataError
from sarclip_search.ingest.objects import (
    NO_OBJECT,
    boxes_in_window,
    count_words,
    parse_boxes,
    tile_label,
    tile_object_columns,
)
from sarclip_search.ingest.tiling import tile_windows
from sarclip_search.store.catalog import Catalog

SHIP_SCENE = {"label": "ship", "width": 512, "height": 512,
              # centres: (25, 25) in the top-left tile; (256, 100) on the edge between the two top tiles;
              # (300, 400) and (310, 420) bottom-right
              "boxes_xyxy": "ship:10,10,40,40;ship:246,90,266,110;ship:290,390,310,410;ship:300,410,320,430"}


def grid(width: int, height: int, size: int, stride: int | None = None) -> list[list[int]]:
    return [w.as_list() for w in tile_windows(width, height, size, stride or size)]


def test_parse_boxes_reads_the_manifest_form_and_refuses_others() -> None:
    boxes = parse_boxes("ship:1,2,3,4; oil_spill:0,0,10.5,20")
    assert [(b.name, b.x0, b.y0, b.x1, b.y1) for b in boxes] == [("ship", 1, 2, 3, 4), ("oil_spill", 0, 0, 10.5, 20)]
    assert parse_boxes("") == [] and parse_boxes(None) == []
    for bad in ("ship:1,2,3", "1,2,3,4", "ship:4,2,3,4", "ship:a,b,c,d"):
        with pytest.raises(MetadataError, match=r"scene\.jpg: expected boxes as class:xmin"):
            parse_boxes(bad, "scene.jpg")


def test_a_centre_on_a_tile_edge_belongs_to_the_next_tile_only() -> None:
    windows = grid(512, 512, 256)
    rows = tile_object_columns(SHIP_SCENE, windows)
    by_window = {tuple(w): row for w, row in zip(windows, rows)}
    assert by_window[(0, 0, 256, 256)]["tile_n_objects"] == 1
    assert by_window[(256, 0, 256, 256)]["tile_n_objects"] == 1  # the ship centred at x = 256
    assert by_window[(256, 256, 256, 256)]["tile_n_objects"] == 2
    assert by_window[(0, 256, 256, 256)]["tile_n_objects"] == 0
    assert sum(row["tile_n_objects"] for row in rows) == 4  # every object in exactly one tile of a grid
    # the edge ship's box, in the tile's pixels, clipped to the tile
    assert by_window[(256, 0, 256, 256)]["tile_objects"] == "ship:0,90,10,110"


def test_overlapping_tiles_each_hold_the_objects_whose_centre_they_contain() -> None:
    windows = grid(512, 512, 256, 128)
    rows = tile_object_columns(SHIP_SCENE, windows)
    holding = [tuple(w) for w, row in zip(windows, rows) if "ship:" in (row["tile_objects"] or "")
               and any(abs(b.x0 - (10 - w[0])) < 1e-9 for b in parse_boxes(row["tile_objects"]))]
    assert holding == [(0, 0, 256, 256)]  # the ship at (25, 25) lies only in the first window
    centre_counts = [row["tile_n_objects"] for row in rows]
    assert max(centre_counts) >= 2 and sum(centre_counts) > 4  # overlapping windows share objects


def test_a_tile_without_objects_is_not_labelled_with_the_scene_class() -> None:
    rows = tile_object_columns(SHIP_SCENE, grid(512, 512, 256))
    assert [row["tile_label"] for row in rows] == ["ship", "ship", NO_OBJECT, "ship"]
    empty = rows[2]
    assert empty["tile_n_objects"] == 0 and empty["tile_objects"] is None


def test_labels_of_mixed_tiles() -> None:
    vehicles = parse_boxes("BRDM2:0,0,10,10;T62:20,20,30,30")
    assert tile_label("multi_vehicle", vehicles[:1]) == "BRDM2"  # one class: that class
    assert tile_label("multi_vehicle", vehicles) == "multi_vehicle"  # several: the scene's
    assert tile_label("oil_spill", parse_boxes("ship:0,0,4,4")) == "ship"  # only the ship of an oil-spill scene
    assert tile_label("oil_spill", parse_boxes("ship:0,0,4,4;oil_spill:0,0,9,9")) == "oil_spill"
    assert tile_label("ship", []) == NO_OBJECT
    # a chip labelled by its one object's type (OpenSARShip: label cargo, box named ship) keeps its label
    chip = {"label": "cargo", "width": 49, "height": 49, "n_objects": "1", "boxes_xyxy": "ship:16,19,32,29"}
    assert tile_object_columns(chip, [[0, 0, 49, 49]]) == [
        {"tile_label": "cargo", "tile_n_objects": 1, "tile_objects": "ship:16,19,32,29"}]
    two = {"label": "cargo", "width": 512, "height": 256, "boxes_xyxy": "ship:16,19,32,29;ship:300,10,320,30"}
    assert [r["tile_label"] for r in tile_object_columns(two, grid(512, 256, 256))] == ["ship", "ship"]


def test_scenes_without_boxes_keep_their_label_and_count_only_when_whole() -> None:
    chip = {"label": "T72", "width": 128, "height": 128, "n_objects": "1", "boxes_xyxy": ""}
    assert tile_object_columns(chip, [[0, 0, 128, 128]]) == [
        {"tile_label": "T72", "tile_n_objects": 1, "tile_objects": None}]
    large = {"label": "water_body", "width": 512, "height": 512, "n_objects": ""}
    rows = tile_object_columns(large, grid(512, 512, 256))
    assert {row["tile_label"] for row in rows} == {"water_body"}
    assert {row["tile_n_objects"] for row in rows} == {None}


def test_boxes_in_window_clips_to_the_tile() -> None:
    [box] = boxes_in_window(parse_boxes("ship:250,10,300,20"), [256, 0, 256, 256])
    assert (box.x0, box.y0, box.x1, box.y1) == (0, 10, 44, 20)


@pytest.mark.parametrize(("count", "words"), [(0, "no"), (1, "a single"), (2, "two"), (3, "several"),
                                              (5, "several"), (6, "many"), (40, "many")])
def test_count_words(count: int, words: str) -> None:
    assert count_words(count) == words


def test_catalog_stores_and_rewrites_tile_objects(tmp_path) -> None:
    windows = grid(512, 512, 256)
    rows = tile_object_columns(SHIP_SCENE, windows)
    with Catalog(tmp_path / "c.duckdb") as catalog:
        scene = catalog.add_scene({"path": "s.jpg", "width": 512, "height": 512, "label": "ship"})
        ids = catalog.add_tiles(scene, [{**dict(zip(("col_off", "row_off", "width", "height"), w)), "bbox": None, **r}
                                        for w, r in zip(windows, rows)])
        got = catalog._con.execute(
            "SELECT tile_id, tile_label, tile_n_objects FROM tile_view WHERE tile_n_objects >= 1 ORDER BY tile_id"
        ).fetchall()
        assert got == [(int(ids[0]), "ship", 1), (int(ids[1]), "ship", 1), (int(ids[3]), "ship", 2)]
        assert [w for _, w in catalog.scene_tile_windows(scene)] == windows
        catalog.set_tile_objects([(int(ids[0]), {"tile_label": NO_OBJECT, "tile_n_objects": 0})])
        assert catalog._con.execute("SELECT tile_label, tile_n_objects, tile_objects FROM tiles WHERE tile_id = ?",
                                    [int(ids[0])]).fetchone() == (NO_OBJECT, 0, None)


def test_min_objects_filter(tmp_path) -> None:
    from sarclip_search.store.filters import Filters, build_predicate

    windows = grid(512, 512, 256)
    with Catalog(tmp_path / "c.duckdb") as catalog:
        scene = catalog.add_scene({"path": "s.jpg", "width": 512, "height": 512, "label": "ship"})
        ids = catalog.add_tiles(scene, [{**dict(zip(("col_off", "row_off", "width", "height"), w)), "bbox": None, **r}
                                        for w, r in zip(windows, tile_object_columns(SHIP_SCENE, windows))])
        predicate = build_predicate(Filters(min_objects=2), catalog.columns())
        assert catalog.tile_ids(*predicate).tolist() == [int(ids[3])]
        with pytest.raises(FilterError, match="expected --min-objects of 0 or more objects, got -1"):
            build_predicate(Filters(min_objects=-1), catalog.columns())
        predicate = build_predicate(Filters(min_objects=1, label="ship"), catalog.columns())
        assert catalog.tile_ids(*predicate).tolist() == [int(i) for i in ids[[0, 1, 3]]]


# --- the indexer fills them, and re-labelling rewrites them -------------------------------------------------

S1_TIF = "S1A_IW_GRDH_1SDV_20210310T054510_20210310T054535_036943_043758_2091_tiny.tif"  # 160 x 96 px, 6 tiles of 64


def _tiles(db) -> list[dict]:
    from sarclip_search.query.engine import Engine

    with Engine.open(db) as engine:
        rows = engine.catalog._con.execute(
            "SELECT tile_id, col_off, row_off, width, height, label, tile_label, tile_n_objects, tile_objects "
            "FROM tile_view ORDER BY tile_id").fetchall()
    names = ("tile_id", "col_off", "row_off", "width", "height", "label", "tile_label", "tile_n_objects", "tile_objects")
    return [dict(zip(names, row)) for row in rows]


def _holds(tile: dict, x: float, y: float) -> bool:
    return tile["col_off"] <= x < tile["col_off"] + tile["width"] and tile["row_off"] <= y < tile["row_off"] + tile["height"]


def test_indexed_tiles_without_a_ship_are_not_labelled_ship(tmp_path, fixture_archive, indexed_db, checkpoint,
                                                              sarclip) -> None:
    import shutil

    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.store.layout import IndexStore

    from helpers import link_encoders, reindex

    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy2(fixture_archive / "sentinel1" / S1_TIF, archive / S1_TIF)
    (archive / "manifest.csv").write_text(f"path,label,split,boxes_xyxy\n{S1_TIF},ship,test,\"ship:10,10,30,30\"\n")
    db = tmp_path / "db"
    link_encoders(indexed_db[0], db)
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint), tile_size=64)
    assert report.failed == [] and report.tiles_added >= 4
    tiles = _tiles(db)
    assert {t["label"] for t in tiles} == {"ship"}  # the scene's label, as before
    with_ship = [t for t in tiles if _holds(t, 20, 20)]
    assert with_ship and all(t["tile_label"] == "ship" and t["tile_n_objects"] == 1 for t in with_ship)
    others = [t for t in tiles if not _holds(t, 20, 20)]
    assert others and all(t["tile_label"] == NO_OBJECT and t["tile_n_objects"] == 0 for t in others)

    # --min-objects and --json: only the tiles holding the ship, with what they hold
    import json

    from helpers import run

    result = run("query", "radar", "--db", db, "--min-objects", "1", "--json", "-k", "10")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert sorted(h["id"] for h in hits) == sorted(t["tile_id"] for t in with_ship)
    assert all(h["tile_label"] == "ship" and h["tile_n_objects"] == 1 for h in hits)

    # the ship moves in the manifest: a re-label (nothing re-embedded) moves it between the tiles
    (archive / "manifest.csv").write_text(f"path,label,split,boxes_xyxy\n{S1_TIF},ship,test,\"ship:140,70,150,80\"\n")
    report = reindex(archive, db, checkpoint, tile_size=64)
    assert report.relabelled == 1 and report.tiles_added == 0
    moved = _tiles(db)
    assert [t["tile_id"] for t in moved] == [t["tile_id"] for t in tiles]
    assert {t["tile_id"] for t in moved if t["tile_label"] == "ship"} == {t["tile_id"] for t in moved if _holds(t, 145, 75)}

    # boxes that cannot be read: the file is listed with a one-line reason naming the column, nothing changes
    (archive / "manifest.csv").write_text(f"path,label,split,boxes_xyxy\n{S1_TIF},ship,test,ship:1;2\n")
    report = reindex(archive, db, checkpoint, tile_size=64)
    assert [(path, "boxes_xyxy" in reason) for path, reason in report.failed] == [(S1_TIF, True)]
    assert _tiles(db) == moved
