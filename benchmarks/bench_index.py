"""How fast, small and exact is the IVF-PQ index with exact re-ranking, next to exact Flat search?

    python benchmarks/bench_index.py [--n 100000] [--d 256] [--queries 1000] [--out benchmarks/results/index_100k.json]
    python benchmarks/bench_index.py --n 1000000 --out benchmarks/results/index_1m.json   # ~1 h on 2 cores

One run, same seeded vectors and queries for every row:
  1. exact `Flat` (the baseline and the ground truth): build time, queries/s, single-query latency;
  2. IVF-PQ (factory from choose_index_key with a budget of d/4 bytes per vector, or --factory):
     build time, then a sweep of nprobe x rerank_factor: recall@10 vs Flat, batch queries/s,
     single-query p50/p99 ms; then `tune()` (target recall@10 0.95) and its choice measured the same way;
  3. memory: bytes/vector that must stay resident (FAISS file: codes + ids + centroids, plus the
     id arrays VectorIndex keeps) vs the float16 copy left on disk and memory-mapped; anonymous RSS
     growth of loading the saved index with mmap=True and searching;
  4. filtered search at selectivities 0.1%, 1%, 10%, 50%: recall@10 vs the exact filtered answer
     and queries/s, with the tuned settings.
Vectors: `--clusters` Gaussian clusters (default n/100) with noise `--noise` times the center scale,
L2-normalized; queries are new points from the same clusters (held out from the index). d=256 is
the model's embedding dimension.
Peers, same vectors and queries, when installed (`pip install -e '.[bench]'`; skipped otherwise):
hnswlib (HNSW, inner product) over an ef sweep; LanceDB's IVF-PQ (same nlist and code size, dot
metric) over nprobes x refine_factor, and its pre-filtered search at the same selectivities.
Filters select rows by a seeded `bucket` column in [0, 1000) (bucket < 1 is 0.1%), for ours and LanceDB's.
Prints a table and writes a JSON result with the machine, commit, settings and OMP_WAIT_POLICY.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

import numpy as np
from sarclip_search.index import VectorIndex, choose_index_key, recall_at_k

SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)


def clustered(n: int, d: int, clusters: int, noise: float, seed: int, centers_seed: int) -> np.ndarray:
    """L2-normalized points around `clusters` seeded Gaussian centers (float32, (n, d))."""
    centers = np.random.default_rng(centers_seed).standard_normal((clusters, d)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), np.float32)
    for start in range(0, n, 100_000):  # bounded temporaries at 1M
        rows = min(100_000, n - start)
        block = centers[rng.integers(0, clusters, rows)]
        block += noise * rng.standard_normal((rows, d), dtype=np.float32)
        x[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# Run in a fresh process: load the saved index memory-mapped (as the query engine does), search once,
# report how much anonymous (heap) and file-backed (mmap, page cache) resident memory that added.
RSS_PROBE = """
import json, os, sys
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np
from sarclip_search.index import VectorIndex

def rss():
    with open("/proc/self/status") as status:
        return {line.split()[0][:-1]: int(line.split()[1]) * 1024 for line in status
                if line.startswith(("RssAnon:", "RssFile:"))}

