"""RunModel: index-time embedding with the ONNX export queries use, the torch fallback, pickling for workers,
and stage timing."""

from __future__ import annotations

import json
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.errors import InputError
from sarclip_search.index import VectorIndex
from sarclip_search.ingest import raster
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.ingest.run_model import EMBEDDER_ENV, RunModel
from sarclip_search.ingest.timing import StageTimer, format_stages
from sarclip_search.ingest.walk import iter_rasters
from sarclip_search.model.encoders import ENCODERS_DIR, encoder_dir
from sarclip_search.store.layout import IndexStore

MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def fixture_chips(fixture_archive: Path) -> np.ndarray:
    """Every tile chip of the fixture archive, cut at 64 px so that the tiled scenes give several."""
    chips = [chip for path in sorted(iter_rasters(fixture_archive))
             for chip in raster.read_scene(path, 64, 64, size=128).chips]
    return np.stack(chips)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row cosines (an index's exact copy may be float16, whose rows are unit length only to ~1e-4)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_embedding_equals_torch_on_fixture_chips(tmp_path, sarclip, checkpoint, fixture_chips, monkeypatch):
    monkeypatch.delenv(EMBEDDER_ENV, raising=False)
    model = RunModel(sarclip, str(checkpoint), db_root=tmp_path)
    vectors = model.encode_images(fixture_chips)
    assert model.embedder == "onnx"
    assert encoder_dir(tmp_path, sarclip.checkpoint_sha256).is_dir()  # exported at the first embedding
    assert vectors.shape == (len(fixture_chips), sarclip.embed_dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    torch_vectors = sarclip.encode_images(fixture_chips)
    assert not np.array_equal(vectors, torch_vectors)  # another runtime did compute them
    assert _cosines(vectors, torch_vectors).min() >= MIN_COSINE
    assert len(fixture_chips) > 10
    assert model.identity["embedder"] == "onnx"
    assert {"model", "embed"} <= set(model.stage_seconds.as_dict())


def test_torch_is_used_when_asked_or_when_there_is_no_index_dir(tmp_path, sarclip, checkpoint, fixture_chips,
                                                                monkeypatch):
    monkeypatch.setenv(EMBEDDER_ENV, "torch")
    model = RunModel(sarclip, str(checkpoint), db_root=tmp_path)
    np.testing.assert_array_equal(model.encode_images(fixture_chips[:5]), sarclip.encode_images(fixture_chips[:5]))
    assert model.embedder == "torch" and not (tmp_path / ENCODERS_DIR).exists()
    monkeypatch.delenv(EMBEDDER_ENV)
    assert RunModel(sarclip, str(checkpoint)).embedder == "torch"  # no index directory to export into
    monkeypatch.setenv(EMBEDDER_ENV, "cuda")
    with pytest.raises(InputError, match=EMBEDDER_ENV):
        RunModel(sarclip, str(checkpoint), db_root=tmp_path).encode_images(fixture_chips[:1])


class _StandIn:
    """A model that is no SarClip (nothing to export): RunModel embeds with it as it is."""

    checkpoint_sha256 = "f" * 64
    image_size = 128

    @property
    def identity(self) -> dict:
        return {"model_name": "stand-in", "checkpoint_sha256": "f" * 64, "embed_dim": 3}

    def encode_images(self, chips: np.ndarray) -> np.ndarray:
        return np.tile(np.float32([1, 0, 0]), (len(chips), 1))


def test_a_model_that_cannot_be_exported_embeds_with_torch(tmp_path, fixture_chips, monkeypatch):
    monkeypatch.delenv(EMBEDDER_ENV, raising=False)
    model = RunModel(_StandIn(), None, db_root=tmp_path)
    assert model.encode_images(fixture_chips[:2]).shape == (2, 3)
    assert model.embedder == "torch" and model.identity["embedder"] == "torch"
    assert not (tmp_path / ENCODERS_DIR).exists()


def test_a_pickled_run_model_embeds_from_the_export_without_torch(tmp_path, sarclip, checkpoint, fixture_chips,
                                                                  monkeypatch):
    monkeypatch.delenv(EMBEDDER_ENV, raising=False)
    driver = RunModel(sarclip, str(checkpoint), db_root=tmp_path)
    assert driver.prepare_embedder() == "onnx"  # the driver exports before workers start
    expected = driver.encode_images(fixture_chips)

    def no_torch(*_, **__):
        raise AssertionError("a worker with an export must not load the torch model")

    monkeypatch.setattr("sarclip_search.model.sarclip.load_model", no_torch)
    worker = pickle.loads(pickle.dumps(driver))
    assert worker.encode_images(fixture_chips).tolist() == expected.tolist()
    assert worker.embedder == "onnx" and worker.image_size == sarclip.image_size
    built = RunModel.for_worker(str(checkpoint), tmp_path, threads=1)
    assert built.embed_dim == sarclip.embed_dim and built.checkpoint_sha256 == sarclip.checkpoint_sha256
    assert _cosines(built.encode_images(fixture_chips[:4]), expected[:4]).min() >= MIN_COSINE
    assert built.identity == {**sarclip.identity, "embedder": "onnx"}


def _vectors_by_window(db: Path) -> dict[tuple, np.ndarray]:
    import duckdb

    generation = IndexStore(db).require_current()
    with duckdb.connect(str(generation.catalog_path), read_only=True) as con:
        rows = con.execute("SELECT t.tile_id, s.path, t.col_off, t.row_off FROM tiles t JOIN scenes s USING (scene_id)"
                           ).fetchall()
    vectors = VectorIndex.load(generation.vectors_path).vectors(np.asarray([row[0] for row in rows], np.int64))
    return {row[1:]: vector for row, vector in zip(rows, vectors)}


def test_reindexing_with_onnx_gives_the_torch_index_within_tolerance(tmp_path, fixture_archive, sarclip, checkpoint,
                                                                      monkeypatch):
    archive = tmp_path / "archive"
    shutil.copytree(fixture_archive, archive)
    monkeypatch.setenv(EMBEDDER_ENV, "torch")
    torch_report = index_archive(archive, IndexStore(tmp_path / "torch"), sarclip, model_path=str(checkpoint),
                                 tile_size=64)
    monkeypatch.delenv(EMBEDDER_ENV)
    report = index_archive(archive, IndexStore(tmp_path / "onnx"), sarclip, model_path=str(checkpoint), tile_size=64)
    assert report.tiles_added == torch_report.tiles_added > 10
    torch_vectors, vectors = _vectors_by_window(tmp_path / "torch"), _vectors_by_window(tmp_path / "onnx")
    assert sorted(vectors) == sorted(torch_vectors)
    keys = sorted(vectors)
    assert _cosines(np.stack([vectors[k] for k in keys]), np.stack([torch_vectors[k] for k in keys])).min() >= MIN_COSINE
    info = IndexStore(tmp_path / "onnx").require_current().read_info()
    assert info["model"]["embedder"] == "onnx"
    assert IndexStore(tmp_path / "torch").require_current().read_info()["model"]["embedder"] == "torch"
    # where the time went: every stage of the pipeline was timed, none longer than the run
    assert {"decode", "radiometry", "embed", "catalog", "faiss", "commit"} <= set(report.stage_seconds)
    assert all(0 <= seconds <= report.seconds for seconds in report.stage_seconds.values())


def test_an_index_embedded_by_both_says_so(tmp_path, fixture_archive, sarclip, checkpoint, monkeypatch):
    archive = tmp_path / "archive"
    shutil.copytree(fixture_archive, archive)
    manifest = (archive / "manifest.csv").read_text().splitlines()
    (archive / "manifest.csv").write_text("\n".join(manifest[:-2]) + "\n")  # two files wait for the second run
    monkeypatch.setenv(EMBEDDER_ENV, "torch")
    db = IndexStore(tmp_path / "db")
    index_archive(archive, db, sarclip, model_path=str(checkpoint))
    monkeypatch.delenv(EMBEDDER_ENV)
    (archive / "manifest.csv").write_text("\n".join(manifest) + "\n")
    report = index_archive(archive, db, sarclip, model_path=str(checkpoint))
    assert report.indexed == 2, report
    assert json.loads(db.require_current().info_path.read_text())["model"]["embedder"] == "onnx+torch"


def test_a_rebuild_with_the_export_in_place_loads_no_torch(indexed_db, tmp_path, sarclip, monkeypatch):
    monkeypatch.delenv(EMBEDDER_ENV, raising=False)
    db, archive, checkpoint = indexed_db
    shutil.copytree(db, tmp_path / "db")
    before = _vectors_by_window(tmp_path / "db")

    def no_torch():
        raise AssertionError("the index has its ONNX export: embedding needs no torch model")

    report = index_archive(archive, IndexStore(tmp_path / "db"), no_torch, model_path=str(checkpoint), rebuild=True)
    assert report.indexed == 10 and not report.failed
    after = _vectors_by_window(tmp_path / "db")
    assert sorted(after) == sorted(before)
    keys = sorted(after)
    assert _cosines(np.stack([after[k] for k in keys]), np.stack([before[k] for k in keys])).min() >= MIN_COSINE
    info = IndexStore(tmp_path / "db").require_current().read_info()
    assert info["model"] == {**sarclip.identity, "embedder": "onnx", "checkpoint_path": str(checkpoint)}


# --- timing ---------------------------------------------------------------------------------------------------


def test_stage_timer_counts_each_second_in_one_stage(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("sarclip_search.ingest.timing.time.perf_counter", lambda: now[0])
    timer = StageTimer()
    with timer.stage("decode"):
        now[0] += 2.0
        with timer.stage("radiometry"):
            now[0] += 3.0
            with timer.stage("radiometry"):  # nested in itself: counted once
                now[0] += 0.5
        now[0] += 1.0
    with pytest.raises(ValueError), timer.stage("embed"):  # a failed block is still timed
        now[0] += 4.0
        raise ValueError
    seconds = timer.as_dict()
    assert seconds == {"decode": 3.0, "radiometry": 3.5, "embed": 4.0}  # and in pipeline order:
    assert list(seconds) == ["decode", "radiometry", "embed"]
    assert format_stages(seconds) == "decode 3.0 s, radiometry 3.5 s, embed 4.0 s"


def test_stage_timer_adds_up_threads_and_merges_other_totals():
    timer = StageTimer()

    def work() -> None:
        for _ in range(100):
            with timer.stage("decode"):
                pass
            timer.add("embed", 0.01)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    timer.merge({"embed": 1.0, "ray_wait": 0.5})
    seconds = timer.as_dict()
    assert seconds["embed"] == pytest.approx(5.0) and seconds["ray_wait"] == 0.5
    assert list(seconds)[-1] == "ray_wait"  # stages it does not know come last
