"""Tests of sarclip_search.index: approximate search is checked against exact search on structured data."""

from __future__ import annotations

import ast
import json
import os
from functools import partial
from pathlib import Path

import faiss
import numpy as np
import pytest

from sarclip_search.index import (
    METRIC,
    VectorIndex,
    VectorIndexError,
    choose_index_key,
    exact_search,
    recall_at_k,
    resident_bytes,
)
from sarclip_search.index import choose as choose_module
from sarclip_search.index import exact as exact_module
from sarclip_search.index import filtered as filtered_module
from sarclip_search.index import tuning as tuning_module
from sarclip_search.index import vector_index as vector_index_module
from sarclip_search.index.errors import UnknownIdError
from sarclip_search.index.rows import Rows

import helpers

DIM = 64
N = 20_000
K = 10


# 100 clusters whose centers come from the seed; `centers_seed=0` draws around the centers of `clustered(n)`
clustered = partial(helpers.clustered, d=DIM)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors, queries): ids are sparse catalog ids, not row numbers."""
    ids = np.arange(N, dtype=np.int64) * 3 + 11
    return ids, clustered(N), clustered(200, seed=1)


@pytest.fixture(scope="module")
def built(data) -> dict[str, VectorIndex]:
    """One index per factory, built once for the module (PQ training dominates the runtime)."""
    ids, xb, _ = data
    indexes = {}
    with pytest.MonkeyPatch.context() as patch:
        # 10_240 training vectors, just above the 39*256 that PQ's k-means asks for, instead of
        # TRAIN_MIN_POINTS (all 20k here); halves the PQ training time that dominates this file
        patch.setattr(choose_module, "TRAIN_MIN_POINTS", 10_240)
        for factory in ("Flat", "IVF64,Flat", "IVF64,PQ16x8"):
            index = VectorIndex.create(DIM, factory)
            index.add(ids, xb)
            indexes[factory] = index
    return indexes


# ---------------------------------------------------------------- choose_index_key


def test_choose_index_key_by_size_and_budget() -> None:
    assert choose_index_key(0, 512) == "Flat"
    assert choose_index_key(49_999, 512) == "Flat"
    assert choose_index_key(200_000, 512) == "IVF2048,Flat"  # 4*sqrt(2e5) = 1789 -> 2048
    assert choose_index_key(1_000_000, 512) == "IVF4096,Flat"  # 1M*(2048+16) + 4096*2048 = 2.07e9 <= 2 GiB
    assert choose_index_key(5_000_000, 512) == "IVF16384,PQ128x8"  # 8*sqrt(5e6) = 17889 -> 16384; PQ d/4
    assert choose_index_key(200_000, 512, memory_budget=100_000_000) == "IVF2048,PQ128x8"
    assert choose_index_key(5_000_000, 512, memory_budget=600_000_000) == "IVF16384,PQ32x8"  # 5e6*104 + 34e6
    assert choose_index_key(5_000_000, 512, memory_budget=1) == "IVF16384,PQ8x8"  # never below 8 bytes
    # the worked example of the docstring: 80 B/vector at 1M x 256 leaves PQ32 (76.5), not PQ64 (108.5)
    assert choose_index_key(1_000_000, 256, memory_budget=80_000_000) == "IVF4096,PQ32x8"
    assert choose_index_key(1_000_000, 256, memory_budget=110_000_000) == "IVF4096,PQ64x8"


def test_resident_bytes_counts_codes_ids_subset_codes_and_centroids() -> None:
    n, d = 1_000_000, 256
    assert resident_bytes(n, d, "IVF4096,PQ32x8") == n * (32 + 8 + d // 8) + 4096 * 4 * d + 256 * 4 * d
    assert resident_bytes(n, d, "IVF4096,PQ64x8") / n == pytest.approx(108.5, abs=0.1)
    assert resident_bytes(n, d, "IVF4096,Flat") == n * (4 * d + 8) + 4096 * 4 * d
    assert resident_bytes(n, d, "Flat") == n * (4 * d + 48)


@pytest.mark.parametrize("n", [50_000, 123_457, 999_999, 3_000_000, 40_000_000])
@pytest.mark.parametrize("d", [48, 64, 384, 512, 768])
def test_choose_index_key_shape(n: int, d: int) -> None:
    key = choose_index_key(n, d, memory_budget=10**9)
    assert key == choose_index_key(n, d, memory_budget=10**9)  # deterministic
    nlist = int(key.split(",")[0].removeprefix("IVF"))
    assert nlist & (nlist - 1) == 0 and 1 <= nlist <= n // 39
    if "PQ" in key:
        m = int(key.split(",")[1].removeprefix("PQ").removesuffix("x8"))
        assert d % m == 0 and m >= 8
        VectorIndex.create(d, key.replace(f"IVF{nlist}", "IVF4"))  # FAISS accepts the string


def test_choose_index_key_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        choose_index_key(-1, 64)
    with pytest.raises(ValueError):
        choose_index_key(10, 0)
    with pytest.raises(ValueError):
        choose_index_key(10, 64, memory_budget=0)


# ---------------------------------------------------------------- search quality


def test_flat_search_equals_exact_search(built, data) -> None:
    ids, xb, xq = data
    scores, found = built["Flat"].search(xq, K)
    true_scores, true_ids = exact_search(xb, ids, xq, K)
    np.testing.assert_array_equal(found, true_ids)
    np.testing.assert_allclose(scores, true_scores, atol=1e-5)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_flat_index_matches_exact_search(engine):
    """The same on the fixture archive's real embeddings, as the engine loads them from an index directory."""
    ids = engine.vectors.ids()
    vectors = engine.vectors.vectors(ids)
    flat = VectorIndex.create(vectors.shape[1], "Flat")
    flat.add(ids, vectors)
    k = 5
    _, approx = flat.search(vectors, k)
    _, exact = exact_search(vectors, ids, vectors, k)
    assert recall_at_k(approx, exact, k) == 1.0


