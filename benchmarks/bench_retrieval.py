"""Which query fusion retrieves best, and does relevance feedback help? P@10 on the labelled test split.

    python benchmarks/bench_retrieval.py [--db runs/corpus-db] [--examples 5] [--out benchmarks/results/retrieval.json]

On an index of the developer corpus (read only; never written; default runs/corpus-db of this checkout,
built first by `sarsearch index ARCHIVE --db runs/corpus-db` from --archive, default ../shared/data,
when missing: ~3 min; benchmarks/defaults.py), for every class of MSTAR-SOC and
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

    python benchmarks/bench_retrieval.py --latency [--sizes corpus,1000000] [--cache runs/bench-latency] [--rebuild]

`--latency` answers another question instead: how long does a warm text query take, stage by stage,
at the corpus size and at 1M tiles? For each size (`corpus`: a copy of --db given the ONNX query
encoders; a number: an index directory of that many tiles built once by `build_scaled` and kept under
--cache), ~100 texts (`LATENCY_TEXTS`) run unfiltered and with one-column filters whose tile shares are
nearest 0.1%, 1%, 10% and 50%, after a warm-up; sizes and filters interleaved, --latency-rounds passes.
Each query is timed end to end (`Engine.query(text, filters, k=10)`), then stage by stage with the same
inputs: text encoding (`Engine.embed_text`, ONNX), filter (`Engine.filter_ids`: catalog predicate ->
id set), ANN search (`VectorIndex.search` at the index's tuned nprobe / rerank_factor) and metadata fetch
(`Catalog.fetch_tiles` of the hits). Also recall@10 of the ANN stage for the texts vs exact search.
Writes benchmarks/results/latency.json (machine, load average, commit, index settings, build) and
prints p50 / p99 per stage.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads; stated in the result

import numpy as np

from sarclip_search.model.vectors import l2_normalize
from sarclip_search.query.engine import Engine
from sarclip_search.store.filters import Filters
from sarclip_search.store.layout import IndexStore, write_json_atomic

from defaults import CORPUS_DB, DATA, RESULTS, RUNS, corpus_index, write_result

DATASETS = ("MSTAR-SOC", "OpenSARShip")
K = 10
MARKS = 5  # positives and negatives an analyst marks for feedback


def precision(hits: list, label: str, k: int = K) -> float:
    """P@k with label relevance; a short result list counts its missing places as misses."""
    return sum(1 for hit in hits[:k] if hit.metadata.get("label") == label) / k


def class_examples(engine, dataset: str, split: str) -> dict[str, list[int]]:
    """label -> sorted tile ids of that dataset's `split` tiles."""
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


# ---------------------------------------------------------------- query latency by stage (--latency)

