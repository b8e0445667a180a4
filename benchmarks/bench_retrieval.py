"""Which query fusion retrieves best, and does relevance feedback help? P@10 on the labelled test split.

    python benchmarks/bench_retrieval.py [--db /work/runs/db-full] [--examples 5] [--out benchmarks/results/retrieval.json]

On an index of the developer corpus (read only; never written), for every class of MSTAR-SOC and
OpenSARShip in the `test` split, with the search filtered to `split = 'test'` and a hit relevant
when its `label` is the class:

1. fusion: text only (the class's first caption prompt, as an analyst would type it) vs image only
   (one test tile of the class as the example, `like=[id]`, the example itself excluded from the
   results) vs text + that image blended at several alphas vs reciprocal rank fusion; P@10 averaged
   over `--examples` seeded example tiles per class, then over classes (macro) per dataset;
2. relevance feedback: from the text query's top `--feedback-pool` results, the first 5 relevant
   and first 5 non-relevant by ground truth are marked (what an analyst clicks); P@10 of
   `Engine.feedback` (marked tiles excluded) vs the text query before (raw, and with the marked
   tiles excluded, the fair comparison);
3. search latency (stored vectors, no model) with OMP_WAIT_POLICY=PASSIVE vs ACTIVE, each in a
   fresh process, since the policy is read when faiss loads OpenMP.

Prints a table and writes a JSON result with the hardware, commit and settings.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

DATASETS = ("MSTAR-SOC", "OpenSARShip")
K = 10
MARKS = 5  # positives and negatives an analyst marks for feedback


def precision(hits: list, label: str, k: int = K) -> float:
    """P@k with label relevance; a short result list counts its missing places as misses."""
    return sum(1 for hit in hits[:k] if hit.metadata.get("label") == label) / k


def class_examples(engine, dataset: str, split: str) -> dict[str, list[int]]:
    """label -> sorted tile ids of that dataset's `split` tiles."""
    from sarclip_search.filters import Filters

    ids = engine.filter_ids(Filters(dataset=dataset, split=split))
    by_label: dict[str, list[int]] = {}
    for row in engine.catalog.fetch_tiles(ids):
        by_label.setdefault(str(row["label"]), []).append(int(row["tile_id"]))
    return {label: sorted(found) for label, found in sorted(by_label.items())}


def fusion_runs(engine, text: str, label: str, example: int, split_filter, alphas: list[float],
                rrf_alphas: list[float]) -> dict[str, float]:
    """P@10 of every query configuration for one class and one example tile."""
    def run(**kwargs) -> float:
        return precision(engine.query(filters=split_filter, k=K, exclude=[example], **kwargs), label)

    scores = {"image only": run(like=[example])}
    scores.update({f"blend a={a:g}": run(text=text, like=[example], alpha=a, fusion="blend") for a in alphas})
    scores.update({f"rrf a={a:g}": run(text=text, like=[example], alpha=a, fusion="rrf") for a in rrf_alphas})
    return scores


def feedback_run(engine, text: str, label: str, split_filter, pool: int) -> dict[str, float] | None:
    """P@10 before and after marking the first MARKS relevant and MARKS non-relevant text results."""
    initial = engine.query(text, filters=split_filter, k=pool)
    positive = [h.id for h in initial if h.metadata.get("label") == label][:MARKS]
    negative = [h.id for h in initial if h.metadata.get("label") != label][:MARKS]
    if not positive:
        return None
    marked = positive + negative
    return {
        "before": precision(initial, label),
        "before, marked excluded": precision(engine.query(text, filters=split_filter, k=K, exclude=marked), label),
        "after: probe + text": precision(engine.feedback(positive, negative, text=text, filters=split_filter, k=K), label),
        "after: probe only": precision(engine.feedback(positive, negative, filters=split_filter, k=K), label),
        "positives": len(positive),
        "negatives": len(negative),
    }


def search_latency(db: str, queries: int) -> dict[str, float]:
    """Median ms of `search_vector` with stored tile vectors as queries, unfiltered and split-filtered."""
    import numpy as np

    from sarclip_search.engine import Engine
    from sarclip_search.filters import Filters

    with Engine.open(db) as engine:
        ids = np.random.default_rng(0).choice(engine.vectors.ids(), size=queries, replace=False)
        vectors = engine.vectors.vectors(np.sort(ids))
        subset = engine.filter_ids(Filters(split="test"))
        engine.search_vector(vectors[0], k=K)  # warm-up: imports, page cache
        result = {}
        for name, chosen in (("unfiltered", None), ("split=test", subset)):
            times = []
            for vector in vectors:
                start = time.perf_counter()
                engine.search_vector(vector, k=K, subset=chosen)
                times.append((time.perf_counter() - start) * 1000)
            result[name] = round(statistics.median(times), 3)
    return result


