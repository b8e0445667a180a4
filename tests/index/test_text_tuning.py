"""tune() with text queries: a second setting for queries across the modality gap (issue 17, query-aware tuning).

Synthetic data with a simulated gap: image vectors are noisy copies of cluster centres; text vectors are
cluster centres plus one common offset plus noise. Held-out queries of both kinds (not the ones tuned on)
check that each setting reaches the target where the other falls short.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from sarclip_search.index import VectorIndex
from sarclip_search.index.exact import exact_topk
from sarclip_search.index.metrics import recall_at_k
from sarclip_search.index.tuning import tune_text
from sarclip_search.ingest.text_proxies import PARAPHRASES, proxy_texts
from sarclip_search.query.engine import Engine

D, CLUSTERS, N = 32, 300, 30_000
TARGET = 0.95


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> SimpleNamespace:
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(CLUSTERS, D)))
    offset = _unit(rng.normal(size=(1, D)))[0] * 1.2  # the modality gap: one direction shared by all texts

    def images(count: int) -> np.ndarray:
        return _unit(centres[rng.integers(0, CLUSTERS, count)] + 0.06 * rng.normal(size=(count, D)))

    def texts(count: int) -> np.ndarray:
        return _unit(centres[rng.integers(0, CLUSTERS, count)] + offset + 0.1 * rng.normal(size=(count, D)))

    return SimpleNamespace(xb=images(N), ids=np.arange(N, dtype=np.int64) + 1000, tune_texts=texts(200),
                           held_images=images(200), held_texts=texts(200))


@pytest.fixture(scope="module")
def tuned(data: SimpleNamespace) -> VectorIndex:
    index = VectorIndex.create(D, "IVF64,PQ8x8")
    index.add(data.ids, data.xb)
    index.tune(text_queries=data.tune_texts, target_recall=TARGET)
    return index


def _recall(index: VectorIndex, data: SimpleNamespace, queries: np.ndarray, **options) -> float:
    truth = exact_topk(queries, [(data.xb, data.ids)], 10)[1]
    return recall_at_k(index.search(queries, 10, **options)[1], truth, 10)


def test_both_populations_reach_the_target_with_their_own_setting(tuned: VectorIndex, data: SimpleNamespace) -> None:
    text = tuned.tuning["text"]
    assert tuned.tuning["met_target"] and text["met_target"]
    # texts need more lists than image vectors, whose neighbours share their list
    assert (tuned.text_nprobe, tuned.text_rerank_factor) != (tuned.nprobe, tuned.rerank_factor)
    assert tuned.text_nprobe * tuned.text_rerank_factor > tuned.nprobe * tuned.rerank_factor
    # held-out queries: each population at its own setting reaches the target (less the estimate's margin) ...
    assert _recall(tuned, data, data.held_images) >= TARGET - 0.02
    assert _recall(tuned, data, data.held_texts) >= TARGET - 0.02
    # ... and the image setting alone would leave texts short: the text setting is needed
    assert _recall(tuned, data, data.held_texts, population="image") < TARGET - 0.02


def test_queries_are_routed_by_the_side_of_the_gap(tuned: VectorIndex, data: SimpleNamespace) -> None:
    assert tuned.tuning["text"]["routed"] > 0.9
    routed_text = np.mean([tuned.population(q) == "text" for q in data.held_texts])
    routed_image = np.mean([tuned.population(q) == "image" for q in data.held_images])
    assert routed_text > 0.9 and routed_image > 0.9
    # a blend dominated by the text is a text query; one dominated by the image is not
    text, image = data.held_texts[0], data.held_images[0]
    assert tuned.population(_unit((0.9 * text + 0.1 * image)[None])) == "text"
    assert tuned.population(_unit((0.1 * text + 0.9 * image)[None])) == "image"


def test_explicit_population_and_overrides(tuned: VectorIndex, data: SimpleNamespace) -> None:
    query = data.held_texts[:5]
    auto = tuned.search(query, 10)
    forced = tuned.search(query, 10, population="text")
    assert np.array_equal(auto[1], forced[1])
    explicit = tuned.search(query, 10, nprobe=tuned.text_nprobe, rerank_factor=tuned.text_rerank_factor,
                            population="image")
    if not tuned.tuning["text"]["centered"]:  # the same setting given by hand gives the same answer
        assert np.array_equal(auto[1], explicit[1])
    with pytest.raises(ValueError, match="population"):
        tuned.search(query, 10, population="audio")


def test_saved_tuning_keeps_both_settings(tuned: VectorIndex, data: SimpleNamespace, tmp_path) -> None:
    tuned.save(tmp_path / "v")
    info = json.loads((tmp_path / "v" / "index_info.json").read_text())
    assert info["text_nprobe"] == tuned.text_nprobe and info["text_rerank_factor"] == tuned.text_rerank_factor
    for mmap in (False, True):
        loaded = VectorIndex.load(tmp_path / "v", mmap=mmap)
        assert (loaded.nprobe, loaded.rerank_factor) == (tuned.nprobe, tuned.rerank_factor)
        assert (loaded.text_nprobe, loaded.text_rerank_factor) == (tuned.text_nprobe, tuned.text_rerank_factor)
        assert loaded.population(data.held_texts[:1]) == "text"
        assert np.array_equal(loaded.search(data.held_texts[:20], 10)[1], tuned.search(data.held_texts[:20], 10)[1])


def test_tuning_saved_without_a_text_setting_still_loads(tuned: VectorIndex, data: SimpleNamespace, tmp_path) -> None:
    """An index tuned before text tuning existed: no `tuning.text`, no text_* keys. Every query uses its one setting."""
    tuned.save(tmp_path / "v")
    path = tmp_path / "v" / "index_info.json"
    info = json.loads(path.read_text())
    del info["tuning"]["text"], info["text_nprobe"], info["text_rerank_factor"]
    path.write_text(json.dumps(info))
    loaded = VectorIndex.load(tmp_path / "v")
    assert loaded.text_nprobe is None and loaded.population(data.held_texts) == "image"
    image_setting = tuned.search(data.held_texts[:20], 10, population="image")[1]
    assert np.array_equal(loaded.search(data.held_texts[:20], 10)[1], image_setting)
    # re-tuned without text queries, the text setting is cleared too
    loaded.tune()
    assert loaded.text_nprobe is None and "text" not in loaded.tuning


def test_engine_searches_a_text_query_with_the_text_setting(tuned: VectorIndex, data: SimpleNamespace) -> None:
    class Rows:  # the catalog's part the engine's search uses
        def fetch_tiles(self, ids):
            return [{"tile_id": i, "scene_id": 1, "path": "x.tif", "col_off": 0, "row_off": 0, "width": 8,
                     "height": 8} for i in ids]

    engine = Engine.__new__(Engine)  # just what a search touches: the vectors and the catalog's rows
    engine.vectors, engine.catalog, engine.info = tuned, Rows(), {}
    engine.embed_text = lambda text: data.held_texts[0]  # type: ignore[method-assign]
    hits = engine.query("a ship at sea", k=10)
    assert engine.last_population == "text"
    assert [h.id for h in hits] == tuned.search(data.held_texts[0], 10, population="text")[1][0].tolist()
    engine.search_vector(data.held_images[0], k=10)
    assert engine.last_population == "image"


def test_flat_and_no_texts_have_no_text_setting(data: SimpleNamespace) -> None:
    flat = VectorIndex.create(D, "Flat")
    flat.add(data.ids[:1000], data.xb[:1000])
    flat.tune(text_queries=data.tune_texts)
    assert flat.text_nprobe is None and tune_text(flat, data.tune_texts) is None


def test_proxy_texts_come_from_the_vocabulary() -> None:
    texts = proxy_texts(["T72", "oil_spill", "open sea; mask fractions: oil spill 0.001", "HRSID"])
    assert set(PARAPHRASES) <= set(texts)
    templated = [t for t in texts if t not in PARAPHRASES]
    assert any("oil spill" in t for t in templated) and any("open sea" in t for t in templated)
    assert not any("mask fractions" in t or "_" in t for t in templated)
    assert len(texts) == len(set(texts))
    assert len(proxy_texts([f"label{i}" for i in range(500)])) == 256


def test_near_duplicate_vectors_that_miss_the_target_say_what_budget_would_reach_it(monkeypatch) -> None:
    """Overlapping tiles of one scene: clouds of near-duplicates whose order PQ codes cannot resolve. tune() says
    so in one line with the IVF-Flat budget, never a silent low recall; well-separated vectors get no such line."""
    from sarclip_search.index import tuning

    monkeypatch.setattr(tuning, "RERANK_FACTORS", (1, 2))  # shallow re-ranking: the cloud stays unordered
    monkeypatch.setattr(tuning, "NEAR_DUPLICATE_RERANK_FACTORS", (1, 2, 4))  # ... even the deeper pass
    rng = np.random.default_rng(3)
    centres = _unit(rng.normal(size=(20, D)))
    clouds = _unit(centres[rng.integers(0, 20, 8000)] + 0.02 * rng.normal(size=(8000, D)))  # cos ~0.993
    index = VectorIndex.create(D, "IVF16,PQ4x8")
    index.add(np.arange(8000), clouds)
    result = index.tune(max_queries=64)
    assert not result.met_target and result.neighbour_score > tuning.NEAR_DUPLICATE_SCORE
    assert "near-duplicates" in result.needs and "--index-factory IVF16,Flat" in result.needs
    assert index.tuning["needs"] == result.needs
    megabytes = int(result.needs.split("--memory-budget ")[1].split("M")[0])
    assert megabytes * 2**20 >= tuning.resident_bytes(8000, D, "IVF16,Flat")
    # exact codes of the same vectors reach the target: the line's advice holds
    flat = VectorIndex.create(D, "IVF16,Flat")
    flat.add(np.arange(8000), clouds)
    assert flat.tune(max_queries=64).met_target


def test_missing_the_target_without_near_duplicates_names_no_budget(data: SimpleNamespace, monkeypatch) -> None:
    from sarclip_search.index import tuning

    monkeypatch.setattr(tuning, "RERANK_FACTORS", (1,))
    index = VectorIndex.create(D, "IVF64,PQ4x8")
    index.add(data.ids, data.xb)
    result = index.tune(target_recall=0.999, max_queries=64)
    assert not result.met_target and result.needs is None and result.neighbour_score < tuning.NEAR_DUPLICATE_SCORE
