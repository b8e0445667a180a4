"""`sarsearch index --from-shards DIR`: an index generation built from embedding shards (`shards.py`).

The build, in one generation commit (`IndexStore.new_generation`: a killed build leaves the previous
generation, or none, and CURRENT untouched):

1. Every shard's header is checked against the folder's before anything is written (a mismatch is refused
   naming the shard and the field); leftover temporary files of killed writers are listed and skipped.
2. The factory is chosen for the total tile count as the one-process indexer would (`choose_index_key`, or
   `index_factory`). An IVF quantizer (and PQ, and the 4-bit subset codes' PQ) is trained ONCE, on the same
   seeded sample of rows the one-process build trains on (`factory.training_rows` over the shards'
   concatenation in shard order): only the shards holding sampled rows are read, only their vector column.
3. The codes are computed in parallel, one task per shard: each task reads its shard's vectors and runs
   FAISS's `sa_encode` with the trained index (shipped to the task serialized, through Ray's object store),
   returning the IVF codes (list number + PQ code) and the subset codes. With Ray: remote tasks
   (`num_cpus=1`, one OpenMP thread each, `max_retries` bounded) in `ray_pipeline.ray_session` (the session
   this process has, else a local Ray or the cluster named by `--ray`); without: the same function here.
4. The driver reads the shards in number order, writes the scene and tile rows to the catalog (tile ids are
   assigned as the one-process indexer assigns them for the same order: the catalog's counters, scene by
   scene), and adds each shard's vectors under those ids with the task's codes (`VectorIndex.add_codes`:
   FAISS `add_sa_codes`, so the codes land in the one in-memory inverted file the project's VectorIndex
   saves, loads and memory-maps as always). Then `tune()`, save, info.json (model identity, tiling, archive
   root from the shards' header).

Why `add_sa_codes` rather than FAISS's on-disk merge (`merge_ondisk`, OnDiskInvertedLists) or `IndexShards`:
the encoding (assigning each vector to its list among nlist centroids, PQ-encoding its residual) is the part
worth parallelizing; appending the codes to inverted lists is a memory copy. `add_sa_codes` gives the same
single IndexIVF as adding the vectors in one process (bit for bit: same training sample, same codes), which
VectorIndex's storage, memory-mapped loading, filtered search, tuning and GPU placement already handle.
OnDiskInvertedLists would need another storage format (the `.ivfdata` file next to the index) and
IndexShards would fan every query over sub-indexes and break the id -> row map, re-ranking and filtered
search that assume one index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarclip_search.errors import ArtifactMismatchError, CatalogError, InputError
from sarclip_search.index import VectorIndex, choose_index_key
from sarclip_search.index.factory import training_rows
from sarclip_search.ingest.shards import (
    ShardHeader,
    ShardSet,
    check_header,
    read_shard,
    read_shard_header,
    read_shard_vectors,
    scan_shards,
)
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.layout import IndexStore, make_info, write_json_atomic
from sarclip_search.store.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

TASK_RETRIES = 3  # a shard's encode task is retried this many times if its worker dies


@dataclass
class ShardBuildReport:
    """What one `index --from-shards` build did."""

    shards_dir: str
    db: str
    shards: int = 0
    scenes: int = 0
    tiles: int = 0
    index_factory: str = ""
    encoder: str = ""  # "ray (N tasks)" or "in-process"
    leftovers: list[str] = field(default_factory=list)  # temporary files of killed writers, not read
    seconds: dict[str, float] = field(default_factory=dict)  # train, encode_wait, catalog_add, tune, save, total
    generation: int | None = None


def encode_shard(path: str, header: ShardHeader, index_bytes: np.ndarray, subset_bytes: np.ndarray | None,
                 threads: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The codes of one shard's vectors: (IVF codes, subset codes or None), by `sa_encode` of the serialized
    trained index and subset PQ (`faiss.serialize_index`). Runs in a Ray task or in this process."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    xb = read_shard_vectors(path, header)
    index = faiss.deserialize_index(index_bytes)
    codes = index.sa_encode(xb)
    subset = None if subset_bytes is None else faiss.deserialize_index(subset_bytes).sa_encode(xb)
    return codes, subset


Encoded = Callable[[int], tuple[np.ndarray, np.ndarray | None]]  # shard position -> its codes


def _submit_to_ray(ray: Any, files: list[tuple[int, Path]], header: ShardHeader, index_bytes: np.ndarray,
                   subset_bytes: np.ndarray | None) -> Encoded:
    """One Ray task per shard, all submitted at once (the trained index put once in the object store); the
    codes are taken in shard order."""
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(encode_shard)
    index_ref, subset_ref = ray.put(index_bytes), ray.put(subset_bytes)
    refs = [task.remote(str(path), header, index_ref, subset_ref, 1) for _, path in files]
    return lambda position: ray.get(refs[position])


def _check_shards(shard_set: ShardSet) -> list[int]:
    """Every shard's header against the folder's (before anything is written); returns each shard's tile count."""
    import pyarrow.parquet as pq

    counts = []
    for _, path in shard_set.files:
        check_header(shard_set.header, read_shard_header(path), path,
                    "move that shard out of the folder or write it again with the folder's model")
        counts.append(pq.ParquetFile(path).metadata.num_rows)
    return counts


