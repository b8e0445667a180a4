"""Choose a FAISS index type from the collection size, the dimension and a memory budget.

The budget is resident memory: what must stay in RAM (heap or hot page cache) for search to run at
speed. `resident_bytes` writes it out per index type; the exact copy used for re-ranking (float32 for PQ) is
not part of it (it stays on disk, memory-mapped, and only k*rerank_factor rows are read per query).
"""

from __future__ import annotations

import math

FLAT_MAX_N = 50_000  # below this, exact search costs n*d*4 bytes and a few ms per query
DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # 2 GiB resident (see resident_bytes)
MIN_TRAIN_POINTS_PER_LIST = 39  # FAISS k-means warns below 39 training points per centroid
MIN_PQ_BYTES = 8  # below 8 bytes per vector PQ recall collapses for d >= 64
LARGE_N = 1_000_000  # nlist grows as 4*sqrt(n) up to here, 8*sqrt(n) beyond

ID_BYTES = 8  # int64 id per vector in the FAISS inverted lists (VectorIndex's own id array: see resident_bytes)
SUBSET_CODE_DIMS = 8  # PQ indexes keep 4-bit subset codes, one byte per 8 dimensions (filtered.scan_subset)
FLAT_MAP_BYTES = 40  # IndexIDMap2's reverse map (hash map id -> position), Flat only

TRAIN_POINTS_PER_LIST = 64  # k-means sample per IVF list: enough for centroids, 4x fewer than FAISS's 256
TRAIN_MIN_POINTS = 65_536  # PQ's sub-quantizers are 256-centroid k-means: 256 points each
TRAIN_MAX_POINTS = 2**19  # cap: 2 cores run 4096-list k-means on 262k x 256 in ~2 min (never tens)


def is_pq(factory: str) -> bool:
    """Whether a factory string stores PQ codes (lossy scores: re-ranked, float32 copy, subset codes)."""
    return ",PQ" in factory or factory.startswith("PQ")


def _nearest_power_of_two(x: float) -> int:
    """The power of two nearest to `x` on a log scale (1 for x <= 1)."""
    if x <= 1:
        return 1
    return 2 ** round(math.log2(x))


