"""An id-addressed FAISS index (inner product) with a float16 copy of every vector.

Shorthand used inside this module only: xq = queries, xb = database vectors.
The FAISS id of a vector is the caller's int64 catalog id (add_with_ids), never the row order.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from .errors import UnknownIdError, VectorIndexError
from .exact import _as_ids, _as_matrix, _exact_topk, _pad, _row_blocks

if TYPE_CHECKING:
    from .tuning import TuneResult

logger = logging.getLogger(__name__)

METRIC = "inner_product"  # vectors are L2-normalized float32 by the caller; scores are cosine similarities
FORMAT_VERSION = 1

INDEX_FILE = "vectors.faiss"
STORE_FILE = "vectors_f16.npy"
IDS_FILE = "vector_ids.npy"
INFO_FILE = "index_info.json"

TRAIN_SEED = 1234  # seed of the training subsample, so a rebuild gives the same index
TRAIN_POINTS_PER_LIST = 256  # FAISS k-means uses at most 256 points per centroid anyway
# Subsets up to max(EXACT_SUBSET_MIN, 10% of ntotal) rows are searched exactly over the float16 copy.
# Below ~10% an IVF probe raised by 1/selectivity misses true neighbours in unprobed lists (recall@10
# 0.86 at 5% on 100k clustered vectors, tuned nprobe=2) and, at 1M, exact search is faster anyway; above
# it the IDSelectorBatch path is both accurate and faster (100k, 20%: 10k vs 0.7k queries/s).
EXACT_SUBSET_MIN = 5_000
EXACT_SUBSET_FRACTION = 0.1
PQ_RERANK_FACTOR = 8  # PQ indexes fetch 8k candidates and re-score them exactly (tune() refines it)
RERANK_BLOCK_BYTES = 1024**2  # re-ranking converts 1 MB of candidates at a time: cache-sized, faster than 32 MB
_IVF_FACTORY = re.compile(r"^IVF(\d+)")


def default_nprobe(nlist: int) -> int:
    """nlist/8 clamped to [16, 256], never more than nlist."""
    return min(nlist, max(16, min(256, nlist // 8)))


def default_rerank_factor(factory: str) -> int:
    """Candidates fetched per result before exact re-ranking: 8 for PQ codes (lossy scores), else 1 (none)."""
    return PQ_RERANK_FACTOR if ",PQ" in factory or factory.startswith("PQ") else 1


# ---------------------------------------------------------------- the index


def _fsync_directory(directory: Path) -> None:
    """Make renames in `directory` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_path(directory: Path, name: str) -> Path:
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    return Path(path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        handle.flush()
        os.fsync(handle.fileno())


class VectorIndex:
    """An id-addressed vector index: a FAISS index (inner product) plus a float16 copy of every vector.

    The float16 copy serves exact search over filtered subsets, `vectors()` and exact re-ranking of
    PQ candidates (`rerank_factor`); loaded with mmap=True it stays on disk. IDs are int64 catalog ids
    given by the caller (add_with_ids semantics; never row order). Create with
    `VectorIndex.create(dim, factory)` or `VectorIndex.load(directory)`; after the last add of a
    build, `tune()` picks nprobe and rerank_factor for a recall target and `save()` records them.
    """

    def __init__(
        self,
        index: faiss.Index,
        dim: int,
        factory: str,
        nprobe: int | None,
        store: np.ndarray,
        ids: np.ndarray,
        read_only: bool = False,
        rerank_factor: int = 1,
        tuning: dict[str, Any] | None = None,
    ) -> None:
        """Low-level constructor; use `create` or `load`."""
        self.dim = dim
        self.factory = factory
        self.nprobe = nprobe  # IVF lists probed per query by default; None for Flat
        self.rerank_factor = rerank_factor  # FAISS fetches k*rerank_factor, re-scored exactly; 1 = off
        self.tuning = tuning  # what tune() measured when it chose nprobe and rerank_factor, else None
        self.read_only = read_only  # True when loaded with mmap=True
        self._index = index  # the CPU index: the one saved
        self._gpu_index: faiss.Index | None = None
        self._gpu_resources: Any = None
        self._size = len(ids)
        self._store = store  # (capacity, dim) float16; rows [0, _size) are live
        self._ids = ids  # (capacity,) int64, row i holds the id of _store[i]
        self._sorted_ids: np.ndarray | None = None  # lazily built lookup id -> row
        self._sorted_rows: np.ndarray | None = None

    # ---- construction

    @classmethod
    def create(cls, dim: int, factory: str = "Flat") -> VectorIndex:
        """An empty index of dimension `dim`.

        `factory` is "Flat" or an IVF factory string such as "IVF1024,PQ32x8" (see choose_index_key).
        """
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        factory = factory.strip()
        match = _IVF_FACTORY.match(factory)
        if factory == "Flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            nprobe = None
        elif match:
            try:
                index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as error:
                raise VectorIndexError(
                    f"FAISS cannot build factory {factory!r} for dimension {dim} "
                    f"({str(error).strip().splitlines()[-1]}); "
                    "use a string from choose_index_key()"
                ) from None
            # IVF-PQ trains polysemous codes by default: 5-10x the training time, only used by
            # polysemous search, which we never enable
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
            if getattr(ivf, "do_polysemous_training", False):
                ivf.do_polysemous_training = False
            nprobe = default_nprobe(int(match.group(1)))
        else:
            raise VectorIndexError(
                f"expected factory 'Flat' or 'IVF<nlist>,...', got {factory!r}; "
                "use a string from choose_index_key()"
            )
        return cls(
            index,
            dim,
            factory,
            nprobe,
            np.empty((0, dim), np.float16),
            np.empty(0, np.int64),
            rerank_factor=default_rerank_factor(factory),
        )

    # ---- bookkeeping

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return self._size

    @property
    def is_flat(self) -> bool:
        """True for exact (Flat) indexes, whose search is exhaustive."""
        return self.factory == "Flat"

    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted_ids is None or self._sorted_rows is None:
            live = self._ids[: self._size]
            self._sorted_rows = np.argsort(live, kind="stable")
            self._sorted_ids = live[self._sorted_rows]
        return self._sorted_ids, self._sorted_rows

    def _rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, store rows of the found ids) for validated int64 ids."""
        sorted_ids, sorted_rows = self._lookup()
        if not len(sorted_ids):
            return np.zeros(len(ids), bool), np.empty(0, np.int64)
        position = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        found = sorted_ids[position] == ids
        return found, sorted_rows[position[found]]

    def _changed(self) -> None:
        self._sorted_ids = self._sorted_rows = None
        self._gpu_index = None

    def _check_writable(self) -> None:
        if self.read_only:
            raise VectorIndexError(
                "this index was loaded with mmap=True and is read-only; load it without mmap to modify it"
            )

    def contains(self, ids: Any) -> np.ndarray:
        """Boolean array: whether each id is in the index."""
        return self._rows_of(_as_ids(ids))[0]

    def ids(self) -> np.ndarray:
        """All ids in the index, int64, sorted ascending."""
        return self._lookup()[0].copy()

    def vectors(self, ids: Any) -> np.ndarray:
        """float32 (n, dim) vectors of `ids` from the float16 copy; raises UnknownIdError for an absent id."""
        ids = _as_ids(ids)
        found, rows = self._rows_of(ids)
        if not found.all():
            missing = ids[~found]
            raise UnknownIdError(
                f"expected ids present in the index, {len(missing)} are not (first: {int(missing[0])}); "
                "check contains() first or re-index"
            )
        return np.asarray(self._store[rows], dtype=np.float32)

    # ---- add / remove

    def _train(self, xb: np.ndarray) -> None:
        nlist = faiss.extract_index_ivf(self._index).nlist
        if len(xb) < nlist:
            raise VectorIndexError(
                f"{self.factory} needs at least {nlist} vectors in its first add to train, got {len(xb)}; "
                "use factory 'Flat' for small collections (see choose_index_key)"
            )
        limit = TRAIN_POINTS_PER_LIST * nlist
        if len(xb) > limit:
            sample = np.sort(np.random.default_rng(TRAIN_SEED).choice(len(xb), limit, replace=False))
            xb = xb[sample]
        logger.info("training %s on %d vectors", self.factory, len(xb))
        try:
            self._index.train(xb)
        except RuntimeError as error:
            raise VectorIndexError(
                f"training {self.factory} on {len(xb)} vectors failed "
                f"({str(error).strip().splitlines()[-1]}); "
                "add more vectors in the first batch or use factory 'Flat'"
            ) from None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add `vectors` (n, dim) float32 under `ids` (n,) int64.

        An untrained IVF index trains on this first batch (at most 256*nlist vectors, seeded sample).

        A duplicate id (within the batch or already present) raises ValueError and adds nothing.
        """
        self._check_writable()
        ids = _as_ids(ids)
        xb = _as_matrix(vectors, self.dim, "vectors")
        if len(ids) != len(xb):
            raise ValueError(f"expected one id per vector ({len(xb)} vectors), got {len(ids)} ids")
        if not len(ids):
            return
        unique, counts = np.unique(ids, return_counts=True)
        if len(unique) != len(ids):
            raise ValueError(f"ids must be unique, id {int(unique[counts > 1][0])} repeats within the batch")
        present = self.contains(ids)
        if present.any():
            raise ValueError(
                f"id {int(ids[present][0])} is already in the index; remove() it first to replace it"
            )
        norms = np.linalg.norm(xb, axis=1)
        if np.abs(norms - 1).max() > 1e-2:
            logger.warning(
                "vectors are not L2-normalized (norms %.3g..%.3g); scores are not cosine similarities",
                norms.min(),
                norms.max(),
            )
        if not self._index.is_trained:
            self._train(xb)
        self._index.add_with_ids(xb, ids)
        self._append(ids, xb)
        self._changed()

    def _append(self, ids: np.ndarray, xb: np.ndarray) -> None:
        needed = self._size + len(ids)
        if needed > len(self._ids) or not self._store.flags.writeable:
            capacity = max(needed, 2 * self._size, 1024)  # doubling keeps many small adds linear
            store = np.empty((capacity, self.dim), np.float16)
            all_ids = np.empty(capacity, np.int64)
            store[: self._size], all_ids[: self._size] = self._store[: self._size], self._ids[: self._size]
            self._store, self._ids = store, all_ids
        self._store[self._size : needed] = xb
        self._ids[self._size : needed] = ids
        self._size = needed

    def remove(self, ids: np.ndarray) -> int:
        """Remove `ids`; unknown ids are ignored. Returns how many vectors were removed."""
        self._check_writable()
        ids = _as_ids(ids)
        found, rows = self._rows_of(ids)
        targets = np.unique(ids[found])
        if not len(targets):
            return 0
        removed = int(self._index.remove_ids(faiss.IDSelectorBatch(len(targets), faiss.swig_ptr(targets))))
        keep = np.ones(self._size, bool)
        keep[rows] = False
        self._store = np.ascontiguousarray(self._store[: self._size][keep])
        self._ids = np.ascontiguousarray(self._ids[: self._size][keep])
        self._size = len(self._ids)
        self._changed()
        if removed != len(targets) or self._index.ntotal != self._size:
            raise VectorIndexError(  # internal invariant, not user input
                f"FAISS removed {removed} of {len(targets)} ids and now holds {self._index.ntotal} vectors "
                f"while the float16 copy holds {self._size}; rebuild the index"
            )
        return removed

    # ---- search

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        subset: np.ndarray | None = None,
        nprobe: int | None = None,
        rerank_factor: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best-k inner-product search: (scores float32 (q, k), ids int64 (q, k)), best first.

        A 1-D query is one query. Rows are padded with score -inf and id -1 when fewer than k
        candidates exist. `subset` restricts results to those ids (a metadata filter) and gives
        min(k, |subset ∩ index|) results per query: subsets up to max(5k, 10% of ntotal), and any
        subset of a Flat index, are searched exactly over the float16 copy (scores within ~1e-3);
        larger ones by FAISS with an IDSelectorBatch and nprobe raised by 1/selectivity, falling
        back to exact search for a query that got too few hits.

        Exact re-ranking: with rerank_factor r > 1 FAISS returns k*r candidates, which are
        re-scored exactly against the float16 copy (memory-mapped when loaded with mmap=True) and
        the best k kept; scores are then exact to ~1e-3 instead of PQ estimates. `nprobe` and
        `rerank_factor` override `self.nprobe` and `self.rerank_factor` (set by `tune`) for this call.
        """
        if k <= 0:
            raise ValueError(f"k must be >= 1, got {k}")
        if nprobe is not None and nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        if rerank_factor is not None and rerank_factor < 1:
            raise ValueError(f"rerank_factor must be >= 1 (1 = no re-ranking), got {rerank_factor}")
        xq = _as_matrix(queries, self.dim, "queries")
        rerank = rerank_factor or self.rerank_factor
        if subset is not None:
            return self._search_subset(xq, k, _as_ids(subset, "subset"), nprobe, rerank)
        if self._size == 0:
            return _pad(len(xq), k)
        return self._approximate_search(xq, k, self._ivf_params(nprobe), rerank, use_gpu=True)

    def tune(
        self,
        queries: np.ndarray | None = None,
        *,
        target_recall: float = 0.95,
        k: int = 10,
        max_queries: int = 256,
    ) -> TuneResult:
        """Pick the cheapest nprobe and rerank_factor reaching `target_recall` recall@k vs exact search.

        Queries default to a seeded sample of the index's own vectors (at most `max_queries`).
        The choice becomes `self.nprobe` / `self.rerank_factor` and, with its measurement
        (`self.tuning`), is saved in index_info.json. Returns a `TuneResult`; Flat is left as is.
        Call it after the last add of a build: the best setting depends on n.
        """
        from .tuning import tune_index  # tuning imports this module

        result = tune_index(self, queries, target_recall=target_recall, k=k, max_queries=max_queries)
        if not self.is_flat and result.queries:
            self.nprobe, self.rerank_factor, self.tuning = result.nprobe, result.rerank_factor, result.as_info()
        return result

    def _ivf_params(self, nprobe: int | None, selector: Any = None) -> Any:
        if self.is_flat:
            return None
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe or self.nprobe or 1
        if selector is not None:
            params.sel = selector
        return params

    def _faiss_search(
        self, xq: np.ndarray, k: int, params: Any, use_gpu: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self._search_index() if use_gpu else self._index
        scores, ids = index.search(xq, k) if params is None else index.search(xq, k, params=params)
        scores[ids == -1] = -np.inf  # FAISS pads with -FLT_MAX
        return scores, ids

    def _approximate_search(
        self, xq: np.ndarray, k: int, params: Any, rerank: int, use_gpu: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search, with k*rerank candidates re-scored exactly when rerank > 1 (never for Flat)."""
        if rerank <= 1 or self.is_flat:
            return self._faiss_search(xq, k, params, use_gpu)
        _, candidates = self._faiss_search(xq, k * rerank, params, use_gpu)
        return self._rerank(xq, candidates, k)

    def _rerank(self, xq: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact best-k of candidate ids (q, c) (-1 = none) against the float16 copy, best first.

        Gathers RERANK_BLOCK_BYTES of candidate vectors at a time (k * rerank_factor float16 rows per
        query: random reads of a memory-mapped copy, served from the page cache once warm).
        """
        candidates = np.asarray(candidates, dtype=np.int64)
        num_queries, count = candidates.shape
        valid = candidates != -1
        found, found_rows = self._rows_of(candidates[valid])
        if not found.all():  # internal invariant: FAISS only returns ids we hold
            raise VectorIndexError(
                f"FAISS returned {int((~found).sum())} ids missing from the float16 copy; rebuild the index"
            )
        rows = np.zeros(candidates.shape, np.int64)
        rows[valid] = found_rows
        exact = np.full(candidates.shape, -np.inf, np.float32)
        block = max(1, RERANK_BLOCK_BYTES // max(1, count * self.dim * 4))
        for start in range(0, num_queries, block):
            part = slice(start, start + block)
            xb = self._store[rows[part].reshape(-1)].astype(np.float32).reshape(-1, count, self.dim)
            exact[part] = np.matmul(xb, xq[part][:, :, None])[:, :, 0]
        exact[~valid] = -np.inf
        keep = min(k, count)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :keep]
        scores, ids = _pad(num_queries, k)
        scores[:, :keep] = np.take_along_axis(exact, order, 1)
        ids[:, :keep] = np.take_along_axis(candidates, order, 1)
        ids[~np.isfinite(scores)] = -1
        return scores, ids

    def _search_subset(
        self, xq: np.ndarray, k: int, subset: np.ndarray, nprobe: int | None, rerank: int
    ) -> tuple[np.ndarray, np.ndarray]:
        _, rows = self._rows_of(np.unique(subset))
        rows = np.sort(rows)  # sequential reads of the (possibly memory-mapped) store
        count = len(rows)
        if count == 0:
            return _pad(len(xq), k)
        if self.is_flat or count <= max(EXACT_SUBSET_MIN, EXACT_SUBSET_FRACTION * self._size):
            return _exact_topk(xq, _row_blocks(self._store, rows, self._ids[rows]), k)
        members = np.ascontiguousarray(self._ids[rows])
        selector = faiss.IDSelectorBatch(len(members), faiss.swig_ptr(members))
        nlist = faiss.extract_index_ivf(self._index).nlist
        raised = min(nlist, math.ceil((nprobe or self.nprobe or 1) * self._size / count))
        params = self._ivf_params(raised, selector)
        scores, ids = self._approximate_search(xq, k, params, rerank, use_gpu=False)
        short = (ids != -1).sum(axis=1) < min(k, count)
        if short.any():
            logger.debug("filtered search: %d of %d queries fell back to exact search", short.sum(), len(xq))
            scores[short], ids[short] = _exact_topk(xq[short], _row_blocks(self._store, rows, members), k)
        return scores, ids

    def _search_index(self) -> faiss.Index:
        """The GPU copy of the index when a GPU is available, else the CPU index."""
        if faiss.get_num_gpus() == 0 or self._size == 0:
            return self._index
        if self._gpu_index is None:  # untested here: no GPU on the CI machines
            self._gpu_resources = self._gpu_resources or faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
        return self._gpu_index

    # ---- persistence

    def info(self) -> dict[str, Any]:
        """The description written to index_info.json."""
        return {
            "factory": self.factory,
            "dim": self.dim,
            "metric": METRIC,
            "ntotal": self._size,
            "nprobe": self.nprobe,
            "rerank_factor": self.rerank_factor,
            **({"tuning": self.tuning} if self.tuning is not None else {}),
            "faiss_version": faiss.__version__,
            "format_version": FORMAT_VERSION,
        }

    def save(self, directory: str | Path) -> None:
        """Write the index to `directory` (created if missing), each file atomically.

        Files: vectors.faiss (CPU index), vectors_f16.npy, vector_ids.npy, index_info.json. Each is
        written to a temporary name in the same directory and fsynced; then all are os.replace()d,
        index_info.json last. A crash before the first replace keeps the previous index intact; a
        crash between replaces is detected by `load` (counts disagree with index_info.json).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        temps: dict[str, Path] = {}
        try:
            temps[INDEX_FILE] = _temp_path(directory, INDEX_FILE)
            faiss.write_index(self._index, str(temps[INDEX_FILE]))
            for name, array in ((STORE_FILE, self._store[: self._size]), (IDS_FILE, self._ids[: self._size])):
                temps[name] = _temp_path(directory, name)
                with open(temps[name], "wb") as handle:
                    np.save(handle, np.ascontiguousarray(array))
            temps[INFO_FILE] = _temp_path(directory, INFO_FILE)
            temps[INFO_FILE].write_text(json.dumps(self.info(), indent=2) + "\n")
            for path in temps.values():
                _fsync_file(path)
            for name in (INDEX_FILE, STORE_FILE, IDS_FILE, INFO_FILE):
                os.replace(temps[name], directory / name)
                del temps[name]
        finally:
            for path in temps.values():
                path.unlink(missing_ok=True)
            _fsync_directory(directory)
        logger.info("saved %d vectors (%s) to %s", self._size, self.factory, directory)

    @classmethod
    def load(
        cls, directory: str | Path, *, expected_dim: int | None = None, mmap: bool = False
    ) -> VectorIndex:
        """Read an index written by `save`.

        Refuses (VectorIndexError) a missing index, another format version or metric, a dimension
        other than `expected_dim`, and files whose counts disagree. With mmap=True the float16 copy
        and, where FAISS supports it, the index are memory-mapped; the result is then read-only.
        """
        directory = Path(directory)
        paths = {name: directory / name for name in (INDEX_FILE, STORE_FILE, IDS_FILE, INFO_FILE)}
        missing = [name for name, path in paths.items() if not path.is_file()]
        if missing:
            raise VectorIndexError(
                f"expected {', '.join(missing)}: no vector index at {directory}; "
                "run `sarsearch index ARCHIVE` first"
            )
        try:
            info = json.loads(paths[INFO_FILE].read_text())
        except (OSError, ValueError) as error:
            raise VectorIndexError(f"cannot read {paths[INFO_FILE]} ({error}); rebuild the index") from None
        _check_info(info, directory, expected_dim)
        dim = int(info["dim"])
        index = _read_faiss(paths[INDEX_FILE], mmap)
        # np.asarray drops the np.memmap subclass (its __getitem__ costs ~0.3 ms per re-ranked query);
        # the plain view keeps the mapping alive through .base
        store = np.asarray(np.load(paths[STORE_FILE], mmap_mode="r" if mmap else None))
        ids = np.asarray(np.load(paths[IDS_FILE], mmap_mode="r" if mmap else None))  # read-only: never grown
        counts = {
            "index_info.json": info["ntotal"],
            INDEX_FILE: index.ntotal,
            STORE_FILE: len(store),
            IDS_FILE: len(ids),
        }
        if len(set(counts.values())) != 1 or index.d != dim or store.shape[1:] != (dim,):
            raise VectorIndexError(
                f"files of the vector index at {directory} disagree "
                f"(counts {counts}, dim {dim}, FAISS dim {index.d}); "
                "a save was probably interrupted: save again or run `sarsearch index ARCHIVE`"
            )
        return cls(
            index,
            dim,
            str(info["factory"]),
            info.get("nprobe"),
            store,
            ids.astype(np.int64, copy=False),
            read_only=mmap,
            rerank_factor=int(info.get("rerank_factor", default_rerank_factor(str(info["factory"])))),
            tuning=info.get("tuning"),
        )


def _check_info(info: dict[str, Any], directory: Path, expected_dim: int | None) -> None:
    """Refuse an index_info.json of another format, metric or dimension."""
    absent = [key for key in ("factory", "dim", "metric", "ntotal", "format_version") if key not in info]
    if absent:
        raise VectorIndexError(
            f"expected keys {absent} in {directory / INFO_FILE}, they are missing; rebuild the index"
        )
    if info.get("format_version") != FORMAT_VERSION:
        raise VectorIndexError(
            f"expected index format_version {FORMAT_VERSION} at {directory}, "
            f"found {info.get('format_version')}; "
            "rebuild the index with this version (`sarsearch index ARCHIVE`)"
        )
    if info.get("metric") != METRIC:
        raise VectorIndexError(
            f"expected metric {METRIC!r} at {directory}, found {info.get('metric')!r}; rebuild the index"
        )
    if expected_dim is not None and info.get("dim") != expected_dim:
        raise VectorIndexError(
            f"expected dimension {expected_dim} (the model's), "
            f"the index at {directory} has {info.get('dim')}; "
            "rebuild the index with this model (`sarsearch index ARCHIVE`)"
        )


def _read_faiss(path: Path, mmap: bool) -> faiss.Index:
    """faiss.read_index, memory-mapped when asked and supported."""
    try:
        if mmap:
            try:
                return faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
            except RuntimeError:
                logger.info("FAISS cannot memory-map %s; reading it into memory", path)
        return faiss.read_index(str(path))
    except RuntimeError as error:
        raise VectorIndexError(
            f"cannot read FAISS index {path} ({str(error).strip().splitlines()[-1]}); rebuild the index"
        ) from None