@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat", "IVF64,PQ16x8"])
def test_own_vector_found_first(built, data, factory: str) -> None:
    ids, xb, _ = data
    rows = np.arange(0, N, 997)
    _, found = built[factory].search(xb[rows], 1)
    hit_rate = (found[:, 0] == ids[rows]).mean()
    assert hit_rate == 1.0 if factory != "IVF64,PQ16x8" else hit_rate >= 0.9


def test_single_query_vector_is_one_query(built, data) -> None:
    ids, xb, _ = data
    scores, found = built["Flat"].search(xb[5], 3)
    assert scores.shape == found.shape == (1, 3) and found[0, 0] == ids[5]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("factory", "nprobe", "rerank_factor", "floor"),
    [
        ("IVF64,Flat", 16, None, 0.9),  # measured 0.97
        ("IVF64,Flat", 64, None, 0.999),  # all lists probed: exact
        ("IVF64,PQ16x8", 16, 1, 0.4),  # measured 0.54: PQ scores alone, 16 bytes for 64 noisy dims
        ("IVF64,PQ16x8", 16, None, 0.9),  # default re-rank factor 8: measured 0.94
        ("IVF64,PQ16x8", 32, 16, 0.95),  # measured 0.99
    ],
)
def test_ivf_recall_floor(
    built, data, factory: str, nprobe: int, rerank_factor: int | None, floor: float
) -> None:
    ids, xb, xq = data
    _, true_ids = exact_search(xb, ids, xq, K)
    _, found = built[factory].search(xq, K, nprobe=nprobe, rerank_factor=rerank_factor)
    assert recall_at_k(found, true_ids, K) >= floor


def test_rerank_gives_exact_scores_best_first(built, data) -> None:
    ids, xb, xq = data
    index = built["IVF64,PQ16x8"]
    assert index.rerank_factor == 8 and built["IVF64,Flat"].rerank_factor == built["Flat"].rerank_factor == 1
    scores, found = index.search(xq, K)
    rows = np.searchsorted(ids, found)  # ids are sorted
    exact = np.einsum("qd,qkd->qk", xq, xb[rows])
    np.testing.assert_allclose(scores, exact, atol=2e-3)  # float16 copy
    assert (np.diff(scores, axis=1) <= 0).all()
    pq_scores, _ = index.search(xq, K, rerank_factor=1)
    assert np.abs(pq_scores - exact).max() > 1e-2  # without re-ranking the scores are PQ estimates
    with pytest.raises(ValueError, match="rerank_factor"):
        index.search(xq, K, rerank_factor=0)


def test_rerank_with_few_candidates_pads(built, data) -> None:
    _, _, xq = data
    index = built["IVF64,PQ16x8"]
    scores, found = index.search(xq[:5], K, nprobe=1, rerank_factor=2)
    assert found.shape == (5, K) and ((found == -1) == np.isneginf(scores)).all()
    assert len(np.unique(found[0][found[0] != -1])) == (found[0] != -1).sum()


def _float16_twin(index: VectorIndex) -> VectorIndex:
    """The same FAISS index with a float16 copy (as saved before store_dtype existed)."""
    twin = VectorIndex(index._index, index.factory,
                       Rows(np.asarray(index.rows.store, np.float16), np.array(index.rows.ids)))
    twin.nprobe, twin.rerank_factor = index.nprobe, index.rerank_factor
    return twin


def test_pq_rerank_float32_copy_agrees_with_float16_and_exact(built, data) -> None:
    ids, xb, xq = data
    index = built["IVF64,PQ16x8"]
    assert index.store_dtype == "float32" and built["Flat"].store_dtype == built["IVF64,Flat"].store_dtype == "float16"
    twin = _float16_twin(index)
    assert twin.store_dtype == "float16"
    # candidates with padding (-1) inside rows, not only at their end: FAISS's scorer stops at the first -1
    rng = np.random.default_rng(11)
    candidates = rng.choice(ids, (len(xq), 40))
    candidates[:, 5] = -1
    candidates[:3, 30:] = -1
    for each in (index, twin):
        scores, found = each.rerank(xq, candidates, K)
        brute = np.where(candidates >= 0, np.einsum("qd,qcd->qc", xq, xb[np.searchsorted(ids, candidates)]), -np.inf)
        best = np.take_along_axis(candidates, np.argsort(-brute, axis=1, kind="stable")[:, :K], 1)
        assert (found == best).mean() >= 0.99  # float16 rounding may swap near-ties
        np.testing.assert_allclose(scores, np.sort(brute, axis=1)[:, ::-1][:, :K], atol=2e-3)
        assert (np.diff(scores, axis=1) <= 0).all()
    float32_scores, float32_ids = index.search(xq, K)
    float16_scores, float16_ids = twin.search(xq, K)
    assert (float32_ids == float16_ids).mean() >= 0.99
    np.testing.assert_allclose(float32_scores, float16_scores, atol=2e-3)


