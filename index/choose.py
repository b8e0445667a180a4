"""Choose a FAISS index type from the collection size, the dimension and a memory budget."""

from __future__ import annotations

import math

FLAT_MAX_N = 50_000  # below this, exact search costs n*d*4 bytes and a few ms per query
DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # 2 GiB for the FAISS codes
MIN_TRAIN_POINTS_PER_LIST = 39  # FAISS k-means warns below 39 training points per centroid
MIN_PQ_BYTES = 8  # below 8 bytes per vector PQ recall collapses for d >= 64


def _nearest_power_of_two(x: float) -> int:
    """The power of two nearest to `x` on a log scale (1 for x <= 1)."""
    if x <= 1:
        return 1
    return 2 ** round(math.log2(x))


def choose_nlist(n: int) -> int:
    """Number of IVF lists for `n` vectors.

    nlist = power of two nearest 4*sqrt(n) for n < 1M, nearest 16*sqrt(n) from 1M on,
    then clamped to [1, n / 39] (rounded down to a power of two) so k-means gets at least
    39 training points per list.
    """
    factor = 4 if n < 1_000_000 else 16
    nlist = _nearest_power_of_two(factor * math.sqrt(max(n, 1)))
    max_lists = max(1, n // MIN_TRAIN_POINTS_PER_LIST)
    while nlist > max_lists:
        nlist //= 2
    return max(1, nlist)


def choose_pq_bytes(n: int, d: int, memory_budget: int) -> int:
    """Bytes per vector `m` for `PQ{m}x8`: a divisor of `d`.

    Start from the largest divisor of d that is <= max(8, d/4) (16x smaller than float32),
    then shrink to the largest divisor with n*m <= memory_budget, never below the smallest
    divisor >= min(8, d). If even that does not fit, the smallest is returned anyway.
    """
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    floor = min(m for m in divisors if m >= min(MIN_PQ_BYTES, d))
    target = max(MIN_PQ_BYTES, d // 4)
    candidates = [m for m in divisors if floor <= m <= target] or [floor]
    fitting = [m for m in candidates if n * m <= memory_budget]
    return max(fitting) if fitting else floor


def choose_index_key(n: int, d: int, memory_budget: int | None = None) -> str:
    """Return a FAISS factory string for `n` vectors of dimension `d` (inner product metric).

    The arithmetic, with memory_budget defaulting to 2 GiB:

    * ``"Flat"`` when n < 50_000: exact search reads n*d*4 bytes per query
      (50k x 512 floats = 100 MB, a few ms), so approximation buys nothing.
    * ``"IVF{nlist},Flat"`` while the raw float32 codes fit, n*d*4 <= memory_budget
      (1M x 512 = 2 GB). Search probes nprobe of nlist lists.
    * ``"IVF{nlist},PQ{m}x8"`` beyond: m bytes per vector, m a divisor of d, about d/4
      (16x compression) and reduced until n*m fits the budget, never below 8 bytes.

    nlist = power of two nearest 4*sqrt(n) below 1M vectors, nearest 16*sqrt(n) from 1M on,
    clamped to [1, n/39] so k-means has 39 points per list (see `choose_nlist`).
    Pure and deterministic. The budget counts the FAISS codes only: the float16 copy kept by
    `VectorIndex` (n*d*2 bytes) stays on disk, memory-mapped, and is read only to re-rank PQ
    candidates exactly (k * rerank_factor rows per query) and to search small filtered subsets.
    Resident memory of IVF-PQ is then about m + 8 (id) bytes per vector plus nlist*d*4 for the
    centroids. Training reads at most 256*nlist vectors (a seeded sample; `VectorIndex._train`).
    OPQ is not chosen (yet): whether it pays on top of exact re-ranking has not been measured.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    if budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {budget}")
    if n < FLAT_MAX_N:
        return "Flat"
    nlist = choose_nlist(n)
    if n * d * 4 <= budget:
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{choose_pq_bytes(n, d, budget)}x8"