# ~100 queries an analyst might type: class names and prompts of the corpus, paraphrases, open-ended scenes.
LATENCY_TEXTS = (
    "T72 tank", "a T-72 main battle tank", "BMP2 infantry fighting vehicle", "a BTR-70 armoured personnel carrier",
    "BTR60", "a BRDM-2 scout car", "2S1 self-propelled howitzer", "ZSU-23-4 anti-aircraft gun", "a ZIL-131 army truck",
    "D7 bulldozer", "T62 tank", "several military vehicles parked in a field", "a tank on open ground",
    "armoured vehicles in a row", "a convoy of trucks on a road", "an artillery piece", "a self-propelled gun",
    "a cargo ship at sea", "a freighter", "an oil tanker", "a tug boat", "a passenger ferry", "a search and rescue vessel",
    "a law enforcement patrol boat", "ships near a harbor", "a container ship docked at a port", "small boats in a marina",
    "a large vessel with a wake", "two ships side by side", "a fishing fleet", "ship", "boat", "vessel", "tanker",
    "cargo", "harbor with cranes and containers", "an offshore oil platform", "a bridge over a river",
    "land with lakes and rivers", "flooded fields", "flood water in a city", "a river that burst its banks",
    "a water body", "a reservoir behind a dam", "a lake surrounded by forest", "wetlands", "coastline with beaches",
    "a rocky coast", "sea ice", "icebergs", "a glacier", "snow covered mountains", "a volcano", "lava flows",
    "desert sand dunes", "farmland with rectangular fields", "rice paddies", "an orchard", "a dense forest",
    "clear-cut forest", "a city with tall buildings", "a suburban neighbourhood", "an airport runway",
    "aircraft parked at an airfield", "a military base", "a railway yard", "a highway interchange",
    "a stadium", "an industrial area with storage tanks", "a power plant", "wind turbines at sea", "solar farm",
    "an oil spill on the sea surface", "a ship leaving an oil slick", "rough sea", "calm water", "radar shadow of a hill",
    "bright corner reflector", "speckle noise", "a dark smooth area", "a SAR image of a T72 main battle tank",
    "a SAR image of a cargo ship at sea", "a SAR image of flood water", "a SAR image of ship",
    "a SAR image of water body", "a SAR image of a bulldozer", "a SAR image of an army truck",
    "a SAR image of a tanker at sea", "X-band spotlight image of a vehicle", "Sentinel-1 image of a port",
    "VV polarization image of the sea", "HH image of ice", "a target with its shadow", "clutter without any target",
    "vehicle next to a tree line", "a truck on a dirt road", "ship in open water far from the coast",
    "T72 tank at 17 degrees depression", "an anti-aircraft vehicle in a field", "something metallic and bright",
)
LATENCY_SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)  # filters are chosen with tile shares nearest to these
FILTER_COLUMNS = ("dataset", "label", "split")  # the shortcut filters the catalog columns are tried for
STAGES = ("encode", "filter", "ann", "fetch", "end_to_end")
CORPUS = "corpus"
WARMUP_TEXTS = ("warm-up", "a warm-up query about ships", "tanks in the desert", "a flooded town")

# Synthetic scenes of the scaled archive: 1024 px, cut into 4 x 4 tiles of 256 px (the `index` default).
SCENE_PX, TILE_PX = 1024, 256
# Shares of the synthetic scenes per value, so that one value of each column lies near each selectivity
# (volcano 0.1%, oil_spill 1%, TerraSAR-X 10%, train 50%); the values are independent of the vectors.
SYNTHETIC_COLUMNS = {
    "dataset": {"Sentinel-1-IW": 0.55, "Sentinel-1-EW": 0.25, "TerraSAR-X": 0.10, "ICEYE": 0.07, "Capella": 0.03},
    "label": {"sea": 0.36, "urban": 0.20, "cropland": 0.20, "forest": 0.14, "sea_ice": 0.089, "oil_spill": 0.01,
              "volcano": 0.001},
    "split": {"train": 0.50, "test": 0.35, "val": 0.15},
}
SENSORS = {  # dataset -> (sensor, "sar:polarizations", "sar:frequency_band")
    "Sentinel-1-IW": ("Sentinel-1A", "VV+VH", "C"), "Sentinel-1-EW": ("Sentinel-1B", "HH+HV", "C"),
    "TerraSAR-X": ("TerraSAR-X", "HH", "X"), "ICEYE": ("ICEYE-X2", "VV", "X"), "Capella": ("Capella-5", "HH", "X"),
}
FIRST_DAY, DAYS = np.datetime64("2016-01-01T00:00:00", "s"), 3653  # acquisition times over ten years
EXPANDED_SHARE = 0.5  # of the synthetic vectors: around the real tiles; the rest Gaussian clusters elsewhere
SWEEP_NPROBES = (1, 2, 4, 8, 16, 32, 64)  # the unfiltered ANN stage at these nprobe too (nprobe_sweep)
BUDGET_BYTES_PER_VECTOR = 80  # resident budget of the scaled index (the 80 B/vector at 1M): IVF-PQ


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ensure_encoders(root: Path, model: dict, donors: Sequence[Path]) -> str:
    """Give index directory `root` the ONNX query encoders of its checkpoint: copied from a donor, else exported."""
    from sarclip_search.model.encoders import encoder_dir, has_valid_encoders

    sha = model["checkpoint_sha256"]
    if has_valid_encoders(root, sha):
        return "present"
    for donor in donors:
        if donor != root and has_valid_encoders(donor, sha):
            shutil.copytree(encoder_dir(donor, sha), encoder_dir(root, sha))
            return f"copied from {donor}"
    from sarclip_search.model.encoder_export import export_encoders
    from sarclip_search.model.sarclip import load_model

    export_encoders(load_model(model["checkpoint_path"]), root)  # torch, once per cache
    return "exported"