def omp_comparison(db: str, queries: int) -> dict[str, dict[str, float]]:
    """search_latency in fresh processes with each OMP_WAIT_POLICY."""
    result = {}
    for policy in ("PASSIVE", "ACTIVE"):
        output = subprocess.run(
            [sys.executable, __file__, "--db", db, "--latency-only", str(queries)],
            env={**os.environ, "OMP_WAIT_POLICY": policy}, check=True, capture_output=True, text=True,
        ).stdout
        result[policy] = json.loads(output.strip().splitlines()[-1])
    return result


def mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 3) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="/work/runs/db-full", help="index of the labelled corpus (read only)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--examples", type=int, default=10, help="example tiles per class (seeded)")
    parser.add_argument("--alphas", default="0.25,0.5,0.75,0.9", help="text weights of the blend")
    parser.add_argument("--rrf-alphas", default="0.5,0.75,0.9", help="text weights of RRF")
    parser.add_argument("--feedback-pool", type=int, default=50, help="text results an analyst looks through")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--latency-only", type=int, default=None, help=argparse.SUPPRESS)  # child process of omp_comparison
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/retrieval.json")
    args = parser.parse_args()
    if args.latency_only is not None:
        print(json.dumps(search_latency(args.db, args.latency_only)))
        return

    import numpy as np
    from sarclip_search.training.captions import class_prompts

    from sarclip_search.engine import Engine
    from sarclip_search.filters import Filters
    from sarclip_search.model import git_commit

    alphas = [float(a) for a in args.alphas.split(",")]
    rrf_alphas = [float(a) for a in args.rrf_alphas.split(",")]
    split_filter = Filters(split=args.split)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    per_class: list[dict] = []
    with Engine.open(args.db) as engine:
        engine.embed_text = functools.lru_cache(maxsize=None)(engine.embed_text)  # same text, same vector
        for dataset in DATASETS:
            for label, tiles in class_examples(engine, dataset, args.split).items():
                text = class_prompts(dataset, label)[0]
                examples = sorted(rng.choice(tiles, size=min(args.examples, len(tiles)), replace=False).tolist())
                runs = [fusion_runs(engine, text, label, e, split_filter, alphas, rrf_alphas) for e in examples]
                row = {"dataset": dataset, "label": label, "text": text, "relevant_in_split": len(tiles),
                       "examples": examples, "text only": precision(engine.query(text, filters=split_filter, k=K), label)}
                row.update({name: mean([r[name] for r in runs]) for name in runs[0]})
                row["feedback"] = feedback_run(engine, text, label, split_filter, args.feedback_pool)
                per_class.append(row)
                print(f"  {dataset} {label}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    methods = ["text only", "image only", *[f"blend a={a:g}" for a in alphas], *[f"rrf a={a:g}" for a in rrf_alphas]]
    feedback_keys = ["before", "before, marked excluded", "after: probe + text", "after: probe only"]
    summary = {}
    for dataset in (*DATASETS, "all"):
        rows = [r for r in per_class if dataset in ("all", r["dataset"])]
        fb = [r["feedback"] for r in rows if r["feedback"]]
        summary[dataset] = {"classes": len(rows), **{m: mean([r[m] for r in rows]) for m in methods},
                            **{f"feedback {key}": mean([f[key] for f in fb]) for key in feedback_keys}}
    latency = omp_comparison(args.db, args.latency_queries)
    result = {
        "question": "P@10 of text vs image vs fused queries, and of relevance feedback, on the labelled test split",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "commit": git_commit(),
        "config": {"db": args.db, "split": args.split, "k": K, "examples_per_class": args.examples, "alphas": alphas,
                   "rrf_alphas": rrf_alphas, "feedback_pool": args.feedback_pool, "marks": MARKS, "seed": args.seed},
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "per_class": per_class,
        "search_latency_ms_median": latency,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result, methods, feedback_keys)
    print(f"result written to {out}")


def print_table(result: dict, methods: list[str], feedback_keys: list[str]) -> None:
    summary = result["summary"]
    names = list(summary)
    print(f"machine: {result['machine']['cpus']} cpus, OMP_WAIT_POLICY={result['machine']['OMP_WAIT_POLICY']}, "
          f"commit {result['commit'][:10]}, {result['config']['examples_per_class']} examples/class")
    print(f"{'P@10 (macro over classes)':<34}" + "".join(f"{n:>13}" for n in names))
    print(f"{'classes':<34}" + "".join(f"{summary[n]['classes']:>13}" for n in names))
    for key in methods + [f"feedback {k}" for k in feedback_keys]:
        print(f"{key:<34}" + "".join(f"{summary[n][key]:>13.3f}" for n in names))
    for policy, stats in result["search_latency_ms_median"].items():
        print(f"{'search ms (median) ' + policy:<34}" + "".join(f"{name} {ms:.3f}   " for name, ms in stats.items()))


if __name__ == "__main__":
    main()
