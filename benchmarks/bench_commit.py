"""What one generation commit costs at 1M vectors: the copy behaviour (before) vs append-only commits (after),
side by side in one run; then search speed on the segmented exact copy vs one file.

    python benchmarks/bench_commit.py [--n 1000000] [--dim 256] [--factory IVF1024,PQ32x8] [--batch 1000]
        [--repeat 3] [--db runs/bench-commit] [--out benchmarks/results/commit_1000000.json]

Synthetic clustered unit vectors (float32, seeded); the index is built once (`--factory`; IVF1024,PQ32x8 by
default: the files a commit handles are the size of `index`'s IVF4096,PQ32x8 at 1M, 32 B codes + 8 B ids per
vector in vectors.faiss, a float32 exact copy, 8 B ids, 32 B subset codes, but training 1,024 lists
takes ~4x less time than 4,096) and committed as the first generation of an index directory. Then each
commit does what `sarsearch index` does per batch to the vector index: stage a generation from CURRENT
(`IndexStore.new_generation`), load it (not memory-mapped, as the indexer does), add `--batch` vectors,
save, publish and point CURRENT at it, the old generation removed. Modes alternate (before, after, ...):

  before  the behaviour before append-only commits, reproduced in this checkout: vectors/ copied into the
          staged generation (shutil.copytree, what layout.py did), the loaded arrays without spare rows (so
          the add copies them, as it did), and every file of the index written again (`Rows.origin`
          cleared: the save then writes the whole exact copy, ids, codes and FAISS file, the bytes the old
          .npy save wrote)
  after   hard links for the staged vectors/, spare rows to add into, an append-only save (this change)

The catalog (a DuckDB file, copied by both modes alike) is not part of this measurement: a stand-in empty
file. Bytes written: /proc/self/io write_bytes (what the process sent towards the disk: page-cache pages it
dirtied, including the copy) and the sizes of the new generation's files that are not hard links of the old
generation's. Times are wall seconds per phase.

Search after the commits: the last generation (its exact copy in several segments, mapped as one view) vs the
same index saved as one segment, both memory-mapped: unfiltered q/s (nprobe 8, re-rank 8: k*8 rows gathered
from the exact copy per query) and 1%-filtered q/s (exact search over the subset's rows), after a pass touching
every row of both, 5 alternating rounds, medians (the machine is shared: rounds vary by 2x under load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

import numpy as np

from sarclip_search.index import VectorIndex
from sarclip_search.store import layout
from sarclip_search.store.layout import IndexStore

from defaults import RESULTS, RUNS, write_result


def synthetic(n: int, dim: int, seed: int = 0, clusters: int = 2000) -> np.ndarray:
    """(n, dim) float32 unit vectors around seeded cluster centres, made in chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        chunk = centres[rng.integers(0, clusters, stop - start)]
        chunk += 0.25 * rng.standard_normal(chunk.shape, dtype=np.float32) / np.sqrt(dim)
        out[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def write_bytes() -> int:
    with open("/proc/self/io") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("write_bytes:"))


def inodes(directory: Path) -> set[int]:
    return {path.stat().st_ino for path in directory.rglob("*") if path.is_file()}


@contextmanager
def copy_behaviour(mode: str):
    """`before`: layout stages vectors/ by copying (shutil.copytree) instead of hard-linking."""
    real = layout.link_tree
    if mode == "before":
        layout.link_tree = lambda source, target: shutil.copytree(source, target)
    try:
        yield
    finally:
        layout.link_tree = real


