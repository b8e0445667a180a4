"""Exact re-ranking: candidate ids from FAISS re-scored against the exact copy of their vectors.

PQ indexes fetch k * rerank_factor candidates per query (PQ_RERANK_FACTOR until tune() picks one) and
keep the exact best k; IVF-Flat and Flat scores are already exact (factor 1: no re-ranking).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

from .choose import is_pq
from .errors import REBUILD, VectorIndexError
from .exact import empty_results
from .rows import Rows

PQ_RERANK_FACTOR = 8  # PQ indexes fetch 8k candidates and re-score them exactly (tune() refines it)
RERANK_BLOCK_BYTES = 1024**2  # float16 re-ranking converts 1 MB of candidates at a time (faster than 32 MB)

_RERANK_POOL: ThreadPoolExecutor | None = None


def default_rerank_factor(factory: str) -> int:
    """Candidates fetched per result before exact re-ranking: 8 for PQ codes (lossy scores), else 1 (none)."""
    return PQ_RERANK_FACTOR if is_pq(factory) else 1


def _rerank_pool() -> ThreadPoolExecutor | None:
    """Threads for re-ranking blocks of queries (one per CPU), or None on a single CPU."""
    global _RERANK_POOL
    if _RERANK_POOL is None and (os.cpu_count() or 1) > 1:
        _RERANK_POOL = ThreadPoolExecutor(max_workers=os.cpu_count(), thread_name_prefix="rerank")
    return _RERANK_POOL


def exact_rerank(rows: Rows, xq: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact best-k of candidate ids (q, c) (-1 = none) against the exact copy in `rows`, best first.

    `xq`: float32 (q, dim) queries. k * rerank_factor rows per query are read: random reads of a
    memory-mapped copy, served from the page cache once warm. A float32 copy is gathered and scored by
    FAISS in C++ (OpenMP over queries); a float16 one in numpy, RERANK_BLOCK_BYTES of candidates at a time.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    num_queries, count = candidates.shape
    dim, store = rows.dim, rows.store
    valid = candidates != -1
    found, found_rows = rows.rows_of(candidates[valid])
    if not found.all():  # internal invariant: FAISS only returns ids we hold
        raise VectorIndexError(
            f"FAISS returned {int((~found).sum())} ids missing from the exact copy; {REBUILD}"
        )
    candidate_rows = np.full(candidates.shape, -1, np.int64)
    candidate_rows[valid] = found_rows
    keep = min(k, count)
    scores, ids = empty_results(num_queries, k)
    if rows.dtype == "float32":
        if not valid.all():  # FAISS stops at a row's first -1: move them to the end
            candidate_rows = np.take_along_axis(candidate_rows, np.argsort(~valid, axis=1, kind="stable"), 1)
        best, best_rows = np.empty((num_queries, keep), np.float32), np.empty((num_queries, keep), np.int64)
        faiss.knn_inner_products_by_idx(
            faiss.swig_ptr(xq), faiss.swig_ptr(store), faiss.swig_ptr(candidate_rows), dim, num_queries,
            rows.size, count, keep, faiss.swig_ptr(best), faiss.swig_ptr(best_rows), count,
        )
        hit = best_rows >= 0
        scores[:, :keep] = np.where(hit, best, -np.inf)
        ids[:, :keep] = np.where(hit, rows.ids_at(np.maximum(best_rows, 0)), -1)
        return scores, ids
    exact = np.full(candidates.shape, -np.inf, np.float32)
    candidate_rows = np.maximum(candidate_rows, 0)
    block = max(1, RERANK_BLOCK_BYTES // max(1, count * dim * 4))

    def score(start: int) -> None:
        part = slice(start, start + block)
        xb = store[candidate_rows[part].reshape(-1)].astype(np.float32).reshape(-1, count, dim)
        exact[part] = np.matmul(xb, xq[part][:, :, None])[:, :, 0]

    starts = range(0, num_queries, block)
    if len(starts) > 1 and _rerank_pool() is not None:  # numpy releases the GIL: blocks run in parallel
        list(_rerank_pool().map(score, starts))
    else:
        for start in starts:
            score(start)
    exact[~valid] = -np.inf
    order = np.argsort(-exact, axis=1, kind="stable")[:, :keep]
    scores[:, :keep] = np.take_along_axis(exact, order, 1)
    ids[:, :keep] = np.take_along_axis(candidates, order, 1)
    ids[~np.isfinite(scores)] = -1
    return scores, ids
