"""`sarsearch index ARCHIVE --ray`: the same index as the one-process path (issue 15).

The fixture archive (tests/data/make_fixtures.py) is indexed once in one process (`local_db`, tiles of 64 px
so that scenes have several tiles, commits every 4 files) and then with Ray (`ray_cluster`, the session's
2-CPU Ray): tile ids, every catalog row, vectors within 1e-5 and query results must agree. Embedding
batches of 5 tiles make a scene's tiles come back split over several batches. A prepare task whose worker
dies is retried; bad files are listed as in one process; a simulated two-node cluster (in a subprocess)
gives the same index and spreads the reading over both nodes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.cli.app import EXIT_PARTIAL
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.store.layout import IndexStore

from helpers import link_encoders, run

TILE = 64
EVERY = 4


def ray_stream(checkpoint: Path, **options):
    from sarclip_search.ingest.ray_pipeline import RayOptions, RayStream

    prepare = options.pop("prepare", None)
    stream = RayStream(RayOptions(batch_size=options.pop("batch_size", 5), **options), str(checkpoint))
    if prepare is not None:
        stream.prepare = prepare
    return stream


def build(archive: Path, db: Path, sarclip, checkpoint: Path, encoders_from: Path, stream=None):
    link_encoders(encoders_from, db)  # no ONNX export per index: the same checkpoint's, hard-linked
    return index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint), tile_size=TILE,
                         commit_every=EVERY, stream=stream)


def catalog_tables(db: Path) -> dict[str, tuple[list[str], list[tuple]]]:
    """Every row of every table of `db`'s committed catalog (benchmarks/bench_indexing.py reads them)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from bench_indexing import catalog_tables as read_tables
    finally:
        sys.path.pop(0)
    return read_tables(IndexStore(db).require_current().catalog_path)


def assert_same_index(db_a: Path, db_b: Path) -> None:
    """Same catalog (every row of every table), same tile ids, vectors within 1e-5 or one float16 step, same
    query results."""
    from sarclip_search.index import VectorIndex
    from sarclip_search.query.engine import Engine

    assert catalog_tables(db_a) == catalog_tables(db_b)
    a = VectorIndex.load(IndexStore(db_a).require_current().vectors_path)
    b = VectorIndex.load(IndexStore(db_b).require_current().vectors_path)
    ids = np.sort(a.ids())
    np.testing.assert_array_equal(ids, np.sort(b.ids()))
    assert len(ids) > 0
    # A Flat index keeps its vectors as float16: float32 embeddings that differ in their last bits (batches of
    # other sizes) can round to neighbouring float16 values, one step (2^-11 relative) apart.
    np.testing.assert_allclose(a.vectors(ids), b.vectors(ids), atol=1e-5, rtol=2**-10)
    with Engine.open(db_a) as engine_a, Engine.open(db_b) as engine_b:
        for text in ("a ship at sea", "T72 tank", "land with rivers"):
            hits_a, hits_b = engine_a.query(text, k=10), engine_b.query(text, k=10)
            assert [h.id for h in hits_a] == [h.id for h in hits_b]
            np.testing.assert_allclose([h.score for h in hits_a], [h.score for h in hits_b], atol=1e-5)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, fixture_archive: Path) -> Path:
    """A copy of the fixture archive every index of this module is built from (the catalog keeps abs_path)."""
    return Path(shutil.copytree(fixture_archive, tmp_path_factory.mktemp("ray") / "archive"))


@pytest.fixture(scope="module")
def local_db(tmp_path_factory, archive: Path, sarclip, checkpoint: Path, indexed_db) -> Path:
    """`archive` indexed in one process."""
    db = tmp_path_factory.mktemp("ray-local") / "db"
    report = build(archive, db, sarclip, checkpoint, indexed_db[0])
    assert report.indexed == 10 and report.tiles_added > report.indexed and not report.failed
    return db


def test_ray_index_equals_the_one_process_index(ray_cluster, archive, local_db, sarclip, checkpoint, indexed_db,
                                                tmp_path):
    db = tmp_path / "db"
    report = build(archive, db, sarclip, checkpoint, indexed_db[0], stream=ray_stream(checkpoint))
    local = IndexStore(local_db).require_current().read_info()["counts"]
    assert (report.indexed, report.tiles_added, report.failed) == (10, local["tiles"], [])
    assert report.committed == 3  # 10 files, a generation every 4: as in one process
    assert sum(node["files"] for node in report.nodes.values()) == 10
    assert sum(node["tiles"] for node in report.nodes.values()) == report.tiles_added
    assert_same_index(local_db, db)


