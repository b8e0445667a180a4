"""`sarsearch index ARCHIVE --ray [ADDRESS]`: the same run, its reading and embedding on a Ray cluster.

The driver (this process) plans exactly as the one-process path does (`plan.plan_run`: new, changed,
deleted, re-labelled files) and stays the single writer: `indexer.index_archive` applies each file's result
in plan order, assigns the same tile ids, writes the same catalog rows and commits generations as it always
does, so crash safety is unchanged (a killed driver leaves the last committed generation; a re-run resumes).
What moves to the cluster is `RayStream`, the `stream` of prepared files that `index_archive` consumes:

    ray.data.from_items(plan)                  one row per file to index, in plan order
      .map_batches(_prepare_block)             CPU tasks: `indexer.prepare_file` per file (one read of the
                                               scene: header, tiles, radiometry; sidecar, hash, metadata,
                                               catalog row, tile bboxes), one output row per tile
      .map_batches(_Embedder, compute=ActorPoolStrategy(size=N))
                                               actors loading the model once each (`RunModel`, the same
                                               embedding call as the one-process path), `num_gpus=1` each
                                               when the cluster has GPUs, CPU actors otherwise
      .iter_batches()                          back on the driver, in plan order (`preserve_order`)

Faults: a prepare task whose worker dies is re-run (`max_retries`); an embedding actor that dies is restarted
and its batch re-run (`max_restarts`, `max_task_retries`); all bounded (`RayOptions.max_retries`). A file
that cannot be read is not a fault: it comes back as a failed `Prepared` and is listed like in the
one-process path (exit 3). Workers open rasters by the path the driver's walk found, so every node must
see the archive at the same path (a shared file system; docs/scale.md).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sarclip_search.errors import InputError, MissingDependencyError
from sarclip_search.ingest.indexer import Prepared, PrepareSettings, prepare_file

if TYPE_CHECKING:
    from sarclip_search.ingest.indexer import _Settings
    from sarclip_search.ingest.plan import Todo

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sarclip-search[ray]'"
DEFAULT_BATCH_SIZE = 64  # tiles per embedding call of an actor (the one-process path embeds 64 at a time too)
DEFAULT_MAX_RETRIES = 3
FILES_PER_BLOCK = 32  # files per prepare task (fewer tasks: less scheduling; at least 2 tasks per CPU); each
# file is prepared and handed on by itself (batch_size=1), so memory does not grow with the block


def import_ray() -> Any:
    """The `ray` module, or MissingDependencyError naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(f"--ray needs Ray Data ({exc}); install it with {INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How `index --ray` uses the cluster."""

    address: str | None = None  # None or "local": start Ray here with this machine's CPUs; "auto": join one
    batch_size: int = DEFAULT_BATCH_SIZE  # tiles per embedding batch (--ray-batch-size)
    actors: int | None = None  # embedding actors (--ray-actors); default one per GPU, else one per node
    max_retries: int = DEFAULT_MAX_RETRIES  # task retries and actor restarts after a worker dies

    def check(self) -> None:
        if self.batch_size <= 0:
            raise InputError(f"--ray-batch-size must be a positive number of tiles, got {self.batch_size}")
        if self.actors is not None and self.actors <= 0:
            raise InputError(f"--ray-actors must be a positive number of actors, got {self.actors}")


@contextmanager
def _native_stderr_held() -> Iterator[None]:
    """File descriptor 2 (what C++ code writes to) goes to a temporary file for the block: Ray's GCS client
    prints a warning line a second while it retries an unreachable address (~20 s), which Python logging
    cannot filter. What was held is logged at debug level; a failure is reported by the caller in one line."""
    import tempfile

    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf-8", "replace").strip()
            if text:
                log.debug("Ray's native output while connecting:\n%s", text)


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray connected for the `with` block: the running session if this process has one (left running), else
    a new local one (`address` None or "local", the machine's CPUs) or the cluster at `address` ("auto":
    the one this machine belongs to), shut down at the end. Ray's own logging stays at warnings."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # Ray's notices (token authentication ...) would crowd the command's output: the driver shows Ray's
    # errors only; everything is in /tmp/ray/session_latest/logs
    settings: dict[str, Any] = {"logging_level": logging.ERROR, "include_dashboard": False, "log_to_driver": True}
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.ERROR)  # its start-up notices (token authentication ...) are not the user's business
    try:
        if address in (None, "", "local"):
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **settings)  # never joins a cluster running here
        else:
            with _native_stderr_held():  # Ray's C++ client warns once a second while it retries an address
                ray.init(address=address, **settings)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--ray {address}: cannot connect to a Ray cluster ({message}); start one with "
                         "`ray start --head` or pass its address (auto, HOST:6379 or ray://HOST:10001)") from None
    finally:
        ray_log.setLevel(level)
    try:
        yield ray
    finally:
        ray.shutdown()


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _prepare_block(batch: dict[str, np.ndarray], settings: PrepareSettings,
                   prepare: Any = prepare_file) -> dict[str, np.ndarray]:
    """A Ray task's call: prepare each file of the batch (one, see FILES_PER_BLOCK); one row per tile (a file
    without tiles: one row, not embedded). A file's first row carries its pickled `Prepared` (without its
    chips), the others b""."""
    node = _node_id()
    size = int(settings.image_size)  # type: ignore[arg-type]
    index: list[int] = []
    metas: list[bytes] = []
    chips: list[np.ndarray] = []
    embed: list[bool] = []
    for i, job in zip(batch["i"], batch["job"]):
        item, manifest_row = pickle.loads(job)
        result = prepare(item, settings, manifest_row)
        result.node = node
        tiles = result.chips if result.kind == "scene" else None
        result.chips = None
        meta = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        if tiles is None or not len(tiles):
            index.append(int(i))
            metas.append(meta)
            chips.append(np.zeros((size, size), np.float32))
            embed.append(False)
            continue
        for j, chip in enumerate(tiles):
            index.append(int(i))
            metas.append(meta if j == 0 else b"")
            chips.append(chip)
            embed.append(True)
    meta_column = np.empty(len(metas), dtype=object)
    meta_column[:] = metas
    return {"i": np.asarray(index, np.int64), "meta": meta_column, "chip": np.stack(chips),
            "embed": np.asarray(embed, bool)}


