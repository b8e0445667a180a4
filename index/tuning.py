"""Auto-tuning: the cheapest (nprobe, rerank_factor) of an IVF index that reaches a recall target.

Recall is measured against exact search over the index's exact copy (float32 for PQ indexes, float16
otherwise). Without queries from the caller, a seeded sample of the index's own vectors serves as
queries; each one is its own nearest neighbour, so it is dropped from both the approximate and the
exact answer (k+1 are fetched) to keep the estimate honest.

Cost: stored vectors touched per query (`cost.query_cost`: the coarse quantizer, the probed lists'
codes, RERANK_COST per re-scored candidate). Within one nprobe a larger rerank_factor only adds cost,
and the scan term grows with nprobe, so the grid walk stops as soon as the scan term alone exceeds the
best cost found.

A setting meets the target when its measured recall minus two standard errors (of the mean over
the sample's queries) does: 256 queries estimate recall@10 only to about ±0.01, and a held-out
query set should still reach the target.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from . import filtered
from .cost import query_cost
from .exact import as_matrix, exact_topk, row_blocks
from .filtered import SearchableIndex
from .metrics import recall_per_query

logger = logging.getLogger(__name__)

TUNE_SEED = 4321  # seed of the sample of the index's own vectors used as queries
TUNE_MAX_QUERIES = 256  # enough for recall@10 within ~±0.01; exact truth costs 256 x n dot products
# PQ indexes with subset codes: tune() also runs a seeded 10% filter through both mid-size strategies of
# filtered search (the subset scan and the selector) and keeps the one with the higher recall. Which one
# wins depends on the data: 1M clustered vectors, 10%: scan 0.96 vs selector 0.91; 1M real embeddings
# (near-duplicate tiles, whose top 10 the 4-bit codes cannot order): scan 0.19.
FILTER_CHECK_SELECTIVITY = 0.1
RERANK_FACTORS = (1, 2, 4, 8, 16, 32)  # tried for PQ indexes; IVF-Flat scores are exact, so only 1


@dataclass(frozen=True)
class TuneResult:
    """The settings `VectorIndex.tune` chose and what they measured (stored in index_info.json)."""

    nprobe: int | None  # IVF lists probed per query; None for Flat
    rerank_factor: int  # candidates per result re-scored exactly; 1 = none
    recall: float  # recall@k vs exact search measured with these settings on the sample
    recall_lower: float  # recall minus two standard errors: what is compared with the target
    target_recall: float
    k: int
    queries: int  # sample size
    cost: float  # stored vectors touched per query (cost.query_cost)
    met_target: bool  # False when even the most expensive setting tried fell short
    ntotal: int  # vectors in the index when tuned: re-tune once it has grown well past this
    subset_scan: bool | None = None  # filtered search scans mid-size subsets (None: not checked)
    subset_scan_recall: float | None = None  # recall@k of the 10% check through the subset scan ...
    selector_recall: float | None = None  # ... and through the selector

    def as_info(self) -> dict[str, Any]:
        return asdict(self)


def _nprobe_grid(nlist: int) -> list[int]:
    """1, 2, 4, ... up to nlist (nlist itself included: every list probed)."""
    grid, nprobe = [], 1
    while nprobe < nlist:
        grid.append(nprobe)
        nprobe *= 2
    return [*grid, nlist]


def _drop_own_ids(found: np.ndarray, own_ids: np.ndarray | None, k: int) -> np.ndarray:
    """The first k ids of each row once the query's own id (if any) is removed."""
    if own_ids is None:
        return found[:, :k]
    order = np.argsort(found == own_ids[:, None], axis=1, kind="stable")  # own id moves to the end
    return np.take_along_axis(found, order, 1)[:, :k]