def test_a_killed_prepare_worker_is_retried_and_changes_nothing(ray_cluster, archive, local_db, sarclip, checkpoint,
                                                                indexed_db, tmp_path):
    marker = str(tmp_path / "killed.pid")
    victim = min(p.relative_to(archive).as_posix() for p in archive.rglob("*.tif"))

    def prepare(item, settings, manifest_row):
        """`prepare_file`, except that the first worker to prepare `victim` dies (os._exit: no cleanup, as if
        killed) after writing its pid to `marker`; the retried task finds the marker and goes on. Nested, so
        that Ray ships it by value (its workers cannot import tests/)."""
        import os
        from pathlib import Path

        from sarclip_search.ingest.indexer import prepare_file

        if item.rel == victim and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)
        return prepare_file(item, settings, manifest_row)

    db = tmp_path / "db"
    report = build(archive, db, sarclip, checkpoint, indexed_db[0], stream=ray_stream(checkpoint, prepare=prepare))
    assert Path(marker).is_file() and int(Path(marker).read_text()) != os.getpid()  # a worker died preparing the victim
    assert (report.indexed, report.failed) == (10, [])
    assert_same_index(local_db, db)


def test_a_killed_embedding_actor_is_restarted_and_changes_nothing(ray_cluster, archive, local_db, sarclip,
                                                                   checkpoint, indexed_db, tmp_path):
    from sarclip_search.ingest.ray_pipeline import _Embedder

    marker = str(tmp_path / "killed.pid")

    class DyingOnce(_Embedder):
        """Dies (os._exit, as if killed) in its first batch, once; the restarted actor re-runs the batch.
        Defined here, so that Ray ships it by value."""

        def __call__(self, batch):
            import os
            from pathlib import Path

            if not Path(marker).exists():
                Path(marker).write_text(str(os.getpid()))
                os._exit(1)
            return super().__call__(batch)

    stream = ray_stream(checkpoint)
    stream.embedder = DyingOnce
    db = tmp_path / "db"
    report = build(archive, db, sarclip, checkpoint, indexed_db[0], stream=stream)
    assert Path(marker).is_file() and int(Path(marker).read_text()) != os.getpid()  # an actor died mid-batch
    assert (report.indexed, report.failed) == (10, [])
    assert_same_index(local_db, db)


def test_an_interrupted_ray_run_keeps_its_commits_and_a_rerun_resumes(ray_cluster, archive, local_db, sarclip,
                                                                       checkpoint, indexed_db, tmp_path):
    from contextlib import contextmanager

    stream = ray_stream(checkpoint)

    @contextmanager
    def interrupted(todo, settings):  # the driver dies (Ctrl-C) while applying the 6th file
        with stream(todo, settings) as prepared:
            def results():
                for number, result in enumerate(prepared):
                    if number == 5:
                        raise KeyboardInterrupt
                    yield result
            yield results()

    db = tmp_path / "db"
    with pytest.raises(KeyboardInterrupt):
        build(archive, db, sarclip, checkpoint, indexed_db[0], stream=interrupted)
    committed = IndexStore(db).require_current().read_info()["counts"]
    assert committed["scenes"] == EVERY  # the first generation (4 files) is committed, the second is not
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint), tile_size=TILE,
                           commit_every=EVERY, stream=ray_stream(checkpoint))
    assert (report.indexed, report.unchanged) == (10 - EVERY, EVERY)  # resumed where it stopped
    assert_same_index(local_db, db)


