"""The indexer rebuilds the vector index at commit time: retrained once it has grown 4x past its training
set, and under another factory (`index_factory`) over an unchanged archive; the ids and vectors are kept, the
rebuilt index is tuned and finds what exact search finds."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from sarclip_search.index import VectorIndex, exact_search, recall_at_k
from sarclip_search.ingest import indexer
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.query.engine import Engine
from sarclip_search.store.filters import Filters
from sarclip_search.store.layout import Generation, IndexStore

import helpers

DIM = 32


# 40 clusters whose centers every seed shares, so queries match the data
clustered = partial(helpers.clustered, d=DIM, clusters=40, centers_seed=0)


def commit(generation: Generation, factory: str) -> VectorIndex:
    """One commit of an empty batch: what `index` does to the vectors after applying a batch."""
    settings = indexer._Settings(SimpleNamespace(embed_dim=DIM), {}, 256, 256, factory, None, False, None, 0)
    indexer._update_generation(generation, [], [], settings, indexer.IndexReport(archive="a", db="b"))
    return VectorIndex.load(generation.vectors_path)


def test_commit_retrains_after_4x_growth_and_keeps_ids_vectors_and_recall(tmp_path: Path) -> None:
    generation = Generation(tmp_path / "gen-000001")
    generation.path.mkdir()
    xb, xq = clustered(8000, seed=1), clustered(100, seed=2)
    ids = np.arange(8000, dtype=np.int64) * 3 + 5
    index = VectorIndex.create(DIM, "IVF16,Flat")
    index.add(ids[:2000], xb[:2000])
    index.add(ids[2000:7999], xb[2000:7999])  # 3.9995x: not yet
    index.save(generation.vectors_path)
    assert commit(generation, "IVF16,Flat").trained_on == 2000  # below the threshold: no retraining

    grown = VectorIndex.load(generation.vectors_path)
    grown.add(ids[7999:], xb[7999:])  # 4x the 2000 it was trained on
    grown.save(generation.vectors_path)
    retrained = commit(generation, "IVF16,Flat")
    assert retrained.trained_on == 8000 and retrained.factory == "IVF16,Flat"
    assert retrained.tuning is not None and retrained.tuning["ntotal"] == 8000  # re-tuned after the rebuild
    np.testing.assert_array_equal(retrained.ids(), ids)
    np.testing.assert_array_equal(retrained.vectors(ids), grown.vectors(ids))
    _, truth = exact_search(xb, ids, xq, 10)
    assert recall_at_k(retrained.search(xq, 10)[1], truth, 10) >= 0.95


def test_ivf_index_built_by_the_indexer_matches_exact_search(indexed_db, engine, sarclip, tmp_path):
    db, archive, checkpoint = indexed_db
    ivf_db = tmp_path / "db"
    shutil.copytree(db, ivf_db)
    # unchanged archive: nothing is re-embedded, the same vectors move into an IVF index
    report = index_archive(archive, IndexStore(ivf_db), sarclip, model_path=str(checkpoint), index_factory="IVF4,Flat")
    assert (report.indexed, report.unchanged, report.index_factory) == (0, 10, "IVF4,Flat")
    with Engine.open(ivf_db) as ivf:
        assert ivf.info["index"]["factory"] == "IVF4,Flat"
        # the indexer tuned the approximate index on its own vectors and saved what it chose
        assert ivf.vectors.tuning is not None and ivf.vectors.tuning["ntotal"] == 10
        assert ivf.vectors.tuning["recall"] >= 0.95
        ids = engine.vectors.ids()
        queries = engine.vectors.vectors(ids)
        np.testing.assert_allclose(ivf.vectors.vectors(ids), queries)
        k = 5
        _, exact = exact_search(queries, ids, queries, k)
        _, approx = ivf.vectors.search(queries, k, nprobe=4)  # all 4 lists: exhaustive
        assert recall_at_k(approx, exact, k) == 1.0
        for tile_id, vector in zip(ids, queries):
            assert ivf.search_vector(vector, k=1)[0].id == tile_id
        subset = ivf.filter_ids(Filters(label="ship"))
        hits = ivf.search_vector(queries[0], k=10, subset=subset)
        assert len(hits) == len(subset) == 5
