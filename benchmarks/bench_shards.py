"""Index building from embedding shards (`sarsearch index --from-shards`, issue #15): one process vs Ray tasks.

    python benchmarks/bench_shards.py [--n 200000] [--shard-tiles 20000] [--cpus 2] [--factory F ...]
                                      [--out benchmarks/results/shards_200000.json]

One run, the same shards and queries for every row:
  1. --n seeded clustered vectors (d = the shipped model's embed_dim, L2-normalized; --n/100 clusters) with
     generated catalog rows (scenes of 100 tiles with a path, size, dataset and datetime; tiles with their
     window and a bbox), written as shards of --shard-tiles tiles (`ingest/shards.py`); 1,000 held-out
     queries from the same clusters; exact top 10 by brute force (the ground truth).
  2. per factory (default: choose_index_key's choice at the default 2 GiB budget, and its choice at 80 B per
     vector, an IVF-PQ): `build_from_shards` encoding in one process (FAISS's OpenMP threads over all cores) and
     encoding in Ray tasks (a local Ray of --cpus CPUs, started before the timer: its start is reported apart),
     each a full generation (catalog rows, training once, codes, add, tune, save); and the same vectors added to a
     VectorIndex in memory (`create` + `add` + `tune`: the vectors-only one-process build) as the reference.
  3. recall@10 of each against exact search, at its tuned nprobe / rerank and at a fixed nprobe with no
     re-ranking; whether the shard builds return the same ids as the reference.
The machine's 1-minute load (`uptime`) is recorded before and after: the timings are only comparable under the
same load. JSON to --out (benchmarks/results/ by default), a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sarclip_search.index import VectorIndex, choose_index_key, exact_search, recall_at_k
from sarclip_search.ingest.from_shards import build_from_shards
from sarclip_search.ingest.shards import ShardHeader, ShardWriter
from sarclip_search.store.layout import IndexStore

from defaults import REPO, RESULTS, write_result

TILES_PER_SCENE = 100
QUERIES = 1000


def load_average() -> float:
    return os.getloadavg()[0]


def model_identity() -> dict:
    """The shipped checkpoint's identity (name and dim from its JSON record, the file's sha256; no torch import)."""
    from sarclip_search._fs import file_sha256

    folder = REPO / "sarclip_search/model/checkpoints"
    text = (folder / "sarclip-default.json").read_text()
    record = json.loads(text)
    found: dict = {}

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("embed_dim", "model_name") and not isinstance(item, (dict, list)):
                    found.setdefault(key, item)
                walk(item)

    walk(record)
    return {"model_name": found["model_name"], "checkpoint_sha256": file_sha256(folder / "sarclip-default.pt"),
            "embed_dim": int(found["embed_dim"])}


def clustered(n: int, d: int, clusters: int, seed: int, centers_seed: int = 0) -> np.ndarray:
    """Seeded L2-normalized Gaussian clusters, drawn in chunks (bounded float64 temporaries)."""
    centers = np.random.default_rng(centers_seed).standard_normal((clusters, d)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        block = centers[rng.integers(0, clusters, stop - start)]
        block += 0.5 * rng.standard_normal((stop - start, d)).astype(np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def write_shards(folder: Path, xb: np.ndarray, header: ShardHeader, shard_tiles: int) -> float:
    """Shards of generated scenes (TILES_PER_SCENE tiles each) holding `xb` in order; returns seconds."""
    started = time.perf_counter()
    writer = ShardWriter(folder, header)
    epoch = datetime(2020, 1, 1)
    for start in range(0, len(xb), shard_tiles):
        block = xb[start : start + shard_tiles]
        scenes, tiles = [], []
        for first in range(0, len(block), TILES_PER_SCENE):
            number = (start + first) // TILES_PER_SCENE
            path = f"s1/scene_{number:06d}.tif"
            lon, lat = -180 + (number * 0.37) % 360, -60 + (number * 0.11) % 120
            scenes.append({"path": path, "size_bytes": 10_000_000 + number, "width": 2560, "height": 2560,
                           "dataset": f"campaign-{number % 7}", "datetime": epoch + timedelta(hours=number),
                           "bbox_minlon": lon, "bbox_minlat": lat, "bbox_maxlon": lon + 0.3,
                           "bbox_maxlat": lat + 0.3, "footprint_source": "raster"})
            for j in range(min(TILES_PER_SCENE, len(block) - first)):
                col, row = j % 10, j // 10
                tiles.append({"path": path, "col_off": 256 * col, "row_off": 256 * row, "width": 256, "height": 256,
                              "bbox": (lon + 0.03 * col, lat + 0.03 * row, lon + 0.03 * (col + 1),
                                       lat + 0.03 * (row + 1))})
        writer.write(scenes, tiles, block)
    return time.perf_counter() - started


def recalls(index: VectorIndex, queries: np.ndarray, exact: np.ndarray) -> dict:
    tuned = index.search(queries, 10)[1]
    fixed = index.search(queries, 10, nprobe=16, rerank_factor=1)[1]
    return {"tuned": round(recall_at_k(tuned, exact, 10), 4), "nprobe": index.nprobe,
            "rerank_factor": index.rerank_factor, "nprobe16_no_rerank": round(recall_at_k(fixed, exact, 10), 4),
            "_fixed_ids": fixed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--shard-tiles", type=int, default=20_000)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--factory", action="append", help="FAISS factory (repeatable; default: see the docstring)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, help="folder for the shards and indexes (default: a temporary one)")
    args = parser.parse_args()
    identity = model_identity()
    d = identity["embed_dim"]
    factories = args.factory or [choose_index_key(args.n, d, None), choose_index_key(args.n, d, 80 * args.n)]
    out = args.out or RESULTS / f"shards_{args.n}.json"
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_shards_"))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    result: dict = {"n": args.n, "d": d, "shard_tiles": args.shard_tiles, "ray_cpus": args.cpus,
                    "cpus": os.cpu_count(), "machine": platform.machine(), "commit": commit,
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_1min_before": load_average(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "factories": {}}

    xb = clustered(args.n, d, max(10, args.n // 100), seed=1)
    queries = clustered(QUERIES, d, max(10, args.n // 100), seed=2)
    ids = np.arange(1, args.n + 1)
    exact = exact_search(xb, ids, queries, 10)[1]
    header = ShardHeader.create(identity, tile_size=256, tile_stride=256, archive_root="/archive")
    shards = work / "shards"
    result["write_shards_s"] = round(write_shards(shards, xb, header, args.shard_tiles), 2)
    result["shards"] = len(list(shards.glob("shard-*.parquet")))

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    result["ray_start_s"] = round(time.perf_counter() - started, 2)
    try:
        for factory in factories:
            row: dict = {}
            started = time.perf_counter()
            direct = VectorIndex.create(d, factory)
            direct.add(ids, xb)
            direct.tune()
            row["direct_vectors_only"] = {"seconds": round(time.perf_counter() - started, 2),
                                          **recalls(direct, queries, exact)}
            reference = row["direct_vectors_only"].pop("_fixed_ids")
            for name, use_ray in (("one_process", False), ("ray_tasks", True)):
                db = work / f"db-{name}-{factory.replace(',', '_')}"
                report = build_from_shards(shards, IndexStore(db), index_factory=factory, ray=use_ray)
                built = VectorIndex.load(IndexStore(db).require_current().vectors_path)
                measured = recalls(built, queries, exact)
                fixed = measured.pop("_fixed_ids")
                row[name] = {"seconds": round(report.seconds["total"], 2),
                             "stages": {k: round(v, 2) for k, v in report.seconds.items()},
                             "encoder": report.encoder, **measured,
                             "same_ids_as_direct_nprobe16": bool(np.array_equal(fixed, reference)),
                             "same_ids": bool(np.array_equal(built.ids(), ids))}
                shutil.rmtree(db)
            result["factories"][factory] = row
            result["load_1min_after"] = load_average()
            write_result(out, result)
    finally:
        ray.shutdown()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    print(f"n={args.n} d={d}, {result['shards']} shards of {args.shard_tiles} tiles, Ray on {args.cpus} CPUs "
          f"(start {result['ray_start_s']} s, not counted); 1-min load {result['load_1min_before']:.2f} -> "
          f"{result['load_1min_after']:.2f}")
    print(f"{'factory':<18} {'build':<28} {'seconds':>8} {'recall@10 tuned':>16} {'(nprobe, rerank)':>17} "
          f"{'recall nprobe16':>16} {'= direct ids':>13}")
    for factory, row in result["factories"].items():
        for name, values in row.items():
            print(f"{factory:<18} {name:<28} {values['seconds']:>8.1f} {values['tuned']:>16.4f} "
                  f"{(values['nprobe'], values['rerank_factor'])!s:>17} {values['nprobe16_no_rerank']:>16.4f} "
                  f"{values.get('same_ids_as_direct_nprobe16', '-')!s:>13}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
