"""Filtered queries at 1M tiles: the filter stage through DuckDB (before) vs column arrays + id-set cache (after).

    python benchmarks/bench_filtered.py        # the 1M index of bench_retrieval --latency (built once: 85 s idle, ~6 min under load), then ~1 min
    python benchmarks/bench_filtered.py --size 100000 --texts 20   # quick, for development
    python benchmarks/bench_filtered.py --bytes-per-vector 2147 --cache runs/filtered   # the default 2 GiB budget: IVF-Flat

Opens the index `bench_retrieval.py --latency` builds under runs/bench-latency/db-N (`build_scaled`: the corpus
index's real tiles plus synthetic scenes with dataset, label and split in fixed shares, IVF-PQ at 80 B/vector)
twice in one process: `before`, every filter through DuckDB with no id-set cache (what SARSEARCH_FILTER_COLUMNS=0
gives), and `after`, the engine as it ships (store/column_arrays.py). First the filter columns are built from
the catalog as a first query would (their folder removed first: the cold cost, once per generation), then, after
a warm-up, for each text and each filter, interleaved: end to end (`Engine.query(text, filters, k=10)`) before,
after with the filter's id set not cached (a new filter), after with it cached (paging, the page's repeated
queries); and the filter stage alone (`Engine.filter_ids`) the same three ways. Filters: one column at ~0.1%,
1%, 10% and 50% of the tiles, a filter over the other array kinds (sensor contains, a date, a bbox), and a
filter negatively correlated with the query: ship texts restricted to dataset MSTAR-SOC (the corpus' vehicle
chips). recall@10 of the after engine's hits against exact search over the filtered float16 copy, and whether
before and after returned the same hits; beside it, recall@10 of the same texts unfiltered at the same
setting (what the filtered query should at least reach). The index of `build_scaled` is tuned on image vectors
only; `sarsearch index` also tunes a text setting on its vocabulary's proxy texts (`tune_text`), so unless
`--no-tune-text` the benchmark does that first, in memory, on both engines (the catalog's `proxy_texts`).
Writes benchmarks/results/filtered.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

import numpy as np
from bench_retrieval import (
    BUDGET_BYTES_PER_VECTOR,
    LATENCY_TEXTS,
    WARMUP_TEXTS,
    build_scaled,
    exact_neighbours,
    load_average,
    percentile,
)

from sarclip_search.query.engine import Engine
from sarclip_search.store.column_arrays import FOLDER, IdSetCache
from sarclip_search.store.filters import Filters

from defaults import CORPUS_DB, RESULTS, RUNS, write_result

K = 10
FILTERS = {  # name -> (filters, texts: None = the latency texts)
    "label=volcano": (Filters(label="volcano"), None),
    "label=oil_spill": (Filters(label="oil_spill"), None),
    "dataset=TerraSAR-X": (Filters(dataset="TerraSAR-X"), None),
    "split=train": (Filters(split="train"), None),
    "sensor~sentinel-1b,after,bbox": (Filters(sensor="sentinel-1b", after="2019-01-01", bbox=(-180, -90, 0, 90)), None),
    "ship texts, dataset=MSTAR-SOC": (Filters(dataset="MSTAR-SOC"), "ship"),
}
SHIP_WORDS = {"ship", "ships", "boat", "boats", "vessel", "tanker", "cargo", "ferry", "freighter", "harbor", "port", "tug"}
WAYS = ("before", "after_new", "after_cached")


def plain(engine: Engine) -> Engine:
    """`engine` as before the column arrays: every filter through DuckDB, no id-set cache."""
    engine.filter_columns = None
    engine.id_sets = IdSetCache(0)
    return engine


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return (time.perf_counter() - start) * 1000, result


def build_columns(engine: Engine) -> dict:
    """Seconds to build each filter column from the catalog (the cold first use), and the bytes saved."""
    folder = engine.generation.path / FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    columns = engine.filter_columns
    seconds = {}
    for column in ("ids", "label", "dataset", "split", "sensor", "sar:polarizations", "tile_label", "datetime",
                   "bbox", "tile_n_objects"):
        ms, _ = timed(lambda c=column: columns._column(c))
        seconds[column] = round(ms / 1000, 2)
    size = sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0
    return {"seconds": seconds, "total_s": round(sum(seconds.values()), 2), "bytes_on_disk": size}


def tune_text(after: Engine, before: Engine) -> dict:
    """The text setting `sarsearch index` tunes (`tune_text` on the catalog vocabulary's proxy texts, encoded by
    the index's text encoder), set on both engines' indexes in memory; what it chose."""
    from sarclip_search.ingest.text_proxies import catalog_vocabulary, proxy_texts

    started = time.perf_counter()
    texts = proxy_texts(catalog_vocabulary(after.generation.catalog_path))
    proxies = np.stack([after.embed_text(t) for t in texts]).astype(np.float32)
    result = after.vectors.tune_text(proxies)
    before.vectors.tune_text(proxies)  # the same proxies, the same setting
    chosen = {"proxies": len(texts), "seconds": round(time.perf_counter() - started, 1)}
    if result is not None:
        chosen.update(nprobe=after.vectors.text_nprobe, rerank_factor=after.vectors.text_rerank_factor,
                      proxy_recall=round(float(result.result.recall), 3), routed=round(float(result.routed), 3))
    return chosen


def measure(before: Engine, after: Engine, text: str, filters: Filters) -> tuple[dict[str, float], list, list]:
    times = {}
    times["e2e_before"], hits_before = timed(lambda: before.query(text, filters=filters, k=K))
    after.id_sets.clear()
    times["e2e_after_new"], hits_after = timed(lambda: after.query(text, filters=filters, k=K))
    times["e2e_after_cached"], _ = timed(lambda: after.query(text, filters=filters, k=K))
    times["filter_before"], _ = timed(lambda: before.filter_ids(filters))
    after.id_sets.clear()
    times["filter_after_new"], _ = timed(lambda: after.filter_ids(filters))
    times["filter_after_cached"], subset = timed(lambda: after.filter_ids(filters))
    times["encode"], vector = timed(lambda: after.embed_text(text))
    if len(subset):  # the rest of a query: the ANN search over the subset and the hits' catalog rows
        times["search_fetch"], _ = timed(lambda: after._search(vector[None], K, subset, None))
    return times, [h.id for h in hits_before], [h.id for h in hits_after]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(CORPUS_DB), help="the corpus index the scaled one is built from")
    parser.add_argument("--cache", default=str(RUNS / "bench-latency"), help="where bench_retrieval keeps db-N")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--texts", type=int, default=100, help="latency texts per filter (ship texts: all of them)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bytes-per-vector", type=int, default=BUDGET_BYTES_PER_VECTOR,
                        help="memory budget of the index built when missing (2147: the default 2 GiB at 1M)")
    parser.add_argument("--no-tune-text", action="store_true", help="keep the index's tuning as saved")
    parser.add_argument("--out", default=str(RESULTS / "filtered.json"))
    args = parser.parse_args()

    from sarclip_search.model.sarclip import git_commit

    load_start = load_average()
    budget = args.bytes_per_vector
    root = Path(args.cache) / (f"db-{args.size}" if budget == BUDGET_BYTES_PER_VECTOR else f"db-{args.size}-{budget}B")
    built = root / "bench_build.json"
    if not built.is_file():
        print(f"building the {args.size:,}-tile index in {root} ...", file=sys.stderr)
        build = build_scaled(Path(args.db), root, args.size, budget, args.seed)
    else:
        build = json.loads(built.read_text())
    texts = list(LATENCY_TEXTS[: args.texts])
    ship_texts = [t for t in LATENCY_TEXTS if SHIP_WORDS & set(re.findall(r"[a-z]+", t.lower()))]
    with Engine.open(root) as after, plain(Engine.open(root)) as before:
        text_tuning = None
        if not args.no_tune_text and after.vectors.text_nprobe is None and not after.vectors.is_flat:
            text_tuning = tune_text(after, before)
            print(f"text setting tuned here: {text_tuning}", file=sys.stderr)
        columns = build_columns(after)
        print(f"filter columns built in {columns['total_s']} s, {columns['bytes_on_disk'] / 2**20:.1f} MiB", file=sys.stderr)
        total = after.vectors.ntotal
        plans = []
        for name, (filters, kind) in FILTERS.items():
            share = len(before.filter_ids(filters)) / total
            assert after.filter_columns.match(filters) is not None, name  # answered by the arrays
            plans.append({"name": name, "filters": filters, "selectivity": share,
                          "texts": ship_texts if kind == "ship" else texts})
        for text in WARMUP_TEXTS:  # sessions, tokenizer, mapped pages, DuckDB caches
            for plan in plans:
                measure(before, after, text, plan["filters"])
        samples = {plan["name"]: {} for plan in plans}
        same, compared = {plan["name"]: 0 for plan in plans}, {plan["name"]: 0 for plan in plans}
        started = time.perf_counter()
        for _ in range(args.rounds):
            for index in range(max(len(p["texts"]) for p in plans)):
                for plan in plans:  # filters interleaved: load changes hit all alike
                    if index >= len(plan["texts"]):
                        continue
                    times, ids_before, ids_after = measure(before, after, plan["texts"][index], plan["filters"])
                    for key, ms in times.items():
                        samples[plan["name"]].setdefault(key, []).append(ms)
                    same[plan["name"]] += ids_before == ids_after
                    compared[plan["name"]] += 1
        seconds = time.perf_counter() - started
        recall, unfiltered = {}, {}
        from sarclip_search.index import recall_at_k

        for plan in plans:  # the hits end to end vs exact search over the filtered copy, same query vectors
            if not len(after.filter_ids(plan["filters"])):
                recall[plan["name"]] = None
                continue
            queries = np.stack([after.embed_text(t) for t in plan["texts"]])
            found = np.full((len(plan["texts"]), K), -1, np.int64)
            for row, text in enumerate(plan["texts"]):
                ids = [h.id for h in after.query(text, filters=plan["filters"], k=K)]
                found[row, : len(ids)] = ids
            truth = exact_neighbours(after, queries, after.filter_ids(plan["filters"]), K)
            recall[plan["name"]] = round(float(recall_at_k(found, truth, K)), 3)
            # the same texts unfiltered, at the same setting (routed as the engine routes them)
            for row, text in enumerate(plan["texts"]):
                ids = [h.id for h in after.query(text, k=K)]
                found[row] = -1
                found[row, : len(ids)] = ids
            unfiltered[plan["name"]] = round(float(recall_at_k(found, exact_neighbours(after, queries, None, K), K)), 3)
        index_info = {k: v for k, v in after.vectors.info().items()
                      if k in ("factory", "ntotal", "nprobe", "rerank_factor", "text_nprobe", "text_rerank_factor",
                               "trained_on", "subset_scan")}
        index_info["text_tuned_here"] = text_tuning
    rows = []
    for plan in plans:
        stats = samples[plan["name"]]
        rows.append({"filters": plan["name"], "selectivity": round(plan["selectivity"], 5), "n": len(stats["e2e_before"]),
                     **{key: {"p50": round(percentile(v, 50), 2), "p99": round(percentile(v, 99), 2)}
                        for key, v in stats.items()},
                     "recall_at_10": recall[plan["name"]], "unfiltered_recall_at_10": unfiltered.get(plan["name"]),
                     "same_hits": f"{same[plan['name']]}/{compared[plan['name']]}"})
    result = {
        "question": "filtered query latency at 1M: filter stage through DuckDB vs column arrays and an id-set cache",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                    "load_average_start": load_start, "load_average_end": load_average()},
        "commit": git_commit(),
        "config": {"db": str(root), "k": K, "texts": len(texts), "ship_texts": len(ship_texts), "rounds": args.rounds,
                   "warmup_texts": len(WARMUP_TEXTS)},
        "index": index_info, "build": build, "filter_columns": columns, "measure_seconds": round(seconds, 1),
        "rows": rows,
    }
    out = write_result(args.out, result)
    print_result(result)
    print(f"result written to {out}")


def print_result(result: dict) -> None:
    machine = result["machine"]
    info = result["index"]
    print(f"machine: {machine['cpus']} cpus, OMP_WAIT_POLICY={machine['OMP_WAIT_POLICY']}, commit "
          f"{result['commit'][:10]}, load average {machine['load_average_start']} -> {machine['load_average_end']}")
    text = (f"; text nprobe={info['text_nprobe']}, rerank={info['text_rerank_factor']}" if info.get("text_nprobe") else "")
    tuned = f" (text setting tuned here: {info['text_tuned_here']})" if info.get("text_tuned_here") else ""
    print(f"index: {info['ntotal']:,} tiles, {info['factory']}, nprobe={info['nprobe']}, rerank={info['rerank_factor']}"
          f"{text}{tuned}")
    columns = result["filter_columns"]
    print(f"filter columns built from the catalog in {columns['total_s']} s ({columns['bytes_on_disk'] / 2**20:.1f} MiB): "
          + ", ".join(f"{k} {v}" for k, v in columns["seconds"].items()))
    print("ms p50 / p99; before = DuckDB, after new = column arrays (id set not cached), after cached = id-set cache hit;"
          " the rest of a query: text encoding, ANN search + fetch of the hits' rows")
    header = f"{'filter':<32}{'share':>8}" + "".join(f"{'e2e ' + w:>19}" for w in WAYS) + "".join(
        f"{'filter ' + w:>22}" for w in WAYS) + f"{'encode':>16}{'search+fetch':>16}{'recall@10':>11}{'unfiltered':>11}{'same':>9}"
    print(header)
    for row in result["rows"]:
        cells = "".join(f"{row['e2e_' + w]['p50']:>11.1f} /{row['e2e_' + w]['p99']:>6.1f}" for w in WAYS)
        cells += "".join(f"{row['filter_' + w]['p50']:>14.2f} /{row['filter_' + w]['p99']:>6.1f}" for w in WAYS)
        cells += "".join(f"{row[key]['p50']:>8.1f} /{row[key]['p99']:>6.1f}" if key in row else f"{'-':>16}"
                         for key in ("encode", "search_fetch"))
        recalls = "".join(f"{row.get(key) if row.get(key) is not None else float('nan'):>11.3f}"
                          for key in ("recall_at_10", "unfiltered_recall_at_10"))
        print(f"{row['filters'][:31]:<32}{100 * row['selectivity']:>7.2f}%{cells}{recalls}{row['same_hits']:>9}")


if __name__ == "__main__":
    main()