def _training_sample(files: list[tuple[int, Path]], counts: list[int], header: ShardHeader,
                     nlist: int) -> np.ndarray:
    """The rows of the shards' concatenation (in shard order) that the one-process build trains on."""
    total = sum(counts)
    rows = training_rows(total, nlist)
    starts = np.concatenate([[0], np.cumsum(counts)])
    parts = []
    for position, (_, path) in enumerate(files):
        lo, hi = starts[position], starts[position + 1]
        if rows is None:
            wanted = None
        else:
            wanted = rows[(rows >= lo) & (rows < hi)] - lo
            if not len(wanted):
                continue
        xb = read_shard_vectors(path, header)
        parts.append(xb if wanted is None else xb[wanted])
    return np.concatenate(parts) if parts else np.empty((0, header.embed_dim), np.float32)


def _scene_groups(batch: Any) -> Iterator[tuple[dict, list[dict], slice]]:
    """(scene row, its tile rows, their slice of the shard's rows), in the shard's order (tiles grouped by scene)."""
    start = 0
    tiles = batch.tile_rows
    for scene in batch.scene_rows:
        end = start
        while end < len(tiles) and tiles[end]["path"] == scene["path"]:
            end += 1
        yield scene, tiles[start:end], slice(start, end)
        start = end
    if start != len(tiles):
        raise InputError(f"{batch.path}: tile rows not grouped by scene in scene order; write that shard again")


