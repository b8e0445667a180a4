"""Text and image queries at tune()'s settings vs exact Flat and hnswlib, per memory budget, in one run (issue 17, must-show 1).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_query_recall.py --data real                # 1M, both budgets
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_query_recall.py --data synthetic
    ... --n 100000 --memory-budget default,80/vector --hnsw-ef 16,32,64,128,256,512

Vectors (--data):
  real       the real-embedding-seeded set of bench_text_recall (the corpus index's real tile vectors plus
             n - tiles `synthetic_vectors`: half moved around the real tiles, half Gaussian clusters);
  synthetic  bench_index's synthetic set: `clustered(n, 256, n/100 clusters, noise 1.0, seed 0)`.
Queries, the same batches for every row:
  text   the shipped model's ONNX text embeddings of bench_text_recall's held-out texts (LATENCY_TEXTS +
         EVAL_TEXTS, none of them a tuning proxy: >= 200);
  image  256 new points of the index's own distribution (real: `image_queries`; synthetic: new samples of
         the same clusters, seed 1, as bench_index's queries).
Per --memory-budget (comma-separated: `default` = the product's 2 GiB, `N/vector` = N bytes x n, or a size
like 989M): the factory `choose_index_key(n, d, budget)` picks, built (train + add) and then `tune()`d with the
text proxies as `text_queries`, exactly as the indexer does; cached under --cache/<data>-<n>-<factory> unless
--rebuild. Rows:
  Flat       faiss IndexFlatIP over the same vectors (the ground truth), batches through BLAS (the index
             package lowers faiss 1.15's distance_compute_blas_threshold to 20 on import; the benchmark
             did so itself from 2026-12-07 22:40): batch q/s per population, best of
             --repeats at the start, after each budget's rows and at the end (the best round counts), and
             single-query p50 on 20 queries; the median exact score of each population's 1st, 10th and
             100th neighbour;
  ours       `VectorIndex.search` at tune()'s settings, each query routed as the engine routes it
             (`population` of that query; the text and image groups searched as two batches): recall@10 vs
             exact, batch q/s best of --repeats, x Flat (batch q/s over Flat's batch q/s on the same batch),
             single-query p50 (one query per call, routed by `search` itself, --single queries);
             also "text setting" (every text forced onto the text setting) and a small sweep;
  hnswlib    M, ef_construction (--hnsw-m, --hnsw-ef-construction), inner product, 2 threads, an ef sweep on
             both populations; build seconds; the smallest ef reaching 0.95 per population.
OMP_WAIT_POLICY=PASSIVE is set before faiss loads; `uptime` is printed at the start and the end. The JSON
record (rewritten after each stage) goes to --out (default results/query_recall_<data>_<n>.json).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import clustered, cpu_model, git_commit
from bench_text_recall import SEED, K, best_qps, build_index, image_queries, routed, text_sets

from sarclip_search.index import VectorIndex, choose_index_key
from sarclip_search.index.metrics import recall_at_k

from defaults import CORPUS_DB, RESULTS, RUNS, write_result

TARGET = 0.95
SYNTHETIC_SEED = 0  # bench_index's default --seed: the same synthetic set
FLAT_SINGLE = 20  # single queries timed on Flat (~30-100 ms each at 1M)
PQ_SWEEP = [(nprobe, rerank) for nprobe in (8, 16, 32, 64, 128) for rerank in (16, 64, 128)]
FLAT_SWEEP = [(nprobe, 1) for nprobe in (4, 8, 16, 32, 64, 128, 256)]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def parse_budget(text: str, n: int) -> int | None:
    """`default` -> None (the product default), `N/vector` -> N * n bytes, else a size like 2G or 989M."""
    text = text.strip()
    if text == "default":
        return None
    if text.endswith("/vector"):
        return int(float(text.removesuffix("/vector").removesuffix("B")) * n)
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    value = text.upper().removesuffix("B").removesuffix("I")
    return int(float(value[:-1]) * units[value[-1]]) if value[-1] in units else int(value)


def single_p50(run, xq: np.ndarray, count: int) -> float:
    """Median ms of `run` on one query at a time (the first `count` queries)."""
    times = []
    for query in xq[:count]:
        started = time.perf_counter()
        run(query[None, :])
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 3)


def vectors(data: str, n: int, real: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """(database vectors, image queries, description) for --data."""
    if data == "real":
        from bench_retrieval import synthetic_vectors

        xb, about = synthetic_vectors(real, n - len(real), SEED)
        return np.concatenate([real, xb]), image_queries(real, n), {"real_tiles": len(real), **about}
    clusters = max(1, n // 100)
    xb = clustered(n, real.shape[1], clusters, 1.0, seed=SYNTHETIC_SEED, centers_seed=SYNTHETIC_SEED)
    xq = clustered(256, real.shape[1], clusters, 1.0, seed=SYNTHETIC_SEED + 1, centers_seed=SYNTHETIC_SEED)
    return xb, xq, {"gaussian_clusters": clusters, "noise": 1.0, "seed": SYNTHETIC_SEED}


class Flat:
    """faiss IndexFlatIP over the database: the ground truth, and the baseline timed on the same batches.
    `time` may run more than once (at the start and again after the other rows): the best pass counts, so
    a burst of load on the machine does not inflate the ratios."""

    def __init__(self, xb: np.ndarray) -> None:
        self.index = faiss.IndexFlatIP(xb.shape[1])
        self.index.add(xb)
        self.rows: dict = {}
        self.contrast: dict = {}  # median exact score of the 1st, 10th and 100th neighbour per population

    def time(self, populations: dict, repeats: int) -> dict:
        """Truth per population; best batch q/s and single-query p50 so far."""
        truth = {}
        for name, xq in populations.items():
            ids, qps = best_qps(lambda q: self.index.search(q, K)[1], xq, repeats)
            truth[name] = ids
            if name not in self.contrast:  # how far apart the 1st, 10th and 100th neighbours score
                scores = self.index.search(xq, 100)[0]
                self.contrast[name] = {f"score_{rank}": round(float(np.median(scores[:, rank - 1])), 4)
                                       for rank in (1, 10, 100)}
            p50 = single_p50(lambda q: self.index.search(q, K), xq, FLAT_SINGLE)
            row = self.rows.setdefault(name, {"qps": 0.0, "single_p50_ms": float("inf"), "passes": []})
            row["passes"].append({"qps": round(qps, 1), "single_p50_ms": p50, "load": os.getloadavg()[0]})
            row["qps"], row["single_p50_ms"] = max(row["qps"], round(qps, 1)), min(row["single_p50_ms"], p50)
        return truth


def ratios(result: dict) -> None:
    """x Flat of every row from Flat's best figures of the whole run (batch q/s over Flat's batch q/s on the
    same population; single: Flat's single-query p50 over ours)."""
    flat = result["flat"]
    rows = [row for budget in result["budgets"] for key, row in budget["rows"].items() if key != "sweep"]
    rows += [row for budget in result["budgets"] for row in budget["rows"]["sweep"]]
    rows += (result.get("hnswlib") or {}).get("sweep", [])
    for row in rows:
        row["x_flat"] = round(row["qps"] / flat[row["population"]]["qps"], 1)
        if "single_p50_ms" in row:
            row["single_x_flat"] = round(flat[row["population"]]["single_p50_ms"] / row["single_p50_ms"], 1)