class _Embedder:
    """A Ray actor: the model loaded once, embedding batches of tile rows.

    On CPU it embeds as the one-process path does (`RunModel.for_worker`: the index directory's ONNX image
    encoder when the driver found or wrote one, else the torch checkpoint), with `threads` intra-op threads.
    On a GPU it loads the torch checkpoint onto it (vectors within float rounding of the CPU path's, not
    bit for bit).
    """

    def __init__(self, model_path: str, db_root: str | None, dim: int, threads: int | None) -> None:
        import ray

        from sarclip_search.ingest.run_model import RunModel

        if ray.get_gpu_ids():
            from sarclip_search.model.sarclip import load_model

            self.model = RunModel(partial(load_model, Path(model_path), device="cuda"), model_path)
        else:
            self.model = RunModel.for_worker(model_path, db_root, threads=threads)
        self.model.prepare_embedder()  # opens the encoder now, not in the first batch
        self.dim = dim
        self.node = _node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        mask = batch["embed"]
        vectors = np.zeros((len(mask), self.dim), np.float32)
        if mask.any():
            vectors[mask] = self.model.encode_images(batch["chip"][mask])
        seconds = (time.perf_counter() - started) / max(1, len(mask))
        node = np.empty(len(mask), dtype=object)
        node[:] = self.node
        return {"i": batch["i"], "meta": batch["meta"], "vector": vectors, "seconds": np.full(len(mask), seconds),
                "node": node}


