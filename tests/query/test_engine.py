"""The query engine on the indexed fixture archive: self-retrieval, image queries, hits, filters."""

from __future__ import annotations

import shutil

import pytest

from sarclip_search.errors import InputError
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.query.engine import Engine
from sarclip_search.store.filters import Filters
from sarclip_search.store.layout import IndexStore

from helpers import BIG_SCENE

NO_CRS_SCENE = "kompsat5/K5_ES_GTC_HH_20150603T171436_nocrs_tiny.tif"


@pytest.fixture(scope="module")
def tiled(tmp_path_factory, fixture_archive, checkpoint, sarclip):
    """(engine, archive): the fixture archive indexed with 64 px tiles (the 160 x 96 scene gives 6 tiles)."""
    root = tmp_path_factory.mktemp("tiled")
    archive = root / "archive"
    shutil.copytree(fixture_archive, archive)
    report = index_archive(archive, IndexStore(root / "db"), sarclip, model_path=str(checkpoint), tile_size=64)
    assert report.indexed == 10 and report.tiles_added == 15, report
    with Engine.open(root / "db") as opened:
        yield opened, archive


def all_rows(engine: Engine) -> dict[int, dict]:
    return {int(row["tile_id"]): row for row in engine.catalog.fetch_tiles(engine.vectors.ids())}


# --- round trips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["whole images", "64 px tiles"])
def test_every_tile_finds_itself_first(engine, tiled, which):
    chosen = engine if which == "whole images" else tiled[0]
    ids = chosen.vectors.ids()
    assert len(ids) == (10 if which == "whole images" else 15)
    vectors = chosen.vectors.vectors(ids)
    for tile_id, vector in zip(ids, vectors):
        hits = chosen.search_vector(vector, k=1)
        assert [hit.id for hit in hits] == [tile_id]
        assert hits[0].score == pytest.approx(1.0, abs=2e-3)  # its own (float16-stored) embedding


def test_query_by_each_archive_image_finds_that_image_first(engine, indexed_db):
    _, archive, _ = indexed_db
    rows = all_rows(engine)
    for row in rows.values():
        hits = engine.query(images=[archive / row["path"]], k=3)
        assert hits[0].path == row["path"]
        assert hits[0].score > 0.99  # the same chip through the same reader and model
        assert hits[0].score > hits[1].score


def test_query_by_image_on_tiled_index_finds_a_tile_of_that_image(tiled):
    engine, archive = tiled
    for path in sorted({row["path"] for row in all_rows(engine).values()}):
        hits = engine.query(images=[archive / path], k=1)
        assert hits[0].path == path, (path, hits[0].path)


def test_text_and_fused_queries_return_k_sorted_hits(engine, indexed_db):
    _, archive, _ = indexed_db
    for hits in (
        engine.query("a ship at sea", k=4),
        engine.query("a ship at sea", images=[archive / "chips/chip_ship_0001.png"], k=4, alpha=0.3),
    ):
        assert len(hits) == 4 and len({hit.id for hit in hits}) == 4
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=True)


def test_fused_query_with_alpha_extremes_equals_single_queries(engine, indexed_db):
    _, archive, _ = indexed_db
    image = archive / "chips/chip_ship_0001.png"
    only_image = [h.id for h in engine.query("a ship", images=[image], k=5, alpha=0.0)]
    only_text = [h.id for h in engine.query("a ship", images=[image], k=5, alpha=1.0)]
    assert only_image == [h.id for h in engine.query(images=[image], k=5)]
    assert only_text == [h.id for h in engine.query("a ship", k=5)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"text": "x", "k": 0}, "k must be"), ({}, "text query"), ({"text": "x", "alpha": 1.5}, "alpha")],
)
def test_bad_queries(engine, kwargs, message):
    with pytest.raises(InputError, match=message):
        engine.query(**kwargs)


# --- what a hit carries ---------------------------------------------------------------------------------------


def test_hits_carry_window_and_bbox(tiled):
    engine, _ = tiled
    rows = all_rows(engine)
    big_windows = []
    for tile_id, row in rows.items():
        hit = engine.search_vector(engine.vectors.vectors([tile_id])[0], k=1)[0]
        assert hit.id == tile_id and hit.scene_id == row["scene_id"] and hit.path == row["path"]
        assert hit.window == (row["col_off"], row["row_off"], row["width"], row["height"])
        if row["path"].startswith("sentinel1/"):
            assert hit.bbox is not None
            minlon, minlat, maxlon, maxlat = hit.bbox
            assert minlon < maxlon and minlat < maxlat
            # a tile lies inside its scene's footprint
            assert row["scene_bbox_minlon"] - 1e-9 <= minlon and maxlon <= row["scene_bbox_maxlon"] + 1e-9
            assert row["scene_bbox_minlat"] - 1e-9 <= minlat and maxlat <= row["scene_bbox_maxlat"] + 1e-9
        else:  # PNG chips and the uint16 KOMPSAT-5 file have no CRS
            assert hit.bbox is None
        if row["path"] == BIG_SCENE:
            big_windows.append(hit.window)
        d = hit.to_dict()
        assert d["window"] == list(hit.window) and d["label"] == row["label"]
    assert sorted(big_windows) == sorted(
        (col, row, 64, 64) for col in (0, 64, 96) for row in (0, 32)
    )
    assert any(r["path"] == NO_CRS_SCENE for r in rows.values())


# --- filters --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        Filters(label="ship"),
        Filters(split="test"),
        Filters(where="label = 'field' AND split = 'train'"),
        Filters(bbox=(3.0, 52.2, 3.2, 52.3)),
        Filters(sensor="kompsat"),
        Filters(polarization="VH"),
        Filters(after="2021-02-01", before="2021-03-01"),
    ],
)
@pytest.mark.parametrize("k", [1, 3, 20])
def test_filtered_search_returns_min_k_matches_best_first(tiled, filters, k):
    engine, _ = tiled
    matching = set(engine.filter_ids(filters).tolist())
    assert matching, "every filter here matches some fixture tile"
    query = engine.vectors.vectors(engine.vectors.ids()[:1])[0]
    hits = engine.search_vector(query, k=k, subset=engine.filter_ids(filters))
    assert len(hits) == min(k, len(matching))
    assert {hit.id for hit in hits} <= matching
    # the same as ranking everything and keeping the matching tiles
    everything = engine.search_vector(query, k=engine.vectors.ntotal)
    assert [h.id for h in hits] == [h.id for h in everything if h.id in matching][:k]


def test_filter_matching_nothing_returns_no_hits(engine):
    assert engine.query("a ship", filters=Filters(label="submarine"), k=5) == []


def test_no_filters_means_no_subset(engine):
    assert engine.filter_ids(None) is None and engine.filter_ids(Filters()) is None
