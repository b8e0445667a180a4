"""Near-duplicate clouds (overlapping tiles of one scene) that PQ codes cannot order: `VectorIndex.tuned` re-ranks
deeper, then tries other codes within the memory budget, and either reaches the target or says in one line what
budget does; never a silent low recall. Without near-duplicates it is plain `tune()`."""

from __future__ import annotations

import numpy as np
import pytest

from sarclip_search.index import VectorIndex, exact_search, recall_at_k, resident_bytes
from sarclip_search.index.choose import code_candidates, kept_factory
from sarclip_search.index.tuning import NEAR_DUPLICATE_SCORE, RERANK_FACTORS

DIM = 32
K = 10


def clouds(n: int, size: int, spread: float, seed: int = 0) -> np.ndarray:
    """n unit vectors in n/size clouds: a random centre plus noise `spread` times its scale (near-duplicates)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // size, DIM)).astype(np.float32)
    x = np.repeat(centres, size, axis=0)
    x += spread * rng.standard_normal(x.shape).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[rng.permutation(len(x))]


def built(x: np.ndarray, factory: str) -> VectorIndex:
    index = VectorIndex.create(DIM, factory)
    index.add(np.arange(len(x), dtype=np.int64), x)
    return index


def held_out_recall(index: VectorIndex, x: np.ndarray, seed: int = 99) -> float:
    """recall@10 vs exact search of 200 database vectors other than tune()'s sample (own id dropped)."""
    rows = np.random.default_rng(seed).choice(len(x), 200, replace=False)
    found = index.search(x[rows], K + 1)[1]
    truth = exact_search(x, np.arange(len(x)), x[rows], K + 1)[1]
    drop = lambda ids: np.array([[i for i in row if i != own][:K] for row, own in zip(ids, rows)])
    return recall_at_k(drop(found), drop(truth), K)


def test_without_near_duplicates_tuned_is_tune_and_rebuilds_nothing():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12_000, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = built(x, "IVF64,PQ8x8")
    kept = index.tuned(memory_budget=resident_bytes(len(x), DIM, "IVF64,PQ8x8"))
    assert kept is index and kept.factory == "IVF64,PQ8x8"
    assert kept.tuning["neighbour_score"] < NEAR_DUPLICATE_SCORE
    assert kept.tuning["tried"] is None and kept.tuning["replaces"] is None and kept.tuning["needs"] is None
    assert kept.rerank_factor <= RERANK_FACTORS[-1]


def test_deeper_reranking_reaches_the_target_without_a_rebuild():
    # clouds of 500: the exact top 10 is somewhere in 500 vectors PQ8 scores alike; 32 x k = 320 candidates miss
    x = clouds(20_000, 500, 0.02)
    index = built(x, "IVF64,PQ8x8")
    kept = index.tuned(memory_budget=resident_bytes(len(x), DIM, "IVF64,PQ8x8"))
    tuning = kept.tuning
    assert kept is index and tuning["neighbour_score"] >= NEAR_DUPLICATE_SCORE
    first, deeper = tuning["tried"]
    assert first["rerank_max"] == RERANK_FACTORS[-1] and not first["met_target"]
    assert deeper["met_target"] and kept.rerank_factor > RERANK_FACTORS[-1]
    assert tuning["met_target"] and tuning["needs"] is None
    assert held_out_recall(kept, x) >= 0.94  # the tuning sample's lower bound is 0.95: a fresh sample near it


@pytest.fixture(scope="module")
def big_clouds() -> np.ndarray:
    # clouds of 3000: even 256 x k candidates leave most of a cloud unscored, so PQ8 stays short of 0.95
    return clouds(15_000, 3000, 0.03, seed=3)


@pytest.fixture(scope="module")
def tight(big_clouds) -> tuple[VectorIndex, VectorIndex, int]:
    """(the PQ8 index, what tuned() kept, the budget): a budget PQ16 fits only without subset codes."""
    pq8 = built(big_clouds, "IVF64,PQ8x8")
    budget = resident_bytes(len(big_clouds), DIM, "IVF64,PQ16x8", subset_codes=False)
    return pq8, pq8.tuned(memory_budget=budget), budget


