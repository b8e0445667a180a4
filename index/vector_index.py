"""An id-addressed FAISS index (inner product) with an exact copy of every vector on disk.

The copy is float32 for PQ indexes, whose candidates it re-ranks (FAISS gathers and scores float32 rows
in C++; numpy's float16 -> float32 cast alone cost 3x the whole float32 re-rank), and float16 for Flat
and IVF-Flat, whose scores are already exact and which read it only for filtered subsets.

`VectorIndex` ties the parts together; each lives in its own module:
    rows.py       the exact copy, ids and subset codes, row-aligned, and the id -> row map
    factory.py    the FAISS index a factory string makes, its defaults, its training sample
    rerank.py     exact re-ranking of candidates against the exact copy
    filtered.py   filtered search (four strategies), over the index's public members
    tuning.py     tune(): nprobe and rerank_factor for a recall target, over the same public members
    cost.py       the cost model both use; gpu.py: the GPU; storage.py: the saved files

Shorthand used inside this module only: xq = queries, xb = database vectors.
The FAISS id of a vector is the caller's int64 catalog id (add_with_ids), never the row order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from . import filtered, gpu, storage
from .choose import code_candidates, is_pq
from .errors import REBUILD, UnknownIdError, VectorIndexError
from .exact import as_batch, as_ids, as_matrix, empty_results
from .factory import default_nprobe, default_store_dtype, new_faiss_index, train
from .rerank import default_rerank_factor, exact_rerank
from .rows import Rows
from .storage import FORMAT_VERSION, METRIC
from .tuning import (
    RERANK_FACTORS,
    TextTuning,
    TuneResult,
    near_duplicates,
    tried_entry,
    tune_index,
    tune_text,
)

logger = logging.getLogger(__name__)

RETRAIN_GROWTH = 4.0  # needs_retraining(): ntotal >= 4x the vectors the quantizer was trained on
REBUILD_BLOCK = 65_536  # rows of the exact copy converted to float32 at a time when re-adding (32 MB at d=128)


# ---------------------------------------------------------------- the index


class VectorIndex:
    """An id-addressed vector index: a FAISS index (inner product) plus an exact copy of every vector.

    The exact copy (float32 for PQ, float16 otherwise: `default_store_dtype`) serves exact search over
    filtered subsets, `vectors()` and exact re-ranking of PQ candidates (`rerank_factor`); loaded with
    mmap=True it stays on disk. IDs are int64 catalog ids given by the caller (add_with_ids semantics;
    never row order). `save` writes the copy and the ids in id order, so the saved id array is its own
    id -> row lookup (`Rows.id_map`), memory-mapped too.
    Create with `VectorIndex.create(dim, factory)` or `VectorIndex.load(directory)`; after the last
    add of a build, `tune()` picks nprobe and rerank_factor for a recall target and `save()` records
    them. Once the index has grown `RETRAIN_GROWTH` times past what its quantizer was trained on
    (`needs_retraining`), `rebuilt()` retrains it on all its vectors. FAISS work goes to a GPU when
    one is present (see `sarclip_search.index.gpu` for what stays on the CPU).
    """

    def __init__(
        self,
        index: faiss.Index,
        factory: str,
        rows: Rows,
        *,
        subset_pq: faiss.IndexPQ | None = None,
        read_only: bool = False,
        use_gpu: bool | None = None,
    ) -> None:
        """Low-level constructor; use `create` or `load`. The search settings start at the factory's
        defaults (`load` then sets the saved ones).

        `index`: the CPU FAISS index holding `rows`' ids. `subset_pq`: the trained 4-bit PQ of the rows'
        subset codes (`filtered.scan_subset`), None without codes. `read_only`: loaded with mmap=True.
        """
        self.factory = factory
        self.rows = rows  # the exact copy, the ids and the subset codes, row-aligned, and the id -> row map
        self.dim = rows.dim
        self.read_only = read_only
        self._index = index  # the CPU index: the one saved
        self._subset_pq = subset_pq  # trained with the IVF quantizer; None: no subset scan
        self._gpu = gpu.Placement(use_gpu)  # the GPU, if any, and the GPU copy of _index
        self.nprobe = None if self.is_flat else default_nprobe(self.nlist)  # IVF lists probed per query
        self.rerank_factor = default_rerank_factor(factory)  # k*rerank_factor candidates re-scored; 1 = off
        self.tuning: dict[str, Any] | None = None  # what tune() measured when it chose the two above
        self.trained_on: int | None = None  # vectors in the index when its IVF quantizer was trained
        self.subset_scan = False  # filtered search scans mid-size subsets: tune() decides (filtered.py)
        # text queries (tune(text_queries=...)): their own setting, the gap direction that recognizes them, and
        # the probe offset when centering won; None: every query uses the image setting (indexes tuned before)
        self.text_nprobe: int | None = None
        self.text_rerank_factor: int | None = None
        self._text_route: tuple[np.ndarray, float] | None = None  # (unit direction, threshold)
        self._text_offset: np.ndarray | None = None

    # ---- construction

    @classmethod
    def create(
        cls, dim: int, factory: str = "Flat", *, use_gpu: bool | None = None, subset_codes: bool = True
    ) -> VectorIndex:
        """An empty index of dimension `dim`.

        `factory` is "Flat" or an IVF factory string such as "IVF1024,PQ32x8" (see choose_index_key).
        `use_gpu=False` keeps FAISS on the CPU even when a GPU is present (default: use it).
        `subset_codes=False`: a PQ index without the 4-bit subset codes (d/8 bytes per vector less resident;
        filtered search then never takes the subset scan), as `tuned` may choose within a tight budget.
        """
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        factory = factory.strip()
        index = new_faiss_index(dim, factory)
        subset_pq = filtered.subset_quantizer(dim, factory) if subset_codes else None
        store = np.empty((0, dim), np.dtype(default_store_dtype(factory)))
        codes = None if subset_pq is None else np.empty((0, subset_pq.code_size), np.uint8)
        rows = Rows(store, np.empty(0, np.int64), codes)
        return cls(index, factory, rows, subset_pq=subset_pq, use_gpu=use_gpu)

    # ---- bookkeeping

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return self.rows.size

    @property
    def store_dtype(self) -> str:
        """dtype of the exact copy of the vectors: "float16" or "float32" (see default_store_dtype)."""
        return self.rows.dtype

    @property
    def is_flat(self) -> bool:
        """True for exact (Flat) indexes, whose search is exhaustive."""
        return self.factory == "Flat"

    @property
    def nlist(self) -> int | None:
        """Number of IVF lists; None for Flat."""
        return None if self.is_flat else int(faiss.extract_index_ivf(self._index).nlist)

    @property
    def subset_pq(self) -> faiss.IndexPQ | None:
        """The trained 4-bit PQ of the subset codes (`filtered.scan_subset`), or None without them."""
        return self._subset_pq

    def _lookup(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(ids ascending, their rows); rows is None when the rows are in id order (Rows.lookup)."""
        return self.rows.lookup()

    @property
    def use_gpu(self) -> bool | None:
        """None: FAISS work goes to the GPU when present; False: CPU only (see gpu.gpu_enabled)."""
        return self._gpu.use_gpu

    def _device(self) -> gpu.GpuDevice | None:
        """The GPU to run FAISS work on, or None for the CPU (decided once per index)."""
        return self._gpu.device()

    def _check_writable(self) -> None:
        if self.read_only:
            raise VectorIndexError(
                "this index was loaded with mmap=True and is read-only; load it without mmap to modify it"
            )

    def contains(self, ids: Any) -> np.ndarray:
        """Boolean array: whether each id is in the index."""
        return self.rows.rows_of(as_ids(ids))[0]

    def ids(self) -> np.ndarray:
        """All ids in the index, int64, sorted ascending."""
        return np.array(self.rows.lookup()[0], dtype=np.int64)

    def vectors(self, ids: Any) -> np.ndarray:
        """float32 (n, dim) vectors of `ids` from the exact copy; raises UnknownIdError for an absent id."""
        ids = as_ids(ids)
        found, rows = self.rows.rows_of(ids)
        if not found.all():
            missing = ids[~found]
            raise UnknownIdError(
                f"expected ids present in the index, {len(missing)} are not (first: {int(missing[0])}); "
                "check contains() first or re-index"
            )
        return np.asarray(self.rows.store[rows], dtype=np.float32)

    # ---- add / remove

    def _train(self, xb: np.ndarray, total: int | None = None) -> None:
        """Train on a seeded sample of `xb` (`factory.train`); `total` (default: len(xb)) is `trained_on`."""
        train(self._index, self.factory, xb, self._gpu, self._subset_pq)
        self.trained_on = total or len(xb)

    def train(self, xb: np.ndarray, *, total: int | None = None) -> None:
        """Train an empty IVF index on `xb`, or on its seeded sample of `training_sample_size` rows (rows
        `factory.training_rows(len(xb), nlist)` picks: pass just those rows of a larger collection and its
        size as `total`, and the index is trained exactly as on the whole). `total` becomes `trained_on`."""
        self._check_writable()
        if self.is_flat or self.ntotal:
            raise VectorIndexError(f"train() is for an empty IVF index; this one is {self.factory} "
                                   f"holding {self.ntotal} vectors")
        self._train(np.asarray(xb), total)

    def encoders(self) -> tuple[faiss.Index, faiss.IndexPQ | None]:
        """The trained FAISS index and subset-code PQ (None without subset codes) whose `sa_encode` makes
        what `add_codes` takes: ship them (faiss.serialize_index) to processes that encode vectors."""
        if not self._index.is_trained:
            raise VectorIndexError("the index is not trained yet; train() it first")
        return self._index, self._subset_pq

    def add_codes(
        self, ids: np.ndarray, vectors: np.ndarray, codes: np.ndarray, subset_codes: np.ndarray | None = None
    ) -> None:
        """Add `vectors` under `ids` with their FAISS codes computed elsewhere: `codes` = `sa_encode(vectors)`
        of this trained index (`encoders()`), `subset_codes` = the subset PQ's `sa_encode(vectors)` (computed
        here when None). The same index as `add(ids, vectors)`, without encoding the vectors in this process.
        """
        self._check_writable()
        ids, xb = as_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        if not self._index.is_trained:
            raise VectorIndexError("the index is not trained yet; train() it before add_codes()")
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.shape != (len(ids), self._index.sa_code_size()):
            raise ValueError(f"expected codes of shape ({len(ids)}, {self._index.sa_code_size()}), got {codes.shape}")
        if self.contains(ids).any():
            raise ValueError(f"id {int(ids[self.contains(ids)][0])} is already in the index; remove() it first")
        if self.is_flat:
            self._index.add_with_ids(xb, ids)  # a Flat code is the vector itself
        else:
            self._index.add_sa_codes(codes, ids)
        if self._subset_pq is not None and subset_codes is None:
            subset_codes = self._subset_pq.sa_encode(xb)
        self.rows.append(ids, xb, subset_codes)
        self._gpu.changed()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add `vectors` (n, dim) float32 under `ids` (n,) int64.

        An untrained IVF index trains on this first batch (a seeded sample, `training_sample_size`).

        A duplicate id (within the batch or already present) raises ValueError and adds nothing.
        """
        self._check_writable()
        ids, xb = as_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        present = self.contains(ids)
        if present.any():
            raise ValueError(
                f"id {int(ids[present][0])} is already in the index; remove() it first to replace it"
            )
        norms = np.linalg.norm(xb, axis=1)
        if np.abs(norms - 1).max() > 1e-2:
            logger.warning("vectors are not L2-normalized (norms %.3g..%.3g); scores are not cosine "
                           "similarities", norms.min(), norms.max())
        if not self._index.is_trained:
            self._train(xb)
        if self.is_flat:
            self._index.add_with_ids(xb, ids)
        else:
            self._gpu.add_ivf(self._index, xb, ids)
        self.rows.append(ids, xb, None if self._subset_pq is None else self._subset_pq.sa_encode(xb))
        self._gpu.changed()

    def needs_retraining(self, growth: float = RETRAIN_GROWTH) -> bool:
        """True for an IVF index holding `growth` times (default 4x) the vectors its quantizer was trained on.

        The quantizer's centroids (and PQ codebooks) were fit to the first trained batch; lists grow
        unevenly as the collection drifts away from it. 4x: nlist ~ 4*sqrt(n) doubles over that growth
        (choose_index_key then picks a new factory anyway), and a rebuild costs a full re-add.
        """
        if self.is_flat or not self.ntotal:
            return False
        trained_on = self.trained_on or (self.tuning or {}).get("ntotal")
        return bool(trained_on) and self.ntotal >= growth * trained_on

    def rebuilt(self, factory: str | None = None, *, subset_codes: bool | None = None) -> VectorIndex:
        """A new index of `factory` (default: this one's) with the same ids and vectors, trained on all of them.

        Vectors come from the exact copy (from a float16 copy, the codes encode rounded vectors); training
        uses a seeded sample of all rows (`training_sample_size`). nprobe and rerank_factor return to
        their defaults: call `tune()` afterwards. This index is not changed. `subset_codes` (see `create`)
        defaults to this index's choice for the same factory, else to keeping them.
        """
        factory = factory or self.factory
        if subset_codes is None:
            subset_codes = self.rows.codes is not None or factory != self.factory or self.ntotal == 0
        rebuilt = VectorIndex.create(self.dim, factory, use_gpu=self.use_gpu, subset_codes=subset_codes)
        if rebuilt.store_dtype != self.store_dtype:
            logger.info("rebuilt index keeps a %s copy (from this index's %s copy)", rebuilt.store_dtype,
                        self.store_dtype)
        size, store, ids = self.ntotal, self.rows.store, self.rows.ids
        if size and not rebuilt.is_flat:
            rebuilt._train(store, total=size)
        for start in range(0, size, REBUILD_BLOCK):
            block = slice(start, min(size, start + REBUILD_BLOCK))
            rebuilt.add(np.array(ids[block]), np.asarray(store[block], dtype=np.float32))
        logger.info("rebuilt %s as %s (%d vectors)", self.factory, rebuilt.factory, size)
        return rebuilt

    def remove(self, ids: np.ndarray) -> int:
        """Remove `ids`; unknown ids are ignored. Returns how many vectors were removed."""
        self._check_writable()
        ids = as_ids(ids)
        found, rows = self.rows.rows_of(ids)
        targets = np.unique(ids[found])
        if not len(targets):
            return 0
        removed = int(self._index.remove_ids(faiss.IDSelectorBatch(len(targets), faiss.swig_ptr(targets))))
        self.rows.remove(rows)
        self._gpu.changed()
        if removed != len(targets) or self._index.ntotal != self.ntotal:
            raise VectorIndexError(  # internal invariant, not user input
                f"FAISS removed {removed} of {len(targets)} ids and now holds {self._index.ntotal} vectors "
                f"while the exact copy holds {self.ntotal}; {REBUILD}"
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
        population: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best-k inner-product search: (scores float32 (q, k), ids int64 (q, k)), best first.

        A 1-D query is one query. Rows are padded with score -inf and id -1 when fewer than k
        candidates exist. `subset` restricts results to those ids (a metadata filter) and gives
        min(k, |subset ∩ index|) results per query, by a strategy chosen from the subset's size
        (`filtered.search_subset`): exact search over the exact copy up to max(5k, 4x the vectors an
        unfiltered query touches) rows (2x for IVF-Flat) and for Flat, the subset scan of 4-bit codes for
        mid-size subsets of PQ indexes whose tune() chose it, post-filtering from 30% of the rows, else
        FAISS with a selector; a query left short of hits falls back to the selector, then to exact search.

        Exact re-ranking: with rerank_factor r > 1 FAISS returns k*r candidates, which are
        re-scored exactly against the exact copy (memory-mapped when loaded with mmap=True) and
        the best k kept; scores are then exact to ~1e-3 instead of PQ estimates. `nprobe` and
        `rerank_factor` override `self.nprobe` and `self.rerank_factor` (set by `tune`) for this call.

        `population` ("image" or "text"; None: `self.population(queries)` decides) picks the tuned setting:
        text queries use `text_nprobe` / `text_rerank_factor` and, unfiltered, the centered probe when
        tune() kept it. An index tuned without text queries uses its one setting for both.
        """
        if k <= 0:
            raise ValueError(f"k must be >= 1, got {k}")
        if nprobe is not None and nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        if rerank_factor is not None and rerank_factor < 1:
            raise ValueError(f"rerank_factor must be >= 1 (1 = no re-ranking), got {rerank_factor}")
        if population not in (None, "image", "text"):
            raise ValueError(f"population must be 'image', 'text' or None, got {population!r}")
        xq = as_matrix(queries, self.dim, "queries")
        text = (population or self.population(xq)) == "text" and self.text_nprobe is not None
        nprobe = nprobe or (self.text_nprobe if text else None)
        rerank = rerank_factor or (self.text_rerank_factor if text else None) or self.rerank_factor
        if subset is not None:
            return filtered.search_subset(self, xq, k, as_ids(subset, "subset"), nprobe, rerank)
        if self.ntotal == 0:
            return empty_results(len(xq), k)
        if text and self._text_offset is not None:  # centered probe, exact re-rank with the queries as given
            _, candidates = self._faiss_search(xq - self._text_offset, k * rerank, self._ivf_params(nprobe), True)
            return self.rerank(xq, candidates, k)
        return self.approximate_search(xq, k, nprobe=nprobe, rerank_factor=rerank, use_gpu=True)

    def population(self, queries: np.ndarray) -> str:
        """"text" when any query sits on the text side of the modality gap tune() measured (projection on the
        gap direction above the threshold half-way between text proxies and image vectors), else "image".
        Always "image" for an index tuned without text queries. A blend of text and images is "text" when
        the text dominates (weight > ~0.5: the projection is linear in the blend)."""
        if self._text_route is None:
            return "image"
        direction, threshold = self._text_route
        xq = as_matrix(queries, self.dim, "queries")
        return "text" if bool((xq @ direction > threshold).any()) else "image"

    def tune(
        self,
        queries: np.ndarray | None = None,
        *,
        target_recall: float = 0.95,
        k: int = 10,
        max_queries: int = 256,
        text_queries: np.ndarray | None = None,
    ) -> TuneResult:
        """Pick the cheapest nprobe and rerank_factor reaching `target_recall` recall@k vs exact search.

        Queries default to a seeded sample of the index's own vectors (at most `max_queries`).
        The choice becomes `self.nprobe` / `self.rerank_factor` and, with its measurement
        (`self.tuning`), is saved in index_info.json. Returns a `TuneResult`; Flat is left as is.
        Call it after the last add of a build: the best setting depends on n.

        `text_queries` (unit text embeddings; the indexer passes the index vocabulary through caption
        templates, `ingest/text_proxies.py`) get their own setting (`tuning.tune_text`): `text_nprobe`,
        `text_rerank_factor`, saved under `tuning.text`; `search` uses it for queries on the text side of
        the modality gap. Without them the text setting is cleared (text queries use the image setting).
        """
        result = tune_index(self, queries, target_recall=target_recall, k=k, max_queries=max_queries)
        self._apply_tuning(result, text_queries, target_recall=target_recall, k=k, max_queries=max_queries)
        return result

    def _apply_tuning(self, result: TuneResult, text_queries: np.ndarray | None, **options: Any) -> None:
        """`result` becomes this index's setting (and, with `text_queries`, a text setting is tuned too)."""
        if not self.is_flat and result.queries:
            self.nprobe, self.rerank_factor, self.tuning = result.nprobe, result.rerank_factor, result.as_info()
            if result.subset_scan is not None:
                self.subset_scan = result.subset_scan
            self.tune_text(text_queries, **options)

    def tuned(
        self,
        queries: np.ndarray | None = None,
        *,
        memory_budget: int | None = None,
        text_queries: np.ndarray | None = None,
        target_recall: float = 0.95,
        k: int = 10,
        max_queries: int = 256,
    ) -> VectorIndex:
        """This index tuned (`tune`), or, when its PQ codes cannot order a cloud of near-duplicates well enough
        for `target_recall` even re-ranked up to 256 x k, a rebuilt one with a code that can, within
        `memory_budget` (resident bytes; None: tune() alone).

        The codes `choose.code_candidates` lists (more PQ bytes, OPQ, IVF-Flat: those that fit) are rebuilt one at
        a time (`rebuilt`: the same seeded training sample) and tuned on the same queries; the first that reaches
        the target is returned, tuned, its `tuning` recording what was tried (`tried`), the factory it replaces
        (`replaces`, which the indexer keeps choosing it for) and the budget. None reaching it: the one with the
        best recall, its `tuning.needs` the one line naming the budget that does (also logged as a warning).
        Without near-duplicates this is `tune()`: nothing is rebuilt. `queries`: as in `tune` (default: a seeded
        sample of the index's own vectors), the same for every candidate.
        """
        options: dict[str, Any] = {"target_recall": target_recall, "k": k, "max_queries": max_queries}
        result = tune_index(self, queries, **options, report=memory_budget is None)
        previous = self.tuning or {}
        replaces = previous.get("replaces") if previous.get("memory_budget") == memory_budget else None
        if result.needs is None or memory_budget is None:
            if replaces and result.queries:  # still the code chosen for this budget: the indexer keeps it
                result = replace(result, replaces=replaces, memory_budget=memory_budget)
            self._apply_tuning(result, text_queries, **options)
            return self
        tried = list(result.tried or [])
        best, best_result = self, result
        for factory, subset_codes in code_candidates(self.ntotal, self.dim, self.factory, memory_budget):
            started = time.perf_counter()
            candidate = self.rebuilt(factory, subset_codes=subset_codes)
            built = time.perf_counter() - started
            started = time.perf_counter()
            measured = tune_index(candidate, queries, **options, report=False)
            seconds = time.perf_counter() - started
            tried.extend(measured.tried or [tried_entry(candidate, measured, RERANK_FACTORS[-1] if is_pq(factory) else 1)])
            tried[-1] = {**tried[-1], "build_s": round(built, 1), "tune_s": round(seconds, 1)}
            logger.info("near-duplicates: %s measured instead of %s: recall@%d %.3f (nprobe=%s, rerank_factor=%d; "
                        "built in %.0f s)", factory, self.factory, k, measured.recall, measured.nprobe,
                        measured.rerank_factor, built)
            if measured.met_target or measured.recall > best_result.recall:
                best, best_result = candidate, measured
            if measured.met_target:
                break
        needs = None if best_result.met_target else near_duplicates(
            best, best_result.neighbour_score or 0.0, best_result.recall, target_recall, k, tried, memory_budget)
        best_result = replace(best_result, tried=tried, needs=needs, memory_budget=memory_budget,
                              replaces=(replaces or self.factory) if best is not self else replaces)
        if needs:
            logger.warning("%s", needs)
        else:
            logger.info("near-duplicates: %s reaches recall@%d %.3f within the budget (%s tried)", best.factory, k,
                        best_result.recall, ", ".join(f"{t['factory']} x{t['rerank_max']}" for t in tried))
        best._apply_tuning(best_result, text_queries, **options)
        return best

    def tune_text(
        self, text_queries: np.ndarray | None, *, target_recall: float = 0.95, k: int = 10, max_queries: int = 256
    ) -> TextTuning | None:
        """Only the text setting (`tuning.tune_text`), the image setting kept: after `tune()`, e.g. when the
        vocabulary changed. None (and the text setting cleared) for Flat, an untuned index or no text queries."""
        text = (tune_text(self, text_queries, target_recall=target_recall, k=k, max_queries=max_queries)
                if text_queries is not None and self.tuning is not None else None)
        self._set_text_tuning(text)
        if self.tuning is not None:
            self.tuning = {key: value for key, value in self.tuning.items() if key != "text"}
            if text is not None:
                self.tuning["text"] = text.as_info()
        return text

    def _set_text_tuning(self, text: TextTuning | dict[str, Any] | None) -> None:
        """The text setting from tune_text's result or its saved form (index_info.json `tuning.text`)."""
        if isinstance(text, TextTuning):
            text = text.as_info()
        if not text or text.get("nprobe") is None or "direction" not in text:
            self.text_nprobe = self.text_rerank_factor = self._text_route = self._text_offset = None
            return
        self.text_nprobe, self.text_rerank_factor = int(text["nprobe"]), int(text["rerank_factor"])
        self._text_route = (np.asarray(text["direction"], np.float32), float(text["threshold"]))
        offset = text.get("offset") if text.get("centered") else None
        self._text_offset = None if offset is None else np.asarray(offset, np.float32)

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
        if index is self._index and not self.is_flat:
            # Fewer queries than threads: split each query's probed lists over the threads (parallel_mode 1)
            # instead of giving each thread whole queries, which leaves a single query on one core. One text,
            # 1M IVF4096,Flat, idle 2 cores: nprobe 16 1.75 -> 1.33 ms, nprobe 128 k 640 (post-filter) 4.4 -> 2.7
            # ms. Either mode returns the same results, so racing threads setting it is harmless.
            faiss.extract_index_ivf(index).parallel_mode = 1 if len(xq) < faiss.omp_get_max_threads() else 0
        scores, ids = index.search(xq, k) if params is None else index.search(xq, k, params=params)
        scores[ids == -1] = -np.inf  # FAISS pads with -FLT_MAX
        return scores, ids

    def approximate_search(
        self, xq: np.ndarray, k: int, *, nprobe: int | None = None, rerank_factor: int = 1,
        selector: Any = None, use_gpu: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search of float32 queries (q, dim) as `search` validates them: k*rerank_factor candidates
        re-scored exactly when rerank_factor > 1 (never for Flat), best first, padded with -inf / -1.

        The building block of `search`, filtered search and `tune`: `nprobe` defaults to self.nprobe,
        `selector` (a FAISS IDSelector) restricts the ids, `use_gpu` allows the GPU copy when there is one.
        """
        params = self._ivf_params(nprobe, selector)
        if rerank_factor <= 1 or self.is_flat:
            return self._faiss_search(xq, k, params, use_gpu)
        _, candidates = self._faiss_search(xq, k * rerank_factor, params, use_gpu)
        return self.rerank(xq, candidates, k)

    def rerank(self, xq: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact best-k of candidate ids (q, c) (-1 = none) for float32 queries (q, dim), best first
        (`rerank.exact_rerank` over the exact copy)."""
        return exact_rerank(self.rows, xq, candidates, k)

    def _search_index(self) -> faiss.Index:
        """The GPU copy of the index for unfiltered search when a GPU is in use and supports it, else the CPU index."""
        if self.ntotal == 0 or self.is_flat:
            return self._index
        return self._gpu.search_index(self._index)

    # ---- persistence

    def info(self) -> dict[str, Any]:
        """The description written to index_info.json."""
        return {
            "factory": self.factory,
            "dim": self.dim,
            "metric": METRIC,
            "ntotal": self.ntotal,
            "nprobe": self.nprobe,
            "rerank_factor": self.rerank_factor,
            **({"text_nprobe": self.text_nprobe, "text_rerank_factor": self.text_rerank_factor}
               if self.text_nprobe is not None else {}),
            "trained_on": self.trained_on,
            "store_dtype": self.store_dtype,
            **({"subset_codes": f"PQ{self._subset_pq.pq.M}x4", "subset_scan": self.subset_scan}
               if self.rows.codes is not None else {}),
            **({"tuning": self.tuning} if self.tuning is not None else {}),
            "faiss_version": faiss.__version__,
            "format_version": FORMAT_VERSION,
        }

    def save(self, directory: str | Path) -> dict[str, int]:
        """Write the index to `directory` (created if missing), each file atomically (`storage.write_index`);
        returns the bytes written per file kind.

        Files: vectors.faiss (CPU index), the exact copy (vectors_f32 or vectors_f16 segments, by
        store_dtype) and the ids (both in id order), the subset codes of PQ indexes (subset_codes segments,
        subset_pq.faiss), index_info.json last, listing them. Saved back where it was loaded from (or into
        a new generation holding hard links of those files), only the rows added since are written, and
        the FAISS file only if it changed. A crash keeps the previous index or is detected by `load`; a
        reader that mapped the old files keeps their contents.
        """
        directory = Path(directory)
        written = storage.write_index(directory, self._index, self.rows, self._subset_pq, self.info())
        logger.info("saved %d vectors (%s) to %s (%d bytes written)", self.ntotal, self.factory, directory,
                    sum(written.values()))
        return written

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        expected_dim: int | None = None,
        mmap: bool = False,
        use_gpu: bool | None = None,
    ) -> VectorIndex:
        """Read an index written by `save`.

        Refuses (VectorIndexError) a missing index, another format version or metric, a dimension
        other than `expected_dim`, and files whose counts disagree. With mmap=True the exact copy,
        the id array (the id -> row lookup) and, where FAISS supports it (IVF codes), the index are
        memory-mapped; the result is then read-only. `use_gpu` as in `create`.
        """
        saved = storage.read_index(Path(directory), expected_dim, mmap)
        info, factory = saved.info, str(saved.info["factory"])
        store, ids, codes = saved.capacity or (saved.store, saved.ids, saved.codes)  # with spare rows if read
        rows = Rows(store, ids, codes, ids_sorted=True,  # save writes them in id order
                    origin=saved.files, size=len(saved.ids))  # a save back into `directory` appends to its segments
        loaded = cls(saved.index, factory, rows, subset_pq=saved.subset_pq, read_only=mmap, use_gpu=use_gpu)
        loaded.nprobe = info.get("nprobe")
        loaded.rerank_factor = int(info.get("rerank_factor", loaded.rerank_factor))  # absent: the default
        loaded.tuning, loaded.trained_on = info.get("tuning"), info.get("trained_on")
        loaded._set_text_tuning((loaded.tuning or {}).get("text"))  # absent (tuned before): the image setting
        loaded.subset_scan = bool(info.get("subset_scan", False)) and rows.codes is not None
        return loaded