def scanned(index: VectorIndex, xq: np.ndarray, text: np.ndarray) -> dict:
    """Work per query at the routed settings: stored vectors scanned in the probed lists (their real sizes)
    and candidates re-scored exactly; Flat scans all n with a matrix multiply (BLAS) over the batch."""
    ivf = faiss.extract_index_ivf(index.encoders()[0])
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    counts, reranked = [], []
    for mask, nprobe, rerank in ((text, index.text_nprobe, index.text_rerank_factor),
                                 (~text, index.nprobe, index.rerank_factor)):
        if mask.any():
            lists = ivf.quantizer.search(np.ascontiguousarray(xq[mask]), nprobe or index.nprobe)[1]
            counts += list(sizes[lists].sum(axis=1))
            reranked += [K * (rerank or index.rerank_factor) if (rerank or index.rerank_factor) > 1 else 0] * int(mask.sum())
    return {"scanned_per_query": round(float(np.mean(counts))), "reranked_per_query": round(float(np.mean(reranked))),
            "scanned_share": round(float(np.mean(counts)) / index.ntotal, 5)}


def bench_ours(index: VectorIndex, populations: dict, truth: dict, args) -> dict:
    """tune()'s settings on both populations (routed), every text on the text setting, a sweep."""
    rows: dict = {}
    for name, xq in populations.items():
        run, text = routed(index, xq)
        ids, qps = best_qps(run, xq, args.repeats)
        rows[name] = {"population": name, "recall": round(recall_at_k(ids, truth[name], K), 4), "qps": round(qps, 1),
                      "routed_text": round(float(text.mean()), 4), **scanned(index, xq, text),
                      "single_p50_ms": single_p50(lambda q: index.search(q, K), xq, args.single)}
    ids, qps = best_qps(lambda q: index.search(q, K, population="text")[1], populations["text"], args.repeats)
    rows["text_setting"] = {"population": "text", "recall": round(recall_at_k(ids, truth["text"], K), 4),
                            "qps": round(qps, 1)}
    sweep = []
    for nprobe, rerank in (PQ_SWEEP if "PQ" in index.factory else FLAT_SWEEP):
        if nprobe > index.nlist:
            continue
        for name, xq in populations.items():
            ids, qps = best_qps(lambda q, nprobe=nprobe, rerank=rerank: index.search(
                q, K, nprobe=nprobe, rerank_factor=rerank, population="image")[1], xq, args.repeats)
            sweep.append({"population": name, "nprobe": nprobe, "rerank": rerank,
                          "recall": round(recall_at_k(ids, truth[name], K), 4), "qps": round(qps, 1)})
    rows["sweep"] = sweep
    return rows


