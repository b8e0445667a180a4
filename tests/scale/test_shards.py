"""Embedding shards (ingest/shards.py) and `index --from-shards` (ingest/from_shards.py), issue #15."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest

from helpers import clustered, error_lines, run

pytest.importorskip("pyarrow")

from sarclip_search.errors import ArtifactMismatchError, InputError
from sarclip_search.index import VectorIndex, exact_search, recall_at_k
from sarclip_search.ingest.from_shards import build_from_shards
from sarclip_search.ingest.shards import (
    HEADER_FILE,
    ShardHeader,
    ShardWriter,
    iter_shards,
    scan_shards,
)
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.layout import IndexStore
from sarclip_search.store.schema import BBOX_COLUMNS

DIM = 32
IDENTITY = {"model_name": "sarclip-test", "checkpoint_sha256": "ab" * 32, "embed_dim": DIM}


def header(**changes) -> ShardHeader:
    made = ShardHeader.create(IDENTITY, tile_size=256, tile_stride=256, archive_root="/archive", model_path="m.pt")
    return ShardHeader(**{**made.__dict__, **changes})


def write_synthetic(folder: Path, xb: np.ndarray, *, per_shard: int, per_scene: int = 7) -> ShardHeader:
    """Shards of generated scenes (per_scene tiles each, the last one shorter) holding `xb` in order."""
    made = header()
    writer = ShardWriter(folder, made)
    scene = 0
    for start in range(0, len(xb), per_shard):
        block = xb[start : start + per_shard]
        scenes, tiles = [], []
        for first in range(0, len(block), per_scene):
            path = f"scene_{scene:05d}.tif"
            scenes.append({"path": path, "width": 1024, "dataset": f"d{scene % 3}", "orbit": scene,
                           "datetime": datetime(2020, 1, 1 + scene % 28, 12, 0, 0)})
            for j in range(min(per_scene, len(block) - first)):
                tiles.append({"path": path, "col_off": 256 * j, "row_off": 0, "width": 256, "height": 256,
                              "bbox": None if scene % 2 else (10.0 + j, 50.0, 10.5 + j, 50.5)})
            scene += 1
        writer.write(scenes, tiles, block)
    return made


def test_round_trip_keeps_rows_vectors_and_order(tmp_path: Path) -> None:
    made = header()
    writer = ShardWriter(tmp_path / "shards", made)
    rng = np.random.default_rng(0)
    batches = []
    for number in range(3):
        scenes = [{"path": f"s{number}_{i}.tif", "datetime": datetime(2021, 5, number + 1, 3, 4, 5),
                   "sar:polarizations": "VV+VH", "size_bytes": 10**10 + i, "mtime": 1.5, "label": None,
                   "tags": [1, "x"]} for i in range(2)]
        tiles = [{"path": scenes[i // 3]["path"], "col_off": i, "row_off": 2 * i, "width": 256, "height": 128,
                  "bbox": None if i == 1 else (1.0 * i, 2.0, 3.0, 4.5),
                  **({"tile_label": "ship", "tile_n_objects": i, "tile_objects": '[{"box": [1, 2, 3, 4]}]'}
                     if i % 2 else {})} for i in range(5)]
        vectors = rng.standard_normal((5, DIM)).astype(np.float32)
        writer.write(scenes, tiles, vectors)
        batches.append((scenes, tiles, vectors))
    assert (tmp_path / "shards" / HEADER_FILE).is_file()
    found, read = iter_shards(tmp_path / "shards", expect=made)
    assert found == made
    read = list(read)
    assert [b.number for b in read] == [0, 1, 2]
    for batch, (scenes, tiles, vectors) in zip(read, batches):
        assert batch.scene_rows == [{**s, "tags": list(s["tags"])} for s in scenes]
        assert isinstance(batch.scene_rows[0]["datetime"], datetime)
        assert batch.tile_rows == tiles
        assert batch.vectors.dtype == np.float32 and np.array_equal(batch.vectors, vectors)
    # a writer made later continues the numbering; a number written again replaces that shard
    again = ShardWriter(tmp_path / "shards", made)
    assert again.write(*batches[0]).name == "shard-00000003.parquet"
    again.write(batches[2][0], batches[2][1], batches[2][2] * 2, number=1)
    _, read = iter_shards(tmp_path / "shards")
    read = list(read)
    assert [b.number for b in read] == [0, 1, 2, 3]
    assert np.array_equal(read[1].vectors, batches[2][2] * 2) and read[1].scene_rows[0]["path"] == "s2_0.tif"


def test_writer_refuses_bad_batches(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path / "shards", header())
    scenes = [{"path": "a.tif"}, {"path": "b.tif"}]
    tile = {"col_off": 0, "row_off": 0, "width": 1, "height": 1, "bbox": None}
    good = [{**tile, "path": "a.tif"}, {**tile, "path": "b.tif"}]
    with pytest.raises(InputError, match="must be \\(2, 32\\)"):
        writer.write(scenes, good, np.zeros((2, DIM + 1), np.float32))
    with pytest.raises(InputError, match="not among"):
        writer.write(scenes, [{**tile, "path": "c.tif"}], np.zeros((1, DIM), np.float32))
    with pytest.raises(InputError, match="grouped by scene"):
        writer.write(scenes, good[::-1], np.zeros((2, DIM), np.float32))
    with pytest.raises(InputError, match="NaN"):
        writer.write(scenes, good, np.full((2, DIM), np.nan, np.float32))
    assert scan_shards(tmp_path / "shards").files == []


def test_header_mismatch_is_refused_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    write_synthetic(folder, clustered(20, DIM, seed=1), per_shard=10)
    other = header(checkpoint_sha256="cd" * 32)
    with pytest.raises(ArtifactMismatchError) as caught:
        ShardWriter(folder, other)
    message = str(caught.value)
    assert "\n" not in message and "checkpoint_sha256 expected" in message and str(folder) in message
    with pytest.raises(ArtifactMismatchError, match="tile_size expected 512, found 256"):
        iter_shards(folder, expect=header(tile_size=512))
    # a shard of another model copied into the folder: the build refuses it before writing anything
    stray = tmp_path / "stray"
    ShardWriter(stray, other).write([{"path": "x.tif"}], [], np.zeros((0, DIM), np.float32))
    os.replace(stray / "shard-00000000.parquet", folder / "shard-00000005.parquet")
    store = IndexStore(tmp_path / "db")
    with pytest.raises(ArtifactMismatchError, match="shard-00000005.parquet: made by another model"):
        build_from_shards(folder, store)
    assert store.current() is None
    result = run("index", "--from-shards", folder, "--db", tmp_path / "db")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "shard-00000005.parquet" in lines[0] and "Traceback" not in result.output


def direct_build(xb: np.ndarray, factory: str) -> VectorIndex:
    """The one-process build of the same vectors under the ids a fresh catalog gives (1..n in order)."""
    direct = VectorIndex.create(xb.shape[1], factory)
    direct.add(np.arange(1, len(xb) + 1), xb)
    direct.tune()
    return direct


@pytest.mark.parametrize("use_ray", [False, True], ids=["in-process", "ray"])
def test_shards_build_equals_direct_build(tmp_path: Path, use_ray: bool, request: pytest.FixtureRequest) -> None:
    if use_ray:
        pytest.importorskip("ray")
        request.getfixturevalue("ray_cluster")
    factory = "IVF32,PQ8x8"
    xb = clustered(4000, DIM, clusters=40, seed=3)
    folder = tmp_path / "shards"
    made = write_synthetic(folder, xb, per_shard=700)
    store = IndexStore(tmp_path / "db")
    report = build_from_shards(folder, store, index_factory=factory, ray=use_ray)
    assert (report.shards, report.tiles, report.scenes) == (6, 4000, sum(-(-len(xb[s:s + 700]) // 7)
                                                                        for s in range(0, 4000, 700)))
    assert report.encoder.startswith("ray" if use_ray else "in-process")
    generation = store.require_current()
    info = generation.read_info()
    assert info["model"]["checkpoint_sha256"] == made.checkpoint_sha256 and info["tiling"] == {"size": 256, "stride": 256}
    assert info["archive_root"] == "/archive" and info["counts"]["tiles"] == 4000
    built = VectorIndex.load(generation.vectors_path)
    direct = direct_build(xb, factory)
    assert built.factory == factory and np.array_equal(built.ids(), direct.ids())
    # catalog: tile ids in shard order, scene by scene, with their windows and bboxes
    with Catalog(generation.catalog_path, read_only=True) as catalog:
        assert np.array_equal(catalog.tile_ids(), np.arange(1, 4001))
    with duckdb.connect(str(generation.catalog_path), read_only=True) as con:
        rows = con.execute(
            "SELECT t.tile_id, s.path, t.col_off, t.bbox_minlon, s.orbit, s.datetime FROM tiles t JOIN scenes s "
            "USING (scene_id) ORDER BY t.tile_id").fetchall()
    assert rows[0][1:] == ("scene_00000.tif", 0, 10.0, 0, datetime(2020, 1, 1, 12))
    assert rows[8][1:4] == ("scene_00001.tif", 256, None)
    # same vectors, same codes: the same results and recall as the one-process build
    assert np.array_equal(built.vectors(np.arange(1, 4001)), xb)
    queries = clustered(100, DIM, clusters=40, seed=4, centers_seed=3)
    _, exact = exact_search(xb, np.arange(1, 4001), queries, 10)
    for nprobe in (1, 4):
        scores_a, ids_a = built.search(queries, 10, nprobe=nprobe, rerank_factor=1)
        scores_b, ids_b = direct.search(queries, 10, nprobe=nprobe, rerank_factor=1)
        assert np.array_equal(ids_a, ids_b) and np.allclose(scores_a, scores_b, atol=1e-6)
    recall_built = recall_at_k(built.search(queries, 10)[1], exact, 10)
    recall_direct = recall_at_k(direct.search(queries, 10)[1], exact, 10)
    assert abs(recall_built - recall_direct) <= 0.01 and recall_built >= 0.9


def test_from_shards_equals_the_indexer(tmp_path: Path, indexed_db) -> None:
    """Shards holding what the one-process indexer read (its scenes, tiles, vectors) build the same catalog."""
    db, _, _ = indexed_db
    current = IndexStore(db).require_current()
    info = current.read_info()
    with duckdb.connect(str(current.catalog_path), read_only=True) as con:
        scene_cols = [d[0] for d in con.execute("SELECT * FROM scenes LIMIT 0").description]
        scenes = [dict(zip(scene_cols, r)) for r in con.execute("SELECT * FROM scenes ORDER BY scene_id").fetchall()]
        tile_cols = [d[0] for d in con.execute("SELECT * FROM tiles LIMIT 0").description]
        tiles = [dict(zip(tile_cols, r)) for r in con.execute("SELECT * FROM tiles ORDER BY tile_id").fetchall()]
    vectors = VectorIndex.load(current.vectors_path)
    made = ShardHeader.create(info["model"], tile_size=info["tiling"]["size"], tile_stride=info["tiling"]["stride"],
                              archive_root=info["archive_root"], model_path=info["model"]["checkpoint_path"])
    path_of = {s["scene_id"]: s["path"] for s in scenes}
    tile_rows = [{**{k: v for k, v in t.items() if k not in ("tile_id", "scene_id") and not k.startswith("bbox_")},
                  "path": path_of[t["scene_id"]],
                  "bbox": None if t["bbox_minlon"] is None else tuple(t[k] for k in BBOX_COLUMNS)} for t in tiles]
    ids = np.array([t["tile_id"] for t in tiles])
    writer = ShardWriter(tmp_path / "shards", made)
    scene_rows = [{k: v for k, v in s.items() if k != "scene_id" and v is not None} for s in scenes]
    half = len(scene_rows) // 2
    cut = sum(1 for t in tile_rows if t["path"] in {s["path"] for s in scene_rows[:half]})
    writer.write(scene_rows[:half], tile_rows[:cut], vectors.vectors(ids[:cut]))
    writer.write(scene_rows[half:], tile_rows[cut:], vectors.vectors(ids[cut:]))
    store = IndexStore(tmp_path / "db")
    result = run("index", "--from-shards", tmp_path / "shards", "--db", tmp_path / "db")
    assert result.exit_code == 0, result.output
    rebuilt = store.require_current()
    with duckdb.connect(str(rebuilt.catalog_path), read_only=True) as con:
        got_scenes = [dict(zip([d[0] for d in con.execute("SELECT * FROM scenes LIMIT 0").description], r))
                      for r in con.execute("SELECT * FROM scenes ORDER BY scene_id").fetchall()]
        got_tiles = [dict(zip(tile_cols, r)) for r in con.execute("SELECT * FROM tiles ORDER BY tile_id").fetchall()]
    assert got_tiles == tiles
    assert [{k: v for k, v in s.items() if v is not None} for s in got_scenes] == \
        [{k: v for k, v in s.items() if v is not None} for s in scenes]
    built = VectorIndex.load(rebuilt.vectors_path)
    assert np.array_equal(built.ids(), vectors.ids())
    assert np.array_equal(built.vectors(ids), vectors.vectors(ids))
    new_info = rebuilt.read_info()
    for key in ("model_name", "checkpoint_sha256", "embed_dim", "checkpoint_path"):
        assert new_info["model"][key] == info["model"][key]
    assert new_info["counts"] == info["counts"] and new_info["tiling"] == info["tiling"]


def test_killed_writer_leaves_no_shard_and_partial_files_are_reported(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "shards"
    xb = clustered(70, DIM, seed=5)
    write_synthetic(folder, xb, per_shard=35)
    # a writer dying mid-write (here: an error inside pyarrow's write) leaves no shard and no temporary file
    import pyarrow.parquet as pq

    def dying(table, where, **_):
        Path(where).write_bytes(b"PAR1 half a shard")
        raise KeyboardInterrupt

    writer = ShardWriter(folder, header())
    monkeypatch.setattr(pq, "write_table", dying)
    with pytest.raises(KeyboardInterrupt):
        writer.write([{"path": "late.tif"}], [], np.zeros((0, DIM), np.float32))
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == sorted([HEADER_FILE, "shard-00000000.parquet", "shard-00000001.parquet"])
    # a writer killed by SIGKILL leaves its temporary file: skipped and listed, the rest builds
    (folder / ".shard-00000002.parquet.k1ll.tmp").write_bytes(b"PAR1 half a shard")
    report = build_from_shards(folder, IndexStore(tmp_path / "db"))
    assert report.leftovers == [".shard-00000002.parquet.k1ll.tmp"] and report.tiles == 70
    result = run("index", "--from-shards", folder, "--db", tmp_path / "db2")
    assert result.exit_code == 0 and ".shard-00000002.parquet.k1ll.tmp" in result.stderr
    # a damaged shard file under a shard's name: refused naming it, nothing committed
    data = (folder / "shard-00000001.parquet").read_bytes()
    (folder / "shard-00000001.parquet").write_bytes(data[: len(data) // 2])
    store = IndexStore(tmp_path / "db3")
    with pytest.raises(InputError, match="shard-00000001.parquet: not a readable shard"):
        build_from_shards(folder, store)
    assert store.current() is None


def test_from_shards_user_errors(tmp_path: Path) -> None:
    result = run("index", "--from-shards", tmp_path, "--db", tmp_path / "db")
    assert result.exit_code == 1 and "shards.json" in error_lines(result)[0] and len(error_lines(result)) == 1
    folder = tmp_path / "shards"
    write_synthetic(folder, clustered(30, DIM, seed=6), per_shard=30)
    assert run("index", "--from-shards", folder, "--db", tmp_path / "db").exit_code == 0
    again = run("index", "--from-shards", folder, "--db", tmp_path / "db")
    assert again.exit_code == 1 and "--rebuild" in error_lines(again)[0]
    assert run("index", "--from-shards", folder, "--db", tmp_path / "db", "--rebuild").exit_code == 0
    neither = run("index", "--db", tmp_path / "db")
    assert neither.exit_code == 2 and "ARCHIVE" in neither.stderr and "--from-shards" in neither.stderr
    both = run("index", tmp_path, "--from-shards", folder, "--db", tmp_path / "db")
    assert both.exit_code == 1 and "--from-shards" in error_lines(both)[0]
