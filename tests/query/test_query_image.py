"""Query images read as the archive was, and query-image errors.

An image larger than a tile is cut with the index's tiling and read by the indexer's reader
(`raster.read_tile_chips`); its tiles are searched one by one and a hit scores its best cosine to any
of them, so an indexed scene used as `--image` returns its own tiles first. The fixture archive is
indexed with 64 px tiles at stride 32 (`small_tiles`): the 160 x 96 scene `BIG_SCENE` is 8 overlapping tiles.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from sarclip_search.cli.app import EXIT_OK
from sarclip_search.errors import InputError, NoValidPixelsError, UnreadableRasterError
from sarclip_search.ingest import raster
from sarclip_search.ingest.tiling import tile_windows
from sarclip_search.model.vectors import l2_normalize
from sarclip_search.query import engine as engine_module
from sarclip_search.query.engine import Engine
from sarclip_search.query.fusion import reciprocal_rank_fusion

from helpers import BIG_SCENE, assert_user_error, run


def scene_tiles(engine: Engine, path: str) -> list[dict]:
    rows = engine.catalog.fetch_tiles(engine.vectors.ids())
    return sorted((r for r in rows if r["path"] == path), key=lambda r: (r["row_off"], r["col_off"]))


# --- the read path is the indexer's ---------------------------------------------------------------------------


def test_read_tile_chips_cuts_like_the_index_and_reads_like_read_chip(fixture_archive):
    path = fixture_archive / BIG_SCENE
    info = raster.read_info(path)
    windows, chips = raster.read_tile_chips(path, 64, 32, size=128)
    assert windows == tile_windows(info.width, info.height, 64, 32) and len(windows) == 8
    for window, chip in zip(windows, chips):
        np.testing.assert_array_equal(chip, raster.read_chip(path, window, size=128))
    (whole,), (chip,) = raster.read_tile_chips(path, 256, size=128)  # no larger than a tile: read whole
    assert whole.as_list() == [0, 0, info.width, info.height]
    np.testing.assert_array_equal(chip, raster.read_chip(path, size=128))


def test_read_tile_chips_drops_windows_without_valid_pixels(tmp_path):
    values = np.random.default_rng(0).gamma(1.0, 0.05, size=(64, 128)).astype(np.float32)
    values[:, 64:] = np.nan  # the right tile is nodata
    path = tmp_path / "half.tif"
    with rasterio.open(path, "w", driver="GTiff", width=128, height=64, count=1, dtype="float32",
                       crs="EPSG:4326", transform=Affine(1e-4, 0.0, 10.0, 0.0, -1e-4, 50.0)) as dst:
        dst.write(values, 1)
    windows, chips = raster.read_tile_chips(path, 64, size=32)
    assert [w.as_list() for w in windows] == [[0, 0, 64, 64]] and chips[0].shape == (32, 32)
    values[:] = np.nan
    with rasterio.open(path, "r+") as dst:
        dst.write(values, 1)
    with pytest.raises(NoValidPixelsError, match="no valid pixels in any tile"):
        raster.read_tile_chips(path, 64, size=32)


def test_query_image_tiles_are_the_indexed_tiles(small_tiles):
    engine, archive, _ = small_tiles
    stored = engine.vectors.vectors([int(r["tile_id"]) for r in scene_tiles(engine, BIG_SCENE)])
    query = engine.embed_image_tiles(archive / BIG_SCENE)
    assert query.shape == stored.shape == (8, engine.vectors.dim)
    cosines = np.sum(query * stored, axis=1) / np.linalg.norm(stored, axis=1)
    assert cosines.min() > 0.999  # same windows, same reader and radiometry, same model


# --- an indexed scene used as --image finds itself first ------------------------------------------------------


def test_indexed_scene_as_query_image_returns_its_own_tiles_first(small_tiles):
    engine, archive, _ = small_tiles
    own = {int(r["tile_id"]) for r in scene_tiles(engine, BIG_SCENE)}
    hits = engine.query(images=[archive / BIG_SCENE], k=len(own) + 2)
    assert {h.id for h in hits[: len(own)]} == own  # all 8 tiles, before any other
    assert min(h.score for h in hits[: len(own)]) > 0.999
    assert hits[len(own)].path != BIG_SCENE and hits[len(own)].score < hits[len(own) - 1].score
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_every_indexed_image_finds_itself_first(small_tiles):
    engine, archive, _ = small_tiles
    for path in sorted({r["path"] for r in engine.catalog.fetch_tiles(engine.vectors.ids())}):
        n = len(scene_tiles(engine, path))
        hits = engine.query(images=[archive / path], k=n)
        assert all(h.path == path for h in hits), (path, [h.path for h in hits])


def test_scene_image_in_blend_and_rrf(small_tiles, monkeypatch):
    engine, archive, _ = small_tiles
    scene = archive / BIG_SCENE
    own = {int(r["tile_id"]) for r in scene_tiles(engine, BIG_SCENE)}
    only_image = [h.id for h in engine.query(images=[scene], k=8)]
    text = l2_normalize(engine.vectors.vectors([min(own)])[0])  # a unit "text" that is one of the scene's tiles
    monkeypatch.setattr(engine, "embed_text", lambda words: text)
    assert [h.id for h in engine.query("x", images=[scene], k=8, alpha=0.0)] == only_image
    blended = engine.query("x", images=[scene], k=3, alpha=0.5)
    assert blended[0].id == min(own) and blended[0].score > 0.999  # matches the text and one of the tiles
    other = min(set(map(int, engine.vectors.ids())) - own)
    fused = engine.query(images=[scene], like=[other], fusion="rrf", k=5)
    n = engine.vectors.ntotal  # the image's ranking is its tiles' searches merged by best cosine
    rankings = [[h.id for h in engine.query(images=[scene], k=n)], [h.id for h in engine.query(like=[other], k=n)]]
    expected = reciprocal_rank_fusion(rankings, [0.5, 0.5])[:5]
    assert [(h.id, h.score_kind) for h in fused] == [(i, "rrf") for i, _ in expected]
    assert [h.score for h in fused] == pytest.approx([score for _, score in expected])


def test_scene_as_negative_image_pushes_its_tiles_down(small_tiles):
    engine, archive, _ = small_tiles
    anchor = int(scene_tiles(engine, BIG_SCENE)[0]["tile_id"])
    plain = engine.query(like=[anchor], k=engine.vectors.ntotal)
    other_scene = next(h for h in plain if h.path != BIG_SCENE)
    pushed = engine.query(like=[anchor], negative_images=[archive / BIG_SCENE], k=engine.vectors.ntotal)
    assert next(h.score for h in pushed if h.id == other_scene.id) != other_scene.score
    assert next(h.score for h in pushed if h.id == anchor) < 1.0


def test_query_image_with_too_many_tiles_is_refused(small_tiles, monkeypatch):
    engine, archive, _ = small_tiles
    monkeypatch.setattr(engine_module, "MAX_QUERY_TILES", 4)
    with pytest.raises(InputError, match=r"--image .*8 tiles at this index's tiling \(64 px, stride 32\).*crop"):
        engine.query(images=[archive / BIG_SCENE], k=1)


# --- a file that is no image -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"meeting notes, not pixels\n", b""])
def test_non_image_query_file_is_a_query_error(small_tiles, tmp_path, content):
    engine, _, _ = small_tiles
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    with pytest.raises(UnreadableRasterError):
        raster.read_info(notes)
    for option, kwargs in (("--image", {"images": [notes]}), ("--not-image", {"like": [1], "negative_images": [notes]})):
        with pytest.raises(InputError) as caught:
            engine.query(k=1, **kwargs)
        message = str(caught.value)
        assert message == f"{option} {notes}: not a readable image (GeoTIFF, TIFF, PNG or JPEG); give an image file"


def test_cli_non_image_and_scene_image(small_tiles, tmp_path):
    _, archive, db = small_tiles
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes\n")
    line = assert_user_error(run("query", "--image", notes, "--db", db))
    assert f"--image {notes}: not a readable image" in line and "re-download" not in line
    result = run("query", "--image", archive / BIG_SCENE, "-k", 8, "--json", "--db", db)
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    assert {h["path"] for h in json.loads(result.stdout)} == {BIG_SCENE}
