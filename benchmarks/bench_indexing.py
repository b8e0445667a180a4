"""Indexing before/after a change, side by side: tiles/s of two checkouts on the same archive, and their indexes compared.

    python benchmarks/bench_indexing.py --before /tmp/venv-before/bin/python --after /tmp/venv-after/bin/python \
        [--archive ../shared/data] [--repeat 1] [--quiet] [--out benchmarks/results/indexing.json]

Each PYTHON is the interpreter of a venv where one checkout is installed (`pip install --no-deps -e .`); each
runs `python -m sarclip_search index ARCHIVE --db <fresh folder>` (its own shipped checkpoint), one after the
other (before, after, before, after ... with --repeat), with OMP_WAIT_POLICY=PASSIVE, after one read of every
archive file (so no run reads from a colder page cache). The figures are the
command's own summary line: seconds, tiles/s overall (model loading and the ONNX export included) and tiles/s of
the embedding stage; "outside embedding" is seconds - tiles / embedding rate (the rate is printed rounded, so
±1%). The progress bar is on (as a user runs it; --quiet turns it off), its output discarded.

Then the two last indexes are compared: tile ids, every row of every catalog table (all columns), the vectors
(bitwise, np.array_equal) and info.json (which differs in its time, checkpoint path and version lines).
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

from defaults import DATA, RESULTS, require_archive

SUMMARY = re.compile(r"tiles added: (\d+) in ([\d.]+) s \(([\d.]+) tiles/s overall(?:, (\d+) tiles/s embedding)?\)")


def run_index(python: str, archive: str, db: Path, quiet: bool) -> dict:
    """One `index` run of a fresh db by `python`; its summary line's figures.

    `-P` and a working directory outside any checkout: `python -m` would otherwise import the package from
    the working directory rather than from the venv's checkout.
    """
    command = [python, "-P", "-m", "sarclip_search", "index", archive, "--db", str(db),
               *(["--quiet"] if quiet else [])]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, cwd=db.parent)
    match = SUMMARY.search(done.stderr)
    if done.returncode not in (0, 3) or match is None:
        sys.exit(f"error: {' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    tiles, seconds, overall, embedding = match.groups()
    figures = {"tiles": int(tiles), "seconds": float(seconds), "tiles_per_s": float(overall),
               "embed_tiles_per_s": float(embedding) if embedding else None}
    if embedding:
        figures["outside_embedding_seconds"] = round(float(seconds) - int(tiles) / float(embedding), 1)
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


def compare(db_a: Path, db_b: Path) -> dict:
    """Tile ids, catalog rows and vectors of two index directories' committed generations."""
    import numpy as np

    from sarclip_search.index import VectorIndex
    from sarclip_search.store.layout import IndexStore

    gen_a, gen_b = IndexStore(db_a).require_current(), IndexStore(db_b).require_current()
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
    vectors_a, vectors_b = VectorIndex.load(gen_a.vectors_path), VectorIndex.load(gen_b.vectors_path)
    ids_a, ids_b = np.sort(vectors_a.ids()), np.sort(vectors_b.ids())
    catalog_ids = np.sort(np.asarray([row[0] for row in tables_a.get("tiles", ([], []))[1]], dtype=np.int64))
    if not (np.array_equal(ids_a, ids_b) and np.array_equal(ids_a, catalog_ids)):
        differ(f"tile ids: {len(ids_a)} vs {len(ids_b)} vectors, {len(catalog_ids)} catalog tiles, not the same ids")
    else:
        result["tile_ids"] = f"{len(ids_a)}, the same in both catalogs and both vector indexes"
        matrix_a, matrix_b = vectors_a.vectors(ids_a), vectors_b.vectors(ids_b)
        if np.array_equal(matrix_a, matrix_b):
            result["vectors"] = f"{matrix_a.shape} {matrix_a.dtype}, bitwise equal"
        else:
            differ(f"vectors: max |a - b| = {float(np.abs(matrix_a - matrix_b).max()):.3g}")
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
    parser.add_argument("--out", default=str(RESULTS / "indexing.json"), help="JSON result (default: %(default)s)")
    args = parser.parse_args()
    archive = str(require_archive(args.archive, "--archive").resolve())

    sides = {"before": args.before, "after": args.after}
    commits = {side: commit_of(python) for side, python in sides.items()}
    for path in Path(archive).rglob("*"):  # into the page cache: the first run reads no colder files than the others
        if path.is_file():
            path.read_bytes()
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    work = Path(tempfile.mkdtemp(prefix="bench-indexing-"))
    try:
        for number in range(args.repeat):
            for side, python in sides.items():
                db = work / f"{side}-{number}"
                runs[side].append(run_index(python, archive, db, args.quiet))
                print(f"{side} run {number + 1}: {runs[side][-1]}", file=sys.stderr, flush=True)
        comparison = compare(work / f"before-{args.repeat - 1}", work / f"after-{args.repeat - 1}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(side: str, key: str) -> float | None:
        values = [run[key] for run in runs[side] if run.get(key) is not None]
        return statistics.median(values) if values else None

    rows = [("tiles", "tiles"), ("seconds", "seconds"), ("tiles/s overall", "tiles_per_s"),
            ("tiles/s embedding only", "embed_tiles_per_s"), ("seconds outside embedding (~)", "outside_embedding_seconds")]
    print(f"machine: {os.cpu_count()} cpus, OMP_WAIT_POLICY=PASSIVE, archive {archive}, "
          f"{args.repeat} run(s) each (median), progress bar {'off' if args.quiet else 'on'}")
    for side in sides:
        print(f"{side}: {commits[side]}")
    print(f"{'':32}{'before':>12}{'after':>12}")
    for label, key in rows:
        before, after = median("before", key), median("after", key)
        print(f"{label:32}{before if before is not None else '-':>12}{after if after is not None else '-':>12}")
    print("same index:", "yes" if comparison["equal"] else "NO")
    for key, value in comparison.items():
        if key not in ("equal",):
            print(f"  {key}: {value}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "omp_wait_policy": "PASSIVE"},
        "archive": archive, "repeat": args.repeat, "progress_bar": not args.quiet, "commits": commits,
        "runs": runs, "comparison": comparison,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