@pytest.mark.parametrize("layout", ["contiguous", "shuffled", "gaps", "sparse"])
def test_id_to_row_maps_agree(layout: str) -> None:
    xb = clustered(600, seed=12)
    rng = np.random.default_rng(13)
    ids = {"contiguous": np.arange(600), "shuffled": rng.permutation(600) + 1000,
           "gaps": np.arange(600), "sparse": np.arange(600) * 5 + 7}[layout].astype(np.int64)
    index = VectorIndex.create(DIM)
    index.add(ids, xb)
    live = np.ones(600, bool)
    if layout == "gaps":
        removed = rng.choice(600, 150, replace=False)
        index.remove(ids[removed])
        live[removed] = False
    expected_mode = {"contiguous": "offset", "shuffled": "table", "gaps": "table", "sparse": "search"}[layout]
    assert index.rows.id_map()[0] == expected_mode
    probe = np.concatenate([ids, ids + 1, [0, 10**9]])
    truth = np.isin(probe, ids[live])
    np.testing.assert_array_equal(index.contains(probe), truth)
    np.testing.assert_array_equal(index.vectors(ids[live]), xb[live].astype(np.float16).astype(np.float32))
    with pytest.raises(UnknownIdError):
        index.vectors(probe[~truth][:1])


def test_nprobe_default_and_override(built, data) -> None:
    _, _, xq = data
    index = built["IVF64,Flat"]
    assert index.nprobe == 16 and built["Flat"].nprobe is None
    low = index.search(xq, K, nprobe=1)[1]
    assert not np.array_equal(low, index.search(xq, K)[1])


# ---------------------------------------------------------------- auto-tuning


@pytest.fixture
def tunable(built):
    """The module's IVF-PQ index, its defaults restored after the test (tune() changes them)."""
    index = built["IVF64,PQ16x8"]
    saved = index.nprobe, index.rerank_factor, index.tuning
    yield index
    index.nprobe, index.rerank_factor, index.tuning = saved


def test_tune_meets_target_on_held_out_queries(tunable, data, tmp_path: Path) -> None:
    ids, xb, _ = data
    held_out = clustered(300, seed=2, centers_seed=0)  # new points around the archive's clusters
    _, true_ids = exact_search(xb, ids, held_out, K)
    result = tunable.tune(target_recall=0.95, k=K)
    assert result.met_target and result.recall_lower >= 0.95 and result.queries == 256
    assert (tunable.nprobe, tunable.rerank_factor) == (result.nprobe, result.rerank_factor)
    assert recall_at_k(tunable.search(held_out, K)[1], true_ids, K) >= 0.95  # measured 0.997
    assert tunable.search(held_out, K, rerank_factor=1)[1].shape == (300, K)  # overrides still apply

    cheaper = tunable.tune(target_recall=0.8, k=K)
    assert cheaper.cost <= result.cost and cheaper.met_target

    tunable.tune(target_recall=0.95, k=K)
    tunable.save(tmp_path)
    info = json.loads((tmp_path / "index_info.json").read_text())
    assert info["nprobe"] == result.nprobe and info["rerank_factor"] == result.rerank_factor
    assert info["tuning"] == result.as_info()
    loaded = VectorIndex.load(tmp_path, mmap=True)
    assert (loaded.nprobe, loaded.rerank_factor, loaded.tuning) == (
        result.nprobe, result.rerank_factor, result.as_info()
    )


def test_tune_on_given_queries(tunable, data) -> None:
    ids, xb, xq = data  # queries from other clusters than the archive: a harder, off-distribution set
    _, true_ids = exact_search(xb, ids, xq, K)
    result = tunable.tune(xq[:100], target_recall=0.95, k=K)
    assert result.met_target and result.queries == 100 and result.nprobe > 1
    # on the other 100 queries: measured 0.946, within the ±0.02 that 100 queries estimate
    assert recall_at_k(tunable.search(xq[100:], K)[1], true_ids[100:], K) >= 0.93


def test_tune_unreachable_target_and_flat(built, tunable, monkeypatch) -> None:
    monkeypatch.setattr(tuning_module, "RERANK_FACTORS", (1, 2))  # PQ scores alone cannot reach 0.99
    result = tunable.tune(target_recall=0.99, k=K, max_queries=64)
    assert not result.met_target and result.rerank_factor == 2  # the best setting found, with a warning
    assert (tunable.nprobe, tunable.rerank_factor) == (result.nprobe, result.rerank_factor)
    flat = built["Flat"]
    assert flat.tune().met_target and (flat.nprobe, flat.rerank_factor, flat.tuning) == (None, 1, None)
    with pytest.raises(ValueError):
        tunable.tune(target_recall=1.5)


# ---------------------------------------------------------------- filtered search


