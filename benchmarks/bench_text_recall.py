"""Text-query recall at 1M: image-only tuning (before) vs query-aware tuning (after), side by side (issue 17).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_text_recall.py                  # 1M, ~10 min the first time
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_text_recall.py --n 200000       # quicker
    ... --mixed-quantizer   # also an index whose IVF quantizer (and PQ) trained on image vectors + text proxies

Vectors: the real-embedding-seeded set of bench_retrieval's 1M latency index (`synthetic_vectors`: the corpus
index's real tile vectors plus n - tiles synthetic ones, half moved around the real tiles, half Gaussian
clusters), in a VectorIndex of the factory `choose_index_key(n, d, 80 B/vector)` picks (IVF4096,PQ32x8 at 1M),
cached under --cache (rebuilt with --rebuild). Ids are row numbers: no catalog is needed.
Queries:
  text   the shipped model's ONNX text embeddings of LATENCY_TEXTS (bench_retrieval) plus EVAL_TEXTS below
         (>= 200), minus any text that is also a tuning proxy: held out from the tuning;
  image  256 new points of the index's distribution (`image_queries`: half around the real tiles, half from the
         index's own Gaussian clusters, new samples).
Tuning proxies: `ingest.text_proxies.proxy_texts` of the corpus catalog's vocabulary plus the synthetic
scenes' column values (what the indexer would pass), encoded by the same ONNX text tower.
Ground truth: exact inner-product top 10 over all n vectors (faiss.knn, float32), timed: the Flat q/s.
Rows: before = `tune()` without text queries (the one setting for both); after = `tune_text` on the proxies
(text setting; the image setting unchanged); the two steps tune_text compares (deeper re-ranking alone,
and with modality-mean centering) at their own best settings; a small sweep. q/s: batch search of all the
queries of a population, best of 3. The JSON record goes to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retrieval import EXPANDED_SHARE, LATENCY_TEXTS, SYNTHETIC_COLUMNS, load_average, synthetic_vectors

from sarclip_search.index import VectorIndex, choose_index_key
from sarclip_search.index.factory import training_rows
from sarclip_search.index.metrics import recall_at_k
from sarclip_search.ingest.text_proxies import catalog_vocabulary, proxy_texts
from sarclip_search.model.encoders import load_onnx_encoder
from sarclip_search.store.layout import IndexStore

from defaults import CORPUS_DB, DATA, RESULTS, RUNS, corpus_index

K = 10
SEED = 7
IMAGE_QUERIES = 256
BYTES_PER_VECTOR = 80
# Held-out text queries besides LATENCY_TEXTS: subjects x settings no template or paraphrase list produces.
_SUBJECTS = ("a tank", "a ship", "an oil slick", "a lake", "a truck", "a bulldozer", "armoured vehicles", "a harbour",
             "a flooded field", "a river", "a city", "a coastline")
_SETTINGS = ("at night", "in winter", "seen from above", "in a radar picture", "close up", "far from anything",
             "next to a road", "in high resolution", "partly hidden", "in the middle of the scene")
EVAL_TEXTS = tuple(f"{subject} {setting}" for subject in _SUBJECTS for setting in _SETTINGS)
SWEEP = [(nprobe, rerank) for nprobe in (1, 4, 16, 64) for rerank in (8, 32, 128)]


def corpus_vectors(db: Path) -> tuple[np.ndarray, dict]:
    generation = IndexStore(db).require_current()
    index = VectorIndex.load(generation.vectors_path, mmap=True)
    return index.vectors(index.ids()), generation.read_info()


def text_sets(db: Path) -> tuple[np.ndarray, list[str], list[str], np.ndarray, np.ndarray]:
    """(the corpus index's real tile vectors, tuning proxy texts, held-out texts, their ONNX embeddings):
    the proxies are `proxy_texts` of the corpus catalog's vocabulary plus SYNTHETIC_COLUMNS' values (what the
    indexer would pass); the held-out texts are LATENCY_TEXTS + EVAL_TEXTS minus any proxy."""
    db = corpus_index(db, DATA)  # built from the corpus when missing, as the other benchmarks do
    real, info = corpus_vectors(db)
    encoder = load_onnx_encoder(db, info["model"]["checkpoint_sha256"])
    if encoder is None:
        sys.exit(f"error: --db {db}: no ONNX encoders; re-run `sarsearch index` on it to export them")
    vocabulary = catalog_vocabulary(IndexStore(db).require_current().catalog_path)
    vocabulary += [value for values in SYNTHETIC_COLUMNS.values() for value in values]
    proxies_text = proxy_texts(vocabulary)
    eval_text = [t for t in dict.fromkeys([*LATENCY_TEXTS, *EVAL_TEXTS]) if t not in set(proxies_text)]
    return real, proxies_text, eval_text, encoder.encode_texts(proxies_text), encoder.encode_texts(eval_text)


def build(n: int, real: np.ndarray, cache: Path, rebuild: bool, factory: str | None = None,
          mix: np.ndarray | None = None) -> tuple[VectorIndex, np.ndarray, dict]:
    """The n-vector index (cached) and its vectors; `mix`: text proxies added to the quantizer's training."""
    xb = np.concatenate([real, synthetic_vectors(real, n - len(real), SEED)[0]])
    directory = cache / (f"{n}" + ("-mixed" if mix is not None else ""))
    factory = factory or choose_index_key(n, xb.shape[1], BYTES_PER_VECTOR * n)
    index, timings = build_index(xb, directory, rebuild, factory, mix)
    return index, xb, timings


def build_index(xb: np.ndarray, directory: Path, rebuild: bool, factory: str,
                mix: np.ndarray | None = None) -> tuple[VectorIndex, dict]:
    """A VectorIndex of `factory` holding xb (ids = rows), trained, added and saved in `directory` (loaded from
    there with mmap=True when it exists, unless `rebuild`); `mix`: text proxies added to the quantizer's training."""
    if directory.is_dir() and not rebuild:
        return VectorIndex.load(directory, mmap=True), {"cached": str(directory)}
    n = len(xb)
    index = VectorIndex.create(xb.shape[1], factory)
    started = time.perf_counter()
    if mix is not None:  # the same training rows, plus the proxies repeated to ~10% of them
        rows = training_rows(n, index.nlist)
        sample = xb if rows is None else xb[rows]
        repeats = max(1, round(0.1 * len(sample) / len(mix)))
        index.train(np.concatenate([sample, np.repeat(mix, repeats, axis=0)]), total=n)
    index.add(np.arange(n, dtype=np.int64), xb)
    timings = {"train_add_s": round(time.perf_counter() - started, 1)}
    index.save(directory)
    return VectorIndex.load(directory, mmap=True), timings


def image_queries(real: np.ndarray, n: int) -> np.ndarray:
    """IMAGE_QUERIES new points of the index's distribution: half around the real tiles, half from the index's
    own Gaussian clusters (`synthetic_vectors`' centres; new samples, another seed)."""
    from bench_index import clustered, expanded, median_neighbour_distance

    synthetic = n - len(real)
    clusters = max(1, (synthetic - round(synthetic * EXPANDED_SHARE)) // 100)
    noise = 0.5 * median_neighbour_distance(real) / np.sqrt(real.shape[1])
    near = IMAGE_QUERIES // 2
    return np.concatenate([expanded(real, near, noise, SEED + 100),
                           clustered(IMAGE_QUERIES - near, real.shape[1], clusters, 1.0, seed=SEED + 101,
                                     centers_seed=SEED + 2)])


def best_qps(run, xq: np.ndarray, repeats: int = 3) -> tuple[np.ndarray, float]:
    best, ids = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        ids = run(xq)
        best = min(best, time.perf_counter() - started)
    return ids, len(xq) / best


def measure(index: VectorIndex, xq: np.ndarray, truth: np.ndarray, nprobe: int, rerank: int,
            offset: np.ndarray | None = None) -> dict:
    """recall@10 and q/s of a batch at (nprobe, rerank), the probe centered by `offset` when given."""
    if offset is None:
        def run(q):
            return index.search(q, K, nprobe=nprobe, rerank_factor=rerank, population="image")[1]
    else:
        def run(q):
            candidates = index.approximate_search(np.ascontiguousarray(q - offset), K * rerank, nprobe=nprobe)[1]
            return index.rerank(q, candidates, K)[1]
    ids, qps = best_qps(run, xq)
    return {"nprobe": nprobe, "rerank": rerank, "centered": offset is not None,
            "recall": round(recall_at_k(ids, truth, K), 4), "qps": round(qps, 1)}


def routed(index: VectorIndex, xq: np.ndarray):
    """(run, text mask): `index.search` at the tuned settings, each query of xq routed as the engine's would be
    (`population` of that one query: the mask), the two groups searched as two batches."""
    text = np.array([index.population(q) == "text" for q in xq])

    def run(q):
        ids = np.empty((len(q), K), np.int64)
        for mask, population in ((text, "text"), (~text, "image")):
            if mask.any():
                ids[mask] = index.search(q[mask], K, population=population)[1]
        return ids

    return run, text


def measure_auto(index: VectorIndex, xq: np.ndarray, truth: np.ndarray) -> dict:
    """recall@10 and q/s of `index.search` at the tuned settings, each query routed as the engine's would be."""
    run, text = routed(index, xq)
    ids, qps = best_qps(run, xq)
    major = bool(text.mean() >= 0.5)
    return {"nprobe": index.text_nprobe if major else index.nprobe,
            "rerank": index.text_rerank_factor if major else index.rerank_factor,
            "centered": bool(major and (index.tuning or {}).get("text", {}).get("centered")),
            "routed_text": round(float(text.mean()), 4),
            "recall": round(recall_at_k(ids, truth, K), 4), "qps": round(qps, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--db", default=str(CORPUS_DB), help="the corpus index (real vectors, vocabulary, encoders)")
    parser.add_argument("--cache", default=str(RUNS / "bench-text-recall"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--mixed-quantizer", action="store_true")
    parser.add_argument("--factory", default=None, help="default: choose_index_key(n, d, 80 B/vector)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or RESULTS / f"text_recall_{args.n}.json")
    result: dict = {"n": args.n, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cpus": os.cpu_count(),
                    "load_average_start": load_average(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def save() -> None:
        out.write_text(json.dumps(result, indent=1))

    real, proxies_text, eval_text, proxies, texts = text_sets(Path(args.db))
    result["queries"] = {"tuning_proxies": len(proxies_text), "text": len(eval_text), "image": IMAGE_QUERIES}

    index, xb, build_info = build(args.n, real, Path(args.cache), args.rebuild, args.factory)
    result["index"] = {"factory": index.factory, "ntotal": index.ntotal, **build_info}
    images = image_queries(real, args.n)
    started = time.perf_counter()
    text_truth = faiss.knn(texts, xb, K, faiss.METRIC_INNER_PRODUCT)[1]
    image_truth = faiss.knn(images, xb, K, faiss.METRIC_INNER_PRODUCT)[1]
    flat_qps = (len(texts) + len(images)) / (time.perf_counter() - started)
    result["flat_qps"] = round(flat_qps, 1)
    print(f"{index.factory}, n={index.ntotal}: Flat (exact) {flat_qps:.1f} q/s; {len(eval_text)} texts, "
          f"{len(proxies_text)} proxies; load {load_average()}", flush=True)

    started = time.perf_counter()
    before = index.tune()  # image vectors only: the one setting, as before
    result["tune_image_s"] = round(time.perf_counter() - started, 1)
    rows = {"before": {"text": measure(index, texts, text_truth, before.nprobe, before.rerank_factor),
                       "image": measure(index, images, image_truth, before.nprobe, before.rerank_factor)}}
    result["rows"] = rows
    save()
    started = time.perf_counter()
    text = index.tune_text(proxies)  # the text setting; the image one kept
    result["tune_text_s"] = round(time.perf_counter() - started, 1)
    assert text is not None
    result["text_tuning"] = {key: value for key, value in text.as_info().items() if key not in ("direction", "offset")}
    plain, centered = text.plain, text.with_offset
    rows["after: deeper re-rank"] = {"text": measure(index, texts, text_truth, plain.nprobe, plain.rerank_factor)}
    if centered is not None:
        rows["after: centered"] = {"text": measure(index, texts, text_truth, centered.nprobe,
                                                   centered.rerank_factor, text.offset)}
    # after: VectorIndex.search as the engine calls it, each query routed by the side of the gap it is on
    rows["after"] = {"text": measure_auto(index, texts, text_truth), "image": measure_auto(index, images, image_truth)}
    direction, threshold = text.direction, text.threshold
    result["routing"] = {"texts_routed_text": round(float(np.mean(texts @ direction > threshold)), 4),
                         "images_routed_image": round(float(np.mean(images @ direction <= threshold)), 4)}
    save()
    result["sweep"] = [measure(index, texts, text_truth, nprobe, rerank, offset)
                       for offset in (None, text.offset) for nprobe, rerank in SWEEP]
    save()
    if args.mixed_quantizer:
        mixed, _, mixed_build = build(args.n, real, Path(args.cache), args.rebuild, index.factory, mix=proxies)
        mixed.tune()
        mixed_text = mixed.tune_text(proxies)
        assert mixed_text is not None
        result["mixed_quantizer"] = {
            "build": mixed_build, "text_tuning": {key: value for key, value in mixed_text.as_info().items()
                                                  if key not in ("direction", "offset")},
            "text": measure(mixed, texts, text_truth, mixed_text.result.nprobe, mixed_text.result.rerank_factor,
                            mixed_text.offset if mixed_text.centered else None),
            "image": measure(mixed, images, image_truth, mixed.nprobe, mixed.rerank_factor)}
    result["load_average_end"] = load_average()
    save()
    print(f"{'':24} {'text recall@10':>14} {'text q/s':>9} {'x Flat':>7} {'image recall@10':>15} {'image q/s':>9} "
          f"{'x Flat':>7}  settings (text | image)")
    for name, row in {**rows, **({"mixed quantizer": result["mixed_quantizer"]} if args.mixed_quantizer else {})}.items():
        t, i = row["text"], row.get("image")
        image = (f"{i['recall']:>15.3f} {i['qps']:>9.0f} {i['qps'] / flat_qps:>7.1f}" if i else f"{'':>15} {'':>9} {'':>7}")
        print(f"{name:24} {t['recall']:>14.3f} {t['qps']:>9.0f} {t['qps'] / flat_qps:>7.1f} {image}  "
              f"nprobe {t['nprobe']} rerank {t['rerank']}{' centered' if t['centered'] else ''}"
              + (f" | nprobe {i['nprobe']} rerank {i['rerank']}" if i else ""))
    print("sweep (texts): " + "  ".join(f"{s['nprobe']}/{s['rerank']}{'c' if s['centered'] else ''}: {s['recall']:.3f} "
                                        f"{s['qps']:.0f}q/s" for s in result["sweep"]))
    print(f"routing: {result['routing']}; tune image {result['tune_image_s']} s, text {result['tune_text_s']} s; "
          f"load {result['load_average_start']} -> {result['load_average_end']}; written {out}")


if __name__ == "__main__":
    main()