def commit(store: IndexStore, mode: str, ids: np.ndarray, xb: np.ndarray) -> dict:
    previous = store.current()
    old_inodes = inodes(previous.path)
    io_before, started = write_bytes(), time.perf_counter()
    marks = {}
    with store.lock(), copy_behaviour(mode), store.new_generation() as generation:
        generation.catalog_path.touch()
        marks["stage"] = time.perf_counter()
        vectors = VectorIndex.load(generation.vectors_path)
        if mode == "before":  # the old loader's arrays had no spare rows: the first add copied them
            rows = vectors.rows
            rows._store, rows._ids, rows._codes = rows.store, rows.ids, rows.codes
        marks["load"] = time.perf_counter()
        vectors.add(ids, xb)
        marks["add"] = time.perf_counter()
        if mode == "before":
            vectors.rows.origin = None  # nothing to keep: every file written again
        saved = vectors.save(generation.vectors_path)
        marks["save"] = time.perf_counter()
        segments = len(json.loads((generation.vectors_path / "index_info.json").read_text())
                       ["files"]["columns"]["store"]["segments"])
    done = time.perf_counter()
    current = store.current()
    new_files = [p for p in current.path.rglob("*") if p.is_file() and p.stat().st_ino not in old_inodes]
    times = [started, marks["stage"], marks["load"], marks["add"], marks["save"], done]
    names = ["stage_s", "load_s", "add_s", "save_s", "publish_s"]
    return {
        "mode": mode, "seconds": round(done - started, 3),
        **{name: round(b - a, 3) for name, a, b in zip(names, times, times[1:])},
        "write_bytes": write_bytes() - io_before,
        "new_file_bytes": sum(p.stat().st_size for p in new_files),
        "save_bytes": saved, "store_segments": segments, "ntotal": vectors.ntotal,
    }


def huge_mapped(directory: Path) -> tuple[int, int]:
    """(kB resident, kB mapped with huge pages) of this process's mappings of files under `directory`."""
    import re

    rss = pmd = 0
    with open("/proc/self/smaps") as handle:
        blocks = re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", handle.read())
    for block in blocks:
        if str(directory) in block.splitlines()[0]:
            fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", block, re.MULTILINE))
            rss, pmd = rss + int(fields.get("Rss", 0)), pmd + int(fields.get("FilePmdMapped", 0))
    return rss, pmd


