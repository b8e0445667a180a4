"""VectorIndex over its life: add/remove/retrain round trips, the id-ordered saved layout, GPU device selection.

Approximate results are compared with exact search on structured (clustered) data; the GPU path is
exercised on the CPU with a stand-in device whose "GPU copies" are CPU clones, which proves the device
selection and that every GPU branch gives the CPU path's results. Real-GPU tests are marked `gpu`.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np
import pytest

from sarclip_search.index import VectorIndex, exact_search, recall_at_k
from sarclip_search.index import filtered as vector_index_module  # filtered search's thresholds: filtered.py
from sarclip_search.index import gpu as gpu_module

import helpers

DIM = 32
K = 10


# 40 clusters whose centers every seed shares, so queries match the data
clustered = partial(helpers.clustered, d=DIM, clusters=40, centers_seed=0)


def recall_vs_exact(index: VectorIndex, ids: np.ndarray, xb: np.ndarray, xq: np.ndarray) -> float:
    _, truth = exact_search(xb, ids, xq, K)
    return recall_at_k(index.search(xq, K)[1], truth, K)


# ---------------------------------------------------------------- add / remove / retrain


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8x8"])
def test_add_remove_retrain_round_trip(factory: str, tmp_path: Path, monkeypatch) -> None:
    xb = clustered(9000, seed=1)
    ids = np.random.default_rng(2).permutation(np.arange(9000, dtype=np.int64) * 5 + 7)  # not in id order
    xq = clustered(100, seed=3)
    index = VectorIndex.create(DIM, factory)
    index.add(ids[:2000], xb[:2000])  # trains on this first batch
    assert index.trained_on == 2000 and not index.needs_retraining()
    for start in range(2000, 8000, 2000):
        index.add(ids[start : start + 2000], xb[start : start + 2000])  # no retraining on add
    assert index.trained_on == 2000 and index.ntotal == 8000 and index.needs_retraining()  # 4x growth

    removed = ids[:8000:3]
    assert index.remove(removed) == len(removed)
    index.add(ids[8000:], xb[8000:])
    live = np.ones(9000, bool)
    live[:8000:3] = False
    before = recall_vs_exact(index, ids[live], xb[live], xq)

    for fraction in (0.0005, 0.05, 0.2, 0.5):  # exact path (rows not in id order), then the FAISS paths:
        if fraction == 0.2:  # selector (20%), post-filter (50%), forced at this small n
            monkeypatch.setattr(vector_index_module, "EXACT_SUBSET_MIN", 0)
            monkeypatch.setattr(vector_index_module, "EXACT_COST_RATIO", 0.0)
            monkeypatch.setattr(vector_index_module, "EXACT_COST_RATIO_EXACT_SCORES", 0.0)
        subset = ids[live][: max(3, int(fraction * live.sum()))]
        inside = np.isin(ids, subset)
        _, truth = exact_search(xb[inside], ids[inside], xq, K)
        found = index.search(xq, K, subset=subset)[1]
        assert np.isin(found[found != -1], subset).all() and recall_at_k(found, truth, K) >= 0.9
        assert ((found != -1).sum(axis=1) == min(K, len(subset))).all()
    monkeypatch.undo()

    rebuilt = index.rebuilt()
    assert (rebuilt.factory, rebuilt.ntotal, rebuilt.trained_on) == (factory, live.sum(), live.sum())
    assert not rebuilt.needs_retraining() and index.ntotal == live.sum()  # the original is unchanged
    np.testing.assert_array_equal(rebuilt.ids(), np.sort(ids[live]))
    np.testing.assert_array_equal(rebuilt.vectors(ids[live]), index.vectors(ids[live]))  # the same float16 rows
    assert not rebuilt.contains(removed).any()
    after = recall_vs_exact(rebuilt, ids[live], xb[live], xq)
    assert after >= min(0.95, before) - 0.02  # measured: 1.0 / 1.0 (IVF-Flat), 0.98 / 0.98 (PQ, rerank 8)

    rebuilt.save(tmp_path)
    assert json.loads((tmp_path / "index_info.json").read_text())["trained_on"] == live.sum()
    loaded = VectorIndex.load(tmp_path, mmap=True)
    assert loaded.trained_on == live.sum() and not loaded.needs_retraining()
    np.testing.assert_array_equal(loaded.search(xq, K)[1], rebuilt.search(xq, K)[1])
    np.testing.assert_array_equal(loaded.vectors(ids[live][:50]), rebuilt.vectors(ids[live][:50]))


def test_rebuilt_changes_factory_and_flat_never_needs_retraining() -> None:
    xb = clustered(3000, seed=4)
    ids = np.arange(3000, dtype=np.int64) + 100
    flat = VectorIndex.create(DIM)
    flat.add(ids, xb)
    assert flat.trained_on is None and not flat.needs_retraining()
    ivf = flat.rebuilt("IVF16,Flat")
    assert ivf.factory == "IVF16,Flat" and ivf.trained_on == 3000
    np.testing.assert_array_equal(ivf.ids(), ids)
    assert recall_vs_exact(ivf, ids, xb, clustered(50, seed=5)) >= 0.9
    assert VectorIndex.create(DIM, "IVF16,Flat").rebuilt().ntotal == 0  # empty stays empty


# ---------------------------------------------------------------- saved layout: ids in id order


def test_save_writes_id_order_and_mmap_lookup_needs_no_sort(tmp_path: Path) -> None:
    xb = clustered(500, seed=6)
    ids = np.random.default_rng(7).permutation(500).astype(np.int64) * 2 + 1
    index = VectorIndex.create(DIM)
    index.add(ids, xb)
    index.save(tmp_path)
    saved_ids = VectorIndex.load(tmp_path).rows.ids  # in saved order
    np.testing.assert_array_equal(saved_ids, np.sort(ids))  # the id array is its own lookup
    saved = VectorIndex.load(tmp_path).rows.store
    order = np.argsort(ids)
    np.testing.assert_array_equal(saved, xb[order].astype(np.float16))
    loaded = VectorIndex.load(tmp_path, mmap=True)
    sorted_ids, sorted_rows = loaded._lookup()
    assert sorted_rows is None and isinstance(sorted_ids.base, np.ndarray | np.memmap | type(None))
    np.testing.assert_array_equal(loaded.vectors(ids[:20]), index.vectors(ids[:20]))
    xq = clustered(30, seed=8)
    for subset in (None, ids[::4]):
        np.testing.assert_array_equal(loaded.search(xq, K, subset=subset)[1], index.search(xq, K, subset=subset)[1])


# ---------------------------------------------------------------- GPU device selection and CPU fallback


class FakeDevice(gpu_module.GpuDevice):
    """A 'GPU' whose copies are CPU clones: the GPU branches run, the arithmetic is the CPU's."""

    calls: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.resources = None

    def copy_to_gpu(self, index: faiss.Index) -> faiss.Index:
        FakeDevice.calls.append(f"copy {type(faiss.downcast_index(index)).__name__}")
        return faiss.clone_index(index)

    def train_ivf(self, index: faiss.Index, xb: np.ndarray) -> None:
        FakeDevice.calls.append("train")
        super().train_ivf(index, xb)

    def add_ivf(self, index: faiss.Index, xb: np.ndarray, ids: np.ndarray) -> None:
        FakeDevice.calls.append("add")
        super().add_ivf(index, xb, ids)


