"""What a factory string makes: the empty FAISS index (`new_faiss_index`), its default nprobe, the dtype
of its exact copy (`default_store_dtype`), and its training on a seeded sample (`train`).
Which factory to use is `choose.py`'s question.
"""

from __future__ import annotations

import logging
import re

import faiss
import numpy as np

from .choose import is_pq, training_sample_size
from .errors import VectorIndexError
from .gpu import Placement

logger = logging.getLogger(__name__)

TRAIN_SEED = 1234  # seed of the training subsample, so a rebuild gives the same index
_IVF_FACTORY = re.compile(r"^(OPQ\d+(_\d+)?,)?IVF(\d+)")  # OPQ: a learned rotation before the IVF-PQ


def default_nprobe(nlist: int) -> int:
    """nlist/8 clamped to [16, 256], never more than nlist."""
    return min(nlist, max(16, min(256, nlist // 8)))


def default_store_dtype(factory: str) -> str:
    """dtype of the exact copy: "float32" for PQ indexes (re-ranked on every query), else "float16".

    1M x 256, 80 candidates per query, one core: float32 rows scored by faiss.knn_inner_products_by_idx
    ~20 us per query; float16 rows gathered, cast and multiplied in numpy ~100 us, 65 of them the cast.
    The price is disk (1024 instead of 512 B/vector at d=256), not resident memory: the copy is mapped.
    """
    return "float32" if is_pq(factory) else "float16"


def new_faiss_index(dim: int, factory: str) -> faiss.Index:
    """An empty FAISS index (inner product) for "Flat" or an IVF factory string such as "IVF1024,PQ32x8"
    (or "OPQ32,IVF1024,PQ32x8": an IndexPreTransform rotating the vectors before the IVF-PQ).

    Flat is an IndexIDMap2 over IndexFlatIP (ids of the caller's choosing); IVF-PQ does without
    polysemous training. Raises VectorIndexError for other strings and ones FAISS cannot build.
    """
    if factory == "Flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if not _IVF_FACTORY.match(factory):
        raise VectorIndexError(
            f"expected factory 'Flat', 'IVF<nlist>,...' or 'OPQ<m>,IVF<nlist>,...', got {factory!r}; "
            "use a string from choose_index_key()"
        )
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
    return index


def training_rows(n: int, nlist: int) -> np.ndarray | None:
    """The rows (ascending) of n vectors that an index of `nlist` lists trains on: a seeded sample of
    `training_sample_size` rows, or None for all of them. A caller holding the vectors in pieces (embedding
    shards) reads just these rows and trains exactly as on the whole array."""
    limit = training_sample_size(n, nlist)
    if n <= limit:
        return None
    return np.sort(np.random.default_rng(TRAIN_SEED).choice(n, limit, replace=False))


def training_sample(xb: np.ndarray, nlist: int) -> np.ndarray:
    """The rows of `xb` (float32 or float16) an index of `nlist` lists trains on, as contiguous float32:
    a seeded sample of `training_sample_size` rows (all of them when there are no more)."""
    sample = training_rows(len(xb), nlist)
    if sample is not None:
        xb = xb[sample]
    return np.ascontiguousarray(xb, dtype=np.float32)


def train(
    index: faiss.Index, factory: str, xb: np.ndarray, placement: Placement, subset_pq: faiss.IndexPQ | None
) -> None:
    """Train an IVF index of `factory` (and the subset codes' PQ) on a seeded sample of `xb` (rows: float32
    or float16), its coarse k-means on the GPU of `placement` when there is one."""
    nlist = faiss.extract_index_ivf(index).nlist
    if len(xb) < nlist:
        raise VectorIndexError(
            f"{factory} needs at least {nlist} vectors in its first add to train, got {len(xb)}; "
            "use factory 'Flat' for small collections (see choose_index_key)"
        )
    xb = training_sample(xb, nlist)
    logger.info("training %s on %d vectors (%s)", factory, len(xb), "GPU" if placement.device() else "CPU")
    try:
        placement.train(index, xb)
    except RuntimeError as error:
        raise VectorIndexError(
            f"training {factory} on {len(xb)} vectors failed "
            f"({str(error).strip().splitlines()[-1]}); "
            "add more vectors in the first batch or use factory 'Flat'"
        ) from None
    if subset_pq is not None:  # on the CPU: 16 centroids per sub-quantizer, ~1 s on 65k x 256
        subset_pq.train(xb)