def qps(index: VectorIndex, xq: np.ndarray, subset: np.ndarray | None) -> float:
    started = time.perf_counter()
    if subset is None:
        index.search(xq, 10, nprobe=8, rerank_factor=8)
    else:
        for start in range(0, len(xq), 50):
            index.search(xq[start : start + 50], 10, subset=subset)
    return len(xq) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--factory", default="IVF1024,PQ32x8")
    parser.add_argument("--batch", type=int, default=1000, help="vectors added per commit")
    parser.add_argument("--repeat", type=int, default=3, help="commits per mode")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--db", type=Path, default=RUNS / "bench-commit")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or RESULTS / f"commit_{args.n}.json"
    shutil.rmtree(args.db, ignore_errors=True)
    store = IndexStore(args.db)
    total = args.n + 2 * args.repeat * args.batch + 3 * (args.batch // 4)
    xb = synthetic(total + args.queries, args.dim)
    xq, xb = xb[total:], xb[:total]

    started = time.perf_counter()
    index = VectorIndex.create(args.dim, args.factory)
    for start in range(0, args.n, 100_000):
        index.add(np.arange(start, min(args.n, start + 100_000)), xb[start : min(args.n, start + 100_000)])
    build_s = time.perf_counter() - started
    with store.lock(), store.new_generation(copy_current=False) as generation:
        generation.catalog_path.touch()
        index.save(generation.vectors_path)
    del index
    sizes = {p.name: p.stat().st_size for p in store.current().vectors_path.iterdir()}
    print(f"built {args.factory} over {args.n} x {args.dim} in {build_s:.0f} s; files: {sizes}", flush=True)

    commits, next_id = [], args.n
    for _ in range(args.repeat):
        for mode in ("before", "after"):
            ids = np.arange(next_id, next_id + args.batch)
            commits.append(commit(store, mode, ids, xb[next_id : next_id + args.batch]))
            next_id += args.batch
            print(json.dumps(commits[-1]), flush=True)
    # a few more appending commits, so the searched generation's copy is a chain of segments
    extra = []
    for _ in range(3):
        ids = np.arange(next_id, next_id + args.batch // 4)
        extra.append(commit(store, "after", ids, xb[next_id : next_id + args.batch // 4]))
        next_id += args.batch // 4

    segmented = VectorIndex.load(store.current().vectors_path, mmap=True)
    single_dir = args.db.parent / (args.db.name + "-single")
    shutil.rmtree(single_dir, ignore_errors=True)
    whole = VectorIndex.load(store.current().vectors_path)
    whole.rows.origin = None
    whole.save(single_dir)
    del whole
    single = VectorIndex.load(single_dir, mmap=True)
    chain = json.loads((store.current().vectors_path / "index_info.json").read_text())["files"]["columns"]["store"]
    subset = np.sort(np.random.default_rng(1).choice(segmented.ids(), segmented.ntotal // 100, replace=False))
    for index in (segmented, single):  # warm: every page of the copy mapped, lazily built lookups built
        float(index.rows.store[:, 0].sum())
        qps(index, xq[:100], None), qps(index, xq[:100], subset)
    search = {"segmented": {"unfiltered": [], "filtered_1pct": []}, "single": {"unfiltered": [], "filtered_1pct": []}}
    for _ in range(5):
        for name, index in (("segmented", segmented), ("single", single)):
            search[name]["unfiltered"].append(qps(index, xq, None))
            search[name]["filtered_1pct"].append(qps(index, xq[:200], subset))
    same = all(np.array_equal(a, b) for a, b in zip(segmented.search(xq, 10, nprobe=8, rerank_factor=8),
                                                     single.search(xq, 10, nprobe=8, rerank_factor=8)))

    def median(mode: str, key: str) -> float:
        return statistics.median(c[key] for c in commits if c["mode"] == mode)

    keys = ["seconds", "stage_s", "load_s", "add_s", "save_s", "publish_s", "write_bytes", "new_file_bytes"]
    summary = {mode: {key: median(mode, key) for key in keys} for mode in ("before", "after")}
    result = {
        "benchmark": "bench_commit", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "load_1min_at_start_and_end": None},
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "settings": {"n": args.n, "dim": args.dim, "factory": args.factory, "batch": args.batch,
                     "repeat": args.repeat, "queries": args.queries},
        "build_seconds": round(build_s, 1), "files_at_start": sizes,
        "commits": commits, "extra_after_commits": extra, "median": summary,
        "search": {
            "store_segments": len(chain["segments"]),
            **{name: {key: round(statistics.median(values), 1) for key, values in figures.items()}
               for name, figures in search.items()},
            "runs": {name: {key: [round(value) for value in values] for key, values in figures.items()}
                     for name, figures in search.items()},
            "same_results": same,
            "resident_and_huge_page_kB": {"segmented": huge_mapped(store.current().vectors_path),
                                          "single": huge_mapped(single_dir)},
        },
    }
    result["machine"]["load_1min_at_start_and_end"] = [LOAD_AT_START, os.getloadavg()[0]]
    write_result(out, result)
    mb = 1e6
    print(f"\n{args.n} x {args.dim} {args.factory}, +{args.batch} vectors per commit, medians of {args.repeat}")
    print(f"{'':8} {'seconds':>8} {'stage':>6} {'load':>6} {'add':>6} {'save':>6} {'publish':>7} "
          f"{'write MB':>9} {'new files MB':>12}")
    for mode in ("before", "after"):
        s = summary[mode]
        print(f"{mode:8} {s['seconds']:8.2f} {s['stage_s']:6.2f} {s['load_s']:6.2f} {s['add_s']:6.2f} "
              f"{s['save_s']:6.2f} {s['publish_s']:7.2f} {s['write_bytes'] / mb:9.1f} {s['new_file_bytes'] / mb:12.1f}")
    print(f"search ({len(chain['segments'])} segments vs 1): unfiltered "
          f"{result['search']['segmented']['unfiltered']} vs {result['search']['single']['unfiltered']} q/s, "
          f"1% filtered {result['search']['segmented']['filtered_1pct']} vs "
          f"{result['search']['single']['filtered_1pct']} q/s, same results: {same}; resident / huge-page kB "
          f"{result['search']['resident_and_huge_page_kB']}")
    print(f"load (1 min) {LOAD_AT_START:.2f} at start, {os.getloadavg()[0]:.2f} at end; wrote {out}")
    shutil.rmtree(single_dir, ignore_errors=True)


LOAD_AT_START = os.getloadavg()[0]

if __name__ == "__main__":
    main()
