"""The post-filter path of filtered search (index/filtered.py `post_filtered`, subsets of >= 30% of the rows): a
query whose fetched candidates hold too few members (the filter excludes its neighbourhood) is searched again,
deeper, so its filtered recall does not fall below what the same query reaches unfiltered."""

from __future__ import annotations

import numpy as np
import pytest

from sarclip_search.index import VectorIndex, exact_search, recall_at_k
from sarclip_search.index import filtered as filtered_module

import helpers

DIM, N, K = 32, 20_000, 10
NPROBE, RERANK = 2, 8


@pytest.fixture(scope="module")
def index_and_data() -> tuple[VectorIndex, np.ndarray, np.ndarray, np.ndarray]:
    xb = helpers.clustered(N, DIM, clusters=200, seed=5, centers_seed=0)
    xq = helpers.clustered(40, DIM, clusters=200, seed=6, centers_seed=0)
    ids = np.arange(N, dtype=np.int64) * 3 + 1
    index = VectorIndex.create(DIM, "IVF64,PQ8x8")
    index.add(ids, xb)
    return index, ids, xb, xq


@pytest.fixture
def post_filter_only(monkeypatch) -> list[int]:
    """Every subset through `post_filtered` (no exact search of the 20k rows); counts the queries searched."""
    monkeypatch.setattr(filtered_module, "EXACT_SUBSET_MIN", 0)
    monkeypatch.setattr(filtered_module, "EXACT_COST_RATIO", 0.0)
    calls: list[int] = []
    real = filtered_module.post_filtered
    monkeypatch.setattr(filtered_module, "post_filtered", lambda index, xq, *rest: calls.append(len(xq)) or
                        real(index, xq, *rest))
    return calls


def _negatively_correlated(index_and_data, query: int) -> tuple[np.ndarray, np.ndarray]:
    """A 60% random subset without the query's nearest 4% (a filter that excludes what the query looks for),
    and the exact filtered top-k."""
    _, ids, xb, xq = index_and_data
    rng = np.random.default_rng(query)
    near = exact_search(xb, ids, xq[query : query + 1], N // 25)[1][0]
    subset = np.setdiff1d(rng.choice(ids, int(0.6 * N), replace=False), near)
    inside = np.isin(ids, subset)
    return subset, exact_search(xb[inside], ids[inside], xq[query : query + 1], K)[1]


def _filtered_recall(index_and_data, queries: range) -> float:
    index, _, _, xq = index_and_data
    found, truth = [], []
    for query in queries:
        subset, true_ids = _negatively_correlated(index_and_data, query)
        _, ids = index.search(xq[query : query + 1], K, subset=subset, nprobe=NPROBE, rerank_factor=RERANK)
        assert np.isin(ids[ids != -1], subset).all()
        found.append(ids[0])
        truth.append(true_ids[0])
    return recall_at_k(np.array(found), np.array(truth), K)


def test_a_negatively_correlated_filter_is_searched_deeper(index_and_data, post_filter_only, monkeypatch) -> None:
    index, ids, xb, xq = index_and_data
    queries = range(20)
    _, unfiltered = index.search(xq[:20], K, nprobe=NPROBE, rerank_factor=RERANK)
    unfiltered_recall = recall_at_k(unfiltered, exact_search(xb, ids, xq[:20], K)[1], K)
    deeper = _filtered_recall(index_and_data, queries)
    assert post_filter_only == [1] * len(queries)  # the path under test, one query at a time
    monkeypatch.setattr(filtered_module, "POST_FILTER_DEEPEN_BELOW", 0.0)  # as before: one search, members kept
    once = _filtered_recall(index_and_data, queries)
    assert deeper >= unfiltered_recall - 0.02 and deeper >= 0.9, (deeper, unfiltered_recall)
    assert once < deeper - 0.1, (once, deeper)


def test_an_uncorrelated_filter_is_not_searched_again(index_and_data, post_filter_only, monkeypatch) -> None:
    index, ids, xb, xq = index_and_data
    searches: list[int] = []
    real = index.approximate_search
    monkeypatch.setattr(index, "approximate_search", lambda q, *a, **kw: searches.append(len(q)) or real(q, *a, **kw))
    subset = np.random.default_rng(3).choice(ids, N // 2, replace=False)
    _, found = index.search(xq, K, subset=subset, nprobe=NPROBE, rerank_factor=RERANK)
    inside = np.isin(ids, subset)
    assert recall_at_k(found, exact_search(xb[inside], ids[inside], xq, K)[1], K) >= 0.9
    assert searches == [len(xq)]  # one unfiltered search for the batch: every query found enough members


def test_one_query_is_not_searched_exactly_over_a_large_subset(index_and_data, monkeypatch) -> None:
    """Exact search of a subset pays off for batches (BLAS shares each row), not one query at a time."""
    index = index_and_data[0]
    monkeypatch.setattr(filtered_module, "EXACT_SUBSET_MIN", 1000)
    monkeypatch.setattr(filtered_module, "EXACT_FEW_MAX_ROWS", 2000)
    count = 3000  # below 4x the cost of a query at rerank 8 (~3k rows): exact for a batch
    assert filtered_module.exact_applies(index, K, count, NPROBE, RERANK, 100)
    assert not filtered_module.exact_applies(index, K, count, NPROBE, RERANK, 1)
    assert filtered_module.exact_applies(index, K, 1500, NPROBE, RERANK, 1)
