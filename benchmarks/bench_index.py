"""How fast, small and exact is our IVF-PQ index with exact re-ranking, next to exact Flat, hnswlib and LanceDB?

    python benchmarks/bench_index.py [--n 100000] [--d 256] [--queries 1000] [--out benchmarks/results/index_100000.json]
    python benchmarks/bench_index.py --data real --n 100000     # the shipped model's tile embeddings, expanded
    mkdir -p runs && nohup python benchmarks/bench_index.py --n 1000000 > runs/bench_index_1m.log 2>&1 &   # ~40 min

One run, same vectors and queries for every row:
  1. exact `Flat` (the baseline and the ground truth): build time, queries/s, single-query latency;
  2. ours: the factory from choose_index_key with a resident budget of --bytes-per-vector (default 80)
     per vector (or --factory): build time, a sweep of nprobe x rerank_factor (recall@10 vs Flat, batch
     queries/s, single-query p50/p99 ms), then `tune()` (target recall@10 0.95) and its choice measured
     on the index saved and re-loaded with mmap=True; --compare-factory builds and tunes a second one;
  3. memory: resident bytes/vector by the arithmetic of `resident_bytes` and measured in a fresh process
     that loads with mmap=True and answers the queries one at a time, as the engine does (growth of heap
     + mapped pages of the FAISS file and the id array, from /proc/self/smaps; the exact copy's mapped
     pages are reported apart, library code pages left out); the heap after one more 1000-query batch
     (its transient buffers, which malloc keeps) is reported apart;
  4. filtered search at selectivities 0.1%, 1%, 10%, 50%: recall@10 vs the exact filtered answer,
     queries/s, ratio to unfiltered search timed in alternation with it (3 passes each, best of each),
     and the median score of the exact filtered 10th neighbour (next to the unfiltered one: when it falls
     to the score of unrelated points, no index finds it without scanning most of the subset);
  5. peers when installed (`pip install -e '.[bench]'`): hnswlib (HNSW, inner product, ef sweep; all
     in RAM) and LanceDB IVF-PQ (same nlist and code size, dot metric, training sample 64 per partition
     and 10 k-means iterations like ours; nprobes x refine_factor sweep; pre-filtered search at the same
     selectivities; resident memory measured in a fresh process like ours);
  6. at equal recall (>= --target-recall): the fastest setting of each system, its q/s and memory.
Vectors (--data):
  synthetic: --clusters seeded Gaussian clusters (default n/100), noise --noise times the center scale,
    L2-normalized; queries are new points from the same clusters (held out from the index).
  real: the tile embeddings of --real-db (an index directory; default runs/corpus-db of this checkout: the
    tiles of --archive, default ../shared/data, embedded by the shipped model; built here by
    `sarsearch index ARCHIVE --db runs/corpus-db` when missing, ~3 min; benchmarks/defaults.py). 10% of
    the tiles are held out as query seeds; the index holds n vectors, each a random tile of the other
    90% moved a random 0-50% of the way towards one of its 10
    nearest tiles, plus Gaussian noise per dimension (default std: half the tiles' median nearest-
    neighbour distance / sqrt(d), so a copy stays closer to its tile than the next tile is), L2-
    normalized; queries are held-out tiles with the same noise. Cheap and bounded (no model run); it
    keeps the real embeddings' geometry (a narrow cone, scenes as tight groups of near-duplicate tiles)
    and fills the space between neighbouring tiles.
Filters select rows by a seeded `bucket` column in [0, 1000) (bucket < 1 is 0.1%), for ours and LanceDB's.
Batch queries/s is the best of 3 passes over the queries (2 for LanceDB, the slowest), since
the machine may be shared; single-query latency is one pass. The JSON result (machine, commit, settings,
OMP_WAIT_POLICY) is rewritten after each stage, so a run cut short keeps what it measured; the table is
printed at the end.
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

from sarclip_search.index import VectorIndex, choose_index_key, recall_at_k, resident_bytes
from sarclip_search.index.storage import STORE_FILES, SUBSET_CODES_FILE

from defaults import CORPUS_DB, DATA, RESULTS, corpus_index

SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)
REAL_DB = str(CORPUS_DB)  # built from --archive when missing (module docstring)
REAL_NEIGHBOURS = 10  # real: expanded points lie between a tile and one of its 10 nearest tiles


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


def real_tiles(db: str) -> np.ndarray:
    """The float32 tile embeddings of an index directory (its committed generation)."""
    root = Path(db)
    generation = root / (root / "CURRENT").read_text().strip()
    index = VectorIndex.load(generation / "vectors", mmap=True)
    return index.vectors(index.ids())


def neighbours(tiles: np.ndarray, count: int) -> np.ndarray:
    """(n, count) rows of each tile's `count` nearest other tiles (inner product)."""
    scores = tiles @ tiles.T
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1)[:, :count]