def bad_archive(archive: Path, target: Path) -> Path:
    """`archive` without its manifest (every file is indexed) plus five files that cannot be."""
    shutil.copytree(archive, target)
    (target / "manifest.csv").unlink()
    (target / "empty.tif").write_bytes(b"")
    tif = next(archive.rglob("*.tif")).read_bytes()
    (target / "truncated.tif").write_bytes(tif[: len(tif) // 2])
    (target / "notes.tif").write_text("field notes, not an image\n")
    png = next(archive.rglob("*.png"))
    shutil.copy2(png, target / "sidecar_bad.png")
    (target / "sidecar_bad.png.json").write_text('{"type": "Feature", "properties": {')
    return target


def test_bad_files_are_listed_as_in_one_process(ray_cluster, archive, sarclip, checkpoint, indexed_db, tmp_path,
                                                fast_model):
    bad = bad_archive(archive, tmp_path / "bad")
    one = build(bad, tmp_path / "one", sarclip, checkpoint, indexed_db[0])
    assert len(one.failed) == 4 and one.indexed == 10
    link_encoders(indexed_db[0], tmp_path / "ray")
    result = run("index", bad, "--db", tmp_path / "ray", "--model", checkpoint, "--quiet", "--tile-size", TILE,
                 "--commit-every", EVERY, "--ray", "--ray-batch-size", "5")
    assert result.exit_code == EXIT_PARTIAL, result.output
    for rel, reason in one.failed:  # the same lines, in the same order
        assert f"warning: {rel}: {reason}" in " ".join(result.output.split())
    assert_same_index(tmp_path / "one", tmp_path / "ray")


def test_strict_stops_at_the_first_bad_file_and_commits_nothing(ray_cluster, archive, checkpoint, indexed_db,
                                                                 tmp_path, fast_model):
    bad = bad_archive(archive, tmp_path / "bad")
    link_encoders(indexed_db[0], tmp_path / "ray")
    result = run("index", bad, "--db", tmp_path / "ray", "--model", checkpoint, "--quiet", "--tile-size", TILE,
                 "--strict", "--ray")
    assert result.exit_code == 1, result.output
    assert "(--strict: stopped at the first failed file, nothing was committed)" in " ".join(result.output.split())
    assert IndexStore(tmp_path / "ray").current() is None


def test_ray_options_are_checked_before_anything_runs(tmp_path, archive):
    result = run("index", archive, "--db", tmp_path / "db", "--ray", "--ray-batch-size", "0")
    assert result.exit_code == 1 and "--ray-batch-size must be a positive number of tiles" in result.output
    assert not (tmp_path / "db").exists()
    result = run("index", archive, "--db", tmp_path / "db", "--shards", tmp_path / "shards")
    assert result.exit_code == 1 and "--shards DIR is written by the Ray pipeline: add --ray" in result.output
    assert not (tmp_path / "shards").exists()


def test_without_ray_installed_the_error_names_the_extra(monkeypatch, tmp_path, archive):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = run("index", archive, "--db", tmp_path / "db", "--ray")
    assert result.exit_code == 1
    assert "install it with pip install 'sarclip-search[ray]'" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_two_simulated_nodes_give_the_same_index_and_share_the_reading(archive, local_db, checkpoint, indexed_db,
                                                                       tmp_path):
    pytest.importorskip("ray")
    db, out = tmp_path / "db", tmp_path / "two_nodes.json"
    link_encoders(indexed_db[0], db)
    script = Path(__file__).with_name("two_nodes.py")
    done = subprocess.run([sys.executable, str(script), str(archive), str(db), str(checkpoint), str(out), str(TILE)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["nodes"]) == 2 and result["failed"] == []
    readers = [node for node, counts in result["report_nodes"].items() if counts["files"]]
    assert sorted(readers) == sorted(result["nodes"])  # both nodes read files
    assert sum(c["tiles"] for c in result["report_nodes"].values()) == result["tiles"]
    assert_same_index(local_db, db)


def test_ray_shards_build_the_same_index_and_a_rerun_skips_what_they_hold(ray_cluster, archive, local_db, sarclip,
                                                                          checkpoint, indexed_db, tmp_path):
    from sarclip_search.ingest.from_shards import build_from_shards
    from sarclip_search.ingest.ray_pipeline import RayOptions, write_shards
    from sarclip_search.ingest.shards import scan_shards

    shards = tmp_path / "shards"
    link_encoders(indexed_db[0], shards)  # the workers' ONNX encoder, not exported again

    def write():
        return write_shards(archive, shards, sarclip, model_path=str(checkpoint), options=RayOptions(batch_size=5),
                            tile_size=TILE, scenes_per_shard=EVERY)

    report = write()
    local = IndexStore(local_db).require_current().read_info()["counts"]
    assert (report.indexed, report.tiles_added, report.failed) == (10, local["tiles"], [])
    assert len(scan_shards(shards).files) == 3  # 10 scenes, 4 a shard
    again = write()
    assert (again.indexed, again.unchanged, again.totals["tiles"]) == (0, 10, local["tiles"])
    assert len(scan_shards(shards).files) == 3
    db = tmp_path / "db"
    link_encoders(indexed_db[0], db)
    build_from_shards(shards, IndexStore(db))
    assert_same_index(local_db, db)


def test_native_stderr_is_held_while_ray_connects(capfd, caplog):
    """Ray's C++ client writes its retry warnings to file descriptor 2, past Python logging: held, logged at debug."""
    import logging

    from sarclip_search.ingest.ray_pipeline import _native_stderr_held

    with caplog.at_level(logging.DEBUG, logger="sarclip_search.ingest.ray_pipeline"):
        with _native_stderr_held():
            os.write(2, b"gcs_client.cc:210: Failed to get cluster ID\n")
        os.write(2, b"after the block\n")
    err = capfd.readouterr().err
    assert "gcs_client" not in err and "after the block" in err
    assert "gcs_client.cc:210" in caplog.text
