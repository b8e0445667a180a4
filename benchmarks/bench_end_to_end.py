"""How fast is the end-to-end slice? Indexing tiles/s, and query latency cold (CLI) vs warm (in process).

    python benchmarks/bench_end_to_end.py [--archive ../shared/data] [--queries 50] [--out benchmarks/results/end_to_end.json]

Defaults are paths of this checkout (benchmarks/defaults.py); the index is built in a temporary folder,
removed at the end.

One run measures, side by side on the same index:
  1. a fresh `index` of the archive (tiles/s overall and for the embedding stage alone);
  2. an immediate re-run (everything unchanged: the incremental path), in process and as a `sarsearch index`
     process (which loads no model when nothing changed);
  3. warm in-process queries through `Engine` (text, image, text + filter): p50/p99 ms, on the ONNX query
     encoders `index` exported (what `sarsearch query` runs) and on the torch model (the fallback);
  4. cold `sarsearch query` processes (interpreter start, imports, encoder load, search): wall seconds.
Prints a table and writes a JSON result with the hardware, commit and settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

from defaults import DATA, RESULTS, require_archive

TEXT_QUERIES = [
    "T72 tank", "a BMP-2 infantry fighting vehicle", "a bulldozer", "an army truck", "a cargo ship at sea",
    "an oil tanker", "ships near a harbor", "land with lakes and rivers", "flooded fields", "an anti-aircraft vehicle",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=str(DATA), help="folder to index (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "end_to_end.json"), help="JSON result (default: %(default)s)")
    args = parser.parse_args()
    require_archive(args.archive, "--archive")

    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.model.sarclip import DEFAULT_CHECKPOINT, git_commit, load_model
    from sarclip_search.query.engine import Engine
    from sarclip_search.store.filters import Filters
    from sarclip_search.store.layout import IndexStore

    scratch = tempfile.TemporaryDirectory(prefix="sarsearch-bench-")  # ~100 MB with the ONNX encoders; removed at the end
    db = Path(scratch.name) / "db"
    print(f"indexing {args.archive} into {db} (twice: fresh, then unchanged) ...", file=sys.stderr, flush=True)
    model = load_model()
    store = IndexStore(db)
    first = index_archive(args.archive, store, model, model_path=str(DEFAULT_CHECKPOINT.resolve()))
    second = index_archive(args.archive, store, model, model_path=str(DEFAULT_CHECKPOINT.resolve()))

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sarclip_search", "index", args.archive, "--db", str(db), "--quiet"],
                   check=True, capture_output=True)
    reindex_cli_seconds = time.perf_counter() - start

    sample_image = next(iter(sorted(Path(args.archive).rglob("*.jpeg"))), None)
    timings: dict[str, list[float]] = {}
    for path in ("onnx", "torch"):
        engine = Engine.open(db)
        if path == "torch":
            engine._encoder = model  # same checkpoint, already loaded: the fallback path, warm
        engine.embed_text("warm-up")  # sessions / model load are the cold figure, not the warm one
        suffix = "" if path == "onnx" else " (torch)"
        for name in ("text", "image", "text+filter"):
            timings[name + suffix] = []
        for i in range(args.queries):
            text = TEXT_QUERIES[i % len(TEXT_QUERIES)] + ("" if i < len(TEXT_QUERIES) else f" {i}")
            start = time.perf_counter()
            engine.query(text, k=10)
            timings["text" + suffix].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            engine.query(text, k=10, filters=Filters(split="test"))
            timings["text+filter" + suffix].append((time.perf_counter() - start) * 1000)
            if sample_image is not None:
                start = time.perf_counter()
                engine.query(images=[sample_image], k=10)
                timings["image" + suffix].append((time.perf_counter() - start) * 1000)
        engine.close()

    cold = []
    for _ in range(args.cold_runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sarclip_search", "query", "T72 tank", "--db", str(db), "--json"],
                       check=True, capture_output=True)
        cold.append(time.perf_counter() - start)

    result = {
        "question": "indexing throughput and query latency, cold CLI vs warm in-process",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "commit": git_commit(),
        "archive": args.archive,
        "index": {"tiles": first.tiles_added, "files": first.indexed, "failed": len(first.failed),
                  "seconds": round(first.seconds, 1), "tiles_per_second": round(first.tiles_per_second, 1),
                  "embed_tiles_per_second": round(first.tiles_added / first.embed_seconds, 1) if first.embed_seconds else None,
                  "factory": first.index_factory},
        "reindex_unchanged": {"seconds": round(second.seconds, 2), "unchanged": second.unchanged, "embedded": second.indexed,
                              "cli_seconds": round(reindex_cli_seconds, 2)},
        "warm_query_ms": {name: {"p50": round(percentile(v, 50), 1), "p99": round(percentile(v, 99), 1), "n": len(v)}
                          for name, v in timings.items() if v},
        "cold_cli_seconds": {"median": round(statistics.median(cold), 2), "runs": [round(c, 2) for c in cold]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    scratch.cleanup()

    print(f"machine: {result['machine']['cpus']} cpus, OMP_WAIT_POLICY={result['machine']['OMP_WAIT_POLICY']}, commit {result['commit'][:10]}")
    print(f"{'stage':<34}{'value':>14}")
    print(f"{'index: tiles':<34}{first.tiles_added:>14}")
    print(f"{'index: tiles/s overall':<34}{result['index']['tiles_per_second']:>14}")
    print(f"{'index: tiles/s embedding only':<34}{result['index']['embed_tiles_per_second']!s:>14}")
    print(f"{'re-index unchanged: seconds':<34}{result['reindex_unchanged']['seconds']:>14}")
    print(f"{'re-index unchanged CLI: seconds':<34}{result['reindex_unchanged']['cli_seconds']:>14}")
    for name, stats in result["warm_query_ms"].items():
        print(f"{'warm ' + name + ' p50/p99 ms':<34}{str(stats['p50']) + ' / ' + str(stats['p99']):>14}")
    print(f"{'cold CLI query: seconds (median)':<34}{result['cold_cli_seconds']['median']:>14}")
    print(f"result written to {out}")


if __name__ == "__main__":
    main()