def bench_hnswlib(xb: np.ndarray, populations: dict, truth: dict, args) -> dict:
    """hnswlib built once, an ef sweep on both populations (until both reach TARGET); {} without hnswlib."""
    try:
        import hnswlib
    except ImportError:
        print("hnswlib not installed (pip install -e '.[bench]'): skipped", flush=True)
        return {}
    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=xb.shape[1])
    index.init_index(max_elements=len(xb), ef_construction=args.hnsw_ef_construction, M=args.hnsw_m, random_seed=1)
    index.set_num_threads(os.cpu_count() or 1)
    index.add_items(xb, np.arange(len(xb)))
    result: dict = {"M": args.hnsw_m, "ef_construction": args.hnsw_ef_construction,
                    "build_s": round(time.perf_counter() - started, 1), "sweep": [], "at_target": {}}
    print(f"hnswlib built in {result['build_s']} s; {uptime()}", flush=True)
    for ef in (int(v) for v in args.hnsw_ef.split(",")):
        index.set_ef(max(ef, K))
        for name, xq in populations.items():
            ids, qps = best_qps(lambda q: index.knn_query(q, K)[0].astype(np.int64), xq, args.repeats)
            point = {"population": name, "ef": ef, "recall": round(recall_at_k(ids, truth[name], K), 4),
                     "qps": round(qps, 1)}
            result["sweep"].append(point)
            if name not in result["at_target"] and point["recall"] >= TARGET:
                point["single_p50_ms"] = single_p50(lambda q: index.knn_query(q, K), xq, args.single)
                result["at_target"][name] = point
        print(f"hnswlib ef={ef}: " + ", ".join(f"{p['population']} {p['recall']:.3f} {p['qps']:.0f} q/s"
                                               for p in result["sweep"][-len(populations):]), flush=True)
        if len(result["at_target"]) == len(populations):
            break
    return result