def _embedder(model_path: str, db_root: str | None, dim: int, threads: int | None,
              base: type[_Embedder] = _Embedder) -> type[_Embedder]:
    """`_Embedder` with its arguments bound in the class (shipped with it), not passed to the constructor:
    Ray keeps constructor arguments in the object store, where a restarted actor may no longer find them."""

    class Embedder(base):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__(model_path, db_root, dim, threads)

    return Embedder


def _plan_resources(ray: Any, options: RayOptions) -> tuple[int, dict[str, Any], int | None]:
    """(actors, their resources, torch threads per CPU actor) for the cluster Ray sees."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    cpus_per_node = min((float(node["Resources"].get("CPU", 1)) for node in nodes), default=1.0)
    # on a node of 1 CPU, actors and prepare tasks reserve half of it each: an actor taking the whole CPU
    # would leave the prepare tasks nowhere to run
    reserve = 1.0 if cpus_per_node >= 2 else 0.5
    if gpus:
        return options.actors or gpus, {"num_gpus": 1, "num_cpus": reserve}, None
    actors = options.actors or max(1, len(nodes))
    # a CPU actor reserves 1 CPU (the others run prepare tasks) and embeds with the node's CPUs shared among
    # the actors placed there: reading is mostly waiting on GDAL, the model is what keeps the cores busy
    threads = max(1, int(cpus_per_node) // max(1, math.ceil(actors / max(1, len(nodes)))))
    return actors, {"num_cpus": reserve}, threads


class RayStream:
    """`index_archive(..., stream=RayStream(options, model_path))`: the plan's files prepared by Ray tasks and
    embedded by Ray actors, yielded in plan order to the driver (see the module docstring). Ray must be
    connected (`ray_session`). `prepare` replaces `indexer.prepare_file` and `embedder` the actor class (a
    subclass of `_Embedder`): tests inject faults with them."""

    def __init__(self, options: RayOptions, model_path: str, prepare: Any = prepare_file,
                 embedder: type[_Embedder] = _Embedder) -> None:
        options.check()
        self.options = options
        self.model_path = model_path
        self.prepare = prepare
        self.embedder = embedder

    @contextmanager
    def __call__(self, todo: list[Todo], settings: _Settings) -> Iterator[Iterator[Prepared]]:
        import ray
        from ray.data import ActorPoolStrategy, DataContext

        options = self.options
        # the driver chooses the embedder (the ONNX export, written now if missing, or torch) and its input size
        # (workers resize tiles to it); CPU actors then open the same export
        prepare = PrepareSettings(settings.tile_size, settings.stride, settings.sarclip.image_size)
        db_root = getattr(settings.sarclip, "db_root", None)
        db_root = str(db_root) if db_root is not None else None
        actors, actor_resources, threads = _plan_resources(ray, options)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        blocks = min(len(todo), max(2 * cpus, math.ceil(len(todo) / FILES_PER_BLOCK)))
        jobs = [{"i": i, "job": pickle.dumps((item, settings.manifest.get(item.rel)))} for i, item in enumerate(todo)]
        context = DataContext.get_current()
        saved = (context.execution_options.preserve_order, context.enable_progress_bars)
        context.execution_options.preserve_order = True  # results in plan order: the same tile ids
        context.enable_progress_bars = False  # the CLI draws its own bar
        retries = options.max_retries
        ray_data_log = logging.getLogger("ray.data")
        saved_level = ray_data_log.level
        ray_data_log.setLevel(logging.ERROR)  # its plan and progress lines: in the session's ray-data.log
        with warnings.catch_warnings():
            # retries and restarts have no named parameter in Ray 2.60: they go as ray_remote_args, which
            # it says are deprecated (Ray Data's own defaults retry and restart without bound)
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = (
                ray.data.from_items(jobs, override_num_blocks=max(1, blocks))
                # one file a call: a task's output leaves it file by file (Ray Data streams a task's outputs), so
                # a block of 32 Sentinel-1 scenes (~430 MB of chips each) is never held at once by a worker
                .map_batches(_prepare_block, batch_size=1, batch_format="numpy",
                             fn_kwargs={"settings": prepare, "prepare": self.prepare},
                             num_cpus=actor_resources["num_cpus"],
                             max_retries=retries)
                .map_batches(_embedder(self.model_path, db_root, settings.sarclip.embed_dim, threads, self.embedder),
                             batch_size=options.batch_size,
                             batch_format="numpy", compute=ActorPoolStrategy(size=actors),
                             max_restarts=retries, max_task_retries=retries, **actor_resources)
            )
        log.info("ray: %d files in %d prepare tasks, %d embedding actors (%s)", len(todo), blocks, actors,
                 actor_resources)
        batches = dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)
        try:
            yield _regroup(batches)
        finally:
            context.execution_options.preserve_order, context.enable_progress_bars = saved
            ray_data_log.setLevel(saved_level)
            close = getattr(batches, "close", None)
            if close is not None:
                close()


def _regroup(batches: Any) -> Iterator[Prepared]:
    """Tile rows (in plan order) back into one `Prepared` per file, with its vectors."""
    result: Prepared | None = None
    vectors: list[np.ndarray] = []
    for batch in batches:
        for meta, vector, seconds, node in zip(batch["meta"], batch["vector"], batch["seconds"], batch["node"]):
            if meta:
                if result is not None:
                    raise RuntimeError(f"ray: {result.rel} came back with {len(vectors)} tiles, expected more")
                result = pickle.loads(meta)
                vectors = []
            assert result is not None
            if result.kind != "scene":
                yield result
                result = None
                continue
            vectors.append(vector)
            result.embed_seconds += float(seconds)
            result.embedded_on[node] = result.embedded_on.get(node, 0) + 1
            if len(vectors) == len(result.windows):
                result.vectors = np.stack(vectors)
                yield result
                result = None
    if result is not None:
        raise RuntimeError(f"ray: {result.rel} came back with {len(vectors)} tiles, expected {len(result.windows)}")


@contextmanager
def ray_stream(options: RayOptions, model_path: str) -> Iterator[RayStream]:
    """`index --ray`: Ray connected (`ray_session`) for the `with` block, and the stream to index with."""
    options.check()
    with ray_session(options.address):
        yield RayStream(options, model_path)


SCENES_PER_SHARD = 256  # scenes per shard written by `write_shards` (as --commit-every: a killed run loses one)


def _scenes_in_shards(folder: Path) -> tuple[set[str], int]:
    """Scene paths already in the folder's shards (read from each shard's footer, not its vectors), and the
    number of tiles they hold."""
    from sarclip_search.ingest.shards import SCENES_KEY, decode_scene_rows, scan_shards

    if not (folder / "shards.json").is_file():
        return set(), 0
    import pyarrow.parquet as pq

    done: set[str] = set()
    tiles = 0
    for _, path in scan_shards(folder).files:
        footer = pq.read_metadata(path)
        done.update(str(row["path"]) for row in decode_scene_rows((footer.metadata or {}).get(SCENES_KEY, b"[]")))
        tiles += footer.num_rows
    return done, tiles


def write_shards(
    archive: str | Path,
    folder: str | Path,
    sarclip: Any,
    *,
    model_path: str,
    options: RayOptions,
    tile_size: int = 256,
    stride: int | None = None,
    follow_symlinks: bool = False,
    scenes_per_shard: int = SCENES_PER_SHARD,
    progress: Any = None,
) -> Any:
    """`sarsearch index ARCHIVE --ray --shards DIR`: embed the archive on Ray into embedding shards
    (`ingest/shards.py`) instead of an index; `index --from-shards DIR` builds the index from them.

    The same plan (every file new: a shard folder has no catalog), prepare tasks and embedding actors as
    `RayStream`; this process writes a shard of the next `scenes_per_shard` scenes as they come back, in
    plan order, atomically. A re-run into the same folder skips the scenes its shards already hold (a killed
    run resumes), and refuses a folder written by another model or tiling. The model's ONNX image encoder
    is exported into DIR/encoders (workers embed with it, as `index` does). Ray must be connected
    (`ray_session`). Returns an `IndexReport` (no totals: there is no index yet).
    """
    from sarclip_search.ingest import indexer
    from sarclip_search.ingest.metadata import load_manifest
    from sarclip_search.ingest.plan import plan_run
    from sarclip_search.ingest.run_model import RunModel
    from sarclip_search.ingest.shards import ShardHeader, ShardWriter
    from sarclip_search.ingest.walk import walk_archive

    archive, folder = Path(archive), Path(folder)
    if not archive.is_dir():
        raise InputError(f"{archive}: not a folder; pass the folder that holds your SAR images")
    if tile_size <= 0 or (stride is not None and stride <= 0) or scenes_per_shard <= 0:
        raise InputError(f"tile size, stride and scenes per shard must be positive, got {tile_size}, {stride}, "
                         f"{scenes_per_shard}")
    stride = stride or tile_size
    report = indexer.IndexReport(archive=str(archive), db=str(folder))
    started = time.perf_counter()
    skipped: list[tuple[str, str]] = []
    manifest = load_manifest(archive, skipped_rows=skipped)
    walk = walk_archive(archive, follow_symlinks=follow_symlinks)
    if not walk.files:
        raise InputError(f"{archive}: no images found; point to the folder that holds your SAR images")
    for row, reason in skipped:
        indexer._fail(report, row, reason, False)
    plan = plan_run(archive, walk, manifest, {}, lambda rel, reason: indexer._fail(report, rel, reason, False),
                    tiling=(tile_size, stride) if progress is not None else None)
    report.files_seen, report.not_in_manifest = plan.files_seen, plan.not_in_manifest
    done, tiles_before = _scenes_in_shards(folder)
    todo = [item for item in plan.todo if item.rel not in done]
    report.unchanged = len(plan.todo) - len(todo)
    model = RunModel(sarclip, model_path, db_root=folder)
    header = ShardHeader.create(model.identity, tile_size=tile_size, tile_stride=stride,
                                archive_root=str(archive.resolve()), model_path=model_path)
    writer = ShardWriter(folder, header)  # refuses a folder of other shards before anything runs
    report.index_factory = "none yet: build it with sarsearch index --from-shards DIR"

    def finish() -> Any:
        report.totals = {"scenes": len(done) + report.indexed, "tiles": tiles_before + report.tiles_added}
        report.seconds = time.perf_counter() - started
        return report

    if not todo:
        return finish()
    settings = indexer._Settings(model, manifest, tile_size, stride, None, None, False, progress,
                                 sum(item.tiles for item in todo))
    scenes: list[dict] = []
    tiles: list[dict] = []
    vectors: list[np.ndarray] = []

    def flush() -> None:
        if scenes:
            writer.write(scenes, tiles, np.concatenate(vectors) if vectors else np.zeros((0, header.embed_dim)))
            scenes.clear()
            tiles.clear()
            vectors.clear()

    planned = 0
    with RayStream(options, model_path)(todo, settings) as prepared:
        for item, result in zip(todo, prepared):
            if progress is not None:
                progress("embed", planned, settings.total, report.tiles_added)
            planned += item.tiles
            if result.kind == "failed":
                indexer._fail(report, item.rel, result.reason, False)
                continue
            assert result.row is not None and result.vectors is not None
            report.warnings.extend((item.rel, line) for line in result.warnings)
            scenes.append(result.row)
            tiles.extend({"path": item.rel, **tile} for tile in result.tile_rows())
            vectors.append(result.vectors)
            report.indexed += 1
            report.tiles_added += len(result.windows)
            report.embed_seconds += result.embed_seconds
            if result.node:
                report.nodes.setdefault(result.node, {"files": 0, "tiles": 0})["files"] += 1
            for node, count in result.embedded_on.items():
                report.nodes.setdefault(node, {"files": 0, "tiles": 0})["tiles"] += count
            if len(scenes) >= scenes_per_shard:
                flush()
        flush()
    return finish()