def tune_index(
    index: SearchableIndex,
    queries: np.ndarray | None = None,
    *,
    target_recall: float = 0.95,
    k: int = 10,
    max_queries: int = TUNE_MAX_QUERIES,
) -> TuneResult:
    """Measure recall@k of a grid of (nprobe, rerank_factor) and return the cheapest meeting the target.

    Does not change `index` (a VectorIndex, used through its public members); `VectorIndex.tune` stores
    the result as its defaults.
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    if k < 1 or max_queries < 1:
        raise ValueError(f"k and max_queries must be >= 1, got {k} and {max_queries}")
    size = index.ntotal
    if index.is_flat or size == 0:
        return TuneResult(index.nprobe, 1, 1.0, 1.0, target_recall, k, 0, float(size), True, size)
    store, ids = index.rows.store, index.rows.ids
    if queries is None:
        rng = np.random.default_rng(TUNE_SEED)
        rows = np.sort(rng.choice(size, min(max_queries, size), replace=False))
        xq, own_ids, fetch = np.asarray(store[rows], dtype=np.float32), ids[rows], k + 1
    else:
        xq, own_ids, fetch = as_matrix(queries, index.dim, "queries")[:max_queries], None, k
    _, truth = exact_topk(xq, row_blocks(store, None, ids), fetch)
    truth = _drop_own_ids(truth, own_ids, k)

    nlist = index.nlist
    factors = RERANK_FACTORS if "PQ" in index.factory else (1,)
    best: TuneResult | None = None
    fallback: TuneResult | None = None
    for nprobe in _nprobe_grid(nlist):
        scan_cost = query_cost(nlist, size, k, nprobe, 1)
        if best is not None and scan_cost >= best.cost:
            break
        _, candidates = index.approximate_search(xq, fetch * max(factors), nprobe=nprobe)
        for factor in factors:
            if factor == 1:
                found = candidates[:, :fetch]  # FAISS returns candidates best first
            else:
                # as deep as a real query: k * factor candidates, plus the query itself when it is in the index
                found = index.rerank(xq, candidates[:, : k * factor + fetch - k], fetch)[1]
            per_query = recall_per_query(_drop_own_ids(found, own_ids, k), truth, k)
            per_query = per_query[~np.isnan(per_query)]
            recall = float(per_query.mean()) if len(per_query) else 1.0
            lower = recall - 2 * float(per_query.std()) / max(1, len(per_query)) ** 0.5
            cost = query_cost(nlist, size, k, nprobe, factor)
            point = TuneResult(
                nprobe, factor, recall, lower, target_recall, k, len(xq), cost, lower >= target_recall, size
            )
            logger.debug("tune %s: nprobe=%d rerank=%d recall@%d=%.3f (lower %.3f) cost=%.0f",
                         index.factory, nprobe, factor, k, recall, lower, cost)
            if fallback is None or (recall, -cost) > (fallback.recall, -fallback.cost):
                fallback = point
            if point.met_target:
                if best is None or cost < best.cost:
                    best = point
                break  # a larger factor at this nprobe costs more
    if best is None:
        assert fallback is not None  # the grid is never empty
        logger.warning(
            "no setting of %s reached recall@%d %.3f (best %.3f at nprobe=%s, rerank_factor=%d); using it",
            index.factory, k, target_recall, fallback.recall, fallback.nprobe, fallback.rerank_factor,
        )
        best = fallback
    else:
        logger.info(
            "tuned %s: nprobe=%s rerank_factor=%d recall@%d=%.3f on %d queries (target %.3f)",
            index.factory, best.nprobe, best.rerank_factor, k, best.recall, best.queries, target_recall,
        )
    return _check_filter_strategy(index, best, xq, own_ids, k, fetch)


def _check_filter_strategy(
    index: SearchableIndex, chosen: TuneResult, xq: np.ndarray, own_ids: np.ndarray | None, k: int, fetch: int
) -> TuneResult:
    """`chosen` plus which mid-size filtered strategy wins on a seeded FILTER_CHECK_SELECTIVITY subset of
    the index's rows (when the index has subset codes and would route that subset to the scan)."""
    size = index.ntotal
    count = max(1, round(FILTER_CHECK_SELECTIVITY * size))
    if not filtered.scan_applies(index, k, count, chosen.nprobe, chosen.rerank_factor):
        return chosen
    members = np.sort(np.random.default_rng(TUNE_SEED + 1).choice(index.rows.ids, count, replace=False))
    truth = _drop_own_ids(filtered.exact_subset(index, xq, fetch, members)[1], own_ids, k)
    recalls = {}
    for name, found in (
        ("scan", filtered.scan_subset(index, xq, fetch, members)[1]),
        ("selector",
         filtered.selector_search(index, xq, fetch, members, chosen.nprobe, chosen.rerank_factor)[1]),
    ):
        per_query = recall_per_query(_drop_own_ids(found, own_ids, k), truth, k)
        recalls[name] = float(np.nanmean(per_query))
    scan = recalls["scan"] >= recalls["selector"]
    logger.info("filtered search of %s, %.0f%% of the rows: subset scan recall@%d %.3f, selector %.3f: using the %s",
                index.factory, 100 * FILTER_CHECK_SELECTIVITY, k, recalls["scan"], recalls["selector"],
                "subset scan" if scan else "selector")
    return replace(chosen, subset_scan=scan, subset_scan_recall=round(recalls["scan"], 4),
                   selector_recall=round(recalls["selector"], 4))