queries = np.load(sys.argv[2])
before = rss()
index = VectorIndex.load(sys.argv[1], mmap=True)
index.search(queries, 10)
after = rss()
print(json.dumps({key: after[key] - before[key] for key in after}))
"""


def resident_after_mmap_load(directory: Path, queries: np.ndarray) -> dict:
    """RssAnon / RssFile growth (bytes) of a fresh process loading `directory` with mmap=True and searching."""
    query_file = directory / "probe_queries.npy"
    np.save(query_file, queries)
    try:
        output = subprocess.run([sys.executable, "-c", RSS_PROBE, str(directory), str(query_file)],
                                capture_output=True, text=True, check=True).stdout
        return json.loads(output.strip().splitlines()[-1])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return {}  # not Linux, or the probe failed: memory is then reported from file sizes only
    finally:
        query_file.unlink(missing_ok=True)


def measure(index: VectorIndex, xq: np.ndarray, truth: np.ndarray, k: int, latency_queries: int,
            **search_args) -> dict:
    """recall@k vs truth, batch queries/s, single-query p50/p99 ms for one setting."""
    start = time.perf_counter()
    _, found = index.search(xq, k, **search_args)
    batch_seconds = time.perf_counter() - start
    latencies = []
    for query in xq[:latency_queries]:
        start = time.perf_counter()
        index.search(query, k, **search_args)
        latencies.append((time.perf_counter() - start) * 1000)
    return {
        "recall": round(recall_at_k(found, truth, k), 4),
        "qps": round(len(xq) / batch_seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
    }


def resident_bytes(index: VectorIndex, directory: Path) -> dict:
    """Bytes that stay in memory vs on disk for a saved index."""
    faiss_bytes = (directory / "vectors.faiss").stat().st_size
    id_bytes = index.ntotal * 8 * 3  # row -> id array, plus the sorted id -> row lookup (two int64 arrays)
    store_bytes = (directory / "vectors_f16.npy").stat().st_size
    return {
        "faiss_file_bytes": faiss_bytes,
        "resident_bytes_per_vector": round((faiss_bytes + id_bytes) / index.ntotal, 1),
        "float16_on_disk_bytes_per_vector": round(store_bytes / index.ntotal, 1),
    }


def bench_hnswlib(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, truth: np.ndarray, args) -> list[dict]:
    """hnswlib rows (build once, sweep ef), or [] when hnswlib is not installed."""
    try:
        import hnswlib
    except ImportError:
        return []
    start = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=xb.shape[1])
    index.init_index(max_elements=len(xb), ef_construction=args.hnsw_ef_construction, M=args.hnsw_m, random_seed=1)
    index.set_num_threads(os.cpu_count() or 1)
    index.add_items(xb, ids)
    build = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        index.save_index(str(Path(tmp) / "hnsw.bin"))
        size = (Path(tmp) / "hnsw.bin").stat().st_size
    rows = []
    for ef in (int(v) for v in args.hnsw_ef.split(",")):
        index.set_ef(max(ef, args.k))
        start = time.perf_counter()
        labels, _ = index.knn_query(xq, args.k)
        batch_seconds = time.perf_counter() - start
        latencies = []
        for query in xq[: args.latency_queries]:
            start = time.perf_counter()
            index.knn_query(query[None, :], args.k)
            latencies.append((time.perf_counter() - start) * 1000)
        rows.append({"name": f"hnswlib M={args.hnsw_m} ef={ef}", "ef": ef, "build_s": round(build, 1),
                     "recall": round(recall_at_k(labels.astype(np.int64), truth, args.k), 4),
                     "qps": round(len(xq) / batch_seconds, 1), "p50_ms": round(percentile(latencies, 50), 3),
                     "p99_ms": round(percentile(latencies, 99), 3),
                     "resident_bytes_per_vector": round(size / len(xb), 1)})  # all in RAM: floats + graph
    return rows


def _lance_ids(table, num_queries: int, k: int) -> np.ndarray:
    """(q, k) int64 ids from a LanceDB batch result (query_index, id), padded with -1."""
    found = np.full((num_queries, k), -1, np.int64)
    query_index = table["query_index"].to_numpy()
    result_ids = table["id"].to_numpy()
    for query in range(num_queries):
        hits = result_ids[query_index == query][:k]
        found[query, : len(hits)] = hits
    return found


def bench_lancedb(xb: np.ndarray, ids: np.ndarray, buckets: np.ndarray, xq: np.ndarray, truth: np.ndarray,
                  filtered_truth: dict, factory: str, args) -> tuple[list[dict], list[dict]]:
    """LanceDB IVF-PQ rows and filtered rows, or ([], []) when lancedb is not installed."""
    try:
        import lancedb
        import pyarrow as pa
    except ImportError:
        return [], []
    nlist = int(factory.split(",")[0].removeprefix("IVF"))
    pq_bytes = int(factory.split(",PQ")[1].split("x")[0]) if ",PQ" in factory else xb.shape[1] // 4
    k, d = args.k, xb.shape[1]
    rows, filtered = [], []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        table = lancedb.connect(tmp).create_table("vectors", pa.table({
            "id": ids, "bucket": buckets.astype(np.int32),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(xb.ravel()), d)}))
        table.create_index(metric="dot", num_partitions=nlist, num_sub_vectors=pq_bytes)
        build = time.perf_counter() - start
        disk = sum(path.stat().st_size for path in Path(tmp).rglob("*") if path.is_file())

        def query(vectors, nprobes, refine, where=None):
            builder = table.search(vectors).distance_type("dot").nprobes(nprobes).limit(k)
            if refine > 1:
                builder = builder.refine_factor(refine)
            if where is not None:
                builder = builder.where(where, prefilter=True)
            return builder.select(["id", "_distance"]).to_arrow()

        for nprobes in (int(v) for v in args.lance_nprobes.split(",")):
            for refine in (int(v) for v in args.rerank.split(",")):
                start = time.perf_counter()
                found = _lance_ids(query(xq, nprobes, refine), len(xq), k)
                batch_seconds = time.perf_counter() - start
                latencies = []
                for vector in xq[: min(args.latency_queries, 50)]:
                    start = time.perf_counter()
                    query(vector, nprobes, refine)
                    latencies.append((time.perf_counter() - start) * 1000)
                rows.append({"name": f"LanceDB IVF{nlist},PQ{pq_bytes} nprobes={nprobes} refine={refine}",
                             "nprobes": nprobes, "refine_factor": refine, "build_s": round(build, 1),
                             "recall": round(recall_at_k(found, truth, k), 4),
                             "qps": round(len(xq) / batch_seconds, 1),
                             "p50_ms": round(percentile(latencies, 50), 3),
                             "p99_ms": round(percentile(latencies, 99), 3),
                             "disk_bytes_per_vector": round(disk / len(xb), 1)})
        good = [row for row in rows if row["recall"] >= args.target_recall] or rows
        best = max(good, key=lambda row: row["qps"]) if good else None
        for selectivity, (threshold, sub_truth) in filtered_truth.items():
            if best is None:
                break
            start = time.perf_counter()
            found = _lance_ids(query(xq, best["nprobes"], best["refine_factor"], f"bucket < {threshold}"), len(xq), k)
            seconds = time.perf_counter() - start
            filtered.append({"selectivity": selectivity, "setting": best["name"],
                             "recall": round(recall_at_k(found, sub_truth, k), 4),
                             "qps": round(len(xq) / seconds, 1),
                             "qps_vs_unfiltered": round(len(xq) / seconds / best["qps"], 2)})
    return rows, filtered


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--d", type=int, default=256, help="dimension (the model's embed_dim is 256)")
    parser.add_argument("--queries", type=int, default=1000, help="batch queries (recall, queries/s)")
    parser.add_argument("--latency-queries", type=int, default=200, help="single queries timed one by one")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=None, help="default n/100")
    parser.add_argument("--noise", type=float, default=1.0, help="noise std relative to the centers' (1.0: overlapping)")
    parser.add_argument("--factory", default=None, help="default: choose_index_key with a budget of d/4 bytes/vector")
    parser.add_argument("--nprobe", default="4,8,16,32,64,128")
    parser.add_argument("--rerank", default="1,4,8,16")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hnsw-m", type=int, default=16, help="hnswlib graph degree (peer)")
    parser.add_argument("--hnsw-ef-construction", type=int, default=100)
    parser.add_argument("--hnsw-ef", default="16,32,64,128")
    parser.add_argument("--lance-nprobes", default="4,16,64", help="LanceDB IVF-PQ nprobes (peer)")
    parser.add_argument("--out", default=None, help="default benchmarks/results/index_<n>.json")
    args = parser.parse_args()
    k, n, d = args.k, args.n, args.d
    clusters = args.clusters or max(1, n // 100)

    xb = clustered(n, d, clusters, args.noise, seed=args.seed, centers_seed=args.seed)
    xq = clustered(args.queries, d, clusters, args.noise, seed=args.seed + 1, centers_seed=args.seed)
    ids = np.arange(n, dtype=np.int64) * 7 + 3  # catalog ids, not row numbers
    buckets = np.random.default_rng(args.seed + 2).integers(0, 1000, n)  # filter column: bucket < 1 is 0.1%
    rows: list[dict] = []

    start = time.perf_counter()
    flat = VectorIndex.create(d, "Flat")
    flat.add(ids, xb)
    flat_build = time.perf_counter() - start
    _, truth = flat.search(xq, k)
    flat_row = {"name": "Flat (exact)", "build_s": round(flat_build, 1),
                **measure(flat, xq, truth, k, args.latency_queries)}
    with tempfile.TemporaryDirectory() as tmp:
        flat.save(tmp)
        flat_row.update(resident_bytes(flat, Path(tmp)))
    flat_row["resident_bytes_per_vector"] = round(d * 4 + 8 * 4, 1)  # float32 codes + ids, all resident
    rows.append(flat_row)

    factory = args.factory or choose_index_key(n, d, memory_budget=n * (d // 4))
    start = time.perf_counter()
    ivf = VectorIndex.create(d, factory)
    ivf.add(ids, xb)
    ivf_build = time.perf_counter() - start
    sweep = []
    for nprobe in (int(v) for v in args.nprobe.split(",")):
        for factor in (int(v) for v in args.rerank.split(",")):
            point = measure(ivf, xq, truth, k, args.latency_queries, nprobe=nprobe, rerank_factor=factor)
            sweep.append({"name": f"{factory} nprobe={nprobe} rerank={factor}", "nprobe": nprobe,
                          "rerank_factor": factor, **point})
    start = time.perf_counter()
    tuned = ivf.tune(target_recall=args.target_recall, k=k)
    tune_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        ivf.save(tmp)
        del ivf  # measure the mmap-loaded index, as the query engine opens it
        rss = resident_after_mmap_load(Path(tmp), xq)
        loaded = VectorIndex.load(tmp, mmap=True)
        tuned_row = {"name": f"{factory} tuned (nprobe={tuned.nprobe} rerank={tuned.rerank_factor})",
                     "build_s": round(ivf_build, 1), "tune_s": round(tune_seconds, 1),
                     **measure(loaded, xq, truth, k, args.latency_queries)}
        tuned_row["rss_anon_bytes_per_vector"] = round(rss.get("RssAnon", 0) / n, 1)
        tuned_row["rss_file_bytes_per_vector"] = round(rss.get("RssFile", 0) / n, 1)
        tuned_row.update(resident_bytes(loaded, Path(tmp)))
        rows.append(tuned_row)

        filtered, filtered_truth = [], {}
        for selectivity in SELECTIVITIES:
            threshold = round(selectivity * 1000)
            inside = buckets < threshold
            subset = ids[inside]
            sub_flat = VectorIndex.create(d, "Flat")
            sub_flat.add(ids[inside], xb[inside])
            _, sub_truth = sub_flat.search(xq, k)
            filtered_truth[selectivity] = (threshold, sub_truth)
            start = time.perf_counter()
            _, found = loaded.search(xq, k, subset=subset)
            seconds = time.perf_counter() - start
            filtered.append({"selectivity": selectivity, "rows": int(inside.sum()),
                             "recall": round(recall_at_k(found, sub_truth, k), 4),
                             "qps": round(len(xq) / seconds, 1),
                             "qps_vs_unfiltered": round(len(xq) / seconds / tuned_row["qps"], 2)})

    result = {
        "question": "IVF-PQ + exact re-ranking vs exact Flat: recall@10, queries/s, latency, memory, filters",
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform(),
                    "python": platform.python_version(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "commit": git_commit(),
        "config": {**vars(args), "clusters": clusters, "factory": factory},
        "flat": flat_row,
        "sweep": sweep,
        "tuned": {**tuned_row, "tune_result": tuned.as_info()},
        "filtered": filtered,
        "peers": bench_hnswlib(xb, ids, xq, truth, args),
    }
    lance_rows, lance_filtered = bench_lancedb(xb, ids, buckets, xq, truth, filtered_truth, factory, args)
    result["peers"] += lance_rows
    result["peer_filtered"] = lance_filtered
    out = Path(args.out or f"benchmarks/results/index_{n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"result written to {out}")


def print_table(result: dict) -> None:
    machine, config, flat = result["machine"], result["config"], result["flat"]
    print(f"machine: {machine['cpus']} cpus ({machine['cpu']}), OMP_WAIT_POLICY={machine['OMP_WAIT_POLICY']}, "
          f"commit {result['commit'][:10]}")
    print(f"vectors: n={config['n']} d={config['d']} clusters={config['clusters']} noise={config['noise']}, "
          f"{config['queries']} held-out queries, k={config['k']}")
    header = f"{'index':<46}{'recall@10':>10}{'q/s':>10}{'x Flat':>8}{'p50 ms':>9}{'p99 ms':>9}"
    print(header)
    for row in [flat, *result["sweep"], result["tuned"], *result["peers"]]:
        print(f"{row['name']:<46}{row['recall']:>10.3f}{row['qps']:>10.0f}{row['qps'] / flat['qps']:>8.1f}"
              f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}")
    tuned = result["tuned"]
    print(f"build s: Flat {flat['build_s']}, {config['factory']} {tuned['build_s']} (+ tune {tuned['tune_s']})")
    print(f"resident bytes/vector: Flat {flat['resident_bytes_per_vector']}, "
          f"IVF-PQ {tuned['resident_bytes_per_vector']} (FAISS file + ids; float16 copy on disk: "
          f"{tuned['float16_on_disk_bytes_per_vector']} B/vector, mmap), "
          f"fresh process after mmap load + {config['queries']} queries: RSS +{tuned['rss_anon_bytes_per_vector']} "
          f"B/vector anonymous, +{tuned['rss_file_bytes_per_vector']} B/vector file-backed (page cache)")
    for peer in result["peers"][:1]:
        print(f"{peer['name'].split(' ef=')[0]}: build {peer['build_s']} s, {peer['resident_bytes_per_vector']} "
              "B/vector, all resident (float32 vectors + graph)")
    lance = [row for row in result["peers"] if row["name"].startswith("LanceDB")]
    if lance:
        print(f"LanceDB: build {lance[0]['build_s']} s, {lance[0]['disk_bytes_per_vector']} B/vector on disk")
    peer = {row["selectivity"]: row for row in result.get("peer_filtered", [])}
    print(f"{'filtered (tuned)':<18}{'rows':>9}{'recall@10':>10}{'q/s':>10}{'x unfiltered':>14}"
          f"{'LanceDB recall':>16}{'LanceDB q/s':>13}{'x unfilt.':>10}")
    for row in result["filtered"]:
        other = peer.get(row["selectivity"])
        tail = (f"{other['recall']:>16.3f}{other['qps']:>13.0f}{other['qps_vs_unfiltered']:>10.2f}" if other else "")
        print(f"{row['selectivity'] * 100:>16.1f}%{row['rows']:>9}{row['recall']:>10.3f}{row['qps']:>10.0f}"
              f"{row['qps_vs_unfiltered']:>14.2f}{tail}")


if __name__ == "__main__":
    main()
