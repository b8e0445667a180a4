"""Several indexes as one (`sarsearch query --db A --db B`, issue #15 must-show 4): two halves of the corpus
indexed apart and queried together give the same top 10 as one index of the whole.

    python benchmarks/bench_multi_index.py [--data ../shared/data] [--work runs/multi-bench] [--reuse]
                                           [--out benchmarks/results/multi_index.json]

1. The corpus is split into two archives of symbolic links (nothing is copied): every image file goes to half
   `a` or `b` by the parity of the first byte of sha256(its archive-relative path), at the same relative path,
   with a manifest.csv holding its rows. Each half is indexed with `sarsearch index HALF --follow-symlinks`
   (the links lead outside the half), the whole corpus with `sarsearch index DATA`, all with the shipped model
   and default tiling, into --work (git-ignored runs/). The ONNX query encoders of the first index are
   hard-linked into the others (the same checkpoint: no second export). --reuse keeps indexes already there.
2. 20 queries: 12 texts and 8 images of the corpus (every 400th manifest row; scenes larger than a tile are
   cut and searched tile by tile), each asked of the whole index (`Engine`) and of the two halves
   (`MultiEngine`), k = 10. Tiles are matched by (archive-relative path, pixel window). Reported: how many
   top-10 lists are identical (same tiles, same order), how many hold the same tiles with order differing
   only among equal scores (float32 ties, e.g. a scene's own tiles at cosine 1.0), the largest score difference.
3. Latency, warm, median of 5 rounds per query: end to end (`query`), and the search + fetch part alone for
   the embedded text queries (`_search`: one index; the two halves' searches and the merge).
4. --ray: the same 20 queries with each half behind a Ray actor (`RaySearcher` below: the `Searcher` protocol
   over `actor.method.remote`, a stand-in for a Ray Serve deployment per shard; a local Ray of 2 CPUs): the
   same top 10 as in process, the latency with the calls (sequential, one per shard and step), and the round
   trip of one `search` call against the same call in process.
The 1-minute load (`uptime`) is recorded before and after: 2 shared cores.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads

from defaults import DATA, RESULTS, RUNS, require_archive, write_result

TEXTS = [
    "T72 tank", "a SAR image of a BMP2 infantry fighting vehicle", "a cargo ship at sea", "a tanker",
    "ships near a harbor", "an oil spill on the sea surface", "flooded land", "land with lakes and rivers",
    "an urban area", "a forest", "an airport runway", "a military vehicle on open ground",
]
IMAGE_ROWS = 8  # image queries: every len(rows) // 8-th manifest row
ROUNDS = 5


class RaySearcher:
    """The `Searcher` protocol (query/multi.py) over a Ray actor holding a `LocalSearcher`: each call one round
    trip. A prototype of a remote shard, for this benchmark only."""

    def __init__(self, actor, name: str, info: dict, location: str) -> None:
        self.actor, self.name, self.info, self.location = actor, name, info, location

    @classmethod
    def start(cls, ray, name: str, db: Path) -> RaySearcher:
        @ray.remote(num_cpus=0)
        class Shard:
            def __init__(self, name: str, db: str) -> None:
                from sarclip_search.query.engine import Engine
                from sarclip_search.query.multi import LocalSearcher

                self.searcher = LocalSearcher(name, Engine.open(db))

            def call(self, method: str, *args):
                return getattr(self.searcher, method)(*args)

            def facts(self):
                return self.searcher.info, self.searcher.location

        actor = Shard.remote(name, str(db))
        info, location = ray.get(actor.facts.remote())
        searcher = cls(actor, name, info, location)
        searcher._ray = ray
        return searcher

    def _call(self, method: str, *args):
        return self._ray.get(self.actor.call.remote(method, *args))

    def __getattr__(self, method: str):  # count, search, fetch, contains, vectors, sample, tile_ids, embed_*, ...
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args: self._call(method, *args)

    def close(self) -> None:
        self._ray.kill(self.actor)


def load() -> float:
    return float(os.getloadavg()[0])


def half_of(rel: str) -> str:
    return "a" if hashlib.sha256(rel.encode()).digest()[0] % 2 == 0 else "b"


def split(data: Path, work: Path) -> dict[str, int]:
    """work/archive-a, work/archive-b: symbolic links to each half's image files and its manifest rows."""
    from sarclip_search.ingest.walk import IMAGE_SUFFIXES

    with open(data / "manifest.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    counts = {"a": 0, "b": 0}
    for name in counts:
        shutil.rmtree(work / f"archive-{name}", ignore_errors=True)
    for path in sorted(data.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            rel = path.relative_to(data).as_posix()
            name = half_of(rel)
            link = work / f"archive-{name}" / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
            counts[name] += 1
    for name in counts:
        with open(work / f"archive-{name}" / "manifest.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(row for row in rows if half_of(row["path"]) == name)
    return counts


def index(archive: Path, db: Path, encoders_from: Path | None, *extra: str) -> dict:
    """`sarsearch index ARCHIVE --db DB`, timed; its summary line."""
    if encoders_from is not None and (encoders_from / "encoders").is_dir() and not (db / "encoders").exists():
        db.mkdir(parents=True, exist_ok=True)
        shutil.copytree(encoders_from / "encoders", db / "encoders", copy_function=os.link)
    started = time.perf_counter()
    command = [sys.executable, "-m", "sarclip_search", "index", str(archive), "--db", str(db), "--quiet", *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):
        sys.exit(f"error: {' '.join(command)} failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    summary = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-1:]
    return {"seconds": round(seconds, 1), "exit": done.returncode, "summary": summary}


def key(hit) -> tuple:
    return (hit.path, tuple(hit.window))


def same_up_to_ties(a, b, tolerance: float = 1e-6) -> bool:
    """Same tiles, and wherever the order differs the scores are equal (within `tolerance`)."""
    if sorted(map(key, a)) != sorted(map(key, b)):
        return False
    return all(x.score == y.score or abs(x.score - y.score) <= tolerance for x, y in zip(a, b))


def timed(call, rounds: int = ROUNDS) -> float:
    """Median ms of `rounds` calls."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def ray_step(dbs: dict[str, Path], queries: list, ask, data: Path) -> dict:
    """Step 4: the halves behind Ray actors, against the halves in process."""
    import logging

    import ray

    from sarclip_search.query.multi import MultiEngine

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)  # its own, not a running one
    try:
        remote = MultiEngine([RaySearcher.start(ray, name, dbs[name]) for name in ("a", "b")])
        local = MultiEngine.open([dbs["a"], dbs["b"]])
        rows = []
        with remote, local:
            for kind, query in queries:
                ask(remote, kind, query)
            for kind, query in queries:
                same = [key(h) for h in ask(remote, kind, query)] == [key(h) for h in ask(local, kind, query)]
                rows.append({"kind": kind, "identical": same,
                             "ms": round(timed(lambda: ask(remote, kind, query)), 2)})  # noqa: B023 - called at once
            vector = local.embed_text(TEXTS[0])[None]
            call = timed(lambda: remote.searchers[1].search(vector, 10, None, None), rounds=50)
            in_process = timed(lambda: local.searchers[1].search(vector, 10, None, None), rounds=50)
        return {"identical_top10": sum(r["identical"] for r in rows), "queries": rows,
                **{f"{kind}_p50_ms": round(statistics.median(r["ms"] for r in rows if r["kind"] == kind), 2)
                   for kind in ("text", "image")},
                "search_call_p50_ms": round(call, 2), "search_in_process_p50_ms": round(in_process, 2)}
    finally:
        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="the corpus (a folder with manifest.csv)")
    parser.add_argument("--work", default=str(RUNS / "multi-bench"), help="where the halves and indexes go")
    parser.add_argument("--reuse", action="store_true", help="keep indexes already built in --work")
    parser.add_argument("--out", default=str(RESULTS / "multi_index.json"))
    parser.add_argument("--ray", action="store_true", help="also query the halves behind Ray actors (step 4)")
    args = parser.parse_args()
    data = require_archive(args.data, "--data", manifest=True).resolve()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    record: dict = {"data": os.path.relpath(data, RESULTS.parent.parent), "load_before": load(),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cpus"}

    dbs = {name: work / f"db-{name}" for name in ("whole", "a", "b")}
    if not args.reuse:
        for db in dbs.values():
            shutil.rmtree(db, ignore_errors=True)
    reused = args.reuse and all((db / "CURRENT").is_file() for db in dbs.values())
    if reused:
        record["indexing"] = "reused (built by an earlier run)"
    else:
        record["files"] = split(data, work)
        record["indexing"] = {}
        for name, archive, extra in (("whole", data, ()), ("a", work / "archive-a", ("--follow-symlinks",)),
                                     ("b", work / "archive-b", ("--follow-symlinks",))):
            encoders_from = dbs["whole"] if name != "whole" else None
            record["indexing"][name] = index(archive, dbs[name], encoders_from, *extra)
            print(f"indexed {name}: {record['indexing'][name]}", flush=True)

    from sarclip_search.query.engine import Engine
    from sarclip_search.query.multi import MultiEngine

    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    step = len(rows) // IMAGE_ROWS
    images = [data / rows[i * step]["path"] for i in range(IMAGE_ROWS)]
    queries = [("text", text) for text in TEXTS] + [("image", path) for path in images]

    results = []
    with Engine.open(dbs["whole"]) as whole, MultiEngine.open([dbs["a"], dbs["b"]]) as multi:
        record["tiles"] = {"whole": whole.vectors.ntotal,
                           **{s.name: s.count(None) for s in multi.searchers}}

        def ask(engine, kind, query):
            return engine.query(query, k=10) if kind == "text" else engine.query(images=[query], k=10)

        for kind, query in queries:  # warm up: encoders, memory maps, catalog caches
            ask(whole, kind, query), ask(multi, kind, query)
        for kind, query in queries:
            one, two = ask(whole, kind, query), ask(multi, kind, query)
            results.append({
                "kind": kind, "query": query if kind == "text" else os.path.relpath(query, data),
                "identical": [key(h) for h in one] == [key(h) for h in two],
                "same_up_to_ties": same_up_to_ties(one, two),
                "max_score_difference": float(max((abs(x.score - y.score) for x, y in zip(one, two)), default=0.0)),
                "from_a": sum(str(h.id).startswith("a:") for h in two),
                "whole_ms": round(timed(lambda: ask(whole, kind, query)), 2),  # noqa: B023 - called at once
                "two_halves_ms": round(timed(lambda: ask(multi, kind, query)), 2),  # noqa: B023
            })
        # the search + fetch part alone (query vectors already embedded), and its pieces, taken in turn per round
        vectors = [whole.embed_text(text)[None] for text in TEXTS]
        searchers = multi.searchers
        steps = {
            "whole_search_ms": lambda v: whole._search(v, 10, None, None),
            "two_halves_search_ms": lambda v: multi._search(v, 10, None, None),  # both halves at once, merged
            "half_a_search_ms": lambda v: searchers[0].search(v, 10, None, None),
            "half_b_search_ms": lambda v: searchers[1].search(v, 10, None, None),
            "whole_ann_ms": lambda v: whole.vectors.search(v, 10),
            "whole_fetch_ms": lambda v: whole.catalog.fetch_tiles(top_ids[id(v)]),  # the 10 hits' rows
        }
        top_ids = {id(v): [int(i) for i in whole.vectors.search(v, 10)[1][0]] for v in vectors}
        parts: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(ROUNDS):
            for vector in vectors:
                for name, step in steps.items():
                    parts[name].append(timed(lambda: step(vector), rounds=1))  # noqa: B023 - called at once
        hits = multi._search(vectors[0], 10, None, None)
        merge_input = [[h for h in hits if str(h.id).startswith(f"{s.name}:")] for s in searchers]
        merge_us = timed(lambda: sorted([h for part in merge_input for h in part], key=lambda h: -h.score)[:10],
                         rounds=200) * 1000
    if args.ray:
        record["ray"] = ray_step(dbs, queries, ask, data)
    record["queries"] = results
    record["search_part_p50_ms"] = {name: round(statistics.median(values), 2) for name, values in parts.items()}
    record["merge_us"] = round(merge_us, 1)
    record["summary"] = {
        "queries": len(results),
        "identical_top10": sum(r["identical"] for r in results),
        "same_top10_up_to_ties": sum(r["same_up_to_ties"] for r in results),
        "max_score_difference": max(r["max_score_difference"] for r in results),
        **{f"{kind}_p50_ms_{side}": round(statistics.median(r[f"{side}_ms"] for r in results if r["kind"] == kind), 2)
           for kind in ("text", "image") for side in ("whole", "two_halves")},
    }
    record["load_after"] = load()
    out = write_result(args.out, record)

    print(f"\n{'kind':6} {'identical':>9} {'ties':>5} {'max dscore':>10} {'whole ms':>9} {'2 halves ms':>11}  query")
    for r in results:
        print(f"{r['kind']:6} {r['identical']!s:>9} {r['same_up_to_ties']!s:>5} {r['max_score_difference']:10.1e} "
              f"{r['whole_ms']:9.1f} {r['two_halves_ms']:11.1f}  {r['query']}")
    s = record["summary"]
    print(f"\n{s['identical_top10']}/{s['queries']} top-10 lists identical, {s['same_top10_up_to_ties']}/{s['queries']} "
          f"the same up to equal-score order; largest score difference {s['max_score_difference']:.1e}")
    print(f"p50 ms, whole vs two halves: text {s['text_p50_ms_whole']} vs {s['text_p50_ms_two_halves']}, "
          f"image {s['image_p50_ms_whole']} vs {s['image_p50_ms_two_halves']}")
    print(f"search + fetch only (text vectors): {record['search_part_p50_ms']}; merge of 2 x 10 hits: {record['merge_us']} us")
    if args.ray:
        r = record["ray"]
        print(f"behind Ray actors: {r['identical_top10']}/{len(queries)} top-10 lists identical to in process; p50 ms "
              f"text {r['text_p50_ms']}, image {r['image_p50_ms']}; one search call {r['search_call_p50_ms']} ms "
              f"vs {r['search_in_process_p50_ms']} ms in process")
    print(f"tiles {record['tiles']}; load {record['load_before']:.2f} -> {record['load_after']:.2f}; record: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
