"""Per-tile mask fractions and the dark-water proxy (ingest/masks.py), in the catalog (schema v4)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.ingest import masks, raster
from sarclip_search.ingest.masks import (
    DarkMeter,
    dark_fraction,
    dark_regime,
    find_mask,
    tile_mask_columns,
)
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.schema import SCHEMA_VERSION, V4_TILE_COLUMNS

from helpers import load_make_fixtures

K5 = "kompsat5_water/images/WTR_tiny.tif"
MKLAB = "oil_spill_mklab/images/img_tiny.jpg"
PLAIN = "plain/field_tiny.tif"


@pytest.fixture(scope="module")
def masked_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("masked")
    load_make_fixtures().write_masked_archive(folder)
    return folder


def columns(archive: Path, rel: str, tile: int = 256, stride: int | None = None) -> tuple[list[list[int]], list[dict]]:
    """The windows the indexer cuts and their mask columns, the dark proxy measured as the indexer does."""
    meter = DarkMeter()
    scene = raster.read_scene(archive / rel, tile, stride or tile, tile_values=meter)
    windows = [w.as_list() for w in scene.windows]
    rows, warnings = tile_mask_columns(archive / rel, rel, (scene.info.width, scene.info.height), windows,
                                       meter.fractions("HH"))
    assert warnings == []
    return windows, rows


def test_masks_are_found_by_each_datasets_naming() -> None:
    cases = {
        "kompsat5_water/images/WTR00001_K5_NIA0184.tif": "kompsat5_water/masks/WTR00001_K5_NIA0184_label.tif",
        "sen1floods11/images/Spain_7370579_S1Hand.tif": "sen1floods11/labels/Spain_7370579_LabelHand.tif",
        "stac_overflow_floods/images/jja10_vh.tif": "stac_overflow_floods/labels/jja10.tif",
        "data/oil_spill_mklab/images/img_0001.jpg": "data/oil_spill_mklab/masks/img_0001.png",
    }
    for rel, mask in cases.items():
        found = find_mask(rel)
        assert found is not None and found[1] == mask, rel
    for rel in ("hrsid/images/P0001_1200_2000_9600_10400.jpg", "mstar_soc/T72/x.jpeg", "kompsat5_water/masks/a.tif"):
        assert find_mask(rel) is None, rel


def test_a_tile_straddling_the_mask_edge_gets_its_share(masked_archive: Path) -> None:
    edge = load_make_fixtures().MASK_EDGE_COL
    windows, rows = columns(masked_archive, K5)
    water = {tuple(w): r["tile_water_fraction"] for w, r in zip(windows, rows)}
    assert water == {(0, 0, 256, 256): 1.0, (256, 0, 256, 256): (edge - 256) / 256}
    assert all(r["tile_oil_fraction"] is None and r["tile_lookalike_fraction"] is None for r in rows)
    # overlapping tiles: each its own window of the mask
    windows, rows = columns(masked_archive, K5, stride=128)
    assert {tuple(w): r["tile_water_fraction"] for w, r in zip(windows, rows)}[(128, 0, 256, 256)] == (edge - 128) / 256


def test_a_scene_without_a_mask_has_null_fractions_but_the_proxy(masked_archive: Path, tmp_path: Path) -> None:
    _, rows = columns(masked_archive, PLAIN)
    assert all(r["tile_water_fraction"] is None and r["tile_oil_fraction"] is None for r in rows)
    assert all(r["tile_dark_fraction"] is not None for r in rows)
    # a rule that matches but no mask file: NULL, no warning (an archive copied without its masks)
    missing = tmp_path / K5
    missing.parent.mkdir(parents=True)
    missing.write_bytes((masked_archive / K5).read_bytes())
    rows, warnings = tile_mask_columns(missing, K5, (512, 256), [[0, 0, 256, 256]])
    assert warnings == [] and rows[0]["tile_water_fraction"] is None


def test_a_mask_of_another_size_is_not_used_and_says_so(masked_archive: Path) -> None:
    rows, warnings = tile_mask_columns(masked_archive / K5, K5, (1024, 256), [[0, 0, 256, 256]], [0.5])
    assert rows[0]["tile_water_fraction"] is None and rows[0]["tile_dark_fraction"] == 0.5
    assert len(warnings) == 1 and "512 x 256 pixels, the image 1024 x 256" in warnings[0]


def test_mklab_rgb_classes(masked_archive: Path) -> None:
    windows, rows = columns(masked_archive, MKLAB, tile=128)
    by_window = {tuple(w): r for w, r in zip(windows, rows)}
    left, right = by_window[(0, 0, 128, 128)], by_window[(128, 0, 128, 128)]
    # left tile: land in columns 0-63 (three off-palette pixels near green count as land), oil rows 0-31 of 64-127
    assert left["tile_water_fraction"] == pytest.approx(0.5)
    assert left["tile_oil_fraction"] == pytest.approx(32 * 64 / 128**2) and left["tile_lookalike_fraction"] == 0
    # right tile: no land; oil 32 rows, look-alike rows 96-127 of columns 192-255, a ship (water too)
    assert right["tile_water_fraction"] == 1.0
    assert right["tile_oil_fraction"] == pytest.approx(32 * 128 / 128**2)
    assert right["tile_lookalike_fraction"] == pytest.approx(32 * 64 / 128**2)


def test_proxy_agrees_with_the_mask_on_a_synthetic_scene(masked_archive: Path) -> None:
    _, rows = columns(masked_archive, K5, tile=128)  # 8 tiles: 2 all water, 1 half, 5 land (edge at 320)
    water = np.array([r["tile_water_fraction"] for r in rows])
    dark = np.array([r["tile_dark_fraction"] for r in rows])
    assert sorted(np.unique(water).tolist()) == [0.0, 0.5, 1.0]
    assert np.abs(water - dark).max() < 0.1
    assert ((water > 0.5) == (dark > 0.5)).all()


def test_dark_fraction_by_regime() -> None:
    rng = np.random.default_rng(0)
    sea = (10 ** (-22 / 10) * rng.gamma(4, 1 / 4, (64, 64))).astype(np.float32)  # calm sea, linear power
    land = (10 ** (-8 / 10) * rng.gamma(4, 1 / 4, (64, 64))).astype(np.float32)
    assert dark_fraction(sea, "linear_power", "VV") == 1.0 and dark_fraction(land, "linear_power", "VV") == 0.0
    assert dark_regime("db", "VH") == "calibrated_cross" and dark_regime("db", "VV+VH") == "calibrated_co"
    assert dark_regime("amplitude", "VH") == "amplitude"
    # -20 dB VH is above the cross-pol water threshold (land VH is dark), below the co-pol one
    vh = np.full((32, 32), -20.0, np.float32)
    assert dark_fraction(vh, "db", "VH") == 0.0 and dark_fraction(vh, "db", "VV") == 1.0
    # no valid pixel: unknown, not 0
    assert dark_fraction(np.full((32, 32), np.nan, np.float32), "db") is None
    # half the blocks invalid: the fraction is of the valid ones
    half = np.where(np.arange(32)[None, :] < 16, -30.0, np.nan).astype(np.float32) * np.ones((32, 1), np.float32)
    assert dark_fraction(half, "db", "VV") == 1.0
    # a homogeneity bound leaves out dark blocks that spread too much
    speckled = np.where(rng.random((32, 32)) < 0.5, -35.0, -25.0).astype(np.float32)
    strict = {"calibrated_co": masks.DarkThreshold(-17.0, 1.0)}
    assert dark_fraction(speckled, "db", "VV") == 1.0 and dark_fraction(speckled, "db", "VV", strict) == 0.0
    assert not math.isinf(strict["calibrated_co"].std_db)


# --- in the catalog ---------------------------------------------------------------------------------------

def test_v3_catalog_gains_the_mask_columns_and_is_relabelled_when_written(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as catalog:
        scene = catalog.add_scene({"path": "a.tif", "label": "ship", "content_hash": "h", "metadata_hash": "m"})
        ids = catalog.add_tiles(scene, [{"col_off": 0, "row_off": 0, "width": 8, "height": 8, "bbox": None,
                                         "tile_label": "ship", "tile_n_objects": 1}])
        for column in V4_TILE_COLUMNS:
            catalog._con.execute(f"ALTER TABLE tiles DROP COLUMN {column}")
        catalog.set_meta("schema_version", "3")
    with Catalog(path, read_only=True) as catalog:  # read as it is; what `index` plans from: re-label every scene
        assert "tile_water_fraction" not in catalog.columns() and catalog.scene_states()["a.tif"][3] is None
        assert catalog.tile_ids("tile_label = 'ship'").tolist() == ids.tolist()
    with Catalog(path) as catalog:
        assert catalog.get_meta("schema_version") == str(SCHEMA_VERSION) == "4"
        assert set(V4_TILE_COLUMNS) <= set(catalog.columns())
        assert catalog.tile_ids("tile_water_fraction IS NULL AND tile_label = 'ship'").tolist() == ids.tolist()
        assert catalog.scene_states()["a.tif"][3] is None  # the next `index` re-labels it: fractions filled
        catalog.set_tile_fractions([(int(ids[0]), {"tile_water_fraction": 0.75, "tile_dark_fraction": 0.5})])
        assert catalog.tile_ids("tile_water_fraction > 0.5").tolist() == ids.tolist()
        assert catalog.tile_ids("tile_oil_fraction IS NULL").tolist() == ids.tolist()


def _tile_areas(db: Path) -> dict[tuple[str, tuple[int, ...]], dict]:
    from sarclip_search.query.engine import Engine

    names = ("tile_id", *V4_TILE_COLUMNS)
    with Engine.open(db) as engine:
        rows = engine.catalog._con.execute(
            f"SELECT path, col_off, row_off, width, height, {', '.join(names)} FROM tile_view ORDER BY tile_id"
        ).fetchall()
    return {(row[0], tuple(row[1:5])): dict(zip(names, row[5:])) for row in rows}


def test_indexed_tiles_carry_fractions_filters_json_and_the_v3_upgrade(tmp_path, masked_archive, indexed_db,
                                                                        checkpoint, sarclip) -> None:
    import shutil

    import duckdb

    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.store.layout import IndexStore, write_json_atomic

    from helpers import link_encoders, reindex, run

    archive = tmp_path / "archive"
    shutil.copytree(masked_archive, archive)
    db = tmp_path / "db"
    link_encoders(indexed_db[0], db)
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint), tile_size=256)
    assert report.failed == [] and report.warnings == [] and report.indexed == 3
    tiles = _tile_areas(db)
    assert tiles[(K5, (0, 0, 256, 256))]["tile_water_fraction"] == 1.0
    assert tiles[(K5, (256, 0, 256, 256))]["tile_water_fraction"] == 0.25
    assert tiles[(MKLAB, (0, 0, 256, 128))]["tile_oil_fraction"] == pytest.approx(32 * 192 / (256 * 128))
    assert tiles[(PLAIN, (0, 0, 256, 256))]["tile_water_fraction"] is None
    assert all(t["tile_dark_fraction"] is not None for t in tiles.values())

    # --where on the column, and --json shows the fractions
    result = run("query", "radar", "--db", db, "--where", "tile_water_fraction > 0.5", "--json", "-k", "10")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    expected = {t["tile_id"] for t in tiles.values() if (t["tile_water_fraction"] or 0) > 0.5}
    assert {h["id"] for h in hits} == expected and len(expected) == 2  # the K5 water tile and the MKLab scene
    assert all(h["tile_water_fraction"] > 0.5 and "tile_dark_fraction" in h for h in hits)

    # a v3 index: the columns are added on the next index and filled by re-labelling, nothing re-embedded
    generation = IndexStore(db).require_current()
    con = duckdb.connect(str(generation.catalog_path))
    for column in V4_TILE_COLUMNS:
        con.execute(f"ALTER TABLE tiles DROP COLUMN {column}")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.close()
    write_json_atomic(generation.info_path, {**generation.read_info(), "catalog_schema_version": 3})
    report = reindex(archive, db, checkpoint, tile_size=256)
    assert (report.relabelled, report.indexed, report.tiles_added) == (3, 0, 0) and report.warnings == []
    assert _tile_areas(db) == tiles


def test_shards_carry_the_fractions(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from sarclip_search.ingest.shards import ShardHeader, ShardWriter, iter_shards

    identity = {"model_name": "sarclip-test", "checkpoint_sha256": "ab" * 32, "embed_dim": 4}
    made = ShardHeader.create(identity, tile_size=256, tile_stride=256, archive_root="/archive", model_path="m.pt")
    tiles = [{"path": "a.tif", "col_off": 0, "row_off": 0, "width": 256, "height": 256, "bbox": None,
              "tile_water_fraction": 0.25, "tile_dark_fraction": 0.0, "tile_oil_fraction": 1.0},
             {"path": "a.tif", "col_off": 256, "row_off": 0, "width": 256, "height": 256, "bbox": None,
              "tile_dark_fraction": 0.5}]
    ShardWriter(tmp_path, made).write([{"path": "a.tif"}], tiles, np.ones((2, 4), np.float32))
    _, batches = iter_shards(tmp_path, expect=made)
    (batch,) = list(batches)
    assert [{k: t.get(k) for k in V4_TILE_COLUMNS} for t in batch.tile_rows] == \
        [{k: t.get(k) for k in V4_TILE_COLUMNS} for t in tiles]


@pytest.mark.parametrize(("fraction", "word"), [(0.0, "dry land"), (0.3, "land with a river or lake"),
                                                 (0.7, "mostly water with some land"), (0.97, "open water"),
                                                 (1.0, "open water")])
def test_water_context_words(fraction: float, word: str) -> None:
    assert masks.water_context(fraction)[0] == word
    assert masks.water_context(None) == () and masks.water_context(float("nan")) == ()


def test_block_stats_are_the_blocks_nan_mean_and_std() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(-15, 3, size=(100, 90)).astype(np.float32)
    values[3, 4] = np.nan
    values[20:36, 0:16] = np.nan  # 12 of the 16 rows of block (1, 0): under half its pixels valid
    mean, std, valid = masks.block_stats(values, 16)
    cells = values[:96, :80].reshape(6, 16, 5, 16)
    assert np.allclose(mean, np.nanmean(cells, axis=(1, 3)), atol=1e-4)
    assert np.allclose(std, np.nanstd(cells, axis=(1, 3)), atol=1e-3)
    assert not valid[1, 0] and valid.sum() == 29
    assert masks.block_stats(values[:5, :7], 16)[0].shape == (1, 1)  # smaller than a block: one block


def test_the_proxy_stands_for_water_only_on_validated_scales() -> None:
    assert masks.proxy_water_fraction(0.8, "db") == 0.8 and masks.proxy_water_fraction(0.8, "amplitude") == 0.8
    assert masks.proxy_water_fraction(0.8, "display8") is None and masks.proxy_water_fraction(None, "db") is None
