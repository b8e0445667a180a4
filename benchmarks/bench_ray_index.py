"""`sarsearch index ARCHIVE` with and without `--ray`, in one run: tiles/s of each, their ratio, and whether the
two indexes are the same; then the same archive on a simulated two-node Ray cluster and how its work spread.

    python benchmarks/bench_ray_index.py [--archive ../shared/data] [--no-two-nodes] [--out benchmarks/results/ray_index.json]

1. `python -m sarclip_search index ARCHIVE --db <fresh> --quiet` (one process: reading 2 files ahead in threads
   while the current batch embeds), then the same with `--ray` (a local Ray started by the command on this
   machine's CPUs: prepare tasks + one embedding actor). Each line's figures are the command's own summary
   (seconds inside index_archive, tiles/s overall and of the embedding stage) and the command's wall time
   (Python start, Ray start and shutdown included). The goal (issue 15): Ray >= 0.9x the one-process tiles/s
   on one machine. The files are read once first so that neither run reads from a colder page cache.
2. The two indexes: tile ids, every catalog row (benchmarks/bench_indexing.catalog_tables), vectors within
   1e-5 or one float16 step of the stored copy (and how many are bitwise equal).
3. `tests/scale/two_nodes.py`: a `ray.cluster_utils.Cluster` of two nodes (2 CPUs each, on this machine),
   the archive indexed there; files read and tiles embedded per node; the index compared with (1)'s.

Prints a table and writes JSON (machine, commit, load average before each run, figures, comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

from bench_indexing import SUMMARY, catalog_tables

from defaults import DATA, REPO, RESULTS, require_archive


def run_index(archive: Path, db: Path, *extra: str) -> dict:
    """One `sarsearch index` of a fresh db; its summary line's figures and its wall time."""
    command = [sys.executable, "-m", "sarclip_search", "index", str(archive), "--db", str(db), "--quiet", *extra]
    # SARSEARCH_LOG=INFO: the indexer logs where its time went (ingest/timing.py stages), parsed below
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200", "SARSEARCH_LOG": "INFO"}
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, cwd=REPO)
    wall = time.perf_counter() - started
    match = SUMMARY.search(done.stderr)
    if done.returncode not in (0, 3) or match is None:
        sys.exit(f"error: {' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    tiles, seconds, overall, embedding = match.groups()
    stages = re.search(r"index stages \(seconds[^)]*\): (.*)", done.stderr)
    stage_seconds = {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+) s", stages[1])} if stages else {}
    return {"stage_seconds": stage_seconds, "command": " ".join(["sarsearch", *command[3:]]), "tiles": int(tiles), "seconds": float(seconds),
            "tiles_per_s": float(overall), "embed_tiles_per_s": float(embedding) if embedding else None,
            "wall_seconds": round(wall, 1), "wall_tiles_per_s": round(int(tiles) / wall, 1),
            "load_1min_before": round(load, 2), "exit": done.returncode}


def compare(db_a: Path, db_b: Path) -> dict:
    """Catalog rows, ids, vectors (within 1e-5, or one float16 step of the stored copy) of two indexes."""
    import numpy as np

    from sarclip_search.index import VectorIndex
    from sarclip_search.store.layout import IndexStore

    gen_a, gen_b = IndexStore(db_a).require_current(), IndexStore(db_b).require_current()
    tables_a, tables_b = catalog_tables(gen_a.catalog_path), catalog_tables(gen_b.catalog_path)
    result: dict = {"catalog_equal": tables_a == tables_b,
                    "catalog_rows": {name: len(rows) for name, (_, rows) in tables_a.items()}}
    a, b = VectorIndex.load(gen_a.vectors_path), VectorIndex.load(gen_b.vectors_path)
    ids_a, ids_b = np.sort(a.ids()), np.sort(b.ids())
    result["ids_equal"] = bool(np.array_equal(ids_a, ids_b))
    if result["ids_equal"]:
        va, vb = a.vectors(ids_a), b.vectors(ids_a)
        diff = np.abs(va - vb)
        result["vectors_max_abs_diff"] = float(diff.max()) if diff.size else 0.0
        result["vectors_bitwise_equal_fraction"] = float((va == vb).mean()) if diff.size else 1.0
        result["vectors_within_tolerance"] = bool(np.all(diff <= 1e-5 + 2**-10 * np.abs(vb)))
    result["equal"] = bool(result["catalog_equal"] and result["ids_equal"] and result.get("vectors_within_tolerance"))
    return result


def two_nodes(archive: Path, db: Path, model: Path) -> dict:
    out = db.parent / "two_nodes.json"
    command = [sys.executable, str(REPO / "tests" / "scale" / "two_nodes.py"), str(archive), str(db), str(model),
               str(out)]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["load_1min_before"] = round(load, 2)
    return result


def warm(archive: Path) -> None:
    for path in archive.rglob("*"):
        if path.is_file():
            path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", default=str(DATA), help="archive folder (default: ../shared/data)")
    parser.add_argument("--no-two-nodes", action="store_true", help="skip the simulated two-node run")
    parser.add_argument("--out", default=str(RESULTS / "ray_index.json"))
    args = parser.parse_args()
    archive = require_archive(args.archive, "--archive").resolve()
    from sarclip_search.model.checkpoints import DEFAULT_CHECKPOINT

    work = Path(tempfile.mkdtemp(prefix="bench-ray-", dir=REPO / "runs" if (REPO / "runs").is_dir() else None))
    try:
        warm(archive)
        local = run_index(archive, work / "local")
        print(f"one process: {local['tiles']} tiles in {local['seconds']} s = {local['tiles_per_s']} tiles/s "
              f"(wall {local['wall_seconds']} s; load {local['load_1min_before']})", flush=True)
        ray = run_index(archive, work / "ray", "--ray")
        print(f"--ray:       {ray['tiles']} tiles in {ray['seconds']} s = {ray['tiles_per_s']} tiles/s "
              f"(wall {ray['wall_seconds']} s; load {ray['load_1min_before']})", flush=True)
        same = compare(work / "local", work / "ray")
        ratio = round(ray["tiles_per_s"] / local["tiles_per_s"], 3)
        wall_ratio = round(local["wall_seconds"] / ray["wall_seconds"], 3)
        print(f"ratio ray / one process: {ratio} tiles/s inside index_archive (goal >= 0.9), {wall_ratio} by wall "
              f"time; same index: {same['equal']} (catalog {same['catalog_equal']}, ids {same['ids_equal']}, "
              f"max |dv| {same.get('vectors_max_abs_diff')}, bitwise {same.get('vectors_bitwise_equal_fraction')})",
              flush=True)
        result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                  "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, check=False).stdout.strip(),
                  "archive": str(archive), "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                  "one_process": local, "ray": ray, "ratio_tiles_per_s": ratio, "ratio_wall": wall_ratio,
                  "comparison": same}
        if not args.no_two_nodes:
            nodes = two_nodes(archive, work / "two", DEFAULT_CHECKPOINT)
            nodes["comparison"] = compare(work / "local", work / "two")
            spread = {("head" if node == nodes["head"] else "worker"): counts
                      for node, counts in nodes["report_nodes"].items()}
            nodes["spread"] = spread
            print(f"two simulated nodes: {nodes['tiles']} tiles in {nodes['seconds']:.1f} s "
                  f"({nodes['tiles'] / nodes['seconds']:.1f} tiles/s; load {nodes['load_1min_before']}); "
                  f"spread {spread}; same index: {nodes['comparison']['equal']}", flush=True)
            result["two_nodes"] = nodes
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
