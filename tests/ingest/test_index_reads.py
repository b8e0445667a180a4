"""What one `index` run reads (issue #13): each scene opened once, each sidecar read once, one catalog
connection per batch; the progress callback counts tiles, planned from the files' headers."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.ingest import indexer, plan, raster
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.ingest.metadata import sidecar_path
from sarclip_search.ingest.tiling import tile_count
from sarclip_search.ingest.walk import walk_archive
from sarclip_search.store.layout import IndexStore

TILE = 32  # smaller than every fixture image: each scene is several tiles


def images(archive: Path) -> list[Path]:
    return walk_archive(archive).files


# --- the indexer: what one run reads and opens ----------------------------------------------------------------


class Counting:
    """Counts calls of a module attribute per first argument, calling through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        self.calls: Counter[str] = Counter()
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            self.calls[str(args[0]) if args else ""] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


@pytest.fixture(autouse=True)
def no_onnx_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """These runs are about reading the archive: the end-of-run ONNX export (seconds) is skipped."""
    monkeypatch.setattr("sarclip_search.model.encoder_export.export_encoders", lambda model, root: None)


@pytest.fixture
def archive(fixture_archive: Path, tmp_path: Path) -> Path:
    target = tmp_path / "archive"
    shutil.copytree(fixture_archive, target)
    return target


def test_an_index_run_opens_each_scene_once_and_the_catalog_once_per_batch(
    archive: Path, tmp_path: Path, sarclip, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rasterio_opens = Counting(monkeypatch, raster.rasterio, "open")
    catalogs = Counting(monkeypatch, indexer, "Catalog")
    files = images(archive)
    report = index_archive(archive, IndexStore(tmp_path / "db"), sarclip, model_path=str(checkpoint),
                           tile_size=TILE, commit_every=4)
    assert report.indexed == len(files) == 10 and not report.failed
    assert rasterio_opens.calls == Counter({str(p): 1 for p in files})
    assert sum(catalogs.calls.values()) == report.committed == 3  # 10 files, 4 a batch: one connection each
    expected = sum(tile_count(*raster.header_size(p), TILE) for p in files)
    assert report.tiles_added == report.totals["tiles"] == expected


def test_a_relabel_reads_the_sidecar_once(
    archive: Path, tmp_path: Path, sarclip, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = IndexStore(tmp_path / "db")
    index_archive(archive, db, sarclip, model_path=str(checkpoint), tile_size=TILE)
    labelled = next(p for p in images(archive) if sidecar_path(p).is_file())
    sidecar = sidecar_path(labelled)
    sidecar.write_text(sidecar.read_text().replace('"properties": {', '"properties": {"note": "moved",', 1))
    reads = [Counting(monkeypatch, module, "load_stac_sidecar") for module in (plan, indexer)]  # plan and batches
    rasterio_opens = Counting(monkeypatch, raster.rasterio, "open")
    catalogs = Counting(monkeypatch, indexer, "Catalog")
    report = index_archive(archive, db, sarclip, model_path=str(checkpoint), tile_size=TILE)
    assert report.relabelled == 1 and report.indexed == 0 and report.committed == 1
    assert sum(count.calls[str(labelled)] for count in reads) == 1
    assert rasterio_opens.calls == Counter({str(labelled): 1})  # its header (tags): not its pixels
    assert sum(catalogs.calls.values()) == 2  # the plan's read of the committed catalog, the batch's


# --- progress in tiles ------------------------------------------------------------------------------------------


def test_progress_counts_tiles_planned_from_the_headers(archive: Path, tmp_path: Path, sarclip, checkpoint: Path) -> None:
    calls: list[tuple[str, int, int, int]] = []
    files = images(archive)
    report = index_archive(archive, IndexStore(tmp_path / "db"), sarclip, model_path=str(checkpoint),
                           tile_size=TILE, commit_every=3, progress=lambda *call: calls.append(call))
    planned = [tile_count(*raster.header_size(p), TILE) for p in files]
    assert {call[2] for call in calls} == {sum(planned)} == {report.tiles_added}
    done = [call[1] for call in calls]
    assert done[0] == 0 and done == sorted(done) and done[-1] == sum(planned)
    # before each file: the tiles of the files before it (plus one call at the end of each of the 4 batches)
    starts = np.cumsum([0, *planned[:-1]]).tolist()
    assert sorted(set(done)) == sorted(set(starts) | {sum(planned)})
    assert [call[3] for call in calls][-1] == report.tiles_added and all(call[0] == "embed" for call in calls)


def test_progress_counts_a_file_without_a_readable_header_as_one_tile(
    archive: Path, tmp_path: Path, sarclip, checkpoint: Path
) -> None:
    (archive / "manifest.csv").unlink()  # else a file it does not list is skipped, not read
    (archive / "chips" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(40)))
    calls: list[tuple[str, int, int, int]] = []
    report = index_archive(archive, IndexStore(tmp_path / "db"), sarclip, model_path=str(checkpoint),
                           tile_size=TILE, progress=lambda *call: calls.append(call))
    assert [path for path, _ in report.failed] == ["chips/broken.png"]
    assert calls[-1][1] == calls[-1][2] == report.tiles_added + 1  # the bar ends full

