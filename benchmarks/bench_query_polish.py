"""Two checks of the query layer on an index of the developer corpus (read only; never written).

    python benchmarks/bench_query_polish.py scenes   [--db runs/corpus-db] [--data ../shared/data]
    python benchmarks/bench_query_polish.py feedback [--db runs/corpus-db] [--weights 0,0.25,0.5,1]

`scenes`: does an indexed scene used as `--image` find itself first? For every scene of the index cut
into several tiles, the scene's file is the query image (`Engine.query(images=[file], k=n)`, n = its tile
count) and the scene counts when its n tiles are the n hits. Against the rule it replaced as a baseline:
the scene's tiles fused into one vector (`fusion.mean_direction`, searched once).

`feedback`: what a text adds to relevance feedback (`Engine.feedback(..., text=...)`), by the weight of
the text's prior (`feedback.TEXT_PRIOR_WEIGHT`; 0 = the marks alone). For every MSTAR-SOC and
OpenSARShip class, in the test split and in the whole index: the class's first caption prompt is
the text, the first 1, 2 or 5 relevant and non-relevant tiles of its top 50 are marked; P@10, P@50 and
AP@100 (label relevance, marked tiles left out) macro over classes. Then the cases where the marks and the
text disagree: the label counts of the top 10.

Both write a JSON result (benchmarks/results/query_polish_<check>.json) and print a table.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads

import numpy as np

from sarclip_search.query import feedback
from sarclip_search.query.engine import Engine
from sarclip_search.query.fusion import mean_direction
from sarclip_search.store.filters import Filters

from defaults import CORPUS_DB, DATA, RESULTS, corpus_index

DATASETS = ("MSTAR-SOC", "OpenSARShip")
DEPTH = 100
# (text, positive ids, negative ids) on runs/corpus-db: 12 and 40 are HRSID/BigEarthNet tiles (the
# issue's command), 4779/4755/4621 T72 chips.
DISAGREEING = (("T72 tank", [12, 40], [7]), ("a ship at sea", [4779, 4755], [4621]), ("T72 tank", [4779, 4755], [4621]))


def scenes(engine: Engine, data: Path) -> dict:
    tiles: dict[str, list[int]] = collections.defaultdict(list)
    for row in engine.catalog.fetch_tiles(engine.vectors.ids()):
        tiles[str(row["path"])].append(int(row["tile_id"]))
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path, own in sorted(tiles.items()):
        if len(own) < 2:
            continue
        hits = engine.query(images=[data / path], k=len(own))
        mean = engine.search_vector(mean_direction(engine.embed_image_tiles(data / path)), k=len(own))
        count = counts[path.split("/")[0]]
        count["scenes"] += 1
        count["tiles first, best match per tile"] += all(h.path == path for h in hits)
        count["tiles first, mean of tiles"] += all(h.path == path for h in mean)
        count["first hit own, mean of tiles"] += mean[0].path == path
    return {folder: dict(count) for folder, count in sorted(counts.items())}


def average_precision(hits: list, label: str, relevant: int) -> float:
    found, total = 0, 0.0
    for rank, hit in enumerate(hits[:DEPTH], start=1):
        if hit.metadata.get("label") == label:
            found += 1
            total += found / rank
    return total / min(relevant, DEPTH)


def precision(hits: list, label: str, n: int) -> float:
    return sum(hit.metadata.get("label") == label for hit in hits[:n]) / n


def feedback_sweep(engine: Engine, weights: list[float]) -> dict:
    from sarclip_search.training.captions import class_prompts

    engine.embed_text = functools.lru_cache(maxsize=None)(engine.embed_text)
    result: dict = {}
    for scope in ("test", "all"):
        where = Filters(split=scope) if scope != "all" else None
        rows = engine.catalog.fetch_tiles(engine.filter_ids(where) if where else engine.vectors.ids())
        labels = collections.Counter((str(r["dataset"]), str(r["label"])) for r in rows)
        for marks in (1, 2, 5):
            scores: dict = collections.defaultdict(list)
            for (dataset, label), count in sorted(labels.items()):
                if dataset not in DATASETS:
                    continue
                text = class_prompts(dataset, label)[0]
                top = engine.query(text, filters=where, k=50)
                positive = [h.id for h in top if h.metadata.get("label") == label][:marks]
                negative = [h.id for h in top if h.metadata.get("label") != label][:marks]
                if not positive or count == len(positive):
                    continue
                runs = {"text, marked left out": engine.query(text, filters=where, k=DEPTH, exclude=positive + negative)}
                for weight in weights:
                    feedback.TEXT_PRIOR_WEIGHT = weight
                    runs[f"feedback, text weight {weight:g}"] = engine.feedback(positive, negative, text=text,
                                                                               filters=where, k=DEPTH)
                for name, hits in runs.items():
                    scores[(dataset, name)].append([precision(hits, label, 10), precision(hits, label, 50),
                                                    average_precision(hits, label, count - len(positive))])
            for (dataset, name), values in scores.items():
                p10, p50, ap = np.mean(values, axis=0)
                result.setdefault(f"{scope}, {marks} marks", {}).setdefault(dataset, {})[name] = {
                    "P@10": round(float(p10), 3), "P@50": round(float(p50), 3), "AP@100": round(float(ap), 3)}
    disagreeing = {}
    for text, positive, negative in DISAGREEING:
        if not engine.vectors.contains(np.asarray(positive + negative)).all():
            continue
        for weight in weights:
            feedback.TEXT_PRIOR_WEIGHT = weight
            hits = engine.feedback(positive, negative, text=text, k=10)
            key = f"{text!r} +{positive} -{negative}"
            disagreeing.setdefault(key, {})[f"text weight {weight:g}"] = dict(
                collections.Counter(str(h.metadata.get("label")) for h in hits).most_common())
    return {"sweep": result, "top 10 labels": disagreeing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("scenes", "feedback"))
    parser.add_argument("--db", default=str(CORPUS_DB), help="index of the corpus (built from --data when missing)")
    parser.add_argument("--data", default=str(DATA), help="the archive the index was built from (scenes)")
    parser.add_argument("--weights", default="0,0.25,0.5,1", help="text prior weights to compare (feedback)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    with Engine.open(corpus_index(args.db, args.data)) as engine:
        if args.check == "scenes":
            found = scenes(engine, Path(args.data))
        else:
            found = feedback_sweep(engine, [float(w) for w in args.weights.split(",")])
        tiling = engine.info.get("tiling")
    result = {"check": args.check, "db": args.db, "tiling": tiling, "seconds": round(time.perf_counter() - started, 1),
              "result": found}
    out = Path(args.out or RESULTS / f"query_polish_{args.check}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(found, indent=1))
    print(f"result written to {out}")


if __name__ == "__main__":
    main()