@pytest.mark.parametrize("selectivity", [0.001, 0.01, 0.1, 0.5])
@pytest.mark.parametrize(
    ("factory", "force_faiss"),
    [
        ("Flat", False),
        ("IVF64,Flat", False),
        ("IVF64,PQ16x8", False),
        ("IVF64,Flat", True),
        ("IVF64,PQ16x8", True),
    ],
)
def test_filtered_search_matches_filtered_truth(
    built, data, monkeypatch, selectivity: float, factory: str, force_faiss: bool
) -> None:
    if force_faiss:  # exercise the IDSelectorBatch path, which n=20k would otherwise never reach
        monkeypatch.setattr(filtered_module, "EXACT_SUBSET_MIN", 0)
        monkeypatch.setattr(filtered_module, "EXACT_COST_RATIO", 0.0)
        monkeypatch.setattr(filtered_module, "EXACT_COST_RATIO_EXACT_SCORES", 0.0)
    ids, xb, xq = data
    subset = np.random.default_rng(7).choice(ids, max(1, int(selectivity * N)), replace=False)
    subset_with_unknown = np.concatenate([subset, [10**12, 2]])  # ids absent from the index are ignored
    scores, found = built[factory].search(xq, K, subset=subset_with_unknown)
    inside = np.isin(ids, subset)
    _, true_ids = exact_search(xb[inside], ids[inside], xq, K)
    expected = min(K, len(subset))
    assert ((found != -1).sum(axis=1) == expected).all()
    assert np.isin(found[found != -1], subset).all()
    assert np.isneginf(scores[found == -1]).all()
    assert recall_at_k(found, true_ids, K) >= 0.95  # the IDSelectorBatch path re-ranks PQ candidates too


@pytest.fixture
def subset_scan(monkeypatch) -> list[int]:
    """Route the 20k fixture's subsets to `scan_subset` (no exact search for small subsets), 24 x k deep;
    returns a list that grows by one per scan."""
    monkeypatch.setattr(filtered_module, "EXACT_SUBSET_MIN", 0)
    monkeypatch.setattr(filtered_module, "EXACT_COST_RATIO", 0.0)
    monkeypatch.setattr(filtered_module, "SUBSET_SCAN_RERANK", 24)
    monkeypatch.setattr(VectorIndex, "subset_scan", property(lambda self: True, lambda self, value: None),
                        raising=False)  # as if tune() had chosen the scan
    calls: list[int] = []
    scan = filtered_module.scan_subset
    monkeypatch.setattr(filtered_module, "scan_subset", lambda *args: calls.append(1) or scan(*args))
    return calls


def _filtered_truth(ids, xb, xq, subset) -> np.ndarray:
    inside = np.isin(ids, subset)
    return exact_search(xb[inside], ids[inside], xq, K)[1]


@pytest.mark.parametrize("selectivity", [0.08, 0.1])
def test_subset_scan_matches_filtered_truth(built, data, subset_scan, selectivity: float) -> None:
    """4-bit codes of the subset scanned, 24 x k re-ranked: exact scores, members only, recall floor.
    (The fixture's queries come from other clusters than its vectors: their filtered neighbours lie
    anywhere, the case the scan exists for. 12 x k gave 0.87 at 10%.)"""
    ids, xb, xq = data
    index = built["IVF64,PQ16x8"]
    subset = np.random.default_rng(7).choice(ids, int(selectivity * N), replace=False)
    scores, found = index.search(xq, K, subset=subset, nprobe=1)  # the selector would probe 40 < 64 lists
    assert subset_scan, "expected the subset scan"
    assert ((found != -1).sum(axis=1) == K).all() and np.isin(found, subset).all()
    exact = np.einsum("qkd,qd->qk", index.vectors(found.reshape(-1)).reshape(*found.shape, DIM), xq)
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    assert recall_at_k(found, _filtered_truth(ids, xb, xq, subset), K) >= 0.95


@pytest.mark.parametrize("probe_margin", [4.0, 0.01])  # the selector at its margin; starved (one list)
def test_tune_keeps_the_filtered_strategy_with_the_higher_recall(
    built, data, monkeypatch, probe_margin: float
) -> None:
    """tune()'s 10% check runs both mid-size strategies and keeps the one with the higher recall. (The
    fixture's queries come from other clusters: their filtered neighbours lie in many lists.)"""
    monkeypatch.setattr(filtered_module, "EXACT_SUBSET_MIN", 0)
    monkeypatch.setattr(filtered_module, "EXACT_COST_RATIO", 0.0)
    monkeypatch.setattr(filtered_module, "FILTER_PROBE_MARGIN", probe_margin)
    index = built["IVF64,PQ16x8"]
    chosen = tuning_module.TuneResult(1, 8, 1.0, 1.0, 0.95, K, 200, 0.0, True, N)  # nprobe 1, rerank 8
    checked = tuning_module._check_filter_strategy(index, chosen, data[2], None, K, K)
    assert (checked.nprobe, checked.rerank_factor) == (1, 8)
    assert 0 <= checked.subset_scan_recall <= 1 and 0 <= checked.selector_recall <= 1
    assert checked.subset_scan == (checked.subset_scan_recall >= checked.selector_recall)
    if probe_margin < 1:  # a selector probing one list misses most of a 10% subset's neighbours
        assert checked.subset_scan and checked.selector_recall < 0.5 < checked.subset_scan_recall
    else:  # 40 of 64 lists' 8-bit codes rank them better than the 4-bit codes (0.87 at 12 x k)
        assert not checked.subset_scan and checked.selector_recall >= 0.95