def choose_nlist(n: int) -> int:
    """Number of IVF lists for `n` vectors.

    nlist = power of two nearest 4*sqrt(n) up to 1M vectors (4096 at 1M), nearest 8*sqrt(n) beyond
    (16384 at 4M: longer lists would make each probe dearer than the coarse quantizer), then clamped to
    [1, n / 39] (rounded down to a power of two) so k-means gets at least 39 training points per list.
    """
    factor = 4 if n <= LARGE_N else 8
    nlist = _nearest_power_of_two(factor * math.sqrt(max(n, 1)))
    max_lists = max(1, n // MIN_TRAIN_POINTS_PER_LIST)
    while nlist > max_lists:
        nlist //= 2
    return max(1, nlist)


def training_sample_size(n: int, nlist: int) -> int:
    """Vectors an IVF index with `nlist` lists trains on, out of `n` (a seeded sample; `VectorIndex`).

    64 per list, capped at 2^19 but never below 39 per list (FAISS's floor) nor below 65,536 (PQ's
    256-centroid sub-quantizers), and never more than n. At 1M x 256 with 4096 lists: 262,144 points,
    about 2 minutes of k-means (10 iterations) on 2 cores; 16384 lists (4M) train on 638,976.
    """
    per_list = min(TRAIN_POINTS_PER_LIST * nlist, max(TRAIN_MAX_POINTS, MIN_TRAIN_POINTS_PER_LIST * nlist))
    return min(n, max(TRAIN_MIN_POINTS, per_list))


def _parse(key: str) -> tuple[int, int, str]:
    """(OPQ rotation dimension or 0, nlist, code) of "[OPQ{m}[_{d}],]IVF{nlist},{code}"."""
    head, _, rest = key.partition(",")
    rotation = 0
    if head.startswith("OPQ"):
        rotation = int(head.removeprefix("OPQ").split("_")[0])
        head, _, rest = rest.partition(",")
    return rotation, int(head.removeprefix("IVF")), rest


def resident_bytes(n: int, d: int, key: str, subset_codes: bool | None = None) -> int:
    """Bytes that stay resident to search `n` vectors of dimension `d` with factory `key`.

    * ``Flat``: n * (4d float32 + 8 id + 40 IDMap2 reverse map)
    * ``IVF{nlist},Flat``: n * (4d codes + 8 FAISS id) + nlist * 4d centroids
    * ``IVF{nlist},PQ{m}x8``: n * (m codes + 8 FAISS id + d/8 subset codes) + nlist * 4d centroids
      + 256 * 4d PQ centroids (m sub-quantizers x 256 x d/m floats); the subset codes are 4-bit PQ
      codes of every vector that filtered search scans (filtered.scan_subset); `subset_codes=False`
      (an index built without them, `VectorIndex.create`) leaves out their d/8 bytes
    * ``OPQ{m},IVF...``: the same plus the d x d float32 rotation

    Not counted: the exact copy (4d bytes per vector for PQ, 2d otherwise), read k*rerank_factor rows
    per query from a memory-mapped file; and VectorIndex's id array (memory-mapped, saved in id order),
    which ids without gaps (a fresh build) never read: rows map to ids by offset. Ids with gaps (after
    removals, until the next rebuild) add up to 16 B/vector: an int32 id -> row table over at most 2x
    their count, and the id array read for row -> id (sparser ids: the array alone, binary-searched).
    At 1M x 256, 4096 lists: PQ64 is 64 + 8 + 32 + 4.2 + 0.3 = 108.5 B/vector (76.5 without subset
    codes), PQ32 76.5, OPQ32 76.8, IVF-Flat 1036.
    """
    if key == "Flat":
        return n * (4 * d + ID_BYTES + FLAT_MAP_BYTES)
    rotation, nlist, tail = _parse(key)
    fixed = nlist * 4 * d + (4 * d * d if rotation else 0)
    if tail == "Flat":
        return n * (4 * d + ID_BYTES) + fixed
    m = int(tail.removeprefix("PQ").split("x")[0])
    subset = d // SUBSET_CODE_DIMS if (is_pq(key) if subset_codes is None else subset_codes) else 0
    return n * (m + ID_BYTES + subset) + fixed + 256 * 4 * d


def code_candidates(n: int, d: int, factory: str, memory_budget: int) -> list[tuple[str, bool]]:
    """Codes to try instead of a PQ `factory` whose codes cannot order a cloud of near-duplicates
    (`VectorIndex.tuned`): (factory, keeps subset codes), each within `memory_budget` resident bytes, with the
    same IVF lists, in the order they are tried (the cheapest to build first; the first to reach the target wins):

    1. more PQ bytes: the largest divisor of d up to d/2 that fits, with subset codes if they fit too, else
       without (filtered search then uses the selector, which tune()'s 10% check prefers on such data anyway);
    2. OPQ with the same bytes (a learned rotation that balances the sub-spaces, + 4d^2 bytes; its training
       runs PQ k-means 50 times over: minutes at 1M, hence after 1);
    3. IVF-Flat (exact scores) when it fits.

    1M x 256 at 80 B/vector: PQ64 without subset codes (76.5 B/vector), OPQ32 (76.7); at 2 GiB IVF-Flat is
    chosen from the start (`choose_index_key`). Empty for a factory that is not IVF-PQ.
    """
    if not is_pq(factory) or not factory.split(",")[-1].startswith("PQ"):
        return []
    rotation, nlist, tail = _parse(factory)
    m = int(tail.removeprefix("PQ").split("x")[0])
    fits = lambda key, subset=None: resident_bytes(n, d, key, subset) <= memory_budget
    candidates: list[tuple[str, bool]] = []
    for bigger in sorted((b for b in range(m + 1, d // 2 + 1) if d % b == 0), reverse=True):
        key = f"IVF{nlist},PQ{bigger}x8"
        if fits(key, True) or fits(key, False):
            candidates.append((key, fits(key, True)))
            break
    same = f"OPQ{m},IVF{nlist},PQ{m}x8"
    if not rotation and fits(same):
        candidates.append((same, True))
    flat = f"IVF{nlist},Flat"
    if fits(flat):
        candidates.append((flat, False))
    return candidates


def choose_pq_bytes(n: int, d: int, nlist: int, memory_budget: int) -> int:
    """Bytes per vector `m` for `PQ{m}x8`: a divisor of `d`.

    The largest divisor of d in [smallest divisor >= min(8, d), max(8, d/4)] (at most 16x smaller
    than float32) whose `resident_bytes` fit the budget; the smallest if none does.
    """
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    floor = min(m for m in divisors if m >= min(MIN_PQ_BYTES, d))
    target = max(MIN_PQ_BYTES, d // 4)
    candidates = [m for m in divisors if floor <= m <= target] or [floor]
    fitting = [m for m in candidates if resident_bytes(n, d, f"IVF{nlist},PQ{m}x8") <= memory_budget]
    return max(fitting) if fitting else floor


def choose_index_key(n: int, d: int, memory_budget: int | None = None) -> str:
    """Return a FAISS factory string for `n` vectors of dimension `d` (inner product metric).

    The arithmetic, with memory_budget (resident bytes, see `resident_bytes`) defaulting to 2 GiB:

    * ``"Flat"`` when n < 50_000: exact search reads n*d*4 bytes per query
      (50k x 512 floats = 100 MB, a few ms), so approximation buys nothing.
    * ``"IVF{nlist},Flat"`` while its float32 codes, ids and centroids fit:
      n*(4d + 8) + nlist*4d <= memory_budget (1M x 256: 1.04 GB). Search probes nprobe of nlist lists.
    * ``"IVF{nlist},PQ{m}x8"`` beyond: m bytes of code per vector, m a divisor of d, at most d/4
      (16x compression), the largest with n*(m + 8 + d/8) + nlist*4d + 1024d <= memory_budget, never below
      8 bytes. Candidates are re-ranked exactly from the float32 copy on disk, so m trades resident
      memory for re-rank depth (tune() picks it), not for final recall.

    Worked example, 1M x 256 with 4096 lists and a budget of 80 B/vector (80 MB): IVF-Flat needs
    1036 B/vector, PQ64 108.5 (64 code + 8 FAISS id + 32 subset codes + 4.2 centroids + 0.3 PQ tables),
    PQ32 76.5, so the key is "IVF4096,PQ32x8".

    nlist = power of two nearest 4*sqrt(n) up to 1M vectors, nearest 8*sqrt(n) beyond, clamped to
    [1, n/39] so k-means has 39 points per list (see `choose_nlist`). Training reads a seeded sample
    of `training_sample_size(n, nlist)` vectors (64 per list, capped at 2^19). Pure and deterministic.
    Near-duplicate vectors (overlapping tiles) can defeat the PQ code chosen here: `VectorIndex.tuned` then
    measures deeper re-ranking and the `code_candidates` within the same budget, and keeps the one that reaches
    the recall target.
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
    if resident_bytes(n, d, f"IVF{nlist},Flat") <= budget:
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{choose_pq_bytes(n, d, nlist, budget)}x8"


def kept_factory(key: str, factory: str, tuning: dict | None, memory_budget: int | None) -> str:
    """The factory to keep building for `key` (`choose_index_key`'s pick under `memory_budget`, None: the
    default): `factory`, the one an index holds, when its tuning replaced `key` by it within that budget
    because `key`'s codes could not order its near-duplicates (`VectorIndex.tuned`: `tuning.replaces`,
    `tuning.memory_budget`); otherwise `key`. Without this the next run would rebuild `key` and measure again."""
    tuning = tuning or {}
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    if tuning.get("replaces") == key and tuning.get("memory_budget") == budget:
        return factory
    return key
