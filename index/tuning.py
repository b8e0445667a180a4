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
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from . import filtered
from .choose import resident_bytes
from .cost import RERANK_COST, query_cost
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
# Text queries sit across the modality gap: their true neighbours are farther and PQ codes order them worse,
# so tune_text tries deeper re-ranking (1280 candidates at k=10; ~0.5 ms of re-scoring per query at 1M).
TEXT_RERANK_FACTORS = (*RERANK_FACTORS, 64, 128)
# Near-duplicates (overlapping tiles): codes cannot order the cloud, so the re-rank has to cover it. Tried only
# when RERANK_FACTORS missed on such data: 2560 candidates at k=10, ~1 ms of re-scoring per query at 1M.
NEAR_DUPLICATE_RERANK_FACTORS = (*TEXT_RERANK_FACTORS, 256)
TEXT_ROUTED = 0.02  # tune_text's routing threshold leaves at most this share of the text proxies on the image side
GAP_SAMPLE = 4096  # image vectors (seeded) whose mean is the image side of the modality gap


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
    neighbour_score: float | None = None  # median exact score of the k-th neighbour of the sample's queries
    needs: str | None = None  # target missed on near-duplicates: what would reach it, in one line (near_duplicates)
    tried: list[dict[str, Any]] | None = None  # near-duplicates short of the target: each depth / code measured
    replaces: str | None = None  # this index's factory replaced that one on near-duplicates (VectorIndex.tuned) ...
    memory_budget: int | None = None  # ... within this budget (resident bytes)

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
    rerank_factors: tuple[int, ...] | None = None,
    offset: np.ndarray | None = None,
    check_filters: bool = True,
    report: bool = True,
) -> TuneResult:
    """Measure recall@k of a grid of (nprobe, rerank_factor) and return the cheapest meeting the target.

    `rerank_factors`: the depths tried for PQ indexes (default RERANK_FACTORS; text queries go deeper:
    TEXT_RERANK_FACTORS).
    `offset`: subtracted from the queries for the FAISS probe only, the candidates then re-ranked exactly
    with the queries as given (modality-mean centering, `tune_text`); every setting then re-ranks.
    Near-duplicates (a PQ index whose sample's median k-th neighbour scores >= NEAR_DUPLICATE_SCORE) short of
    the target: the grid is measured again with re-ranking up to NEAR_DUPLICATE_RERANK_FACTORS (both recorded
    in `tried`); still short, `needs` names the budget that reaches it (`near_duplicates`), logged as a warning
    unless `report` is False (`VectorIndex.tuned` tries other codes first and reports once).
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
    truth_scores, truth = exact_topk(xq, row_blocks(store, None, ids), fetch)
    neighbour_score = round(float(np.median(truth_scores[:, fetch - 1])), 4)  # k-th other (own id is the first)
    truth = _drop_own_ids(truth, own_ids, k)

    factors = (rerank_factors or RERANK_FACTORS) if "PQ" in index.factory or offset is not None else (1,)  # centered: re-rank
    probe = xq if offset is None else np.ascontiguousarray(xq - offset, dtype=np.float32)
    best, fallback = _grid(index, xq, probe, truth, own_ids, k, fetch, factors, target_recall, offset)
    near = "PQ" in index.factory and neighbour_score >= NEAR_DUPLICATE_SCORE
    tried: list[dict[str, Any]] | None = None
    if best is None and near and offset is None and max(factors) < max(NEAR_DUPLICATE_RERANK_FACTORS):
        # a cloud of near-duplicates that the codes cannot order: re-rank deeper (disk reads, no resident memory)
        tried = [tried_entry(index, fallback, max(factors))]
        deeper = tuple(sorted({*factors, *NEAR_DUPLICATE_RERANK_FACTORS}))
        started = time.perf_counter()
        best, deep_fallback = _grid(index, xq, probe, truth, own_ids, k, fetch, deeper, target_recall, offset)
        chosen = best or deep_fallback
        tried.append(tried_entry(index, chosen, max(deeper), time.perf_counter() - started))
        logger.info("near-duplicates (median %dth-neighbour score %.4f): re-ranking up to %d x k on %s: recall@%d "
                    "%.3f at nprobe=%s, rerank_factor=%d", k, neighbour_score, max(deeper), index.factory, k,
                    chosen.recall, chosen.nprobe, chosen.rerank_factor)
        if (deep_fallback.recall, -deep_fallback.cost) > (fallback.recall, -fallback.cost):
            fallback = deep_fallback
    if best is None:
        (logger.warning if check_filters and report else logger.info)(  # tune_text's variants: it logs the one it keeps
            "no setting of %s reached recall@%d %.3f (best %.3f at nprobe=%s, rerank_factor=%d); using it",
            index.factory, k, target_recall, fallback.recall, fallback.nprobe, fallback.rerank_factor,
        )
        best = replace(fallback, neighbour_score=neighbour_score,
                       needs=near_duplicates(index, neighbour_score, fallback.recall, target_recall, k, tried))
        if best.needs and report:
            logger.warning("%s", best.needs)
    else:
        logger.info(
            "tuned %s: nprobe=%s rerank_factor=%d recall@%d=%.3f on %d queries (target %.3f)",
            index.factory, best.nprobe, best.rerank_factor, k, best.recall, best.queries, target_recall,
        )
    best = replace(best, neighbour_score=neighbour_score, tried=tried)
    return _check_filter_strategy(index, best, xq, own_ids, k, fetch) if check_filters else best


def _grid(
    index: SearchableIndex, xq: np.ndarray, probe: np.ndarray, truth: np.ndarray, own_ids: np.ndarray | None,
    k: int, fetch: int, factors: tuple[int, ...], target_recall: float, offset: np.ndarray | None,
) -> tuple[TuneResult | None, TuneResult]:
    """(the cheapest setting of nprobe x `factors` meeting the target or None, the one with the best recall)."""
    nlist, size = index.nlist, index.ntotal
    best: TuneResult | None = None
    fallback: TuneResult | None = None
    for nprobe in _nprobe_grid(nlist):
        scan_cost = query_cost(nlist, size, k, nprobe, 1)
        if best is not None and scan_cost >= best.cost:
            break
        _, candidates = index.approximate_search(probe, fetch * max(factors), nprobe=nprobe)
        for factor in factors:
            if factor == 1 and offset is None:
                found = candidates[:, :fetch]  # FAISS returns candidates best first
            else:
                # as deep as a real query: k * factor candidates, plus the query itself when it is in the index
                found = index.rerank(xq, candidates[:, : k * factor + fetch - k], fetch)[1]
            per_query = recall_per_query(_drop_own_ids(found, own_ids, k), truth, k)
            per_query = per_query[~np.isnan(per_query)]
            recall = float(per_query.mean()) if len(per_query) else 1.0
            lower = recall - 2 * float(per_query.std()) / max(1, len(per_query)) ** 0.5
            cost = query_cost(nlist, size, k, nprobe, factor) + (RERANK_COST * k if offset is not None and factor == 1 else 0)
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
    assert fallback is not None  # the grid is never empty
    return best, fallback


def tried_entry(index: SearchableIndex, result: TuneResult, rerank_max: int, seconds: float | None = None,
           built_seconds: float | None = None) -> dict[str, Any]:
    """One line of `TuneResult.tried`: a code (and re-rank depth) measured, and how it did."""
    subset = index.rows.codes is not None
    return {"factory": index.factory, "subset_codes": subset, "rerank_max": rerank_max,
            "bytes_per_vector": round(resident_bytes(index.ntotal, index.dim, index.factory, subset) / max(1, index.ntotal), 1),
            "nprobe": result.nprobe, "rerank_factor": result.rerank_factor, "recall": round(result.recall, 4),
            "recall_lower": round(result.recall_lower, 4), "met_target": result.met_target,
            **({"tune_s": round(seconds, 1)} if seconds is not None else {}),
            **({"build_s": round(built_seconds, 1)} if built_seconds is not None else {})}


NEAR_DUPLICATE_SCORE = 0.99  # median k-th neighbour cosine above this: a cloud of near-duplicates (overlapping tiles)


def _size(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def near_duplicates(
    index: SearchableIndex, neighbour_score: float, recall: float, target: float, k: int,
    tried: list[dict[str, Any]] | None = None, memory_budget: int | None = None,
) -> str | None:
    """One line for a PQ index that missed the target on near-duplicate vectors (overlapping tiles of one scene:
    the k-th neighbour within ~0.01 cosine of the first, which PQ codes cannot order): what was tried (`tried`,
    within `memory_budget`), the budget IVF-Flat (exact scores) needs, and how to get it. None when the vectors
    are not near-duplicates or the codes are exact."""
    if "PQ" not in index.factory or neighbour_score < NEAR_DUPLICATE_SCORE:
        return None
    flat = f"IVF{index.nlist},Flat"
    needed = resident_bytes(index.ntotal, index.dim, flat)
    codes = list(dict.fromkeys(entry["factory"].split(",")[-1] if "OPQ" not in entry["factory"]
                               else entry["factory"].split(",")[0] for entry in tried or []))
    depth = max((entry["rerank_max"] for entry in tried or []), default=RERANK_FACTORS[-1])
    within = f" within {_size(memory_budget)}" if memory_budget is not None else ""
    return (f"{index.factory} reaches recall@{k} {recall:.3f}, short of {target:.2f}: its vectors are near-duplicates "
            f"(median {k}th-neighbour cosine {neighbour_score:.3f}) that {'/'.join(codes) or index.factory.split(',')[-1]} "
            f"codes cannot order (re-ranked up to {depth} x k{within}); {flat} (exact scores) needs {_size(needed)} "
            f"resident ({needed / index.ntotal:.0f} B/vector): index with --memory-budget {int(-(-needed // 2**20))}M "
            f"or more, or --index-factory {flat}")


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


# ------------------------------------------------------------------ text queries (the modality gap)


@dataclass(frozen=True)
class TextTuning:
    """The setting `tune_text` chose for text queries, and how a query is recognized as one.

    Text embeddings of a CLIP-style model sit apart from the image embeddings (the modality gap) along a
    nearly common direction: `direction` (unit: mean text proxy minus mean image vector) and `threshold`
    (half-way between the two populations' median projections, lowered until >= 98% of the text proxies
    are above it) route a query to this setting
    (`VectorIndex.population`); `routed` is the share of text proxies and image sample routed right.
    `offset` (mean text minus mean image) is subtracted from a text query for the FAISS probe when
    `centered` measured cheaper at the target (or better short of it); the candidates are re-ranked exactly
    with the query as given.
    """

    result: TuneResult  # the setting chosen for text queries (centered or not) and its measurement
    centered: bool
    direction: np.ndarray  # (d,) unit
    threshold: float
    offset: np.ndarray  # (d,) mean text proxy - mean image vector; used only when centered
    routed: float
    plain: TuneResult  # the best setting without centering ...
    with_offset: TuneResult | None  # ... and with it (None: not measured)

    def as_info(self) -> dict[str, Any]:
        """JSON-ready (index_info.json `tuning.text`): the vectors as lists of floats."""
        return {
            **self.result.as_info(),
            "centered": self.centered,
            "gap_norm": round(float(np.linalg.norm(self.offset)), 4),
            "routed": round(self.routed, 4),
            "threshold": float(self.threshold),
            "direction": [round(float(v), 6) for v in self.direction],
            **({"offset": [round(float(v), 6) for v in self.offset]} if self.centered else {}),
            "plain": _summary(self.plain),
            **({"with_offset": _summary(self.with_offset)} if self.with_offset is not None else {}),
        }


def _summary(result: TuneResult) -> dict[str, Any]:
    return {"nprobe": result.nprobe, "rerank_factor": result.rerank_factor, "recall": round(result.recall, 4),
            "cost": result.cost, "met_target": result.met_target}


def _better(a: TuneResult, b: TuneResult) -> bool:
    """a is the better pick: meets the target more cheaply, or meets it where b does not, or recalls more."""
    if a.met_target != b.met_target:
        return a.met_target
    if a.met_target:
        return a.cost < b.cost
    return (a.recall, -a.cost) > (b.recall, -b.cost)


def image_sample(index: SearchableIndex, count: int = GAP_SAMPLE) -> np.ndarray:
    """A seeded sample of up to `count` of the index's own vectors, float32."""
    size = index.ntotal
    rows = np.sort(np.random.default_rng(TUNE_SEED + 2).choice(size, min(count, size), replace=False))
    return np.asarray(index.rows.store[rows], dtype=np.float32)


