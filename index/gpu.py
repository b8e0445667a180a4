"""FAISS on a GPU when one is present, and what stays on the CPU (and why).

Device selection (`gpu_enabled`): the GPU is used when faiss reports one (`faiss.get_num_gpus() > 0`,
which needs the faiss-gpu build), unless the index was created or loaded with `use_gpu=False` or the
environment sets SARSEARCH_FAISS_CPU=1. On a GPU:

* training: the IVF coarse quantizer's k-means (the n x nlist distance computations) runs on a GPU
  flat index (`IndexIVF.clustering_index`); the PQ sub-quantizers (256 centroids per sub-space, cheap)
  train on the CPU;
* adding: the assignment of each vector to its list runs on a GPU copy of the coarse quantizer; the CPU
  index then encodes and stores the codes (`IndexIVF.add_core` with the precomputed lists);
* unfiltered search runs on a GPU copy of the whole index (`index_cpu_to_gpu`; faiss builds with cuVS
  use it by default for IVF), made once and dropped after every change.

Stays on the CPU, with the same results API:

* `Flat` indexes: they exist below 50k vectors, where copying to the GPU costs more than searching;
* filtered search: SearchParameters with an IDSelector are CPU-only in faiss;
* IVF-PQ codes the GPU does not support: nbits other than 8, or bytes per code outside GPU_PQ_BYTES
  (codes above 48 bytes use float16 lookup tables, the GPU's shared-memory limit);
* re-ranking against the exact copy (memory-mapped; FAISS on the CPU), and the saved file: always the CPU
  index, so a GPU-built index loads anywhere and memory-maps.

faiss-cpu has no GPU classes; everything here is reached only when `gpu_enabled` is True.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

CPU_ONLY_ENV = "SARSEARCH_FAISS_CPU"  # "1": keep FAISS on the CPU even with a GPU present
GPU_DEVICE = 0
GPU_PQ_BYTES = frozenset({1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96})  # GpuIndexIVFPQ
GPU_FLOAT32_TABLES_MAX_BYTES = 48  # above: float16 lookup tables (shared memory per block)


def gpu_enabled(use_gpu: bool | None = None) -> bool:
    """Whether FAISS work should go to the GPU: one is present and neither `use_gpu=False` nor the env var says no."""
    if use_gpu is False or os.environ.get(CPU_ONLY_ENV, "").strip() not in ("", "0"):
        return False
    return faiss.get_num_gpus() > 0


def unsupported_reason(index: faiss.Index) -> str | None:
    """Why the GPU cannot hold a copy of this CPU index (None when it can)."""
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:
        return "Flat indexes stay on the CPU (below 50k vectors the copy costs more than the search)"
    if isinstance(ivf, faiss.IndexIVFPQ):
        if ivf.pq.nbits != 8:
            return f"GPU IVF-PQ needs 8-bit codes, this index has nbits={ivf.pq.nbits}"
        if ivf.pq.M not in GPU_PQ_BYTES:
            return f"GPU IVF-PQ supports {sorted(GPU_PQ_BYTES)} bytes per code, this index has {ivf.pq.M}"
    elif not isinstance(ivf, faiss.IndexIVFFlat | faiss.IndexIVFScalarQuantizer):
        return f"{type(ivf).__name__} has no GPU implementation"
    return None


class GpuDevice:
    """One GPU's resources and the cloning options for our indexes (created only when gpu_enabled())."""

    def __init__(self) -> None:
        self.resources = faiss.StandardGpuResources()

    def copy_to_gpu(self, index: faiss.Index) -> faiss.Index:
        """A GPU copy of a CPU index (float16 PQ lookup tables for codes above 48 bytes)."""
        options = faiss.GpuClonerOptions()
        try:
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
            options.useFloat16 = isinstance(ivf, faiss.IndexIVFPQ) and ivf.pq.M > GPU_FLOAT32_TABLES_MAX_BYTES
        except RuntimeError:
            pass
        return faiss.index_cpu_to_gpu(self.resources, GPU_DEVICE, index, options)

    def train_ivf(self, index: faiss.Index, xb: np.ndarray) -> None:
        """Train a CPU IVF index with its coarse k-means on the GPU."""
        ivf = faiss.extract_index_ivf(index)
        ivf.clustering_index = self.copy_to_gpu(faiss.IndexFlat(ivf.d, ivf.metric_type))
        try:
            index.train(xb)
        finally:
            ivf.clustering_index = None

    def add_ivf(self, index: faiss.Index, xb: np.ndarray, ids: np.ndarray) -> None:
        """Add to a trained CPU IVF index, assigning vectors to lists on the GPU."""
        ivf = faiss.downcast_index(index)
        if not isinstance(ivf, faiss.IndexIVF):  # a pre-transform (OPQ) wraps the IVF: plain CPU add
            index.add_with_ids(xb, ids)
            return
        quantizer = self.copy_to_gpu(ivf.quantizer)
        _, lists = quantizer.search(xb, 1)
        lists = np.ascontiguousarray(lists[:, 0], dtype=np.int64)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        ivf.add_core(len(xb), faiss.swig_ptr(xb), faiss.swig_ptr(ids), faiss.swig_ptr(lists))


def make_device(use_gpu: bool | None) -> Any:
    """A GpuDevice when gpu_enabled(use_gpu), else None."""
    if not gpu_enabled(use_gpu):
        return None
    logger.info("FAISS uses GPU %d (of %d)", GPU_DEVICE, faiss.get_num_gpus())
    return GpuDevice()


class Placement:
    """Where one index's FAISS work runs: the GPU device, made on first use when `gpu_enabled(use_gpu)`,
    and the GPU copy of the index for unfiltered search, made on first search and dropped on change."""

    def __init__(self, use_gpu: bool | None) -> None:
        self.use_gpu = use_gpu  # None: the GPU when present; False: CPU only (see gpu_enabled)
        self._device: GpuDevice | None = None
        self._copy: faiss.Index | None = None  # GPU copy of the CPU index

    def device(self) -> GpuDevice | None:
        """The GPU to run FAISS work on, or None for the CPU (decided once per index)."""
        if self._device is None and gpu_enabled(self.use_gpu):
            self._device = make_device(self.use_gpu)
        return self._device

    def train(self, index: faiss.Index, xb: np.ndarray) -> None:
        """Train a CPU IVF index, its coarse k-means on the GPU when there is one."""
        device = self.device()
        if device is not None:
            device.train_ivf(index, xb)
        else:
            index.train(xb)

    def add_ivf(self, index: faiss.Index, xb: np.ndarray, ids: np.ndarray) -> None:
        """Add to a trained CPU IVF index, assigning lists on the GPU where there is one that supports it."""
        device = self.device()
        if device is not None and unsupported_reason(index) is None:
            device.add_ivf(index, xb, ids)
        else:
            index.add_with_ids(xb, ids)

    def search_index(self, index: faiss.Index) -> faiss.Index:
        """The GPU copy of a CPU IVF index for unfiltered search when a GPU is in use and supports it,
        else `index` itself."""
        device = self.device()
        if device is None:
            return index
        if self._copy is None:
            reason = unsupported_reason(index)
            if reason is not None:
                logger.debug("searching on the CPU: %s", reason)
                return index
            self._copy = device.copy_to_gpu(index)
        return self._copy

    def changed(self) -> None:
        """The index changed: drop its GPU copy (the next search copies it again)."""
        self._copy = None