def corpus_copy(source: Path, target: Path, rebuild: bool) -> Path:
    """A copy of the corpus index with ONNX query encoders (the source is read-only and may have none)."""
    if rebuild and target.exists():
        shutil.rmtree(target)
    if not target.exists():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("lock"))
    info = IndexStore(target).require_current().read_info()
    ensure_encoders(target, info["model"], [source])
    return target


def synthetic_rows(tiles: int, first_scene: int, first_tile: int, seed: int):
    """(scenes, tiles) pyarrow tables of seeded synthetic scenes holding `tiles` tiles, ids from the given ones."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    per_scene = (SCENE_PX // TILE_PX) ** 2
    count = -(-tiles // per_scene)
    scene_ids = np.arange(first_scene, first_scene + count, dtype=np.int64)
    columns = {}
    for name, shares in SYNTHETIC_COLUMNS.items():  # exact shares, in seeded order
        values = np.repeat(np.array(list(shares)), np.round(np.array(list(shares.values())) * count).astype(int))
        values = np.resize(values, count)  # rounding may leave a few rows short: repeat from the start
        columns[name] = rng.permutation(values)
    lon = rng.uniform(-170, 169, count)
    lat = rng.uniform(-70, 69, count)
    paths = [f"synthetic/{d}/scene_{i:07d}.tif" for d, i in zip(columns["dataset"], scene_ids)]
    sensor = [SENSORS[d] for d in columns["dataset"]]
    scenes = pa.table({
        "scene_id": scene_ids, "path": paths, "abs_path": ["/archive/" + p for p in paths],
        "size_bytes": np.full(count, SCENE_PX * SCENE_PX * 8, np.int64), "mtime": np.full(count, 1.7e9),
        "content_hash": [f"{i:064x}" for i in scene_ids], "width": np.full(count, SCENE_PX, np.int32),
        "height": np.full(count, SCENE_PX, np.int32), "band_count": np.full(count, 2, np.int32),
        "dtype": ["float32"] * count, "scale": ["linear power"] * count, "crs": ["EPSG:4326"] * count,
        "bbox_minlon": lon, "bbox_minlat": lat, "bbox_maxlon": lon + 1.0, "bbox_maxlat": lat + 1.0,
        "datetime": FIRST_DAY + rng.integers(0, DAYS * 86400, count).astype("timedelta64[s]"),
        **{name: values.tolist() for name, values in columns.items()},
        "sensor": [s[0] for s in sensor], "sar:polarizations": [s[1] for s in sensor],
        "sar:frequency_band": [s[2] for s in sensor],
    })
    side = SCENE_PX // TILE_PX
    scene_of = np.repeat(np.arange(count), per_scene)[:tiles]
    position = np.arange(tiles) % per_scene
    col, row = position % side, position // side
    step = 1.0 / side  # degrees per tile: scenes span 1 degree
    tiles_table = pa.table({
        "tile_id": np.arange(first_tile, first_tile + tiles, dtype=np.int64), "scene_id": scene_ids[scene_of],
        "col_off": (col * TILE_PX).astype(np.int32), "row_off": (row * TILE_PX).astype(np.int32),
        "width": np.full(tiles, TILE_PX, np.int32), "height": np.full(tiles, TILE_PX, np.int32),
        "bbox_minlon": lon[scene_of] + col * step, "bbox_minlat": lat[scene_of] + 1.0 - (row + 1) * step,
        "bbox_maxlon": lon[scene_of] + (col + 1) * step, "bbox_maxlat": lat[scene_of] + 1.0 - row * step,
    })
    return scenes, tiles_table


def bulk_catalog(catalog, source_catalog: Path, scenes, tiles) -> None:
    """Fill a new catalog with the source catalog's rows plus synthetic ones, in bulk.

    Private step (benchmark only): `Catalog` adds one scene per call (~1 ms per statement, minutes at
    1M tiles), so its DuckDB connection copies the source's dynamic columns and rows and inserts the
    pyarrow tables directly. Ids continue from the source's; the id counters are set through `set_meta`.
    """
    from sarclip_search.store.schema import quote_identifier

    con = catalog._con
    con.execute(f"ATTACH '{source_catalog}' AS source (READ_ONLY)")
    try:
        existing = {name.lower() for name in catalog.columns()}
        for name, sql_type in con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = 'source' AND table_name = 'scenes' ORDER BY ordinal_position").fetchall():
            if name.lower() not in existing:
                con.execute(f"ALTER TABLE scenes ADD COLUMN {quote_identifier(name)} {sql_type}")
        for name in ("sensor", "sar:polarizations", "sar:frequency_band", *SYNTHETIC_COLUMNS):
            if name.lower() not in {n.lower() for n in catalog.columns()}:
                con.execute(f"ALTER TABLE scenes ADD COLUMN {quote_identifier(name)} VARCHAR")
        with catalog.transaction():
            con.execute("INSERT INTO scenes BY NAME SELECT * FROM source.scenes")
            con.execute("INSERT INTO tiles BY NAME SELECT * FROM source.tiles ORDER BY tile_id")
            con.register("synthetic_scenes", scenes)
            con.register("synthetic_tiles", tiles)
            con.execute("INSERT INTO scenes BY NAME SELECT * FROM synthetic_scenes")
            con.execute("INSERT INTO tiles BY NAME SELECT * FROM synthetic_tiles")
            con.unregister("synthetic_scenes")
            con.unregister("synthetic_tiles")
    finally:
        con.execute("DETACH source")
    catalog.set_meta("next_scene_id", str(int(scenes["scene_id"][-1].as_py()) + 1))
    catalog.set_meta("next_tile_id", str(int(tiles["tile_id"][-1].as_py()) + 1))


def synthetic_vectors(real: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, dict]:
    """n seeded vectors: EXPANDED_SHARE around the real tiles (bench_index's `expanded`), the rest in
    Gaussian clusters (bench_index's `clustered`, n/100 clusters, noise = center scale), shuffled."""
    from bench_index import clustered, expanded, median_neighbour_distance

    near = round(n * EXPANDED_SHARE)
    noise = 0.5 * median_neighbour_distance(real) / np.sqrt(real.shape[1])
    clusters = max(1, (n - near) // 100)
    vectors = np.concatenate([expanded(real, near, noise, seed),
                              clustered(n - near, real.shape[1], clusters, 1.0, seed=seed + 1, centers_seed=seed + 2)])
    vectors = vectors[np.random.default_rng(seed + 3).permutation(n)]
    return vectors, {"near_real_tiles": near, "near_real_noise": round(float(noise), 5),
                     "gaussian_clusters": clusters, "gaussian_vectors": n - near}


def build_scaled(source: Path, root: Path, n: int, bytes_per_vector: int, seed: int) -> dict:
    """An index directory of n tiles built as `index` commits one, without embedding n images.

    One IndexStore generation: a Catalog with the source's scenes and tiles plus synthetic scenes up to
    n tiles (`synthetic_rows`, bulk inserted); a VectorIndex of the factory `choose_index_key(n, d,
    bytes_per_vector * n)` picks, holding the source's real vectors under their ids plus
    `synthetic_vectors`, trained on its seeded bounded sample (`add`), tuned (`tune`), saved; info.json
    recording the source's model, and the source's ONNX encoders copied alongside.
    """
    from sarclip_search.index import VectorIndex, choose_index_key
    from sarclip_search.store.catalog import Catalog
    from sarclip_search.store.layout import make_info
    from sarclip_search.store.schema import SCHEMA_VERSION

    started = time.perf_counter()
    timings = {}
    source_generation = IndexStore(source).require_current()
    info = source_generation.read_info()
    real_index = VectorIndex.load(source_generation.vectors_path, mmap=True)
    real_ids = real_index.ids()
    real = real_index.vectors(real_ids)
    if n <= len(real_ids):
        raise ValueError(f"--sizes {n}: the scaled index must hold more than the corpus's {len(real_ids)} tiles")
    shutil.rmtree(root, ignore_errors=True)
    store = IndexStore(root)
    with store.lock(), store.new_generation(copy_current=False) as generation:
        with Catalog(source_generation.catalog_path, read_only=True) as source_catalog:
            first_scene = int(source_catalog.get_meta("next_scene_id"))
            first_tile = int(source_catalog.get_meta("next_tile_id"))
        scenes, tiles = synthetic_rows(n - len(real_ids), first_scene, first_tile, seed)
        with Catalog(generation.catalog_path) as catalog:
            bulk_catalog(catalog, source_generation.catalog_path, scenes, tiles)
            counts = catalog.counts()
        timings["catalog_s"] = round(time.perf_counter() - started, 1)
        step = time.perf_counter()
        vectors, description = synthetic_vectors(real, n - len(real_ids), seed)
        ids = np.concatenate([real_ids, tiles["tile_id"].to_numpy()])
        timings["vectors_s"] = round(time.perf_counter() - step, 1)
        factory = choose_index_key(n, real.shape[1], bytes_per_vector * n)
        step = time.perf_counter()
        index = VectorIndex.create(real.shape[1], factory)
        index.add(ids, np.concatenate([real, vectors]))  # trains on a seeded sample first (training_sample_size)
        del vectors
        timings["train_add_s"] = round(time.perf_counter() - step, 1)
        step = time.perf_counter()
        tuned = index.tune()
        timings["tune_s"] = round(time.perf_counter() - step, 1)
        index.save(generation.vectors_path)
        write_json_atomic(generation.info_path, make_info(
            model_identity={k: v for k, v in info["model"].items() if k != "checkpoint_path"},
            model_path=info["model"].get("checkpoint_path"), vector_info=index.info(),
            counts={**counts, "vectors": index.ntotal}, archive_root=f"synthetic archive around {source}",
            tile_size=TILE_PX, tile_stride=TILE_PX, schema_version=SCHEMA_VERSION, generation=generation.number))
    encoders = ensure_encoders(root, info["model"], [source, root.parent / f"db-{CORPUS}"])
    timings["total_s"] = round(time.perf_counter() - started, 1)
    build = {"n": n, "source": str(source), "seed": seed, "factory": factory, "bytes_per_vector_budget": bytes_per_vector,
             "trained_on": index.trained_on, "nprobe": tuned.nprobe, "rerank_factor": tuned.rerank_factor,
             "tune_recall": round(tuned.recall, 4), "real_tiles": len(real_ids), "synthetic_scenes": scenes.num_rows,
             "vectors": description, "encoders": encoders, "seconds": timings, "load_average": load_average(),
             "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(root / "bench_build.json", build)
    return build


def choose_filters(engine: Engine, targets: Sequence[float]) -> list[dict]:
    """Per target selectivity, the one-column filter (FILTER_COLUMNS) whose tile share is nearest (log scale)."""
    total = engine.vectors.ntotal
    shares = []
    summary = engine.catalog.summary()
    for column in FILTER_COLUMNS:
        for value in summary.get(column, {}):
            if value != "null":
                filters = Filters(**{column: value})
                shares.append((len(engine.filter_ids(filters)) / total, column, value, filters))
    chosen = [{"name": "none", "filters": None, "selectivity": 1.0, "target": None}]
    for target in targets:
        share, column, value, filters = min(shares, key=lambda s: abs(np.log(s[0] / target)))
        chosen.append({"name": f"{column}={value}", "filters": filters, "selectivity": share, "target": target})
    return chosen


def measure_query(engine: Engine, text: str, filters: Filters | None, k: int) -> dict[str, float]:
    """ms of one query end to end (Engine.query), then of each of its stages alone, in the engine's order."""
    def timed(call):
        start = time.perf_counter()
        result = call()
        return (time.perf_counter() - start) * 1000, result

    times = {}
    times["end_to_end"], _ = timed(lambda: engine.query(text, filters=filters, k=k))
    times["filter"], subset = timed(lambda: engine.filter_ids(filters))
    times["encode"], vector = timed(lambda: engine.embed_text(text))
    query = l2_normalize(vector)[None]
    times["ann"], (_, ids) = timed(lambda: engine.vectors.search(query, k, subset=subset))
    found = [int(i) for i in ids[0] if i >= 0]
    times["fetch"], _ = timed(lambda: engine.catalog.fetch_tiles(found))
    return times


def exact_neighbours(engine: Engine, queries: np.ndarray, subset: np.ndarray | None, k: int) -> np.ndarray:
    """Exact best-k ids of the queries over the (filtered) float16 copy, 100k rows at a time."""
    from sarclip_search.index import exact_search

    ids = engine.vectors.ids() if subset is None else subset
    parts = [exact_search(engine.vectors.vectors(ids[i : i + 100_000]), ids[i : i + 100_000], queries, k)
             for i in range(0, len(ids), 100_000)]  # best k per block, then the best k of those
    scores, candidates = np.concatenate([p[0] for p in parts], 1), np.concatenate([p[1] for p in parts], 1)
    return np.take_along_axis(candidates, np.argsort(-scores, axis=1, kind="stable")[:, :k], 1)


def ann_recall(engine: Engine, texts: Sequence[str], filters: Filters | None, k: int) -> float:
    """recall@k of the index's tuned search for the texts, against exact search over the (filtered) float16 copy."""
    from sarclip_search.index import recall_at_k

    queries = engine.encoder.encode_texts(list(texts))
    subset = engine.filter_ids(filters)
    _, found = engine.vectors.search(queries, k, subset=subset)
    return float(recall_at_k(found, exact_neighbours(engine, queries, subset, k), k))


def nprobe_sweep(engine: Engine, texts: Sequence[str], k: int) -> list[dict]:
    """The unfiltered ANN stage at SWEEP_NPROBES (rerank_factor as tuned): recall@k of the texts and ms p50/p99.

    `tune()` picks nprobe on the index's own (image) vectors; text queries sit elsewhere (CLIP's modality
    gap), so their recall at the tuned nprobe can be lower: this shows what a text recall target costs.
    """
    from sarclip_search.index import recall_at_k

    queries = engine.encoder.encode_texts(list(texts))
    truth = exact_neighbours(engine, queries, None, k)
    nlist = int(engine.vectors.factory.split(",")[0].removeprefix("IVF"))
    nprobes = [n for n in SWEEP_NPROBES if n <= nlist]
    found = {n: [] for n in nprobes}
    times = {n: [] for n in nprobes}
    for query in queries:  # settings interleaved per query
        for nprobe in nprobes:
            start = time.perf_counter()
            _, ids = engine.vectors.search(query[None], k, nprobe=nprobe)
            times[nprobe].append((time.perf_counter() - start) * 1000)
            found[nprobe].append(ids[0])
    return [{"nprobe": n, "rerank_factor": engine.vectors.rerank_factor,
             "recall_at_10": round(float(recall_at_k(np.array(found[n]), truth, k)), 3),
             "p50": round(percentile(times[n], 50), 2), "p99": round(percentile(times[n], 99), 2)} for n in nprobes]


def latency_by_stage(args) -> None:
    """Warm query latency by stage at the corpus size and at the scaled sizes, side by side."""
    from sarclip_search.model.sarclip import git_commit

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    load_start = load_average()
    dbs, builds = {}, {}
    for size in args.sizes.split(","):
        if size == CORPUS:
            dbs[size] = corpus_copy(Path(args.db), cache / f"db-{CORPUS}", args.rebuild)
            continue
        n = int(size)
        root = cache / f"db-{n}"
        built = root / "bench_build.json"
        if args.rebuild or not built.is_file():
            print(f"building the {n:,}-tile index in {root} ...", file=sys.stderr)
            builds[size] = build_scaled(Path(args.db), root, n, args.bytes_per_vector, args.seed)
        else:
            builds[size] = json.loads(built.read_text())
        dbs[size] = root
    engines = {size: Engine.open(db) for size, db in dbs.items()}
    try:
        plans = {size: choose_filters(engine, LATENCY_SELECTIVITIES) for size, engine in engines.items()}
        for size, engine in engines.items():  # warm-up: sessions, tokenizer, mapped pages, DuckDB caches
            for text in WARMUP_TEXTS:
                for plan in plans[size]:
                    measure_query(engine, text, plan["filters"], K)
        samples = {size: {plan["name"]: {stage: [] for stage in STAGES} for plan in plans[size]} for size in engines}
        texts = LATENCY_TEXTS[: args.latency_texts]
        started = time.perf_counter()
        for _ in range(args.latency_rounds):  # sizes and filters interleaved: load changes hit all alike
            for text in texts:
                for size, engine in engines.items():
                    for plan in plans[size]:
                        for stage, ms in measure_query(engine, text, plan["filters"], K).items():
                            samples[size][plan["name"]][stage].append(ms)
        seconds = time.perf_counter() - started
        recall = {size: {plan["name"]: round(ann_recall(engine, texts, plan["filters"], K), 3) for plan in plans[size]}
                  for size, engine in engines.items()} if args.latency_recall else {}
        sweeps = {size: nprobe_sweep(engine, texts, K) for size, engine in engines.items()
                  if args.latency_recall and not engine.vectors.is_flat}
        index_info = {size: {**{k: v for k, v in engine.vectors.info().items() if k in ("factory", "ntotal", "nprobe",
                                                                                        "rerank_factor", "trained_on")}}
                      for size, engine in engines.items()}
    finally:
        for engine in engines.values():
            engine.close()
    rows = []
    for size, plan_list in plans.items():
        for plan in plan_list:
            stats = samples[size][plan["name"]]
            rows.append({"size": size, "tiles": index_info[size]["ntotal"], "filters": plan["name"],
                         "selectivity": round(plan["selectivity"], 5), "target": plan["target"], "n": len(stats["end_to_end"]),
                         **{stage: {"p50": round(percentile(v, 50), 2), "p99": round(percentile(v, 99), 2)}
                            for stage, v in stats.items()},
                         **({"recall_at_10": recall[size][plan["name"]]} if recall else {})})
        everything = {stage: [ms for plan in plan_list for ms in samples[size][plan["name"]][stage]] for stage in STAGES}
        rows.append({"size": size, "tiles": index_info[size]["ntotal"], "filters": "all", "selectivity": None,
                     "target": None, "n": len(everything["end_to_end"]),
                     **{stage: {"p50": round(percentile(v, 50), 2), "p99": round(percentile(v, 99), 2)}
                        for stage, v in everything.items()}})
    result = {
        "question": "warm query latency p50/p99 by stage (text encoding, filter, ANN search, metadata fetch) and "
                    "end to end, at the corpus size and at 1M tiles",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                    "load_average_start": load_start, "load_average_end": load_average()},
        "commit": git_commit(),
        "config": {"dbs": {size: str(db) for size, db in dbs.items()}, "k": K, "texts": len(texts),
                   "rounds": args.latency_rounds, "warmup_texts": len(WARMUP_TEXTS), "seed": args.seed,
                   "bytes_per_vector": args.bytes_per_vector, "encoder": "ONNX (engine.encoder)"},
        "index": index_info,
        "builds": builds,
        "measure_seconds": round(seconds, 1),
        "rows": rows,
        "nprobe_sweep": sweeps,
    }
    out = write_result(args.out or RESULTS / "latency.json", result)
    print_latency(result)
    print(f"result written to {out}")


def print_latency(result: dict) -> None:
    machine = result["machine"]
    print(f"machine: {machine['cpus']} cpus, OMP_WAIT_POLICY={machine['OMP_WAIT_POLICY']}, commit {result['commit'][:10]}, "
          f"load average {machine['load_average_start']} -> {machine['load_average_end']}")
    for size, info in result["index"].items():
        print(f"index {size}: {info['ntotal']:,} tiles, {info['factory']}, nprobe={info['nprobe']}, "
              f"rerank={info['rerank_factor']}")
    print(f"warm, k={result['config']['k']}, {result['config']['texts']} texts x {result['config']['rounds']} rounds; "
          "ms p50 / p99")
    recall = any("recall_at_10" in row for row in result["rows"])
    header = f"{'size':<9}{'filter':<26}{'share':>8}" + "".join(f"{stage:>16}" for stage in STAGES)
    print(header + (f"{'recall@10':>11}" if recall else ""))
    for row in result["rows"]:
        share = "" if row["selectivity"] is None else f"{100 * row['selectivity']:.2f}%"
        cells = "".join(f"{row[stage]['p50']:>8.1f} /{row[stage]['p99']:>6.1f}" for stage in STAGES)
        extra = f"{row['recall_at_10']:>11.3f}" if "recall_at_10" in row else ""
        print(f"{row['size']:<9}{row['filters'][:25]:<26}{share:>8}{cells}{extra}")
    for size, sweep in result.get("nprobe_sweep", {}).items():
        print(f"ANN stage alone at {size}, unfiltered, rerank={sweep[0]['rerank_factor']}: nprobe -> recall@10 of the "
              "texts, ms p50 / p99")
        print("  " + "   ".join(f"{row['nprobe']}: {row['recall_at_10']:.3f} {row['p50']:.1f}/{row['p99']:.1f}"
                              for row in sweep))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(CORPUS_DB),
                        help="index of the labelled corpus (read only; default: %(default)s)")
    parser.add_argument("--archive", default=str(DATA),
                        help="the labelled corpus, indexed into --db when that is missing (default: %(default)s)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--examples", type=int, default=10, help="example tiles per class (seeded)")
    parser.add_argument("--alphas", default="0.25,0.5,0.75,0.9", help="text weights of the blend")
    parser.add_argument("--rrf-alphas", default="0.5,0.75,0.9", help="text weights of RRF")
    parser.add_argument("--feedback-pool", type=int, default=50, help="text results an analyst looks through")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--latency-only", type=int, default=None, help=argparse.SUPPRESS)  # child process of omp_comparison
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="JSON result (default benchmarks/results/retrieval.json, with --latency latency.json)")
    parser.add_argument("--latency", action="store_true",
                        help="measure warm query latency by stage at --sizes instead (see latency_by_stage())")
    parser.add_argument("--sizes", default=f"{CORPUS},1000000", help="--latency: 'corpus' (--db) and tile counts")
    parser.add_argument("--cache", default=str(RUNS / "bench-latency"),
                        help="--latency: where the built indexes are kept (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="--latency: rebuild the cached indexes")
    parser.add_argument("--bytes-per-vector", type=int, default=BUDGET_BYTES_PER_VECTOR,
                        help="--latency: resident budget per vector for choose_index_key at scaled sizes")
    parser.add_argument("--latency-texts", type=int, default=len(LATENCY_TEXTS))
    parser.add_argument("--latency-rounds", type=int, default=3, help="--latency: passes over the texts")
    parser.add_argument("--latency-recall", action=argparse.BooleanOptionalAction, default=True,
                        help="--latency: also recall@10 of the ANN stage for the texts vs exact search")
    args = parser.parse_args()
    if args.latency_only is not None:
        print(json.dumps(search_latency(args.db, args.latency_only)))
        return
    corpus_index(args.db, args.archive)
    if args.latency:
        latency_by_stage(args)
        return

    from sarclip_search.model.sarclip import git_commit
    from sarclip_search.training.captions import class_prompts

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
    out = write_result(args.out or RESULTS / "retrieval.json", result)
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