def _separating_direction(texts: np.ndarray, images: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Unit direction that best separates text from image vectors: Fisher's discriminant (the pooled
    covariance, shrunk towards its mean variance, solved against the mean difference `offset`). The mean
    difference alone routes worse where the image vectors spread widely across it."""
    if not float(np.linalg.norm(offset)) > 0:
        return np.zeros_like(offset)
    pooled = (np.cov(texts, rowvar=False) + np.cov(images, rowvar=False)) / 2 if len(texts) > 1 else np.cov(
        images, rowvar=False)
    pooled = np.atleast_2d(pooled)
    shrunk = 0.9 * pooled + 0.1 * np.eye(len(offset)) * float(np.trace(pooled)) / len(offset)
    direction = np.linalg.solve(shrunk + 1e-6 * np.eye(len(offset)), offset.astype(np.float64))
    return (direction / np.linalg.norm(direction)).astype(np.float32)


def tune_text(
    index: SearchableIndex,
    text_queries: np.ndarray,
    *,
    target_recall: float = 0.95,
    k: int = 10,
    max_queries: int = TUNE_MAX_QUERIES,
    centering: bool = True,
) -> TextTuning | None:
    """The cheapest (nprobe, rerank_factor) reaching `target_recall` for text queries (`text_queries`: unit
    text embeddings, e.g. the index vocabulary through caption templates), trying deeper re-ranking than for
    image queries and, with `centering`, the probe with the modality-mean offset subtracted; the better of
    the two wins (`_better`). None for Flat or an empty index, or without text queries.
    """
    if index.is_flat or index.ntotal == 0 or text_queries is None or len(text_queries) == 0:
        return None
    xt = as_matrix(text_queries, index.dim, "text_queries")
    images = image_sample(index)
    offset = (xt.mean(axis=0) - images.mean(axis=0)).astype(np.float32)
    norm = float(np.linalg.norm(offset))
    direction = _separating_direction(xt, images, offset)
    text_side, image_side = xt @ direction, images @ direction
    # half-way between the medians, lowered to keep >= 98% of the text proxies on the text side: a text query
    # routed to the image setting loses recall, an image query routed to the text setting only costs time
    threshold = float(min((np.median(text_side) + np.median(image_side)) / 2, np.quantile(text_side, TEXT_ROUTED)))
    routed = float(((text_side > threshold).sum() + (image_side <= threshold).sum()) / (len(xt) + len(images)))
    options: dict[str, Any] = {"target_recall": target_recall, "k": k, "max_queries": max_queries,
                               "rerank_factors": TEXT_RERANK_FACTORS, "check_filters": False}
    plain = tune_index(index, xt, **options)
    with_offset = tune_index(index, xt, offset=offset, **options) if centering and norm > 0 else None
    centered = with_offset is not None and _better(with_offset, plain)
    chosen = with_offset if centered else plain
    assert chosen is not None
    logger.info("tuned %s for text queries: nprobe=%s rerank_factor=%d recall@%d=%.3f%s (without centering: "
                "nprobe=%s rerank=%d recall %.3f%s); gap %.3f, %.1f%% routed right",
                index.factory, chosen.nprobe, chosen.rerank_factor, k, chosen.recall, ", centered" if centered else "",
                plain.nprobe, plain.rerank_factor, plain.recall,
                "" if with_offset is None else f"; centered: nprobe={with_offset.nprobe} "
                f"rerank={with_offset.rerank_factor} recall {with_offset.recall:.3f}", norm, 100 * routed)
    return TextTuning(chosen, centered, direction.astype(np.float32), threshold, offset, routed, plain, with_offset)