def expanded(tiles: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    """n points: a random tile moved 0-50% of the way to one of its 10 nearest tiles, + N(0, noise^2) per dim.

    Points stay on the tiles' manifold (between a tile and its neighbours, not across the space), and
    the noise is set relative to the tiles' own nearest-neighbour spacing (see make_vectors).
    """
    rng = np.random.default_rng(seed)
    near = neighbours(tiles, REAL_NEIGHBOURS)
    x = np.empty((n, tiles.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        rows = min(100_000, n - start)
        first = rng.integers(0, len(tiles), rows)
        second = near[first, rng.integers(0, REAL_NEIGHBOURS, rows)]
        block = tiles[first] + rng.uniform(0, 0.5, (rows, 1)).astype(np.float32) * (tiles[second] - tiles[first])
        block += noise * rng.standard_normal(block.shape, dtype=np.float32)
        x[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def median_neighbour_distance(tiles: np.ndarray) -> float:
    """Median Euclidean distance from a tile to its nearest other tile (unit vectors)."""
    nearest = np.take_along_axis(tiles @ tiles.T - 3 * np.eye(len(tiles), dtype=np.float32),
                                 neighbours(tiles, 1), 1)[:, 0]
    return float(np.median(np.sqrt(np.maximum(0.0, 2 - 2 * nearest))))


def make_vectors(args) -> tuple[np.ndarray, np.ndarray, dict]:
    """(database vectors, queries, description) for --data."""
    if args.data == "synthetic":
        clusters = args.clusters or max(1, args.n // 100)
        xb = clustered(args.n, args.d, clusters, args.noise, seed=args.seed, centers_seed=args.seed)
        xq = clustered(args.queries, args.d, clusters, args.noise, seed=args.seed + 1, centers_seed=args.seed)
        return xb, xq, {"data": "synthetic", "clusters": clusters, "noise": args.noise}
    tiles = real_tiles(corpus_index(args.real_db, args.archive, "--real-db"))
    spacing = median_neighbour_distance(tiles)
    noise = args.real_noise if args.real_noise is not None else 0.5 * spacing / np.sqrt(tiles.shape[1])
    order = np.random.default_rng(args.seed + 3).permutation(len(tiles))
    held_out = tiles[order[: len(tiles) // 10]]
    base = tiles[order[len(tiles) // 10 :]]
    xb = expanded(base, args.n, noise, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    xq = held_out[rng.integers(0, len(held_out), args.queries)]
    xq = xq + noise * rng.standard_normal(xq.shape, dtype=np.float32)
    xq = (xq / np.linalg.norm(xq, axis=1, keepdims=True)).astype(np.float32)
    args.d = tiles.shape[1]
    return xb, xq, {"data": "real", "real_db": args.real_db, "tiles": len(tiles), "base_tiles": len(base),
                    "query_tiles": len(held_out), "median_neighbour_distance": round(spacing, 4),
                    "real_noise_used": round(float(noise), 5)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


SMAPS = """
def resident():
    # {"anon": bytes, <mapped file name>: rss bytes} from /proc/self/smaps
    totals, name = {"anon": 0}, "anon"
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                name = os.path.basename(head[5]) if len(head) >= 6 and head[5].startswith("/") else "anon"
            elif head and head[0] == "Rss:":
                totals[name] = totals.get(name, 0) + int(head[1]) * 1024
    return totals

def growth(before, after):
    return {key: after[key] - before.get(key, 0) for key in after if after[key] - before.get(key, 0) > 0}
"""

# A fresh process loads the saved index memory-mapped (as the query engine does), runs the queries,
# and reports what that added to its resident memory, per mapping.
RSS_PROBE = """
import json, os, sys
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np
from sarclip_search.index import VectorIndex
""" + SMAPS + """
queries = np.load(sys.argv[2])
before = resident()
index = VectorIndex.load(sys.argv[1], mmap=True)
for query in queries:  # one at a time, as the query engine serves them
    index.search(query, 10)
single = growth(before, resident())
index.search(queries, 10)  # one batch: adds the batch's transient buffers (kept by malloc)
print(json.dumps({"single": single, "batch": growth(before, resident())}))
"""

LANCE_PROBE = """
import json, os, sys
import numpy as np
import lancedb
""" + SMAPS + """
queries = np.load(sys.argv[2])
nprobes, refine = int(sys.argv[3]), int(sys.argv[4])
before = resident()
table = lancedb.connect(sys.argv[1]).open_table("vectors")
for query in queries:
    builder = table.search(query).distance_type("dot").nprobes(nprobes).limit(10)
    if refine > 1:
        builder = builder.refine_factor(refine)
    builder.select(["id"]).to_arrow()
print(json.dumps(growth(before, resident())))
"""


def _is_library(name: str) -> bool:
    """A shared library's mapping (code pages: constant, not per vector), by file name."""
    return name.endswith(".so") or ".so." in name


def probe(script: str, *argv: str, queries: np.ndarray) -> dict:
    """Run a probe script in a fresh process; {} when it fails (not Linux, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        query_file = Path(tmp) / "queries.npy"
        np.save(query_file, queries)
        try:
            output = subprocess.run([sys.executable, "-c", script, argv[0], str(query_file), *argv[1:]],
                                    capture_output=True, text=True, check=True).stdout
            return json.loads(output.strip().splitlines()[-1])
        except (OSError, subprocess.CalledProcessError, ValueError, IndexError) as error:
            print(f"memory probe failed: {error}", file=sys.stderr)
            return {}


def our_memory(index: VectorIndex, directory: Path, queries: np.ndarray) -> dict:
    """Resident bytes/vector of a saved index: by resident_bytes() and measured after an mmap load + queries."""
    n = index.ntotal
    measured = probe(RSS_PROBE, str(directory), queries=queries)
    grown, batch = measured.get("single", {}), measured.get("batch", {})
    ids = sum(value for key, value in grown.items() if key.startswith("vector_ids."))  # .npy or its segments
    kept = grown.get("anon", 0) + grown.get("vectors.faiss", 0) + ids
    # the subset codes are read whole by filtered search (unfiltered queries never touch them)
    kept += sum(path.stat().st_size for path in directory.glob(f"{SUBSET_CODES_FILE.split('.')[0]}.*"))
    return {
        "resident_bytes_per_vector_arithmetic": round(resident_bytes(n, index.dim, index.factory) / n, 1),
        "resident_bytes_per_vector": round(kept / n, 1) if grown else None,
        "resident_detail_bytes_per_vector": {key: round(value / n, 1) for key, value in grown.items()
                                             if not _is_library(key)},
        "after_batch_anon_bytes_per_vector": round(batch.get("anon", 0) / n, 1),
        "exact_copy": index.store_dtype,
        "exact_copy_on_disk_bytes_per_vector": round(
            sum(p.stat().st_size for p in directory.glob(f"{STORE_FILES[index.store_dtype].split('.')[0]}.*")) / n, 1),
        "files_bytes_per_vector": round(sum(p.stat().st_size for p in directory.iterdir()) / n, 1),
    }


REPEATS = 3  # batch passes per setting; queries/s is the best (the machine is shared: others' jobs add noise)


def measure(search, xq: np.ndarray, truth: np.ndarray, k: int, latency_queries: int, repeats: int = REPEATS) -> dict:
    """recall@k vs truth, batch queries/s (best of `repeats` passes), single-query p50/p99 ms of `search`."""
    batch_seconds = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        found = search(xq, k)
        batch_seconds = min(batch_seconds, time.perf_counter() - start)
    latencies = []
    for query in xq[:latency_queries]:
        start = time.perf_counter()
        search(query[None, :], k)
        latencies.append((time.perf_counter() - start) * 1000)
    return {
        "recall": round(recall_at_k(found, truth, k), 4),
        "qps": round(len(xq) / batch_seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
    }


def ours_search(index: VectorIndex, **settings):
    return lambda queries, k: index.search(queries, k, **settings)[1]


def bench_ours(factory: str, ids, xb, xq, truth, buckets, filtered_truth, args, sweep: bool) -> dict:
    """Build, sweep (optional), tune, save, mmap-load and measure one factory of ours; filtered rows too."""
    k = args.k
    start = time.perf_counter()
    index = VectorIndex.create(xb.shape[1], factory)
    index.add(ids, xb)
    build = time.perf_counter() - start
    rows = []
    if sweep:
        for nprobe in (int(v) for v in args.nprobe.split(",")):
            for factor in (int(v) for v in args.rerank.split(",")):
                point = measure(ours_search(index, nprobe=nprobe, rerank_factor=factor), xq, truth, k,
                                args.latency_queries)
                rows.append({"name": f"ours {factory} nprobe={nprobe} rerank={factor}", "nprobe": nprobe,
                             "rerank_factor": factor, "build_s": round(build, 1), **point})
                print(rows[-1], flush=True)
    start = time.perf_counter()
    tuned = index.tune(target_recall=args.target_recall, k=k)
    tune_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        index.save(tmp)
        del index  # measure the mmap-loaded index, as the query engine opens it
        loaded = VectorIndex.load(tmp, mmap=True)
        memory = our_memory(loaded, Path(tmp), xq)
        tuned_row = {"name": f"ours {factory} tuned (nprobe={tuned.nprobe} rerank={tuned.rerank_factor})",
                     "build_s": round(build, 1), "tune_s": round(tune_seconds, 1),
                     "tune_result": tuned.as_info(),
                     **measure(ours_search(loaded), xq, truth, k, args.latency_queries), **memory}
        print(tuned_row, flush=True)
        filtered = []
        for selectivity, (threshold, sub_truth) in filtered_truth.items():
            subset = ids[buckets < threshold]
            seconds = unfiltered = float("inf")
            for _ in range(REPEATS):  # interleaved with unfiltered passes: the ratio compares like moments
                start = time.perf_counter()
                loaded.search(xq, k)
                unfiltered = min(unfiltered, time.perf_counter() - start)
                start = time.perf_counter()
                _, found = loaded.search(xq, k, subset=subset)
                seconds = min(seconds, time.perf_counter() - start)
            filtered.append({"selectivity": selectivity, "rows": len(subset),
                             "recall": round(recall_at_k(found, sub_truth, k), 4),
                             "qps": round(len(xq) / seconds, 1),
                             "unfiltered_qps_same_time": round(len(xq) / unfiltered, 1),
                             "qps_vs_unfiltered": round(unfiltered / seconds, 2)})
            print(filtered[-1], flush=True)
    return {"factory": factory, "sweep": rows, "tuned": tuned_row, "filtered": filtered}


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
        point = measure(lambda queries, k: index.knn_query(queries, k)[0].astype(np.int64), xq, truth, args.k,
                        args.latency_queries)
        rows.append({"name": f"hnswlib M={args.hnsw_m} ef={ef}", "ef": ef, "build_s": round(build, 1), **point,
                     "resident_bytes_per_vector": round(size / len(xb), 1)})  # all in RAM: floats + graph
        print(rows[-1], flush=True)
    return rows


def _lance_ids(table, num_queries: int, k: int) -> np.ndarray:
    """(q, k) int64 ids from a LanceDB batch result (query_index, id), padded with -1."""
    found = np.full((num_queries, k), -1, np.int64)
    if num_queries == 1 and "query_index" not in table.column_names:
        hits = table["id"].to_numpy()[:k]
        found[0, : len(hits)] = hits
        return found
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
        table.create_index(metric="dot", num_partitions=nlist, num_sub_vectors=pq_bytes,
                           sample_rate=args.lance_sample_rate, max_iterations=args.lance_iterations)
        build = time.perf_counter() - start
        disk = sum(path.stat().st_size for path in Path(tmp).rglob("*") if path.is_file())
        print(f"LanceDB built in {build:.0f} s", flush=True)

        def query(vectors, nprobes, refine, where=None):
            builder = table.search(vectors).distance_type("dot").nprobes(nprobes).limit(k)
            if refine > 1:
                builder = builder.refine_factor(refine)
            if where is not None:
                builder = builder.where(where, prefilter=True)
            return builder.select(["id", "_distance"]).to_arrow()

        for nprobes in (int(v) for v in args.lance_nprobes.split(",")):
            for refine in (int(v) for v in args.lance_refine.split(",")):
                point = measure(lambda queries, k, p=nprobes, r=refine: _lance_ids(query(queries, p, r), len(queries), k),
                                xq, truth, k, min(args.latency_queries, 50), repeats=2)
                rows.append({"name": f"LanceDB IVF{nlist},PQ{pq_bytes} nprobes={nprobes} refine={refine}",
                             "nprobes": nprobes, "refine_factor": refine, "build_s": round(build, 1), **point,
                             "disk_bytes_per_vector": round(disk / len(xb), 1)})
                print(rows[-1], flush=True)
        good = [row for row in rows if row["recall"] >= args.target_recall] or rows
        best = max(good, key=lambda row: (row["recall"] >= args.target_recall, row["qps"] if row["recall"]
                                          >= args.target_recall else row["recall"]))
        grown = probe(LANCE_PROBE, tmp, str(best["nprobes"]), str(best["refine_factor"]), queries=xq[:200])
        data = sum(value for key, value in grown.items() if not _is_library(key))  # heap + mapped data files
        for row in rows:
            row["resident_bytes_per_vector"] = round(data / len(xb), 1) if grown else None
            row["resident_detail_bytes_per_vector"] = {key: round(v / len(xb), 1) for key, v in grown.items()}
        for selectivity, (threshold, sub_truth) in filtered_truth.items():
            start = time.perf_counter()
            found = _lance_ids(query(xq, best["nprobes"], best["refine_factor"], f"bucket < {threshold}"), len(xq), k)
            seconds = time.perf_counter() - start
            filtered.append({"selectivity": selectivity, "setting": best["name"],
                             "recall": round(recall_at_k(found, sub_truth, k), 4),
                             "qps": round(len(xq) / seconds, 1),
                             "qps_vs_unfiltered": round(len(xq) / seconds / best["qps"], 2)})
            print(filtered[-1], flush=True)
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


def at_equal_recall(result: dict, target: float) -> list[dict]:
    """The fastest setting of each system reaching recall@k >= target, with its memory."""
    systems: dict[str, list[dict]] = {}
    memory: dict[str, float | None] = {}  # ours: every sweep row searches the index whose memory the tuned row measured
    for row in [result["flat"], *result["peers"]]:
        systems.setdefault(row["name"].split(" ")[0], []).append(row)
    for ours in result["ours"]:
        systems[f"ours {ours['factory']}"] = [*ours["sweep"], ours["tuned"]]
        memory[f"ours {ours['factory']}"] = ours["tuned"].get("resident_bytes_per_vector")
    summary = []
    for name, rows in systems.items():
        good = [row for row in rows if row["recall"] >= target]
        if good:
            best = max(good, key=lambda row: row["qps"])
            summary.append({"system": name, "setting": best["name"], "recall": best["recall"], "qps": best["qps"],
                            "p50_ms": best["p50_ms"],
                            "resident_bytes_per_vector": best.get("resident_bytes_per_vector", memory.get(name))})
        else:
            summary.append({"system": name, "setting": None, "recall": max(row["recall"] for row in rows)})
    return summary


def selectivities(text: str) -> tuple[float, ...]:
    """--selectivities: comma-separated fractions in (0, 1], multiples of 0.001 (the bucket column's step)."""
    try:
        values = tuple(float(value) for value in text.split(","))
    except ValueError:
        values = ()
    if not values or any(not 0.001 <= value <= 1 or abs(value * 1000 - round(value * 1000)) > 1e-9
                         for value in values):
        raise argparse.ArgumentTypeError(f"expected fractions like 0.001,0.1,0.5 (multiples of 0.001), got {text!r}")
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--d", type=int, default=256, help="dimension (the model's embed_dim is 256)")
    parser.add_argument("--queries", type=int, default=1000, help="batch queries (recall, queries/s)")
    parser.add_argument("--latency-queries", type=int, default=200, help="single queries timed one by one")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=None, help="synthetic: default n/100")
    parser.add_argument("--noise", type=float, default=1.0, help="synthetic: noise std relative to the centers'")
    parser.add_argument("--real-db", default=REAL_DB,
                        help="real: index directory whose tile vectors seed the set (default: %(default)s)")
    parser.add_argument("--archive", default=str(DATA),
                        help="real: the archive indexed into --real-db when that is missing (default: %(default)s)")
    parser.add_argument("--real-noise", type=float, default=None,
                        help="real: per-dimension noise std (default: half the tiles' median nearest-neighbour "
                             "distance, spread over the d dimensions)")
    parser.add_argument("--bytes-per-vector", type=float, default=80.0,
                        help="resident budget per vector given to choose_index_key")
    parser.add_argument("--factory", default=None, help="default: choose_index_key(n, d, n * bytes-per-vector)")
    parser.add_argument("--compare-factory", default=None, help="a second factory of ours, tuned and measured")
    parser.add_argument("--nprobe", default="1,2,4,8,16,32")
    parser.add_argument("--rerank", default="1,4,6,8,12,16")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selectivities", type=selectivities, default=SELECTIVITIES,
                        help="filtered search: fractions of the rows a filter keeps (multiples of 0.001)")
    parser.add_argument("--sparse-ids", action="store_true", help="ids 3, 10, 17, ... instead of 1..n")
    parser.add_argument("--no-peers", action="store_true", help="skip hnswlib and LanceDB")
    parser.add_argument("--hnsw-m", type=int, default=16, help="hnswlib graph degree (peer)")
    parser.add_argument("--hnsw-ef-construction", type=int, default=100)
    parser.add_argument("--hnsw-ef", default="16,32,64,80,96,128")
    parser.add_argument("--lance-nprobes", default="4,16,64", help="LanceDB IVF-PQ nprobes (peer)")
    parser.add_argument("--lance-refine", default="1,4,16", help="LanceDB refine_factor (its exact re-ranking)")
    parser.add_argument("--lance-sample-rate", type=int, default=64, help="LanceDB k-means sample per partition")
    parser.add_argument("--lance-iterations", type=int, default=10, help="LanceDB k-means iterations")
    parser.add_argument("--out", default=None, help=f"default {RESULTS}/index_<data>_<n>.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    k, n = args.k, args.n
    xb, xq, data = make_vectors(args)
    d = args.d
    # ids as the catalog assigns them to a fresh index (tile_id from 1, no gaps): rows map to ids by offset;
    # --sparse-ids: every 7th id (as after removals), which costs the id map 8 B/vector (resident_bytes)
    ids = np.arange(n, dtype=np.int64) * 7 + 3 if args.sparse_ids else np.arange(1, n + 1, dtype=np.int64)
    buckets = np.random.default_rng(args.seed + 2).integers(0, 1000, n)  # filter column: bucket < 1 is 0.1%
    factory = args.factory or choose_index_key(n, d, memory_budget=int(n * args.bytes_per_vector))
    out = Path(args.out or RESULTS / f"index_{args.data}_{n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "question": "IVF-PQ + exact re-ranking vs exact Flat, hnswlib, LanceDB: recall@10, q/s, latency, memory, "
                    "filters",
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform(),
                    "python": platform.python_version(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "commit": git_commit(),
        "config": {**vars(args), **data, "factory": factory},
        "ours": [], "peers": [], "peer_filtered": [],
    }

    def save() -> None:
        result["at_equal_recall"] = at_equal_recall(result, args.target_recall) if "flat" in result else []
        out.write_text(json.dumps(result, indent=2) + "\n")

    start = time.perf_counter()
    flat = VectorIndex.create(d, "Flat")
    flat.add(ids, xb)
    flat_build = time.perf_counter() - start
    truth_scores, truth = flat.search(xq, k)
    # how far the k-th neighbour lies, unfiltered and per filter: a filtered k-th neighbour at the score of
    # unrelated points (not of the query's own group) can only be found by scanning most of the subset
    result["tenth_score_p50"] = {"unfiltered": round(float(np.median(truth_scores[:, -1])), 3)}
    result["flat"] = {"name": "Flat (exact)", "build_s": round(flat_build, 1),
                      **measure(ours_search(flat), xq, truth, k, min(args.latency_queries, 50)),
                      "resident_bytes_per_vector": round(resident_bytes(n, d, "Flat") / n, 1)}
    print(result["flat"], flush=True)
    del flat
    filtered_truth = {}
    for selectivity in args.selectivities:
        threshold = round(selectivity * 1000)
        inside = buckets < threshold
        sub_truth = VectorIndex.create(d, "Flat")
        sub_truth.add(ids[inside], xb[inside])
        sub_scores, sub_ids = sub_truth.search(xq, k)
        filtered_truth[selectivity] = (threshold, sub_ids)
        result["tenth_score_p50"][str(selectivity)] = round(float(np.median(sub_scores[:, -1])), 3)
    save()

    for number, key in enumerate([factory, *([args.compare_factory] if args.compare_factory else [])]):
        result["ours"].append(bench_ours(key, ids, xb, xq, truth, buckets, filtered_truth, args, sweep=number == 0))
        save()
    if not args.no_peers:
        result["peers"] += bench_hnswlib(xb, ids, xq, truth, args)
        save()
        lance_rows, lance_filtered = bench_lancedb(xb, ids, buckets, xq, truth, filtered_truth, factory, args)
        result["peers"] += lance_rows
        result["peer_filtered"] = lance_filtered
    result["machine"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    print_table(result)
    print(f"result written to {out}")


def print_table(result: dict) -> None:
    machine, config, flat = result["machine"], result["config"], result["flat"]
    print(f"machine: {machine['cpus']} cpus ({machine['cpu']}), OMP_WAIT_POLICY={machine['OMP_WAIT_POLICY']}, "
          f"commit {result['commit'][:10]}, {machine['started']} .. {machine.get('finished')}")
    shape = (f"clusters={config['clusters']} noise={config['noise']}" if config["data"] == "synthetic" else
             f"{config['base_tiles']} real tiles expanded, noise {config['real_noise_used']}/dim, queries from "
             f"{config['query_tiles']} held-out tiles")
    print(f"vectors: {config['data']} n={config['n']} d={config['d']} {shape}, {config['queries']} queries, "
          f"k={config['k']}; budget {config['bytes_per_vector']} B/vector -> {config['factory']}")
    print(f"{'index':<52}{'recall@10':>10}{'q/s':>9}{'x Flat':>8}{'p50 ms':>8}{'p99 ms':>8}{'B/vec':>8}")
    rows = [flat]
    for ours in result["ours"]:
        rows += [*ours["sweep"], ours["tuned"]]
    for row in [*rows, *result["peers"]]:
        memory = row.get("resident_bytes_per_vector")
        print(f"{row['name']:<52}{row['recall']:>10.3f}{row['qps']:>9.0f}{row['qps'] / flat['qps']:>8.1f}"
              f"{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}{memory if memory is not None else '':>8}")
    for ours in result["ours"]:
        tuned = ours["tuned"]
        print(f"ours {ours['factory']}: build {tuned['build_s']} s + tune {tuned['tune_s']} s; resident "
              f"{tuned['resident_bytes_per_vector']} B/vector measured (fresh process, mmap load + single queries: "
              f"{tuned['resident_detail_bytes_per_vector']}; heap after a 1000-query batch "
              f"{tuned['after_batch_anon_bytes_per_vector']}), {tuned['resident_bytes_per_vector_arithmetic']} by "
              f"arithmetic; {tuned['exact_copy']} exact copy on disk {tuned['exact_copy_on_disk_bytes_per_vector']} B/vector")
    for peer in result["peers"]:
        if peer["name"].startswith("hnswlib"):
            print(f"hnswlib: build {peer['build_s']} s, {peer['resident_bytes_per_vector']} B/vector in RAM")
            break
    lance = [row for row in result["peers"] if row["name"].startswith("LanceDB")]
    if lance:
        print(f"LanceDB: build {lance[0]['build_s']} s, {lance[0]['disk_bytes_per_vector']} B/vector on disk, "
              f"resident (heap + mapped data) after open + 200 queries {lance[0]['resident_bytes_per_vector']} B/vector "
              f"({lance[0]['resident_detail_bytes_per_vector']})")
    peer = {row["selectivity"]: row for row in result.get("peer_filtered", [])}
    for ours in result["ours"]:
        tenth = result.get("tenth_score_p50", {})
        print(f"{'filtered, ' + ours['factory']:<28}{'rows':>9}{'recall@10':>10}{'q/s':>9}{'x unfilt.':>10}"
              f"{'LanceDB recall':>16}{'LanceDB q/s':>12}{'x unfilt.':>10}"
              f"{'10th score p50 (unfiltered ' + str(tenth.get('unfiltered', '')) + ')':>34}")
        for row in ours["filtered"]:
            other = peer.get(row["selectivity"])
            tail = f"{other['recall']:>16.3f}{other['qps']:>12.0f}{other['qps_vs_unfiltered']:>10.2f}" if other else ""
            tail = tail or " " * 38
            print(f"{row['selectivity'] * 100:>27.1f}%{row['rows']:>9}{row['recall']:>10.3f}{row['qps']:>9.0f}"
                  f"{row['qps_vs_unfiltered']:>10.2f}{tail}{tenth.get(str(row['selectivity']), ''):>34}")
    print(f"at recall@10 >= {config['target_recall']}:")
    for row in result["at_equal_recall"]:
        if row["setting"] is None:
            print(f"  {row['system']:<28} never reached (best recall {row['recall']:.3f})")
        else:
            print(f"  {row['system']:<28} {row['qps']:>8.0f} q/s ({row['qps'] / flat['qps']:.1f}x Flat), "
                  f"p50 {row['p50_ms']:.2f} ms, recall {row['recall']:.3f}, "
                  f"resident {row['resident_bytes_per_vector']} B/vector  [{row['setting']}]")


if __name__ == "__main__":
    main()
