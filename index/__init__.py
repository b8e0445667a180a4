"""FAISS vector index of sarclip-search: id-addressed, inner product, filtered search, atomic save/load.

Depends only on numpy and faiss; imports nothing else from sarclip_search.
"""

import os

# Before faiss loads OpenMP: idle BLAS/OpenMP threads otherwise spin and make search 3-15x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
