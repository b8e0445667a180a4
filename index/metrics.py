"""Quality metrics for approximate search."""

from __future__ import annotations

import numpy as np


def recall_per_query(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> np.ndarray:
    """|approx[:k] ∩ exact[:k]| / |exact[:k]| per query, ignoring padding ids (-1); NaN without valid exact ids."""
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    approx = np.atleast_2d(np.asarray(approx_ids))[:, :k]
    exact = np.atleast_2d(np.asarray(exact_ids))[:, :k]
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(
            f"expected as many approx rows as exact rows, got {approx.shape[0]} and {exact.shape[0]}"
        )
    recalls = np.full(len(exact), np.nan)
    for row, (approx_row, exact_row) in enumerate(zip(approx, exact)):
        truth = set(exact_row[exact_row != -1].tolist())
        if truth:
            found = set(approx_row[approx_row != -1].tolist())
            recalls[row] = len(found & truth) / len(truth)
    return recalls


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean over queries of |approx[:k] ∩ exact[:k]| / |exact[:k]|, ignoring padding ids (-1): the recall of
    approximate search against exact search (not `training.evaluate.hit_rate_at_k`, the R@K of labelled
    retrieval, where one relevant item in the top k is enough).

    The denominator is the number of valid exact ids in the first k (k in the usual case), so a
    query with fewer than k true results (a small filtered subset) can still score 1.0.
    Queries without any valid exact id are skipped; with none at all the result is 1.0.
    """
    recalls = recall_per_query(approx_ids, exact_ids, k)
    recalls = recalls[~np.isnan(recalls)]
    return float(recalls.mean()) if len(recalls) else 1.0
