"""Reading a scene once (issue #13): `raster.read_scene` opens the file once for its header, scale, footprint
and tiles; `windows_bbox_lonlat` places every tile with one transform; the walk takes each file's stat and
real path; `tile_count` and `header_size` let the indexer plan its progress in tiles."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.ingest import raster
from sarclip_search.ingest.tiling import Window, tile_count, tile_windows
from sarclip_search.ingest.walk import walk_archive

TILE = 32  # smaller than every fixture image: each scene is several tiles


def images(archive: Path) -> list[Path]:
    return walk_archive(archive).files


# --- raster: one open per scene ---------------------------------------------------------------------------


def test_read_scene_is_read_info_then_read_tile_chips(fixture_archive: Path) -> None:
    for path in images(fixture_archive):
        scene = raster.read_scene(path, TILE, 24, size=64)
        assert scene.info == raster.read_info(path)
        windows, chips = raster.read_tile_chips(path, TILE, 24, size=64)
        assert scene.windows == windows and len(scene.chips) == len(chips) > 1
        for ours, theirs in zip(scene.chips, chips):
            np.testing.assert_array_equal(ours, theirs)


def test_read_scene_opens_the_file_once(fixture_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = raster.rasterio.open
    monkeypatch.setattr(raster.rasterio, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    path = max(images(fixture_archive), key=lambda p: raster.read_info(p).width)
    opened.clear()
    scene = raster.read_scene(path, TILE)
    assert opened == [str(path)] and len(scene.windows) == tile_count(160, 96, TILE)


def test_read_scene_reports_a_truncated_file_as_read_info_does(fixture_archive: Path, tmp_path: Path) -> None:
    source = next(p for p in images(fixture_archive) if p.suffix == ".tif")
    broken = tmp_path / source.name
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(raster.RasterError) as from_info:
        raster.read_info(broken)
    with pytest.raises(raster.RasterError) as from_scene:
        raster.read_scene(broken, TILE)
    assert str(from_scene.value) == str(from_info.value)


# --- footprints: one transform for all tiles --------------------------------------------------------------


def test_windows_bbox_lonlat_equals_one_window_at_a_time(fixture_archive: Path) -> None:
    placed = [raster.read_info(p) for p in images(fixture_archive)]
    assert any(info.crs for info in placed) and any(info.crs is None for info in placed)
    for info in placed:
        windows = tile_windows(info.width, info.height, TILE, 20)
        assert raster.windows_bbox_lonlat(info, windows) == [raster.window_bbox_lonlat(info, w) for w in windows]
    assert raster.windows_bbox_lonlat(placed[0], []) == []


def test_a_window_outside_the_crs_domain_costs_only_its_own_box(
    fixture_archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PROJ fails a whole call for one point outside the projection's domain: the other windows keep their box."""
    info = next(raster.read_info(p) for p in images(fixture_archive) if raster.read_info(p).width == 160)
    far = Window(10**29, 0, 8, 8)  # 10^29 px east of a UTM origin: no longitude
    windows = [Window(0, 0, 8, 8), far, Window(8, 8, 8, 8)]
    boxes = raster.windows_bbox_lonlat(info, windows)
    assert boxes == [raster.window_bbox_lonlat(info, w) for w in windows]
    assert boxes[1] is None and boxes[0] is not None and boxes[2] is not None
    assert "cannot transform footprint" in caplog.text


# --- tiling and headers: the plan's tile count -------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 32, 64, 256])
@pytest.mark.parametrize("stride", [None, 1, 5, 32, 100])
def test_tile_count_is_the_number_of_windows(size: int, stride: int | None) -> None:
    for width, height in [(1, 1), (48, 48), (64, 65), (160, 96), (257, 1000)]:
        assert tile_count(width, height, size, stride) == len(tile_windows(width, height, size, stride))


@pytest.mark.parametrize(("args", "message"), [((10, 10, 0), "tile size"), ((10, 10, 4, -1), "stride"),
                                               ((0, 10, 4), "raster size")])
def test_tile_count_refuses_what_tile_windows_refuses(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tile_windows(*args)
    with pytest.raises(ValueError, match=message):
        tile_count(*args)


def test_header_size_is_the_rasters_size(fixture_archive: Path, tmp_path: Path) -> None:
    for path in images(fixture_archive):
        info = raster.read_info(path)
        assert raster.header_size(path) == (info.width, info.height)
    (tmp_path / "notes.tif").write_text("not an image")
    assert raster.header_size(tmp_path / "notes.tif") is None
    assert raster.header_size(tmp_path / "missing.png") is None


# --- the walk: stat and real path taken once ----------------------------------------------------------------


def test_walk_records_each_files_stat_and_real_path(fixture_archive: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(fixture_archive, archive)
    png = next(p for p in images(archive) if p.suffix == ".png")
    (archive / "linked.png").symlink_to(png)  # a link inside the archive: followed, its target's real path
    (archive / "dangling.tif").symlink_to(archive / "gone.tif")
    walk = walk_archive(archive)
    assert sorted(walk.found) == walk.files
    for path in walk.files:
        real, stat = walk.found[path]
        assert real == str(path.resolve())
        if path.name == "dangling.tif":
            assert isinstance(stat, FileNotFoundError)
            continue
        assert (stat.st_size, stat.st_mtime, stat.st_ino) == (
            path.stat().st_size, path.stat().st_mtime, path.stat().st_ino)
    assert walk.found[archive / "linked.png"].real == str(png)