def test_a_tight_budget_gets_a_better_code_or_one_line_naming_the_budget(big_clouds, tight):
    x = big_clouds
    pq8, kept, budget = tight
    assert code_candidates(len(x), DIM, "IVF64,PQ8x8", budget)[0] == ("IVF64,PQ16x8", False)
    tuning = kept.tuning
    factories = [entry["factory"] for entry in tuning["tried"]]
    assert factories[:2] == ["IVF64,PQ8x8", "IVF64,PQ8x8"] and "IVF64,PQ16x8" in factories
    assert all(entry["bytes_per_vector"] * len(x) <= budget * 1.001 for entry in tuning["tried"])
    assert resident_bytes(len(x), DIM, kept.factory, kept.rows.codes is not None) <= budget
    assert tuning["memory_budget"] == budget
    if tuning["met_target"]:  # a code within the budget reached it: used, and it holds on other queries
        assert kept is not pq8 and tuning["replaces"] == "IVF64,PQ8x8" and tuning["needs"] is None
        assert held_out_recall(kept, x) >= 0.94
    else:  # none did: the best kept, and one line names the budget that reaches it
        needs = tuning["needs"]
        assert needs and "\n" not in needs and "--memory-budget" in needs and "IVF64,Flat" in needs
        assert f"{tuning['recall']:.3f}" in needs
    assert tuning["met_target"] or tuning["needs"]  # never silently short


def test_no_code_fits_the_budget_one_line_and_the_budget_it_names_reaches_the_target(big_clouds):
    x = big_clouds
    index = built(x, "IVF64,PQ8x8")
    budget = resident_bytes(len(x), DIM, "IVF64,PQ8x8")  # nothing else fits
    assert code_candidates(len(x), DIM, "IVF64,PQ8x8", budget) == []
    kept = index.tuned(memory_budget=budget)
    assert kept is index and not kept.tuning["met_target"]
    needs = kept.tuning["needs"]
    assert needs.count("\n") == 0 and "re-ranked up to 256 x k" in needs
    megabytes = int(needs.split("--memory-budget ")[1].split("M")[0])
    flat = code_candidates(len(x), DIM, "IVF64,PQ8x8", megabytes * 2**20)
    assert ("IVF64,Flat", False) in flat  # that budget fits exact scores ...
    exact = built(x, "IVF64,Flat")
    exact.tune()  # (measured against its float16 copy, which ties such near-duplicates: it probes deep)
    assert held_out_recall(exact, x) >= 0.95  # ... which reach the target (float32 truth)


def test_the_chosen_code_survives_save_and_load_and_the_indexer_keeps_building_it(tmp_path, tight):
    index, kept, budget = tight
    if kept is index:
        pytest.skip("no code within the budget reached the target on this draw")
    kept.save(tmp_path / "v")
    loaded = VectorIndex.load(tmp_path / "v", mmap=True)
    assert loaded.factory == kept.factory and (loaded.rows.codes is None) == (kept.rows.codes is None)
    assert (loaded.nprobe, loaded.rerank_factor) == (kept.nprobe, kept.rerank_factor)
    assert kept_factory("IVF64,PQ8x8", loaded.factory, loaded.tuning, budget) == kept.factory
    assert kept_factory("IVF64,PQ8x8", loaded.factory, loaded.tuning, 2 * budget) == "IVF64,PQ8x8"  # another budget
    assert kept_factory("IVF128,PQ8x8", loaded.factory, loaded.tuning, budget) == "IVF128,PQ8x8"  # grown: re-chosen
    rebuilt = loaded.rebuilt()  # retraining keeps the choice of no subset codes
    assert rebuilt.factory == kept.factory and (rebuilt.rows.codes is None) == (kept.rows.codes is None)


def test_code_candidates_fit_the_budget_cheapest_first():
    n, d = 1_000_000, 256
    assert code_candidates(n, d, "IVF4096,PQ32x8", 80 * n) == [("IVF4096,PQ64x8", False), ("OPQ32,IVF4096,PQ32x8", True)]
    generous = code_candidates(n, d, "IVF4096,PQ32x8", 2 * 2**30)
    assert generous == [("IVF4096,PQ128x8", True), ("OPQ32,IVF4096,PQ32x8", True), ("IVF4096,Flat", False)]
    assert all(resident_bytes(n, d, key, subset) <= 2 * 2**30 for key, subset in generous)
    assert code_candidates(n, d, "IVF4096,PQ32x8", resident_bytes(n, d, "IVF4096,PQ32x8") - 1) == []
    assert code_candidates(n, d, "IVF4096,Flat", 2 * 2**30) == []
    assert resident_bytes(n, d, "IVF4096,PQ64x8", subset_codes=False) == resident_bytes(n, d, "IVF4096,PQ32x8")
