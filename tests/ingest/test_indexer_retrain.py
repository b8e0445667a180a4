"""The indexer retrains the vector index at commit time once it has grown 4x past its training set."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import helpers
import numpy as np
from sarclip_search.index import VectorIndex, exact_search, recall_at_k

from sarclip_search.ingest import indexer
from sarclip_search.store.layout import Generation

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
