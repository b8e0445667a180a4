"""The cost model of an IVF query, in stored vectors touched: what tuning minimises and what decides how
filtered search treats a subset (`filtered.py`).

    cost = nlist                                  (the coarse quantizer compares the query to every centroid)
         + nprobe / nlist * n                     (codes scanned in the probed lists, lists ~equal in size)
         + RERANK_COST * k * rerank_factor        (candidates re-scored exactly; 0 when rerank_factor is 1)
"""

from __future__ import annotations

# One re-scored candidate (a random float32 row of the memory-mapped copy + d multiply-adds) costs ~36 PQ
# code scans: 1M x 256, IVF4096,PQ32x8, 2 cores, batch queries: +0.35-0.40 us of wall time per query per
# candidate (nprobe 1, rerank 4 -> 8 -> 16), +0.0088-0.0099 us per scanned code (nprobe 8 -> 32, 16 -> 32).
# With the float16-era estimate of 4, tune() picked nprobe 1, rerank 16 (29x Flat) over nprobe 4,
# rerank 8 (54x Flat at the same recall).
RERANK_COST = 36.0


def query_cost(nlist: int, n: int, k: int, nprobe: int, rerank_factor: int) -> float:
    """Stored vectors an unfiltered query of an IVF index of `n` vectors touches (module docstring)."""
    return nlist + nprobe / nlist * n + (RERANK_COST * k * rerank_factor if rerank_factor > 1 else 0.0)