def test_tune_stores_the_filtered_strategy(data, tmp_path: Path, monkeypatch) -> None:
    ids, xb, _ = data
    index = VectorIndex.create(DIM, "IVF64,PQ16x8")
    index.add(ids, xb)
    assert index.tune(k=K, max_queries=64).subset_scan is None  # 10% = 2,000 rows: searched exactly
    assert not index.subset_scan
    monkeypatch.setattr(tuning_module, "_check_filter_strategy",
                        lambda index, chosen, *args: tuning_module.replace(chosen, subset_scan=True))
    index.tune(k=K, max_queries=64)
    index.save(tmp_path)
    assert index.subset_scan and VectorIndex.load(tmp_path).subset_scan


def test_ivf_flat_searches_a_subset_exactly_rather_than_scan_more_codes_with_a_selector(
    built, data, monkeypatch
) -> None:
    """IVF-Flat's selector path is slow per code: a subset smaller than EXACT_VS_SELECTOR x the codes the
    selector would scan goes exact (scores equal to brute force over the float16 copy), PQ does not."""
    monkeypatch.setattr(filtered_module, "EXACT_SUBSET_MIN", 0)
    monkeypatch.setattr(filtered_module, "EXACT_COST_RATIO", 0.0)
    monkeypatch.setattr(filtered_module, "EXACT_COST_RATIO_EXACT_SCORES", 0.0)
    flat_ivf, pq = built["IVF64,Flat"], built["IVF64,PQ16x8"]
    ids, xb, xq = data
    count = N // 5  # 20%: the selector would probe 20 of 64 lists at nprobe 1 (6,250 codes x 4 >= 4,000)
    exact_applies = filtered_module.exact_applies
    assert exact_applies(flat_ivf, K, count, 1, 1) and not exact_applies(pq, K, count, 1, 8)
    assert not exact_applies(flat_ivf, K, N // 2, 1, 1)  # 50%: post-filtered instead
    monkeypatch.setattr(filtered_module, "EXACT_VS_SELECTOR", 0.5)
    assert not exact_applies(flat_ivf, K, count, 1, 1)
    monkeypatch.setattr(filtered_module, "EXACT_VS_SELECTOR", 4.0)
    subset = ids[:count]
    scores, found = flat_ivf.search(xq, K, subset=subset, nprobe=1)
    expected_scores, expected = exact_search(xb[:count].astype(np.float16).astype(np.float32), subset, xq, K)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert recall_at_k(found, expected, K) >= 0.99  # ties of the float16 copy may swap


def test_subset_scan_is_skipped_when_the_selector_probes_every_list(built, data, subset_scan) -> None:
    ids, _, xq = data
    subset = ids[::10]
    built["IVF64,PQ16x8"].search(xq, K, subset=subset)  # nprobe 16: 16 x 4 / 0.1 lists >= 64
    assert not subset_scan


def test_subset_codes_follow_add_remove_save_and_rebuild(data, tmp_path: Path, subset_scan) -> None:
    """The 4-bit codes stay row-aligned with the vectors through remove, add, save/load and rebuilt()."""
    ids, xb, xq = data
    index = VectorIndex.create(DIM, "IVF64,PQ16x8")
    index.add(ids[:15_000], xb[:15_000])
    removed = ids[:15_000:7]
    assert index.remove(removed) == len(removed)
    index.add(ids[15_000:], xb[15_000:])  # grows the code array with the store
    live = ~np.isin(ids, removed)
    subset = np.random.default_rng(3).choice(ids, N // 10, replace=False)  # removed ones included
    truth = _filtered_truth(ids[live], xb[live], xq, subset)
    _, found = index.search(xq, K, subset=subset, nprobe=1)
    assert not np.isin(found, removed).any()
    assert recall_at_k(found, truth, K) >= 0.95
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, mmap=True)
    np.testing.assert_array_equal(loaded.search(xq, K, subset=subset, nprobe=1)[1], found)
    rebuilt = index.rebuilt()
    assert recall_at_k(rebuilt.search(xq, K, subset=subset, nprobe=1)[1], truth, K) >= 0.95
    assert len(subset_scan) == 3
    codes_file = next(tmp_path.glob("subset_codes.*.seg"))
    codes_file.unlink()
    with pytest.raises(VectorIndexError, match=codes_file.name):
        VectorIndex.load(tmp_path)


@pytest.mark.parametrize("name", ["subset_pq.faiss", "subset_codes.*.seg", "vectors_f32.*.seg", "vector_ids.*.seg"])
def test_damaged_files_are_refused_by_name(built, tmp_path: Path, name: str) -> None:
    built["IVF64,PQ16x8"].save(tmp_path)
    path = next(tmp_path.glob(name))
    path.write_bytes(b"garbage")
    for mmap in (False, True):
        with pytest.raises(VectorIndexError, match=f"{path.name}.*--rebuild"):
            VectorIndex.load(tmp_path, mmap=mmap)


@pytest.mark.parametrize("spacing", [1, 3, 100])  # bitmap, bitmap, IDSelectorBatch
def test_selector_selects_exactly_the_members(spacing: int) -> None:
    members = np.arange(5, 2000 * spacing, spacing, dtype=np.int64)
    selector, keep_alive = filtered_module._selector(members)
    kind = "IDSelectorBatch" if spacing == 100 else "IDSelectorBitmap"
    assert type(selector).__name__ == kind
    probe = np.arange(0, 3 * int(members[-1]) + 100)  # ids past the largest member select nothing
    selected = np.array([selector.is_member(int(i)) for i in probe])
    np.testing.assert_array_equal(selected, np.isin(probe, members))
    assert keep_alive is not None


def test_filtered_search_with_empty_or_unknown_subset(built, data) -> None:
    _, _, xq = data
    for subset in (np.array([], dtype=np.int64), np.array([1, 4, 7], dtype=np.int64)):  # ids are 11 + 3i
        scores, found = built["IVF64,Flat"].search(xq[:3], K, subset=subset)
        assert (found == -1).all() and np.isneginf(scores).all()


@pytest.mark.parametrize("force_faiss", [False, True])
def test_filtered_search_subset_smaller_than_k(built, data, monkeypatch, force_faiss: bool) -> None:
    if force_faiss:
        monkeypatch.setattr(filtered_module, "EXACT_SUBSET_MIN", 0)
        monkeypatch.setattr(filtered_module, "EXACT_COST_RATIO", 0.0)
        monkeypatch.setattr(filtered_module, "EXACT_COST_RATIO_EXACT_SCORES", 0.0)
    ids, _, xq = data
    subset = ids[[3, 500, 19_999]]
    scores, found = built["IVF64,Flat"].search(xq[:20], K, subset=subset)
    assert (np.sort(found[:, :3], axis=1) == np.sort(subset)).all()
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert np.isfinite(scores[:, :3]).all()


# ---------------------------------------------------------------- add / remove / lookups


def test_add_remove_round_trip() -> None:
    xb = clustered(500, seed=3)
    ids = np.arange(1000, 1500, dtype=np.int64)
    index = VectorIndex.create(DIM)
    index.add(ids[:300], xb[:300])
    index.add(ids[300:], xb[300:])  # a second batch
    assert index.ntotal == 500
    np.testing.assert_array_equal(index.ids(), ids)
    np.testing.assert_allclose(index.vectors(ids[[0, 499, 42]]), xb[[0, 499, 42]], atol=1e-3)

    removed = ids[::2]
    assert index.remove(np.concatenate([removed, [7, 8, removed[0]]])) == len(
        removed
    )  # unknown/repeated ignored
    assert index.ntotal == 250 and index.remove(removed) == 0
    assert not index.contains(removed).any() and index.contains(ids[1::2]).all()
    _, found = index.search(xb, 20)
    assert not np.isin(found, removed).any()
    _, found = index.search(xb, 5, subset=ids)
    assert not np.isin(found, removed).any()
    np.testing.assert_allclose(index.vectors(ids[1::2]), xb[1::2], atol=1e-3)
    with pytest.raises(UnknownIdError):
        index.vectors(removed[:1])
    with pytest.raises(KeyError):  # UnknownIdError is also a KeyError
        index.vectors([123456])

    index.add(removed[:3], xb[:3])  # a removed id may be added again
    assert index.contains(removed[:3]).all() and index.ntotal == 253


def test_add_rejects_bad_input() -> None:
    xb = clustered(10, seed=4)
    index = VectorIndex.create(DIM)
    index.add(np.arange(10), xb)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(np.array([9, 10]), xb[:2])
    with pytest.raises(ValueError, match="repeats within the batch"):
        index.add(np.array([20, 20]), xb[:2])
    with pytest.raises(ValueError):
        index.add(np.array([30]), xb[:2])  # count mismatch
    with pytest.raises(ValueError):
        index.add(np.array([-5]), xb[:1])  # -1 and below are reserved for padding
    with pytest.raises(ValueError):
        index.add(np.array([1.5]), xb[:1])
    with pytest.raises(VectorIndexError, match="dimension 32 but the index expects 64"):
        index.add(np.array([40]), xb[:1, :32])
    with pytest.raises(VectorIndexError, match="expects 64"):
        index.search(xb[:1, :32], 3)
    with pytest.raises(ValueError):
        index.search(xb[:1], 0)
    with pytest.raises(ValueError):
        index.add(np.array([50]), np.full((1, DIM), np.nan, np.float32))
    assert index.ntotal == 10  # nothing was added by the failed calls


def test_search_pads_when_fewer_than_k() -> None:
    xb = clustered(3, seed=5)
    index = VectorIndex.create(DIM)
    scores, found = index.search(xb, 4)  # empty index
    assert (found == -1).all() and np.isneginf(scores).all()
    index.add(np.array([5, 6, 7]), xb)
    scores, found = index.search(xb, 5)
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert (np.sort(found[:, :3], axis=1) == [5, 6, 7]).all()


def test_ivf_trains_on_first_add_and_refuses_too_few_vectors() -> None:
    index = VectorIndex.create(DIM, "IVF64,Flat")
    with pytest.raises(VectorIndexError, match="use factory 'Flat'"):
        index.add(np.arange(10), clustered(10))
    assert index.ntotal == 0
    xb = clustered(3000, seed=6)
    index.add(np.arange(3000), xb)
    index.add(np.arange(3000, 3010), clustered(10, seed=8))  # later adds reuse the trained quantizer
    assert index.ntotal == 3010 and index.remove(np.arange(0, 3010, 2)) == 1505
    _, found = index.search(xb[1:2], 1, nprobe=64)
    assert found[0, 0] == 1


def test_create_rejects_unknown_factory() -> None:
    with pytest.raises(VectorIndexError, match="expected factory"):
        VectorIndex.create(DIM, "HNSW32")
    with pytest.raises(VectorIndexError):
        VectorIndex.create(DIM, "IVF64,PQ7x8")  # 7 does not divide 64
    with pytest.raises(ValueError):
        VectorIndex.create(0)


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("factory", ["Flat", "IVF64,PQ16x8"])
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(built, data, tmp_path: Path, factory: str, mmap: bool) -> None:
    ids, _, xq = data
    index = built[factory]
    index.save(tmp_path / "new" / "dir")
    loaded = VectorIndex.load(tmp_path / "new" / "dir", expected_dim=DIM, mmap=mmap)
    assert (loaded.factory, loaded.dim, loaded.ntotal, loaded.nprobe, loaded.rerank_factor) == (
        factory, DIM, N, index.nprobe, index.rerank_factor
    )
    for subset in (None, ids[::3]):
        expected, got = index.search(xq, K, subset=subset), loaded.search(xq, K, subset=subset)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(loaded.vectors(ids[:5]), index.vectors(ids[:5]))
    info = json.loads((tmp_path / "new" / "dir" / "index_info.json").read_text())
    assert info == {
        "factory": factory,
        "dim": DIM,
        "metric": METRIC,
        "ntotal": N,
        "nprobe": index.nprobe,
        "rerank_factor": index.rerank_factor,
        "trained_on": None if factory == "Flat" else N,
        "store_dtype": "float16" if factory == "Flat" else "float32",  # PQ re-ranks from a float32 copy
        # 4-bit codes for _scan_subset, off until tune() measures that it beats the selector
        **({"subset_codes": f"PQ{DIM // 4}x4", "subset_scan": False} if "PQ" in factory else {}),
        "faiss_version": faiss.__version__,
        "format_version": 2,
        "files": info["files"],  # what was written (the segment layout: tests/index/test_segments.py)
    }
    subset_files = ["subset_codes.000001.seg", "subset_pq.faiss"] if "PQ" in factory else []
    assert sorted(p.name for p in (tmp_path / "new" / "dir").iterdir()) == [
        "index_info.json",
        *subset_files,
        "vector_ids.000001.seg",
        "vectors.faiss",
        "vectors_f16.000001.seg" if factory == "Flat" else "vectors_f32.000001.seg",
    ]  # no temp files left
    if mmap:
        with pytest.raises(VectorIndexError, match="read-only"):
            loaded.add(np.array([1]), xq[:1])
    else:
        loaded.remove(ids[:10])  # a loaded index is usable
        assert loaded.ntotal == N - 10


def test_load_float16_copy_saved_before_store_dtype(built, data, tmp_path: Path) -> None:
    """Indexes saved before store_dtype and subset codes existed (float16 copy, neither key) still load
    and search the same; their filtered search goes through the selector instead of the subset scan."""
    ids, _, xq = data
    index = built["IVF64,PQ16x8"]
    index.save(tmp_path)
    saved = VectorIndex.load(tmp_path)
    for path in [*tmp_path.glob("*.seg"), tmp_path / "subset_pq.faiss"]:
        path.unlink()
    np.save(tmp_path / "vectors_f16.npy", saved.rows.store.astype(np.float16))  # format 1: one .npy per array
    np.save(tmp_path / "vector_ids.npy", saved.rows.ids)
    info = json.loads((tmp_path / "index_info.json").read_text())
    del info["store_dtype"], info["subset_codes"], info["files"]
    info["format_version"] = 1
    (tmp_path / "index_info.json").write_text(json.dumps(info))
    old = VectorIndex.load(tmp_path, mmap=True)
    assert old.store_dtype == "float16"
    old_scores, old_ids = old.search(xq, K)
    new_scores, new_ids = index.search(xq, K)
    assert (old_ids == new_ids).mean() >= 0.99
    np.testing.assert_allclose(old_scores, new_scores, atol=2e-3)
    subset = ids[::10]
    _, filtered = old.search(xq, K, subset=subset)
    assert ((filtered != -1).sum(axis=1) == K).all() and np.isin(filtered, subset).all()
    old = VectorIndex.load(tmp_path)  # writable: saved again (as format 2), it keeps its float16 copy
    old.save(tmp_path)
    saved = json.loads((tmp_path / "index_info.json").read_text())
    assert saved["store_dtype"] == "float16" and "subset_codes" not in saved and saved["format_version"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index_info.json", "vector_ids.000001.seg", "vectors.faiss", "vectors_f16.000001.seg"]  # no .npy left
    np.testing.assert_array_equal(VectorIndex.load(tmp_path, mmap=True).search(xq, K)[1], old_ids)
    index.save(tmp_path)  # a float32 save over it leaves no stale float16 copy
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index_info.json", "subset_codes.000002.seg", "subset_pq.faiss", "vector_ids.000002.seg", "vectors.faiss",
        "vectors_f32.000002.seg"]
    old.save(tmp_path)  # and a save without subset codes leaves none behind
    assert not list(tmp_path.glob("subset_codes.*")) and not (tmp_path / "subset_pq.faiss").exists()
    info["store_dtype"] = "float8"
    (tmp_path / "index_info.json").write_text(json.dumps(info))
    with pytest.raises(VectorIndexError, match="store_dtype"):
        VectorIndex.load(tmp_path)


def test_load_refuses_missing_or_mismatched_index(tmp_path: Path) -> None:
    with pytest.raises(VectorIndexError, match="no vector index at .*sarsearch index"):
        VectorIndex.load(tmp_path)
    index = VectorIndex.create(DIM)
    index.add(np.arange(5), clustered(5))
    index.save(tmp_path)
    with pytest.raises(VectorIndexError, match="expected dimension 512"):
        VectorIndex.load(tmp_path, expected_dim=512)
    info_path = tmp_path / "index_info.json"
    info = json.loads(info_path.read_text())
    for key, value, message in (("metric", "l2", "expected metric"), ("format_version", 3, "format_version")):
        info_path.write_text(json.dumps({**info, key: value}))
        with pytest.raises(VectorIndexError, match=message):
            VectorIndex.load(tmp_path)
    info_path.write_text(json.dumps(info))
    assert VectorIndex.load(tmp_path).ntotal == 5
    del info["rerank_factor"]  # written before re-ranking existed: the factory's default
    info_path.write_text(json.dumps(info))
    assert VectorIndex.load(tmp_path).rerank_factor == 1


@pytest.mark.parametrize("failing_call", [1, 2])
def test_interrupted_save(tmp_path: Path, monkeypatch, failing_call: int) -> None:
    xb = clustered(60, seed=9)
    old = VectorIndex.create(DIM)
    old.add(np.arange(50), xb[:50])
    old.save(tmp_path)
    new = VectorIndex.create(DIM)
    new.add(np.arange(60), xb)

    real_replace, calls = os.replace, []

    def crashing_replace(source, target):
        calls.append(target)
        if len(calls) == failing_call:
            raise OSError("simulated crash")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        new.save(tmp_path)
    monkeypatch.undo()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temporaries removed
    if failing_call == 1:  # crash before any file was replaced: the previous index is intact
        loaded = VectorIndex.load(tmp_path)
        np.testing.assert_array_equal(loaded.ids(), np.arange(50))
        np.testing.assert_array_equal(loaded.search(xb, 3)[1], old.search(xb, 3)[1])
    else:  # files from two saves: refused, not silently mixed
        with pytest.raises(VectorIndexError, match="save was probably interrupted"):
            VectorIndex.load(tmp_path)


# ---------------------------------------------------------------- helpers, layering, GPU


def test_recall_at_k() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    assert recall_at_k(exact, exact, 4) == 1.0
    assert recall_at_k(np.array([[1, 9, 3, 8], [6, -1, -1, -1]]), exact, 4) == pytest.approx((0.5 + 0.5) / 2)
    assert recall_at_k(np.array([[2, 9, 1, 4], [5, 6, 7, 8]]), exact, 2) == pytest.approx((0.5 + 1.0) / 2)


def test_exact_search_blocks_match_one_matmul(monkeypatch) -> None:
    monkeypatch.setattr(exact_module, "ROW_BLOCK", 7)  # many blocks, ragged last one
    xb, xq = clustered(100, seed=10), clustered(10, seed=11)
    ids = np.arange(100, dtype=np.int64) + 1000
    scores, found = exact_search(xb, ids, xq, 5)
    full = xq @ xb.T
    np.testing.assert_array_equal(found, ids[np.argsort(-full, axis=1)[:, :5]])
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :5], rtol=1e-6)


