"""Input checks and exact (brute-force) inner-product search: the ground truth for approximate search.

Shorthand used inside this module only: xq = queries, xb = database vectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import faiss
import numpy as np

from .errors import REBUILD, VectorIndexError

ROW_BLOCK = 32_768  # exact search converts this many float16 rows to float32 at a time (32 MB at d=256)


# ---------------------------------------------------------------- input checks


def as_ids(ids: Any, name: str = "ids") -> np.ndarray:
    """Validate ids as a 1-D array of non-negative integers; return int64 (-1 is the padding id)."""
    array = np.asarray(ids)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of int64 ids, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integers (int64 catalog ids), got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks padding in results), got {int(array.min())}")
    return np.ascontiguousarray(array)


def as_matrix(vectors: Any, dim: int, name: str) -> np.ndarray:
    """Validate a (n, dim) float matrix (a 1-D vector is one row); return contiguous float32."""
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, {dim}) float32 array, got shape {array.shape}")
    if array.shape[1] != dim:
        raise VectorIndexError(
            f"{name} have dimension {array.shape[1]} but the index expects {dim}; "
            f"use embeddings from the model the index was built with, or {REBUILD}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be float32, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or infinite values; fix the embeddings before indexing")
    return array


def as_batch(ids: Any, vectors: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch to add: (ids int64 as `as_ids`, vectors float32 as `as_matrix`), one id per
    vector, no id twice."""
    ids = as_ids(ids)
    xb = as_matrix(vectors, dim, "vectors")
    if len(ids) != len(xb):
        raise ValueError(f"expected one id per vector ({len(xb)} vectors), got {len(ids)} ids")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise ValueError(f"ids must be unique, id {int(unique[counts > 1][0])} repeats within the batch")
    return ids, xb


# ---------------------------------------------------------------- exact search


def empty_results(num_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of `num_queries` rows of k results, all padding: score -inf, id -1."""
    return np.full((num_queries, k), -np.inf, dtype=np.float32), np.full((num_queries, k), -1, dtype=np.int64)


def exact_topk(
    xq: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best-k inner products of xq against a stream of (xb float32 block, ids block), best first.

    Per block, faiss.knn picks the block's best k rows, whose ids are then merged with the running best.
    """
    best_scores, best_ids = empty_results(xq.shape[0], k)
    for xb, block_ids in blocks:
        block_ids = np.asarray(block_ids)
        if not len(block_ids):
            continue
        # faiss.knn: BLAS inner products + a heap per query in C++, 5-10x numpy's argpartition
        scores, rows = faiss.knn(xq, np.ascontiguousarray(xb), min(k, len(block_ids)),
                                 metric=faiss.METRIC_INNER_PRODUCT)
        ids = np.where(rows >= 0, block_ids[np.maximum(rows, 0)], -1)
        scores[rows < 0] = -np.inf
        scores = np.concatenate([best_scores, scores], axis=1)  # (q, 2k) at most
        ids = np.concatenate([best_ids, ids], axis=1)
        top = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
        best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best_scores, best_ids = np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_ids, order, 1)
    best_ids[~np.isfinite(best_scores)] = -1
    return best_scores, best_ids


def row_blocks(
    store: np.ndarray, rows: np.ndarray | None, ids: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (float32 vectors, ids) in blocks of ROW_BLOCK rows, from all of `store` or the given rows."""
    total = store.shape[0] if rows is None else len(rows)
    for start in range(0, total, ROW_BLOCK):
        block = slice(start, start + ROW_BLOCK)
        xb = store[block] if rows is None else store[rows[block]]
        yield np.asarray(xb, dtype=np.float32), ids[block]


def exact_search(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product search: (scores float32 (q, k), ids int64 (q, k)), best first.

    `vectors` (n, d) float32 or float16 with ids (n,); rows padded with -inf / -1 when n < k.
    Memory stays bounded (blocks of 32k vectors; faiss.knn blocks the queries). Ground truth for approximate search.
    """
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D (n, d) array, got shape {vectors.shape}")
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape != (vectors.shape[0],):
        raise ValueError(f"expected one id per vector ({vectors.shape[0]}), got ids of shape {ids.shape}")
    xq = as_matrix(queries, vectors.shape[1], "queries")
    return exact_topk(xq, row_blocks(vectors, None, ids), k)
