"""FAISS vector index of sarclip-search: id-addressed, inner product, filtered search, atomic save/load.

Depends only on numpy and faiss; imports nothing else from sarclip_search.
"""

import os

# Before faiss loads OpenMP: idle BLAS/OpenMP threads otherwise spin and make search 3-15x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss

# faiss 1.15 ships distance_compute_blas_threshold = 128000: a batch of fewer queries is scored one query at a
# time against Flat and against an IVF index's centroids (its coarse quantizer). 20, FAISS's earlier default,
# sends batches of 20 queries or more through BLAS; single queries are unchanged. 1M x 256, IVF4096,Flat, idle
# 2 cores, OMP_WAIT_POLICY=PASSIVE: 215 text queries at nprobe 16 5,073 -> 6,519 q/s, 256 image queries at
# nprobe 4 8,863 -> 15,031 q/s, the same recall.
BLAS_THRESHOLD = 20
faiss.cvar.distance_compute_blas_threshold = min(faiss.cvar.distance_compute_blas_threshold, BLAS_THRESHOLD)

from .choose import choose_index_key, resident_bytes
from .errors import UnknownIdError, VectorIndexError
from .exact import exact_search
from .metrics import recall_at_k
from .storage import METRIC
from .tuning import TuneResult
from .vector_index import VectorIndex

__all__ = [
    "METRIC",
    "TuneResult",
    "UnknownIdError",
    "VectorIndex",
    "VectorIndexError",
    "choose_index_key",
    "exact_search",
    "recall_at_k",
    "resident_bytes",
]