def build_from_shards(
    shards_dir: str | Path,
    store: IndexStore,
    *,
    index_factory: str | None = None,
    memory_budget: int | None = None,
    rebuild: bool = False,
    ray: bool | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ShardBuildReport:
    """Build one index generation of `store` from the embedding shards in `shards_dir` (module docstring).

    `ray`: None/False encode in this process; True or "local" start a local Ray (or use the one already
    initialized); "auto" or an address join a cluster. `rebuild`: replace an index the store already holds
    (otherwise refused: a build from shards starts from nothing). `progress(stage, done, total)`: stages
    "encode" (shards added).
    """
    started = time.perf_counter()
    shard_set = scan_shards(shards_dir)
    header = shard_set.header
    header.check_readable(shard_set.folder)
    if not shard_set.files:
        raise InputError(f"{shard_set.folder}: no shard files (shard-NNNNNNNN.parquet) in it; "
                         "run the embedding first, or pass the folder it wrote")
    counts = _check_shards(shard_set)
    report = ShardBuildReport(str(shard_set.folder), str(store.root), shards=len(counts),
                              leftovers=[p.name for p in shard_set.leftovers])
    total = sum(counts)
    dim = header.embed_dim
    factory = index_factory or choose_index_key(total, dim, memory_budget)
    vectors = VectorIndex.create(dim, factory)
    stage = time.perf_counter()
    encoded: Encoded | None = None
    with store.lock(), ExitStack() as session:
        if store.current() is not None and not rebuild:
            raise InputError(f"{store.root} already holds an index; a build from shards starts from nothing: "
                             "pass --rebuild to replace it, or another --db")
        if not vectors.is_flat:
            if total < (vectors.nlist or 0):
                raise InputError(f"{factory} needs at least {vectors.nlist} vectors, the shards hold {total}; "
                                 "pass another --index-factory or leave it to the default")
            vectors.train(_training_sample(shard_set.files, counts, header, vectors.nlist or 1), total=total)
            report.seconds["train"] = time.perf_counter() - stage
            import faiss

            index, subset_pq = vectors.encoders()
            index_bytes = faiss.serialize_index(index)
            subset_bytes = None if subset_pq is None else faiss.serialize_index(subset_pq)
            if ray:
                from sarclip_search.ingest.ray_pipeline import ray_session

                # the session this process has, else a local Ray or the cluster at `ray`, ended with the build
                ray_module = session.enter_context(ray_session(None if ray is True else str(ray)))
                encoded = _submit_to_ray(ray_module, shard_set.files, header, index_bytes, subset_bytes)
                report.encoder = f"ray ({len(counts)} tasks)"
            else:
                files = shard_set.files
                report.encoder = "in-process"
                encoded = lambda position: encode_shard(str(files[position][1]), header, index_bytes,
                                                        subset_bytes)
        else:
            report.encoder = "none (Flat: no codes)"
        with store.new_generation(copy_current=False) as generation:
            catalog_counts = _add_all(shard_set, header, vectors, generation.catalog_path, encoded, report, progress)
            if not vectors.is_flat:
                stage = time.perf_counter()
                result = vectors.tune(text_queries=_text_proxies(store, header, generation.catalog_path))
                log.info("tuned %s: nprobe %s, rerank %s (recall %.3f)", vectors.factory, result.nprobe,
                         result.rerank_factor, result.recall)
                report.seconds["tune"] = time.perf_counter() - stage
            stage = time.perf_counter()
            vectors.save(generation.vectors_path)
            _write_info(generation, vectors, header, catalog_counts)
            report.seconds["save"] = time.perf_counter() - stage
            report.generation = generation.number
    report.index_factory = vectors.factory
    report.seconds["total"] = time.perf_counter() - started
    return report


def _add_all(shard_set: ShardSet, header: ShardHeader, vectors: VectorIndex, catalog_path: Path,
             encoded: Encoded | None, report: ShardBuildReport,
             progress: Callable[[str, int, int], None] | None) -> dict[str, int]:
    """Catalog rows and vectors of every shard, in shard order (tile ids as the one-process indexer gives them)."""
    wait = add = 0.0
    with Catalog(catalog_path) as catalog, catalog.transaction():
        for position, (number, path) in enumerate(shard_set.files):
            stage = time.perf_counter()
            batch = read_shard(path, number, header)
            ids = np.empty(len(batch.tile_rows), np.int64)
            for scene, tiles, rows in _scene_groups(batch):
                try:
                    scene_id = catalog.add_scene(scene)
                except CatalogError as exc:
                    raise InputError(f"{path}: scene {scene['path']!r} is in an earlier shard too; "
                                     "each scene must be in one shard only (write the shards again)") from exc
                ids[rows] = catalog.add_tiles(scene_id, tiles)
            add += time.perf_counter() - stage
            if encoded is None:
                vectors.add(ids, batch.vectors)
            else:
                stage = time.perf_counter()
                codes, subset_codes = encoded(position)
                wait += time.perf_counter() - stage
                if len(codes) != len(ids):
                    raise InputError(f"{path}: changed while the index was built ({len(codes)} codes for "
                                     f"{len(ids)} tiles); build again")
                stage = time.perf_counter()
                vectors.add_codes(ids, batch.vectors, codes, subset_codes)
                add += time.perf_counter() - stage
            report.scenes += len(batch.scene_rows)
            report.tiles += len(ids)
            if progress is not None:
                progress("encode", position + 1, len(shard_set.files))
        stage = time.perf_counter()
        tile_ids, counts = catalog.tile_ids(), catalog.counts()
    add += time.perf_counter() - stage
    if not np.array_equal(np.sort(vectors.ids()), tile_ids):
        raise RuntimeError(f"catalog has {len(tile_ids)} tiles but the index {vectors.ntotal} vectors, or other ids")
    report.seconds["catalog_and_add"] = add
    report.seconds["encode_wait"] = wait
    return counts


def _write_info(generation: Any, vectors: VectorIndex, header: ShardHeader, counts: dict[str, int]) -> None:
    write_json_atomic(
        generation.info_path,
        make_info(
            model_identity=header.model_identity,
            model_path=header.model_path,
            vector_info=vectors.info(),
            counts={**counts, "vectors": vectors.ntotal},
            archive_root=header.archive_root,
            tile_size=header.tile_size,
            tile_stride=header.tile_stride,
            schema_version=SCHEMA_VERSION,
            generation=generation.number,
        ),
    )


def _text_proxies(store: IndexStore, header: ShardHeader, catalog_path: Path) -> np.ndarray | None:
    """Text proxies for tuning (`text_proxies`), encoded by the index directory's ONNX text tower of the shards'
    checkpoint when it is there already (a --rebuild); else None: text queries use the image setting."""
    from sarclip_search.ingest.text_proxies import text_proxy_vectors
    from sarclip_search.model.encoders import load_onnx_encoder

    try:
        encoder = load_onnx_encoder(store.root, header.checkpoint_sha256)
    except ArtifactMismatchError as exc:  # an export of another checkpoint: replaced by the export after the build
        log.info("%s", exc)
        encoder = None
    if encoder is None:
        log.info("no ONNX encoders in %s yet: tuned for image queries only (re-run with --rebuild after the export "
                 "to tune for text too)", store.root)
        return None
    return text_proxy_vectors(catalog_path, encoder.encode_texts)


def check_shard_model(shards_dir: str | Path, model_path: str | Path, *, explicit: bool) -> bool:
    """Whether the checkpoint at `model_path` is the one that embedded the shards (its sha256 against the
    header): then `export_shard_encoders` can export its ONNX query encoders. A checkpoint the user named
    (`explicit`) that is another one is refused; the default one that is not simply is not used."""
    from sarclip_search._fs import file_sha256

    header = scan_shards(shards_dir).header
    path = Path(model_path)
    if path.is_file() and file_sha256(path) == header.checkpoint_sha256:
        return True
    if explicit:
        raise ArtifactMismatchError(f"--model {path}: not the checkpoint that embedded the shards (they record "
                                    f"{header.model_name}, sha256 {header.checkpoint_sha256[:12]}); pass that "
                                    "checkpoint, or leave --model out to skip the ONNX export")
    return False


def export_shard_encoders(store: IndexStore, model_path: str | Path, load: Callable[[], Any]) -> None:
    """The ONNX query encoders of the shards' checkpoint into the index directory (`run_model.ensure_encoders`),
    as `index` writes them; `load` loads the model (only if the export is missing)."""
    from sarclip_search.ingest.run_model import RunModel, ensure_encoders

    ensure_encoders(store.root, RunModel(load, str(model_path)))

