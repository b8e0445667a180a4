"""Indexing before/after a change, side by side: tiles/s of two checkouts on the same archive, and their indexes compared.

    python benchmarks/bench_indexing.py --before /tmp/venv-before/bin/python --after /tmp/venv-after/bin/python \
        [--archive ../shared/data] [--repeat 1] [--quiet] [--also-torch] [--out benchmarks/results/indexing.json]

Each PYTHON is the interpreter of a venv where one checkout is installed (`pip install --no-deps -e .`); each
runs `python -m sarclip_search index ARCHIVE --db <fresh folder>` (its own shipped checkpoint), one after the
other (before, after, before, after ... with --repeat), with OMP_WAIT_POLICY=PASSIVE, after one read of every
archive file (so no run reads from a colder page cache). The figures are the
command's own summary line: seconds, tiles/s overall (model loading and the ONNX export included) and tiles/s of
the embedding stage; "outside embedding" is seconds - tiles / embedding rate (the rate is printed rounded, so
±1%). The progress bar is on (as a user runs it; --quiet turns it off), its output discarded. Each run logs at
INFO (SARSEARCH_LOG=INFO): a checkout that times its stages (`ingest/timing.py`) logs where the time went
(decode, radiometry, resize, model, embed, catalog, faiss, commit; seconds summed over threads, so they
overlap when files are read ahead), shown per stage. `--also-torch` adds a third side, "after-torch": the after
checkout with SARSEARCH_EMBEDDER=torch (its torch embedding, for the stage times of both embedders in one code).

Then the last index of each side is compared with before's: tile ids, every row of every catalog table (all
columns), the vectors (bitwise, np.array_equal, else the smallest cosine between a tile's two vectors: "same
index" needs >= 0.9999, what ONNX vs torch embedding is held to) and info.json (which differs in its time,
checkpoint path and version lines).
Prints a table and writes a JSON result (machine, both commits, settings, figures, comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

from defaults import DATA, RESULTS, require_archive

SUMMARY = re.compile(r"tiles added: (\d+) in ([\d.]+) s \(([\d.]+) tiles/s overall(?:, (\d+) tiles/s embedding)?\)")
STAGES = re.compile(r"index stages \([^)]*\): (.*)")
STAGE = re.compile(r"(\w+) ([\d.]+) s")
MIN_COSINE = 0.9999  # vectors of two embedders (ONNX vs torch) count as the same index above this


def run_index(python: str, archive: str, db: Path, quiet: bool, env: dict[str, str] | None = None) -> dict:
    """One `index` run of a fresh db by `python`; its summary line's figures and, when logged, its stage seconds.

    `-P` and a working directory outside any checkout: `python -m` would otherwise import the package from
    the working directory rather than from the venv's checkout.
    """
    command = [python, "-P", "-m", "sarclip_search", "index", archive, "--db", str(db),
               *(["--quiet"] if quiet else [])]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200", "SARSEARCH_LOG": "INFO", **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, cwd=db.parent)
    match = SUMMARY.search(done.stderr)
    if done.returncode not in (0, 3) or match is None:
        sys.exit(f"error: {' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    tiles, seconds, overall, embedding = match.groups()
    figures = {"tiles": int(tiles), "seconds": float(seconds), "tiles_per_s": float(overall),
               "embed_tiles_per_s": float(embedding) if embedding else None}
    if embedding:
        figures["outside_embedding_seconds"] = round(float(seconds) - int(tiles) / float(embedding), 1)
    stages = STAGES.search(done.stderr)
    if stages:
        figures["stages"] = {name: float(value) for name, value in STAGE.findall(stages.group(1))}
    return figures


def commit_of(python: str) -> str:
    """The git commit of the checkout `python` imports sarclip_search from."""
    code = "import sarclip_search, pathlib; print(pathlib.Path(sarclip_search.__file__).resolve().parent.parent)"
    root = subprocess.run([python, "-P", "-c", code], capture_output=True, text=True, check=True,
                          cwd=tempfile.gettempdir()).stdout.strip()
    head = subprocess.run(["git", "-C", root, "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True,
                          check=False)
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, check=False).stdout.strip()
    return f"{head.stdout.strip() or '?'}{' (uncommitted changes)' if dirty else ''} at {root}"


def catalog_tables(catalog: Path) -> dict[str, tuple[list[str], list[tuple]]]:
    import duckdb

    con = duckdb.connect(str(catalog), read_only=True)
    try:
        names = [row[0] for row in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_type = 'BASE TABLE' ORDER BY table_name").fetchall()]
        tables = {}
        for name in names:
            cursor = con.execute(f'SELECT * FROM "{name}" ORDER BY ALL')
            tables[name] = ([d[0] for d in cursor.description], cursor.fetchall())
        return tables
    finally:
        con.close()


# run by each side's python: its own checkout reads its own index (vector storage formats change between commits)
DUMP = """
import sys, numpy as np
from sarclip_search.index import VectorIndex
from sarclip_search.store.layout import IndexStore
generation = IndexStore(sys.argv[1]).require_current()
vectors = VectorIndex.load(generation.vectors_path)
ids = np.sort(vectors.ids())
np.save(sys.argv[2], ids)
np.save(sys.argv[3], vectors.vectors(ids))
print(generation.path)
"""


def dump_index(python: str, db: Path) -> tuple[Path, Any, Any]:
    """(committed generation, sorted ids, their vectors) of index `db`, read by `python`'s checkout."""
    import numpy as np

    ids_file, vectors_file = db.parent / f"{db.name}-ids.npy", db.parent / f"{db.name}-vectors.npy"
    done = subprocess.run([python, "-P", "-c", DUMP, str(db), str(ids_file), str(vectors_file)], capture_output=True,
                          text=True, check=False, cwd=db.parent)
    if done.returncode:
        sys.exit(f"error: reading {db} with {python}:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip()), np.load(ids_file), np.load(vectors_file)


def compare(db_a: Path, db_b: Path, python_a: str, python_b: str) -> dict:
    """Tile ids, catalog rows and vectors of two index directories' committed generations."""
    import numpy as np

    from sarclip_search.store.layout import Generation

    (path_a, ids_a, matrix_a), (path_b, ids_b, matrix_b) = dump_index(python_a, db_a), dump_index(python_b, db_b)
    gen_a, gen_b = Generation(path_a), Generation(path_b)
    result: dict = {"equal": True, "differences": []}

    def differ(text: str) -> None:
        result["equal"] = False
        result["differences"].append(text)

    tables_a, tables_b = catalog_tables(gen_a.catalog_path), catalog_tables(gen_b.catalog_path)
    if sorted(tables_a) != sorted(tables_b):
        differ(f"catalog tables {sorted(tables_a)} vs {sorted(tables_b)}")
    for name in sorted(set(tables_a) & set(tables_b)):
        (columns_a, rows_a), (columns_b, rows_b) = tables_a[name], tables_b[name]
        if columns_a != columns_b:
            differ(f"catalog table {name}: columns differ")
        elif rows_a != rows_b:
            differ(f"catalog table {name}: {len(rows_a)} vs {len(rows_b)} rows, not all equal")
        else:
            result[f"catalog_{name}"] = f"{len(rows_a)} rows x {len(columns_a)} columns, equal"
    catalog_ids = np.sort(np.asarray([row[0] for row in tables_a.get("tiles", ([], []))[1]], dtype=np.int64))
    if not (np.array_equal(ids_a, ids_b) and np.array_equal(ids_a, catalog_ids)):
        differ(f"tile ids: {len(ids_a)} vs {len(ids_b)} vectors, {len(catalog_ids)} catalog tiles, not the same ids")
    else:
        result["tile_ids"] = f"{len(ids_a)}, the same in both catalogs and both vector indexes"
        if np.array_equal(matrix_a, matrix_b):
            result["vectors"] = f"{matrix_a.shape} {matrix_a.dtype}, bitwise equal"
        else:
            # a Flat index keeps its exact copy in float16 (norms off by ~1e-4): cosine, not the raw dot product
            a64, b64 = matrix_a.astype(np.float64), matrix_b.astype(np.float64)
            cosines = (a64 * b64).sum(axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
            text = (f"{matrix_a.shape} {matrix_a.dtype}, not bitwise equal: cosine min {cosines.min():.7f}, "
                    f"median {np.median(cosines):.7f}, max |a - b| {float(np.abs(matrix_a - matrix_b).max()):.3g}")
            result["vectors_min_cosine"] = round(float(cosines.min()), 7)
            if cosines.min() >= MIN_COSINE:
                result["vectors"] = text
            else:
                differ(f"vectors: {text} (< {MIN_COSINE})")
    info_a, info_b = gen_a.read_info(), gen_b.read_info()
    result["info_json_keys_differing"] = sorted(k for k in set(info_a) | set(info_b) if info_a.get(k) != info_b.get(k))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="python of the venv with the checkout before the change")
    parser.add_argument("--after", required=True, help="python of the venv with the checkout after the change")
    parser.add_argument("--archive", default=str(DATA), help="folder to index (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, alternating (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="run index --quiet (no progress bar)")
    parser.add_argument("--also-torch", action="store_true",
                        help="a third side: the after checkout with SARSEARCH_EMBEDDER=torch")
    parser.add_argument("--out", default=str(RESULTS / "indexing.json"), help="JSON result (default: %(default)s)")
    args = parser.parse_args()
    archive = str(require_archive(args.archive, "--archive").resolve())

    before, after = (str(Path(python).absolute()) for python in (args.before, args.after))  # runs from another folder
    sides = {"before": before, "after": after, **({"after-torch": after} if args.also_torch else {})}
    envs = {"after-torch": {"SARSEARCH_EMBEDDER": "torch"}}
    commits = {side: commit_of(python) for side, python in sides.items()}
    load_start = os.getloadavg()
    for path in Path(archive).rglob("*"):  # into the page cache: the first run reads no colder files than the others
        if path.is_file():
            path.read_bytes()
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    work = Path(tempfile.mkdtemp(prefix="bench-indexing-"))
    try:
        for number in range(args.repeat):
            for side, python in sides.items():
                db = work / f"{side}-{number}"
                runs[side].append(run_index(python, archive, db, args.quiet, envs.get(side)))
                print(f"{side} run {number + 1}: {runs[side][-1]}", file=sys.stderr, flush=True)
                if number < args.repeat - 1:
                    shutil.rmtree(db, ignore_errors=True)
        comparisons = {side: compare(work / f"before-{args.repeat - 1}", work / f"{side}-{args.repeat - 1}",
                                     before, sides[side]) for side in sides if side != "before"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()

    def median(side: str, key: str, stage: str | None = None) -> float | None:
        values = [run[key] if stage is None else run[key].get(stage) for run in runs[side] if run.get(key) is not None]
        values = [value for value in values if value is not None]
        return round(statistics.median(values), 2) if values else None

    rows = [("tiles", "tiles"), ("seconds", "seconds"), ("tiles/s overall", "tiles_per_s"),
            ("tiles/s embedding only", "embed_tiles_per_s"), ("seconds outside embedding (~)", "outside_embedding_seconds")]
    stage_names = list(dict.fromkeys(name for side in sides for run in runs[side] for name in run.get("stages", {})))
    print(f"machine: {os.cpu_count()} cpus, OMP_WAIT_POLICY=PASSIVE, archive {archive}, "
          f"{args.repeat} run(s) each (median), progress bar {'off' if args.quiet else 'on'}, "
          f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end")
    for side in sides:
        print(f"{side}: {commits[side]}{' with SARSEARCH_EMBEDDER=torch' if side in envs else ''}")
    print(f"{'':32}" + "".join(f"{side:>13}" for side in sides))
    table = [(label, [median(side, key) for side in sides]) for label, key in rows]
    table += [(f"  {name} s", [median(side, "stages", name) for side in sides]) for name in stage_names]
    for label, values in table:
        print(f"{label:32}" + "".join(f"{value if value is not None else '-':>13}" for value in values))
    if stage_names:
        print("  (stage seconds: time spent in each stage, summed over threads; overlapping stages add up to more "
              "than the run)")
    for side, comparison in comparisons.items():
        print(f"same index, before vs {side}:", "yes" if comparison["equal"] else "NO")
        for key, value in comparison.items():
            if key not in ("equal",):
                print(f"  {key}: {value}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "omp_wait_policy": "PASSIVE"},
        "archive": archive, "repeat": args.repeat, "progress_bar": not args.quiet, "commits": commits,
        "load_average": {"start": load_start, "end": load_end}, "environment": envs if args.also_torch else {},
        "runs": runs, "comparisons": comparisons,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
