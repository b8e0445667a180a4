"""Filtered search: the best k among a subset of the index's ids (a metadata filter), by one of four
strategies chosen from the subset's size (`search_subset`; docs/index.md has the measurements):

1. exact search over the subset's rows of the exact copy, while that costs at most a few unfiltered
   queries (`exact_applies`), and always for Flat;
2. subsets of PQ indexes whose tune() chose it (`subset_scan`), up to 20% of the rows: a SIMD scan of
   their 4-bit subset codes, the best candidates re-scored exactly (`scan_subset`);
3. at least 30% of the rows: an unfiltered search, members kept (`post_filtered`);
4. otherwise FAISS with a selector, nprobe raised by FILTER_PROBE_MARGIN / selectivity (`selector_search`).
Queries still short of k results after 3 fall back to 4, after 4 to exact search.

These functions, and tuning.py, see a VectorIndex only through `SearchableIndex`: its public members.
Shorthand used inside this module only: xq = queries (float32 (q, dim), validated by the caller).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import faiss
import numpy as np

from .choose import is_pq
from .cost import query_cost
from .exact import empty_results, exact_topk, row_blocks
from .rows import Rows, increasing

logger = logging.getLogger(__name__)

# A subset is searched exactly over the exact copy while it holds at most
# max(EXACT_SUBSET_MIN, EXACT_COST_RATIO x the vectors an unfiltered query touches) rows (the cost model of
# cost.py). Exact search is BLAS over the subset, ~3.6 ns of wall time per row on 2 cores (1M, a
# 9,778-row subset at 28.4k queries/s): at 4x the cost of an unfiltered query (nprobe 4, rerank 8:
# 4096 + 976 + 36 x 80 = 7,952 -> 32k rows, ~115 us) it runs at ~0.5x that query (~54 us). Larger subsets
# go through FAISS with a selector (`_selector`), nprobe raised by FILTER_PROBE_MARGIN / selectivity: by
# 1/selectivity alone, recall@10 was 0.959 at 10% and 0.853 at 5% (100k, tuned nprobe 2): the filtered
# top-10 lies deeper in the unfiltered ranking than the probed lists.
# At 1M (IVF4096,PQ32x8, tuned nprobe 2) a margin of 2 gave 0.894 at 10% and a margin of 4 gives 0.910 at
# 0.25x the unfiltered queries/s: still short of 0.95 (see benchmarks/README.md).
# Subsets of at least POST_FILTER_MIN_SELECTIVITY of the rows skip the selector (which halves FAISS's scan
# speed): an unfiltered search for POST_FILTER_MARGIN x k*rerank/selectivity candidates, nprobe raised by
# selectivity^-POST_FILTER_PROBE_EXPONENT, keeps the members (100k clustered, 50%: recall@10 0.9997, ~0.7x
# the unfiltered queries/s, vs ~0.5x through the selector; exponent 1 rather than 0.5: on the real-embedding
# set, 50%, recall 0.946 vs 0.913); queries left with fewer than k use the selector path.
# A filter that excludes a query's neighbourhood (negatively correlated: "ship" texts, the ship tiles filtered
# out) leaves that query few members among its candidates, and the members it keeps are not its filtered top-k.
# So a query whose candidates hold fewer than POST_FILTER_DEEPEN_BELOW x k*rerank members is searched again with
# probes and candidates raised by depth/found (a power of 2, at most POST_FILTER_MAX_DEEPEN), and up to
# POST_FILTER_DEEP_RERANK x k*rerank of its members re-ranked exactly. Measured on the real-embedding set
# (100k, IVF1024,PQ16x8, 100 texts and 100 image vectors, one query at a time, the 60%-random filter without
# each query's nearest 2%; exact search turned off): text recall@10 0.650 / 0.228 / 0.801 at nprobe 1 / 2 / 8
# (unfiltered 0.547 / 0.683 / 0.919) -> 0.997 / 0.999 / 0.999, images 0.384 / 0.317 / 0.468 (unfiltered
# 0.853 / 0.944 / 0.923) -> 0.770 / 0.720 / 0.801 (near-duplicate clouds; 0.58-0.60 with max 16x and 1x
# re-rank, 0.69-0.78 with 4x). Random 30/50/80% filters: every query below 0.5 x k*rerank members was one whose
# probed lists held fewer candidates than the fetch (text, nprobe 1-2, 100k lists of ~100): 50% text
# 0.675 -> 0.937 at nprobe 1; images unchanged or better (0.940 -> 0.989 at nprobe 1).
EXACT_SUBSET_MIN = 5_000
EXACT_COST_RATIO = 4.0
# IVF-Flat scans float32 codes as cheaply per vector as exact search does: exact only up to 2x its cost
# (real-embedding set, 100k, IVF1024,Flat: a 10k-row subset exactly ran at 0.28x the unfiltered queries/s)
EXACT_COST_RATIO_EXACT_SCORES = 2.0
# ... but its selector path is slow per code (1M real embeddings, IVF4096,Flat, a 10% filter raising
# nprobe 8 to 320 lists: 78k codes per query at 469 queries/s, ~27 ns per code with the selector, against
# ~4 ns per row of exact search): below the post-filter range, exact also while the subset holds at most
# EXACT_VS_SELECTOR x the codes the selector would scan. Same set: 10% went from 0.05x to 0.23-0.36x the
# unfiltered queries/s (recall 0.963: the float16 copy ties near-duplicates); at 6x, 20% went exact too:
# 0.08x -> 0.12x, but recall 1.000 -> 0.955, so 4x.
EXACT_VS_SELECTOR = 4.0
EXACT_VS_SELECTOR_MAX_SELECTIVITY = 0.3  # (the post-filter path's start when this was measured)
# The ratios above are for batches: BLAS shares each subset row among the queries. One query at a time gathers
# (and converts from float16) every row for itself: 1M, IVF4096,PQ32x8 at the text setting (nprobe 32, rerank
# 64: 4x its cost is 140k rows), one text at a time, load 3.2, ms p50 exact / selector: 10k rows 8.3 / 21.0,
# 30k 17.6 / 21.0, 100k 85.1 / 11.4, 200k 117 / 8.0 (recall 1.000 / 1.000, 0.990 at 200k). So a batch of at
# most EXACT_FEW_QUERIES queries is searched exactly only up to EXACT_FEW_MAX_ROWS rows.
EXACT_FEW_QUERIES = 8
EXACT_FEW_MAX_ROWS = 32_768
FILTER_PROBE_MARGIN = 4.0
# From 5%, not 30% as first measured at the image setting: at the text setting (1M, nprobe 64, rerank 64, 50
# texts one at a time, load 3-6 with another 1M benchmark running) 10% went from the selector's 2,576 probed
# lists to the post-filter path: search 24.9 -> 15.1 ms p50, recall 0.998 -> 0.994; 8.7%: 25.1 -> 15.7 ms,
# 0.996 -> 0.994 (nprobe 32, rerank 64, 10 texts: 3% 14.4 ms post vs 21.0 selector, 20% 4.6 vs 8.0).
POST_FILTER_MIN_SELECTIVITY = 0.05
# Candidates fetched: 2x the k*rerank/selectivity that hold k*rerank members on average. With 1x, half the queries
# found fewer than k members (a binomial around its mean) and fell back to the selector (at 50%: 14 of 30 texts,
# ~9 ms each on 1M IVF-Flat). 1M IVF4096,Flat, text setting nprobe 16, 50 texts one at a time, idle 2 cores, with
# single queries split over both threads (`VectorIndex._faiss_search`): search + fetch p50 at 10% 16.1 -> 11.1 ms,
# recall 1.000 both; 50% 17.2 -> 12.2 ms, 0.996 -> 0.980 (benchmarks/README.md). Probes stay raised by
# 1/selectivity: 1/sqrt(selectivity) was as fast at 1M but lost recall on a negatively correlated filter
# (tests/index/test_post_filter.py: 0.91 against 0.995 unfiltered).
POST_FILTER_MARGIN = 2.0
POST_FILTER_PROBE_EXPONENT = 1.0
POST_FILTER_DEEPEN_BELOW = 0.5  # members found / k*rerank below which a query is searched again, deeper
POST_FILTER_MAX_DEEPEN = 64  # at most this many times the probes and candidates
POST_FILTER_DEEP_RERANK = 16  # a deeper query re-ranks up to this many times k*rerank of its members
DENSE_MEMBER_BITS = 64  # _member_bits: a table over [0, largest member] while it has <= 64 slots per member
# Mid-size subsets of PQ indexes (up to SUBSET_SCAN_MAX_SELECTIVITY of the rows) are scanned whole: 4-bit PQ
# codes of every row (d/4 sub-quantizers: d/8 B/vector, resident) gathered for the subset and scored by
# FAISS's SIMD fast scan, the best SUBSET_SCAN_RERANK x k re-scored exactly. Why: when a filter leaves a
# query fewer than k near neighbours, its exact filtered top-k is completed by points from anywhere (1M
# clustered, 10%: 12% of the top-10 score below 0.3, the level of unrelated points), which no IVF probe
# order finds: the selector path reached 0.909 at nprobe 80 (0.17x unfiltered), 0.954 at 1024 (0.05x).
# The scan (IVF4096,PQ32x8 index, 1000 queries, 2 cores) at 10%: recall@10 0.950 / 0.960 / 0.966 at
# 8 / 12 / 16 x k, 0.46 / 0.52 / 0.43x unfiltered; vs the selector at 15%: 0.994 at 0.39x vs 0.968 at
# 0.22x; at 20% 1.000 at 0.28x vs 0.975 at 0.29x; at 30% the post-filter path wins (0.974 at 0.39x vs 0.20x).
# Below ~8% the scan ranks the far points too coarsely (5%: 0.840 at 0.86x) and exact search is slower.
SUBSET_SCAN_MAX_SELECTIVITY = 0.2
SUBSET_SCAN_RERANK = 12
SUBSET_SCAN_BLOCK = 64  # codes per fast-scan block: 63 ms per 1000 queries x 100k codes, 77 ms with 32
SUBSET_SCAN_DIMS = 4  # dimensions per 4-bit sub-quantizer


def subset_quantizer(dim: int, factory: str) -> faiss.IndexPQ | None:
    """An untrained 4-bit PQ (dim/SUBSET_SCAN_DIMS sub-quantizers, inner product) for `scan_subset`,
    or None: only PQ indexes keep subset codes (IVF-Flat and Flat scan exact vectors as cheaply)."""
    if not is_pq(factory) or dim % SUBSET_SCAN_DIMS:
        return None
    return faiss.IndexPQ(dim, dim // SUBSET_SCAN_DIMS, 4, faiss.METRIC_INNER_PRODUCT)


class SearchableIndex(Protocol):
    """What filtered search and tuning use of a VectorIndex (all public)."""

    dim: int
    factory: str
    nprobe: int | None
    subset_scan: bool
    rows: Rows

    @property
    def ntotal(self) -> int: ...

    @property
    def is_flat(self) -> bool: ...

    @property
    def nlist(self) -> int | None: ...  # None for Flat: only IVF indexes reach the code that reads it

    @property
    def subset_pq(self) -> faiss.IndexPQ | None: ...

    def approximate_search(
        self, xq: np.ndarray, k: int, *, nprobe: int | None = None, rerank_factor: int = 1,
        selector: Any = None, use_gpu: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def rerank(self, xq: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def _member_bits(members: np.ndarray) -> np.ndarray | None:
    """A boolean table over [0, largest member] marking `members` (ascending, non-empty), or None when
    the members are too sparse for one (more than DENSE_MEMBER_BITS slots per member)."""
    top = int(members[-1])
    if top >= DENSE_MEMBER_BITS * len(members):
        return None
    bits = np.zeros(top + 1, bool)
    bits[members] = True
    return bits


def _members_mask(candidates: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Boolean mask of `candidates` (any shape; -1 = none) found in `members` (ascending, non-empty).

    A table lookup when the members are dense enough (`_member_bits`), else binary search. (np.isin
    picks a sort-based method for these sizes: 1 s per call at 1M ids.)
    """
    bits = _member_bits(members)
    if bits is None:
        position = np.minimum(np.searchsorted(members, candidates), len(members) - 1)
        return (members[position] == candidates) & (candidates >= 0)
    inside = (candidates >= 0) & (candidates < len(bits))
    mask = np.zeros(candidates.shape, bool)
    mask[inside] = bits[candidates[inside]]
    return mask