def test_index_package_imports_only_numpy_faiss_and_stdlib() -> None:
    package = Path(vector_index_module.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith("sarclip_search"), f"{path.name} imports {name}"
                assert name.split(".")[0] not in {"torch", "duckdb", "rasterio", "open_clip", "rich", "typer"}


@pytest.mark.gpu
@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="needs a CUDA GPU and faiss-gpu")
def test_gpu_search_matches_cpu(built, data) -> None:
    xq = data[2]
    index = built["IVF64,Flat"]
    _, on_gpu = index.search(xq, K)
    _, on_cpu = index.approximate_search(xq, K)
    assert recall_at_k(on_gpu, on_cpu, K) >= 0.99


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8x8", "OPQ8,IVF16,PQ8x8"])
def test_mapped_ivf_lists_are_searched_in_place(tmp_path, factory) -> None:
    """mmap=True maps an IVF index's lists zero-copy (ArrayInvertedLists over the file), not as
    OnDiskInvertedLists (half the speed at 1M); results equal an index read into memory."""
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((2000, 32)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    index = VectorIndex.create(32, factory)
    index.add(np.arange(2000, dtype=np.int64) * 5, xb)
    index.save(tmp_path)
    mapped, read = VectorIndex.load(tmp_path, mmap=True), VectorIndex.load(tmp_path)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(mapped._index).invlists)
    assert type(lists).__name__ == "ArrayInvertedLists"
    for a, b in zip(mapped.search(xb[:20], K, nprobe=4), read.search(xb[:20], K, nprobe=4)):
        np.testing.assert_array_equal(a, b)


def test_batches_go_through_blas() -> None:
    """Importing the index package lowers faiss 1.15's distance_compute_blas_threshold (128000) so that query
    batches score IVF centroids (and Flat) with BLAS."""
    assert faiss.cvar.distance_compute_blas_threshold <= 20