@pytest.fixture
def fake_gpu(monkeypatch):
    """One 'GPU' present (faiss.get_num_gpus() == 1) backed by FakeDevice; the env override cleared."""
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(gpu_module, "GpuDevice", FakeDevice)
    monkeypatch.delenv(gpu_module.CPU_ONLY_ENV, raising=False)
    FakeDevice.calls = []
    return FakeDevice


def test_device_selection(fake_gpu, monkeypatch) -> None:
    assert gpu_module.gpu_enabled() and gpu_module.gpu_enabled(True)
    assert not gpu_module.gpu_enabled(False)  # the argument disables it
    monkeypatch.setenv(gpu_module.CPU_ONLY_ENV, "1")  # so does the environment
    assert not gpu_module.gpu_enabled()
    monkeypatch.setenv(gpu_module.CPU_ONLY_ENV, "0")
    assert gpu_module.gpu_enabled()
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)  # and no GPU means the CPU
    assert not gpu_module.gpu_enabled(True) and gpu_module.make_device(None) is None


def test_unsupported_reason_names_what_stays_on_the_cpu() -> None:
    assert "Flat" in gpu_module.unsupported_reason(faiss.IndexIDMap2(faiss.IndexFlatIP(DIM)))
    assert gpu_module.unsupported_reason(faiss.index_factory(DIM, "IVF16,Flat")) is None
    assert gpu_module.unsupported_reason(faiss.index_factory(DIM, "IVF16,PQ8x8")) is None
    assert "nbits=4" in gpu_module.unsupported_reason(faiss.index_factory(DIM, "IVF16,PQ8x4"))
    assert "bytes per code" in gpu_module.unsupported_reason(faiss.index_factory(DIM * 5, "IVF16,PQ80x8"))


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8x8"])
def test_gpu_path_gives_the_cpu_results(fake_gpu, factory: str) -> None:
    xb, xq = clustered(4000, seed=9), clustered(50, seed=10)
    ids = np.arange(4000, dtype=np.int64) * 3 + 1
    on_cpu = VectorIndex.create(DIM, factory, use_gpu=False)
    on_cpu.add(ids[:3000], xb[:3000])
    on_cpu.add(ids[3000:], xb[3000:])
    assert fake_gpu.calls == []  # use_gpu=False never touches the device

    on_gpu = VectorIndex.create(DIM, factory)  # default: the GPU when present
    on_gpu.add(ids[:3000], xb[:3000])
    on_gpu.add(ids[3000:], xb[3000:])
    assert fake_gpu.calls[:2] == ["train", "copy IndexFlat"]  # k-means on a GPU flat index
    assert fake_gpu.calls.count("add") == 2
    scores_gpu, found_gpu = on_gpu.search(xq, K)
    assert fake_gpu.calls[-1].startswith("copy IndexIVF")  # unfiltered search on the GPU copy
    scores_cpu, found_cpu = on_cpu.search(xq, K)
    np.testing.assert_array_equal(found_gpu, found_cpu)
    np.testing.assert_allclose(scores_gpu, scores_cpu, atol=1e-6)

    calls = len(fake_gpu.calls)
    subset = ids[::2]
    np.testing.assert_array_equal(on_gpu.search(xq, K, subset=subset)[1], on_cpu.search(xq, K, subset=subset)[1])
    assert len(fake_gpu.calls) == calls  # filtered search stays on the CPU (IDSelector is CPU-only)
    on_gpu.remove(ids[:10])  # a change drops the GPU copy ...
    on_gpu.search(xq, K)
    assert len(fake_gpu.calls) == calls + 1  # ... and the next search copies again


def test_unsupported_pq_searches_on_the_cpu(fake_gpu) -> None:
    xb = clustered(3000, seed=11)
    index = VectorIndex.create(DIM, "IVF16,PQ8x4")  # 4-bit codes: not on the GPU
    index.add(np.arange(3000), xb)
    assert "add" not in fake_gpu.calls  # encoded on the CPU
    assert index._search_index() is index._index
    assert index.search(xb[:5], 3)[1].shape == (5, 3)


@pytest.mark.gpu
@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="needs a CUDA GPU and faiss-gpu")
@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64,PQ16x8"])
def test_real_gpu_train_add_search_match_cpu(factory: str) -> None:
    xb, xq = clustered(20_000, seed=12), clustered(200, seed=13)
    ids = np.arange(20_000, dtype=np.int64)
    on_gpu, on_cpu = VectorIndex.create(DIM, factory), VectorIndex.create(DIM, factory, use_gpu=False)
    for index in (on_gpu, on_cpu):
        index.add(ids, xb)
    assert on_gpu._device() is not None
    _, truth = exact_search(xb, ids, xq, K)
    assert recall_at_k(on_gpu.search(xq, K)[1], truth, K) >= recall_at_k(on_cpu.search(xq, K)[1], truth, K) - 0.02