def print_table(result: dict) -> None:
    flat = result["flat"]

    def cells(row: dict | None, recall_width: int) -> str:
        if row is None:
            return f"{'':>{recall_width}} {'':>8} {'':>6} {'':>7} {'':>6}"
        single = (f"{row['single_p50_ms']:>7.2f} {row['single_x_flat']:>6.1f}" if "single_p50_ms" in row
                  else f"{'':>7} {'':>6}")
        return f"{row['recall']:>{recall_width}.3f} {row['qps']:>8.0f} {row['x_flat']:>6.1f} {single}"

    print(f"\n{result['data']} set, n={result['n']:,}, {result['queries']['text']} texts / "
          f"{result['queries']['image']} image queries, commit {result['commit'][:10]}, "
          f"OMP_WAIT_POLICY={result['omp_wait_policy']}, load {result['uptime_start'].split('average:')[-1].strip()}"
          f" -> {result.get('uptime_end', '').split('average:')[-1].strip()}")
    print(f"{'':34} {'text R@10':>9} {'q/s':>8} {'xFlat':>6} {'1-q ms':>7} {'xFlat':>6}   {'image R@10':>10} "
          f"{'q/s':>8} {'xFlat':>6} {'1-q ms':>7} {'xFlat':>6}  settings (text | image)")
    flat_rows = {name: {"recall": 1.0, "x_flat": 1.0, "single_x_flat": 1.0, **row} for name, row in flat.items()}
    print(f"{'Flat (exact)':34} {cells(flat_rows['text'], 9)}   {cells(flat_rows['image'], 10)}")
    for budget in result["budgets"]:
        rows, tuning = budget["rows"], budget["tuning"]
        t, i = rows["text"], rows["image"]
        print(f"{budget['factory'] + ' (' + budget['budget'] + ')':34} {cells(t, 9)}   {cells(i, 10)}  "
              f"nprobe {tuning['text_nprobe']} rerank {tuning['text_rerank']} | nprobe {tuning['nprobe']} "
              f"rerank {tuning['rerank']}; routed text: {100 * t['routed_text']:.0f}% of texts, "
              f"{100 * i['routed_text']:.0f}% of images")
        print(f"{'  every text on the text setting':34} {cells(rows['text_setting'], 9)}")
    print("median exact score of the 1st / 10th / 100th neighbour: " + "; ".join(
        f"{name} {row['score_1']:.3f} / {row['score_10']:.3f} / {row['score_100']:.3f}"
        for name, row in result["neighbour_scores"].items()))
    hnsw = result.get("hnswlib") or {}
    if hnsw:
        at = hnsw["at_target"]
        print(f"{'hnswlib M=' + str(hnsw['M']) + ' efC=' + str(hnsw['ef_construction']) + ' (ef: >= 0.95)':34} "
              f"{cells(at.get('text'), 9)}   {cells(at.get('image'), 10)}  ef {at.get('text', {}).get('ef', '-')} | "
              f"ef {at.get('image', {}).get('ef', '-')}; build {hnsw['build_s']} s")
        print("hnswlib sweep (ef population recall/xFlat): " + "  ".join(
            f"{p['ef']} {p['population'][0]} {p['recall']:.3f}/{p['x_flat']:.0f}x" for p in hnsw["sweep"]))
    for budget in result["budgets"]:
        print(f"{budget['factory']} sweep (nprobe/rerank recall/xFlat): " + "  ".join(
            f"{p['population'][0]} {p['nprobe']}/{p['rerank']} {p['recall']:.3f}/{p['x_flat']:.0f}x"
            for p in budget["rows"]["sweep"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=("real", "synthetic"), default="real")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--memory-budget", default="default,80/vector",
                        help="comma-separated: default (2 GiB), N/vector (N bytes x n) or a size like 989M")
    parser.add_argument("--db", default=str(CORPUS_DB), help="the corpus index (real vectors, vocabulary, encoders)")
    parser.add_argument("--cache", default=str(RUNS / "index-bench"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="batch passes per row (the best counts)")
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time per population")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef-construction", type=int, default=100)
    parser.add_argument("--hnsw-ef", default="16,32,64,128,256,512,1024,2048")
    parser.add_argument("--no-hnswlib", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or RESULTS / f"query_recall_{args.data}_{args.n}.json")
    result: dict = {"data": args.data, "n": args.n, "commit": git_commit(), "cpu": cpu_model(), "cpus": os.cpu_count(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "uptime_start": uptime(),
                    "flat_blas_threshold": faiss.cvar.distance_compute_blas_threshold,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(result["uptime_start"], flush=True)

    real, proxies_text, eval_text, proxies, texts = text_sets(Path(args.db))
    xb, images, about = vectors(args.data, args.n, real)
    populations = {"text": texts, "image": images}
    result["vectors"] = about
    result["queries"] = {"text": len(texts), "image": len(images), "tuning_proxies": len(proxies_text),
                         "texts": eval_text}
    flat = Flat(xb)
    truth = flat.time(populations, args.repeats)
    result["flat"], result["neighbour_scores"] = flat.rows, flat.contrast
    print(f"Flat: {flat.rows}; {uptime()}", flush=True)
    write_result(out, result)

    result["budgets"] = []
    for spec in args.memory_budget.split(","):
        budget = parse_budget(spec, args.n)
        factory = choose_index_key(args.n, xb.shape[1], budget)
        cache = Path(args.cache) / f"{args.data}-{args.n}-{factory.replace(',', '-')}"
        index, timings = build_index(xb, cache, args.rebuild, factory)
        started = time.perf_counter()
        index.tune(text_queries=proxies)  # as the indexer tunes: image sample + the text proxies
        timings["tune_s"] = round(time.perf_counter() - started, 1)
        tuning = {"nprobe": index.nprobe, "rerank": index.rerank_factor, "text_nprobe": index.text_nprobe,
                  "text_rerank": index.text_rerank_factor, "image": {key: value for key, value in index.tuning.items()
                                                                     if key != "text"},
                  "text": {key: value for key, value in (index.tuning.get("text") or {}).items()
                           if key not in ("direction", "offset")}}
        entry = {"budget": spec, "budget_bytes": budget, "factory": factory, **timings, "tuning": tuning,
                 "rows": bench_ours(index, populations, truth, args), "load_after": os.getloadavg()[0]}
        result["budgets"].append(entry)
        print(f"{factory}: {entry['rows']['text']} | {entry['rows']['image']}; {uptime()}", flush=True)
        del index
        flat.time(populations, args.repeats)  # Flat again between the rows: the best round is the baseline
        write_result(out, result)

    if not args.no_hnswlib:
        result["hnswlib"] = bench_hnswlib(xb, populations, truth, args)
    flat.time(populations, args.repeats)  # Flat again, after the rest: the best of both rounds is the baseline
    ratios(result)
    result["uptime_end"] = uptime()
    write_result(out, result)
    print_table(result)
    print(f"{result['uptime_end']}; written {out}")


if __name__ == "__main__":
    main()
