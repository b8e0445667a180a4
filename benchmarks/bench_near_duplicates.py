"""What `VectorIndex.tuned` picks on the real near-duplicate set, under the default budget and under 80 B/vector (issue 17).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_near_duplicates.py                 # 1M, ~20-30 min on 2 cores
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_near_duplicates.py --n 100000      # quicker

Vectors: bench_index's `--data real` set (`make_vectors`): the corpus index's tile embeddings, 10% held out as
query seeds, the n database vectors each a random other tile moved 0-50% of the way to one of its 10 nearest
tiles plus noise of half the tiles' median nearest-neighbour spacing: every vector sits in a cloud of
near-duplicates (overlapping tiles of one scene). Queries: the held-out tiles with the same noise (--queries).
For each budget (--budgets, in bytes per vector; 0 = the default 2 GiB): the factory `choose_index_key` picks,
built (trained on its seeded sample, all n added), then `tuned(memory_budget=...)` as the indexer runs it: tune();
on near-duplicates short of the target, deeper re-ranking, then other codes within the budget, each measured.
Printed per budget: what was tried (factory, re-rank depth, recall on the tuning sample, build and tune seconds),
what was kept and its one-line `needs` when the target stays out of reach, and recall@10 vs exact (faiss.knn over
all n) and batch q/s (best of 3) of the held-out queries at the kept setting, beside the same at plain tune()'s
setting (re-ranking up to 32 x k on the first factory), and a held-out sweep of deeper settings (nprobe x1/2/4,
re-rank up to 256 x k; best of 2). The JSON record goes to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import REAL_DB, make_vectors, median_neighbour_distance, real_tiles

from sarclip_search.index import VectorIndex, choose_index_key, recall_at_k, resident_bytes
from sarclip_search.index.choose import DEFAULT_MEMORY_BUDGET

from defaults import DATA, RESULTS, corpus_index, write_result

K = 10


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def best_qps(index: VectorIndex, xq: np.ndarray, nprobe: int | None, rerank: int,
             repeats: int = 3) -> tuple[np.ndarray, float]:
    best, ids = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        ids = index.search(xq, K, nprobe=nprobe, rerank_factor=rerank, population="image")[1]
        best = min(best, time.perf_counter() - started)
    return ids, len(xq) / best


def new_scene_queries(args: argparse.Namespace, count: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(`count` tuning queries from the first half of make_vectors' held-out tiles, with its noise and another seed;
    a mask of make_vectors' queries drawn from the other half): tuning queries from scenes the index does not hold,
    measured on queries from other such scenes. Repeats make_vectors' draws to know each query's tile."""
    tiles = real_tiles(corpus_index(args.real_db, args.archive, "--real-db"))
    noise = 0.5 * median_neighbour_distance(tiles) / np.sqrt(tiles.shape[1])
    held_out = tiles[np.random.default_rng(args.seed + 3).permutation(len(tiles))[: len(tiles) // 10]]
    query_tiles = np.random.default_rng(args.seed + 1).integers(0, len(held_out), args.queries)
    half = len(held_out) // 2
    rng = np.random.default_rng(args.seed + 11)
    xt = held_out[rng.integers(0, half, count)]
    xt = xt + noise * rng.standard_normal(xt.shape, dtype=np.float32)
    return (xt / np.linalg.norm(xt, axis=1, keepdims=True)).astype(np.float32), query_tiles >= half


def run_budget(xb: np.ndarray, xq: np.ndarray, truth: np.ndarray, budget: int, label: str, flat_qps: float,
               tune_queries: np.ndarray | None = None, factory: str | None = None, subset_codes: bool = True) -> dict:
    n, d = xb.shape
    source = "--factory" if factory else "choose_index_key"
    factory = factory or choose_index_key(n, d, budget)
    print(f"\n== {label}: budget {budget / n:.1f} B/vector -> {source}: {factory}"
          f"{'' if subset_codes else ' without subset codes'}; load {load_average()}", flush=True)
    started = time.perf_counter()
    index = VectorIndex.create(d, factory, subset_codes=subset_codes)
    index.add(np.arange(n, dtype=np.int64), xb)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    kept = index.tuned(tune_queries, memory_budget=budget)
    tuned_s = time.perf_counter() - started
    tuning = kept.tuning or {}
    tried = tuning.get("tried") or []
    subset = kept.rows.codes is not None
    row = {"label": label, "budget_bytes": budget, "budget_bytes_per_vector": round(budget / n, 1),
           "chosen_factory": factory, "build_s": round(build_s, 1), "tuned_s": round(tuned_s, 1),
           "kept_factory": kept.factory, "subset_codes": subset,
           "resident_bytes_per_vector": round(resident_bytes(n, d, kept.factory, subset) / n, 1),
           "nprobe": kept.nprobe, "rerank_factor": kept.rerank_factor,
           "tuning_sample_recall": round(float(tuning.get("recall", 1.0)), 4),
           "met_target": bool(tuning.get("met_target", True)), "neighbour_score": tuning.get("neighbour_score"),
           "needs": tuning.get("needs"), "replaces": tuning.get("replaces"), "tried": tried,
           "tuned_on": "own vectors" if tune_queries is None else f"{len(tune_queries)} new-scene queries",
           "load_after_tune": load_average()}
    ids, qps = best_qps(kept, xq, kept.nprobe, kept.rerank_factor)
    row["held_out"] = {"recall": round(recall_at_k(ids, truth, K), 4), "qps": round(qps, 1),
                       "x_flat": round(qps / flat_qps, 1)}
    if tried:  # plain tune() on the first factory: its setting, re-ranking up to 32 x k
        first = tried[0]
        plain = index if index.factory == first["factory"] else None
        if plain is not None:
            ids, qps = best_qps(plain, xq, first["nprobe"], first["rerank_factor"])
            row["plain_tune_held_out"] = {"factory": first["factory"], "nprobe": first["nprobe"],
                                          "rerank_factor": first["rerank_factor"],
                                          "recall": round(recall_at_k(ids, truth, K), 4), "qps": round(qps, 1)}
    if kept.rerank_factor > 1:  # what held-out queries get deeper than the tuning sample's pick
        row["held_out_sweep"] = []
        for nprobe in sorted({kept.nprobe, 2 * kept.nprobe, 4 * kept.nprobe}):
            for rerank in sorted({kept.rerank_factor, 64, 128, 256}):
                ids, qps = best_qps(kept, xq, nprobe, rerank, repeats=2)
                row["held_out_sweep"].append({"nprobe": nprobe, "rerank": rerank,
                                              "recall": round(recall_at_k(ids, truth, K), 4), "qps": round(qps, 1)})
    for entry in tried:
        print(f"  tried {entry['factory']:<24} subset codes {'yes' if entry['subset_codes'] else 'no ':<3} "
              f"{entry['bytes_per_vector']:>6.1f} B/vec  re-rank <= {entry['rerank_max']:>3} x k: "
              f"recall {entry['recall']:.3f} (lower {entry['recall_lower']:.3f}) at nprobe {entry['nprobe']}, "
              f"rerank {entry['rerank_factor']}"
              + (f"; built {entry['build_s']} s" if "build_s" in entry else "")
              + (f"; tuned {entry['tune_s']} s" if "tune_s" in entry else ""), flush=True)
    held = row["held_out"]
    print(f"  kept {kept.factory} ({'with' if subset else 'without'} subset codes, {row['resident_bytes_per_vector']} "
          f"B/vector resident): nprobe {kept.nprobe}, rerank {kept.rerank_factor}; tuning sample recall "
          f"{row['tuning_sample_recall']:.3f}, met {row['met_target']}; held-out recall@10 {held['recall']:.3f} at "
          f"{held['qps']:.0f} q/s ({held['x_flat']}x Flat); build {build_s:.0f} s, tuned() {tuned_s:.0f} s", flush=True)
    if "plain_tune_held_out" in row:
        plain = row["plain_tune_held_out"]
        print(f"  plain tune() setting (rerank <= 32 x k): {plain['factory']} nprobe {plain['nprobe']} rerank "
              f"{plain['rerank_factor']}: held-out recall@10 {plain['recall']:.3f} at {plain['qps']:.0f} q/s", flush=True)
    if row["needs"]:
        print(f"  needs: {row['needs']}", flush=True)
    if "held_out_sweep" in row:
        print("  held-out sweep (nprobe/rerank: recall q/s): " + "  ".join(
            f"{p['nprobe']}/{p['rerank']}: {p['recall']:.3f} {p['qps']:.0f}" for p in row["held_out_sweep"]), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--budgets", default="0,80", help="bytes per vector, comma-separated; 0 = the default 2 GiB")
    parser.add_argument("--real-db", default=REAL_DB)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune-on", choices=("own", "new-scenes"), default="own",
                        help="tuned()'s queries: a sample of the index's own vectors (as the indexer), or 256 queries "
                             "from half the held-out tiles, measured on the queries of the other half")
    parser.add_argument("--factory", default=None, help="build this factory instead of choose_index_key's pick")
    parser.add_argument("--no-subset-codes", action="store_true", help="build it without the 4-bit subset codes")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    suffix = ("" if args.tune_on == "own" else "_new_scenes") + (
        f"_{args.factory.replace(',', '_')}" if args.factory else "")
    out = Path(args.out or RESULTS / f"near_duplicates_{args.n}{suffix}.json")
    vector_args = argparse.Namespace(data="real", n=args.n, d=256, queries=args.queries, seed=args.seed,
                                     real_db=args.real_db, archive=str(DATA), real_noise=None)
    result: dict = {"n": args.n, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cpus": os.cpu_count(),
                    "load_average_start": load_average(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "commit": os.popen("git rev-parse --short HEAD").read().strip()}
    xb, xq, data = make_vectors(vector_args)
    result["data"] = data
    tune_queries = None
    if args.tune_on == "new-scenes":
        tune_queries, measured = new_scene_queries(vector_args)
        xq = xq[measured]
        result["tune_on"] = {"tune_queries": len(tune_queries), "held_out_queries": len(xq)}
    started = time.perf_counter()
    truth = faiss.knn(xq, xb, K, faiss.METRIC_INNER_PRODUCT)[1]
    flat_qps = len(xq) / (time.perf_counter() - started)
    result["flat_qps"] = round(flat_qps, 1)
    print(f"real near-duplicate set: n={args.n}, {len(xq)} held-out queries, {data['tiles']} tiles; Flat (faiss.knn) "
          f"{flat_qps:.1f} q/s; OMP_WAIT_POLICY={result['omp_wait_policy']}; load {load_average()}", flush=True)
    result["budgets"] = []
    for per_vector in (float(b) for b in args.budgets.split(",")):
        budget = DEFAULT_MEMORY_BUDGET if per_vector == 0 else int(per_vector * args.n)
        label = "default budget (2 GiB)" if per_vector == 0 else f"{per_vector:g} B/vector"
        result["budgets"].append(run_budget(xb, xq, truth, budget, label, flat_qps, tune_queries, args.factory,
                                            not args.no_subset_codes))
        write_result(out, result)
    result["load_average_end"] = load_average()
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"\nload {result['load_average_start']} -> {result['load_average_end']}; written {write_result(out, result)}")


if __name__ == "__main__":
    main()