def _selector(members: np.ndarray) -> tuple[Any, np.ndarray]:
    """A FAISS IDSelector for `members` (ascending, non-empty) and the array it points into (keep it alive).

    A bitmap while the members are dense enough (`_member_bits`: at most 8 bytes of bitmap per member,
    the size of the id array an IDSelectorBatch holds): a bit test per scanned code instead of Batch's
    bloom filter plus hash probe. Else IDSelectorBatch. (Never IDSelectorArray: a linear scan per candidate.)
    """
    bits = _member_bits(members)
    if bits is None:
        return faiss.IDSelectorBatch(len(members), faiss.swig_ptr(members)), members
    bitmap = np.packbits(bits, bitorder="little")  # FAISS tests bit (id & 7) of byte id >> 3
    return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap  # n counts bytes, not bits


# ---------------------------------------------------------------- which strategy


def search_subset(
    index: SearchableIndex, xq: np.ndarray, k: int, subset: np.ndarray, nprobe: int | None, rerank: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best-k among the ids of `subset` (validated int64; absent ids ignored): min(k, members) per query."""
    if not increasing(subset):
        subset = np.unique(subset)
    members = np.ascontiguousarray(subset[index.rows.rows_of(subset)[0]])  # present in the index, ascending
    count = len(members)
    if count == 0:
        return empty_results(len(xq), k)
    nprobe = nprobe or index.nprobe or 1
    if exact_applies(index, k, count, nprobe, rerank, len(xq)):
        return exact_subset(index, xq, k, members)
    if index.subset_scan and scan_applies(index, k, count, nprobe, rerank):
        return scan_subset(index, xq, k, members)
    selectivity = count / index.ntotal
    if selectivity >= POST_FILTER_MIN_SELECTIVITY:
        raised = min(index.nlist, math.ceil(nprobe / selectivity**POST_FILTER_PROBE_EXPONENT))
        scores, ids = post_filtered(index, xq, k, members, raised, rerank, selectivity)
    else:
        scores, ids = empty_results(len(xq), k)
    short = (ids != -1).sum(axis=1) < min(k, count)
    if short.any():
        scores[short], ids[short] = selector_search(index, xq[short], k, members, nprobe, rerank)
        short = (ids != -1).sum(axis=1) < min(k, count)
    if short.any():
        logger.debug("filtered search: %d of %d queries fell back to exact search", short.sum(), len(xq))
        scores[short], ids[short] = exact_subset(index, xq[short], k, members)
    return scores, ids


def exact_applies(
    index: SearchableIndex, k: int, count: int, nprobe: int, rerank: int, queries: int | None = None
) -> bool:
    """Whether a subset of `count` rows is searched exactly (see EXACT_COST_RATIO; for a batch of at most
    EXACT_FEW_QUERIES `queries`, at most EXACT_FEW_MAX_ROWS rows)."""
    ratio = EXACT_COST_RATIO if rerank > 1 else EXACT_COST_RATIO_EXACT_SCORES
    if index.is_flat:
        return True
    if queries is not None and queries <= EXACT_FEW_QUERIES and count > max(EXACT_SUBSET_MIN, EXACT_FEW_MAX_ROWS):
        return False
    if count <= max(
        EXACT_SUBSET_MIN, ratio * query_cost(index.nlist, index.ntotal, k, nprobe, rerank)
    ):
        return True
    if rerank > 1 or is_pq(index.factory) or count >= EXACT_VS_SELECTOR_MAX_SELECTIVITY * index.ntotal:
        return False
    return count <= EXACT_VS_SELECTOR * selector_probes(index, nprobe, count) / index.nlist * index.ntotal


def scan_applies(index: SearchableIndex, k: int, count: int, nprobe: int, rerank: int) -> bool:
    """Whether a subset of `count` rows falls in the subset scan's range, were it enabled
    (`subset_scan`, chosen by tune()): not searched exactly, at most SUBSET_SCAN_MAX_SELECTIVITY of
    the rows, and the selector would not probe every list (it then scans every 8-bit code anyway)."""
    if index.rows.codes is None or exact_applies(index, k, count, nprobe, rerank):
        return False
    return (count <= SUBSET_SCAN_MAX_SELECTIVITY * index.ntotal
            and selector_probes(index, nprobe, count) < index.nlist)


def selector_probes(index: SearchableIndex, nprobe: int, count: int) -> int:
    """Lists `selector_search` probes for a subset of `count` rows: nprobe raised by
    FILTER_PROBE_MARGIN / selectivity, at most nlist."""
    return min(index.nlist, math.ceil(nprobe * FILTER_PROBE_MARGIN * index.ntotal / count))


# ---------------------------------------------------------------- the strategies
# `members`: ids present in the index, ascending, non-empty


def exact_subset(
    index: SearchableIndex, xq: np.ndarray, k: int, members: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact search over the rows of `members`, read in row order."""
    _, rows = index.rows.rows_of(members)
    if not increasing(rows):  # sequential reads of the (possibly memory-mapped) store
        order = np.argsort(rows, kind="stable")
        rows, members = rows[order], members[order]
    return exact_topk(xq, row_blocks(index.rows.store, rows, members), k)


def scan_subset(
    index: SearchableIndex, xq: np.ndarray, k: int, members: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best-k over `members` (at least k of them or all): their 4-bit codes scanned by FAISS's fast scan
    for SUBSET_SCAN_RERANK x k candidates, re-scored exactly. Needs subset codes (`subset_pq`)."""
    _, rows = index.rows.rows_of(members)
    codes = np.take(index.rows.codes, rows, axis=0)  # 100k rows: 0.5 ms, fancy indexing 6 ms
    trained = index.subset_pq.pq
    flat = faiss.IndexPQ(index.dim, trained.M, 4, faiss.METRIC_INNER_PRODUCT)
    flat.pq = trained  # the trained codebooks (copied: 4-bit PQ, d x 16 floats)
    flat.is_trained = True
    flat.add_sa_codes(codes)
    scan = faiss.IndexPQFastScan(flat, SUBSET_SCAN_BLOCK)  # packs the codes in blocks for SIMD lookups
    del flat, codes
    _, positions = scan.search(xq, min(len(members), k * SUBSET_SCAN_RERANK))
    candidates = np.where(positions >= 0, members[np.maximum(positions, 0)], -1)
    return index.rerank(xq, candidates, k)


def post_filtered(
    index: SearchableIndex, xq: np.ndarray, k: int, members: np.ndarray, nprobe: int, rerank: int,
    selectivity: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Unfiltered FAISS search for k*rerank/selectivity*margin candidates, members kept, then re-ranked.

    For large subsets: no selector in FAISS's inner loop (which halves its speed) and the GPU when
    present. A query whose candidates hold fewer than POST_FILTER_DEEPEN_BELOW x k*rerank members (the filter
    excludes much of its neighbourhood: negatively correlated, or lists too short) is searched again, probes
    and candidates raised by the member share it saw (at most POST_FILTER_MAX_DEEPEN times), and up to
    POST_FILTER_DEEP_RERANK x k*rerank of its members re-ranked. Rows with fewer than k member candidates come
    back padded; the caller completes them.
    """
    depth = k * max(1, rerank)
    fetch = math.ceil(depth / selectivity * POST_FILTER_MARGIN)
    scores, candidates, found = _member_candidates(index, xq, members, fetch, nprobe, depth)
    results = _best_k(index, xq, scores, candidates, k, rerank)
    deepen = np.flatnonzero(found < POST_FILTER_DEEPEN_BELOW * depth)
    if len(deepen):
        # the member share this query saw, not the filter's: depth / found times the candidates and probes
        factors = np.minimum(POST_FILTER_MAX_DEEPEN, 2 ** np.ceil(np.log2(depth / np.maximum(found[deepen], 1))))
        for factor in np.unique(factors):
            rows = deepen[factors == factor]
            probes = min(index.nlist, math.ceil(nprobe * factor)) if index.nlist else None
            wider = depth * min(factor, POST_FILTER_DEEP_RERANK)
            deep_scores, deep_candidates, _ = _member_candidates(
                index, xq[rows], members, math.ceil(fetch * factor), probes, int(wider))
            results[0][rows], results[1][rows] = _best_k(index, xq[rows], deep_scores, deep_candidates, k, rerank)
        logger.debug("post-filter: %d of %d queries searched deeper (factors %s)", len(deepen), len(xq),
                     np.unique(factors).tolist())
    return results


def _best_k(
    index: SearchableIndex, xq: np.ndarray, scores: np.ndarray, candidates: np.ndarray, k: int, rerank: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best k of member candidates (FAISS's order, -1 = none): re-ranked exactly for indexes that re-rank,
    else FAISS's first k (exact scores already)."""
    if rerank > 1 and not index.is_flat:
        return index.rerank(xq, candidates, k)
    top_scores, top_ids = empty_results(len(xq), k)
    width = min(k, candidates.shape[1])
    top_scores[:, :width], top_ids[:, :width] = scores[:, :width], candidates[:, :width]
    return top_scores, top_ids


def _member_candidates(
    index: SearchableIndex, xq: np.ndarray, members: np.ndarray, fetch: int, nprobe: int | None, depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `depth` members (fewer when fewer were fetched) among the `fetch` best candidates of an
    unfiltered search, in FAISS's order (score -inf, id -1 past the members found), and how many members each
    query found."""
    scores, candidates = index.approximate_search(xq, fetch, nprobe=nprobe, use_gpu=True)
    member = _members_mask(candidates, members)
    order = np.argsort(~member, axis=1, kind="stable")[:, :depth]  # members first, in FAISS's order
    kept = np.take_along_axis(member, order, 1)
    candidates = np.where(kept, np.take_along_axis(candidates, order, 1), -1)
    scores = np.where(kept, np.take_along_axis(scores, order, 1), -np.inf).astype(np.float32)
    return scores, candidates, member.sum(axis=1)


def selector_search(
    index: SearchableIndex, xq: np.ndarray, k: int, members: np.ndarray, nprobe: int, rerank: int
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS search restricted to `members` by a selector (`_selector`), nprobe raised by
    FILTER_PROBE_MARGIN / selectivity, on the CPU; rows may come back short of k."""
    selector, _keep_alive = _selector(members)
    probes = selector_probes(index, nprobe, len(members))
    return index.approximate_search(xq, k, nprobe=probes, rerank_factor=rerank, selector=selector)
