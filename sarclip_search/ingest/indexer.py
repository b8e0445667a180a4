"""Archive → catalog + vectors: `sarsearch index ARCHIVE`.

Walks the archive, reads each raster's metadata (manifest row > STAC sidecar > raster tags), cuts
large images into tiles, embeds every tile with the SARCLIP image encoder, and writes catalog rows and
vectors under one id (the FAISS id is the catalog tile_id). Runs are incremental (`plan.plan_run`): files
whose size and modification time are unchanged are skipped, changed files re-embedded, deleted files
removed, and files whose manifest row or STAC sidecar changed (`metadata.metadata_hash`) re-labelled: their
scene and tile rows are rewritten in place, their vectors kept.
Changes land in new generations of the index directory, committed atomically every `commit_every`
files, so an interrupted run keeps what it committed and the next run resumes from there.

The work per file is split in two. `prepare_file` needs no catalog (sidecar, content hash, one read of the
scene, metadata, catalog row, tile bboxes) and returns plain picklable data (`Prepared`), or the reason the
file cannot be indexed; `_apply` writes that to the staged generation (catalog rows, tile ids, vectors) in
plan order, in this process only. The prepared files come from a `stream`: `read_ahead` (threads preparing the
next files while this one embeds), or `ray_pipeline.RayStream` (Ray tasks prepare, Ray actors embed).

The model (`run_model.RunModel`) is loaded only when something must be embedded, or the index lacks the
ONNX export of it that queries run on (`encoders.py`, written at the end of a run): a re-run over an unchanged archive
imports no torch, and commits no generation (CURRENT stays as it is).

Nothing outside the archive folder is indexed unless asked: a manifest row whose path leaves the archive
and a symbolic link whose real path does (`walk.walk_archive`; `follow_symlinks` opts in) are listed
in `report.failed` like unreadable files, and everything else is indexed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sarclip_search._fs import file_sha256
from sarclip_search.errors import InputError, MetadataError, RasterError, printable_path
from sarclip_search.index import VectorIndex, choose_index_key
from sarclip_search.index.choose import DEFAULT_MEMORY_BUDGET, kept_factory
from sarclip_search.ingest import raster
from sarclip_search.ingest.masks import DarkMeter, read_mask_columns, row_polarization, tile_mask_columns
from sarclip_search.ingest.metadata import (
    load_manifest,
    load_stac_sidecar,
    metadata_hash,
    scene_footprint,
    scene_metadata,
)
from sarclip_search.ingest.objects import parse_boxes, tile_object_columns
from sarclip_search.ingest.plan import State, Todo, failure_reason, plan_run
from sarclip_search.ingest.run_model import RunModel, check_compatible, ensure_encoders
from sarclip_search.ingest.text_proxies import text_proxy_vectors
from sarclip_search.ingest.tiling import Window
from sarclip_search.ingest.timing import StageTimer, format_stages
from sarclip_search.ingest.walk import IMAGE_SUFFIXES, walk_archive
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.layout import Generation, IndexStore, make_info, write_json_atomic
from sarclip_search.store.schema import BBOX_COLUMNS, SCHEMA_VERSION

if TYPE_CHECKING:
    from sarclip_search.model.sarclip import SarClip

log = logging.getLogger(__name__)

DEFAULT_TILE_SIZE = 256  # px; larger images are tiled, each tile resized to the model input (128 px)
EMBED_BATCH = 64
# Files per committed generation: a killed run loses at most this many files' work (--commit-every).
DEFAULT_COMMIT_EVERY = 256

# progress(event, done, total, tiles): event "embed"; done and total count tiles, those of the files done and of
# all files to embed, from each file's header (`raster.header_size`) when the run is planned, so the bar and its
# ETA move with the work; tiles: the tiles read so far (the CLI's tiles/s, the summary's unit)
Progress = Callable[[str, int, int, int], None]
# stream(todo, settings): a context giving each file's `Prepared`, in todo's order (`read_ahead`, `RayStream`)
Stream = Callable[[list["Todo"], "_Settings"], AbstractContextManager[Iterator["Prepared"]]]


@dataclass
class IndexReport:
    """What one `index` run did."""

    archive: str
    db: str
    files_seen: int = 0
    indexed: int = 0  # new or changed files embedded
    relabelled: int = 0  # unchanged files whose manifest row or sidecar changed: metadata rewritten, not embedded
    unchanged: int = 0
    removed: int = 0
    not_in_manifest: int = 0
    tiles_added: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason): listed, not indexed
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, one line): indexed, but look at it
    seconds: float = 0.0
    embed_seconds: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)
    index_factory: str = ""
    committed: int = 0  # generations this run committed (0: nothing changed, CURRENT untouched)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # where the time went (timing.py's stages)
    # with Ray (`ray_pipeline`): per node id, the files it read ("files") and the tiles it embedded ("tiles")
    nodes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def tiles_per_second(self) -> float:
        return self.tiles_added / self.seconds if self.seconds else 0.0


@dataclass
class _Pending:
    """Tiles read but not yet embedded (embedded in batches for throughput)."""

    ids: list[int] = field(default_factory=list)
    chips: list[np.ndarray] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)  # embedded elsewhere (Ray actors): added as they are


def index_archive(
    archive: str | Path,
    store: IndexStore,
    sarclip: SarClip | Callable[[], SarClip],
    *,
    model_path: str | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    stride: int | None = None,
    rebuild: bool = False,
    index_factory: str | None = None,
    memory_budget: int | None = None,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    strict: bool = False,
    follow_symlinks: bool = False,
    progress: Progress | None = None,
    stream: Stream | None = None,
) -> IndexReport:
    """Index (or update the index of) an archive folder into `store`; returns what happened.

    Per-file problems (unreadable raster, bad sidecar, a manifest row whose path leaves the archive, a
    symbolic link leading outside it unless `follow_symlinks`) are collected in `report.failed` and the
    run goes on; a bad manifest, a mismatched existing index or another writer stop it before anything
    changes.

    Changes are committed as a new generation every `commit_every` files (removals of deleted files
    land in the first one), so a killed run loses at most one batch and the next run resumes: files
    committed earlier are unchanged and skipped. With `strict`, the first failed file raises InputError
    and the run commits nothing (one generation for the whole run). A run that changes nothing (no file
    new, changed, re-labelled or removed, the vector index as it should be) commits no generation.

    `sarclip` is the model, or a function loading it (with `model_path` the file it loads): then it is
    loaded only if something must be embedded or exported. The run ends by exporting the model's towers
    to ONNX into the index directory when they are not there yet (`encoder_export.py`).

    `stream` prepares (and may embed) the files to index, in plan order: by default `read_ahead` (threads
    reading the next files while this one embeds), with Ray `ray_pipeline.RayStream` (tasks and actors on a
    cluster). Either way this process is the one writer: same ids, rows and commits.
    """
    archive = Path(archive)
    if not archive.is_dir():
        raise InputError(f"{archive}: not a folder; pass the folder that holds your SAR images")
    if tile_size <= 0 or (stride is not None and stride <= 0):
        raise InputError(f"tile size and stride must be positive pixels, got {tile_size} and {stride}")
    if commit_every <= 0:
        raise InputError(f"--commit-every must be a positive number of files, got {commit_every}")
    stride = stride or tile_size
    archive_root = str(archive.resolve())
    report = IndexReport(archive=str(archive), db=str(store.root))
    started = time.perf_counter()
    model = RunModel(sarclip, model_path, db_root=store.root, timer=StageTimer())  # embeds with the ONNX export
    skipped_rows: list[tuple[str, str]] = []  # manifest rows leaving the archive: listed, the rest indexed
    manifest = load_manifest(archive, skipped_rows=skipped_rows)  # MetadataError for a bad manifest: fatal
    walk = walk_archive(archive, follow_symlinks=follow_symlinks)
    if not walk.files:
        # also guards an existing index against an unmounted or emptied archive folder wiping it
        count = len(walk.outside_links)
        links = (f" ({count} symbolic link{'s' * (count != 1)} leading outside it not followed; "
                 "pass --follow-symlinks to index their images)" if count else "")
        raise InputError(
            f"{archive}: no images found (expected {', '.join(IMAGE_SUFFIXES)} files){links}; "
            "point to the folder that holds your SAR images"
        )

    with store.lock():
        current = store.current()
        if current is not None and not rebuild:
            check_compatible(current.read_info(), model, archive_root, tile_size, stride)
        states: dict[str, State] = {}
        if current is not None and not rebuild:
            with Catalog(current.catalog_path, read_only=True) as catalog:
                states = catalog.scene_states()
        for row, reason in skipped_rows:
            _fail(report, row, reason, strict)
        plan = plan_run(archive, walk, manifest, states, lambda rel, reason: _fail(report, rel, reason, strict),
                        tiling=(tile_size, stride) if progress is not None else None)
        todo, removed = plan.todo, plan.removed
        report.files_seen, report.not_in_manifest = plan.files_seen, plan.not_in_manifest
        report.unchanged += plan.unchanged
        settings = _Settings(model, manifest, tile_size, stride, index_factory, memory_budget, strict,
                             progress, sum(item.tiles for item in todo), model.stage_seconds)
        # info.json records the checkpoint's path and the catalog schema: a run that changes either commits
        info_current = current is not None and not rebuild and _info_is_current(current.read_info(), model_path)
        if info_current and not todo and not removed and not _vectors_stale(current, settings):
            _report_committed(report, current)  # nothing to change: no generation, CURRENT untouched
            store.tidy()  # what a run killed after its last commit left behind
        else:
            size = max(1, len(todo)) if strict else commit_every
            batches = [todo[i : i + size] for i in range(0, len(todo), size)] or [[]]
            with (stream or read_ahead)(todo, settings) if todo else nullcontext(iter(())) as prepared:
                _commit_batches(store, batches, removed, settings, report, prepared, rebuild=rebuild,
                                info_current=info_current, commit=(model, model_path, archive_root, tile_size, stride))
            if not report.committed:
                _report_committed(report, store.require_current())
        ensure_encoders(store.root, model)
    report.seconds = time.perf_counter() - started
    report.stage_seconds = model.stage_seconds.as_dict()
    log.info("index stages (seconds, overlapping when read ahead): %s", format_stages(report.stage_seconds))
    return report


def _commit_batches(
    store: IndexStore, batches: list[list[Todo]], removed: list[str], settings: _Settings, report: IndexReport,
    prepared: Iterator[Prepared], *, rebuild: bool, info_current: bool, commit: tuple,
) -> None:
    """Apply the plan, one generation per batch of files (removals in the first), each committed unless it
    changed nothing."""
    model, model_path, archive_root, tile_size, stride = commit
    done_before = 0  # tiles planned for the files of earlier batches (progress)
    for number, batch in enumerate(batches):
        fresh = rebuild and number == 0  # a rebuild's first generation starts empty
        try:
            # filter columns only for the run's last generation: each build reads the whole catalog (~1 s at 1M)
            with store.new_generation(copy_current=not fresh, filter_columns=number == len(batches) - 1) as generation:
                applied = _update_generation(generation, batch, removed if number == 0 else [], settings,
                                             report, done_before=done_before, prepared=prepared)
                done_before += sum(item.tiles for item in batch)
                if not applied.changed and info_current and not fresh:
                    raise _NothingToCommit  # every file of the batch failed: the staged copy is dropped
                committing = time.perf_counter()  # info.json, then the generation switched in (the with's exit)
                _write_info(generation, applied, model, model_path, archive_root, tile_size, stride, report)
            settings.timer.add("commit", time.perf_counter() - committing)
            report.committed += 1
            info_current = True
        except _NothingToCommit:
            log.info("batch %d changed nothing; not committed", number + 1)


class _NothingToCommit(Exception):
    """A staged generation identical to the committed one: discarded instead of committed."""


def _info_is_current(info: dict, model_path: str | None) -> bool:
    """Whether the committed info.json already says what this run would write (but its time and counts)."""
    recorded = info.get("model", {}).get("checkpoint_path")
    return recorded == model_path and info.get("catalog_schema_version") == SCHEMA_VERSION


def _target_factory(vectors: VectorIndex, settings: _Settings) -> str:
    if settings.index_factory:
        return settings.index_factory
    key = choose_index_key(vectors.ntotal, vectors.dim, settings.memory_budget)
    return kept_factory(key, vectors.factory, vectors.tuning, settings.memory_budget)  # a code tune() chose over key


def _vectors_stale(generation: Generation, settings: _Settings) -> bool:
    """Whether the committed vector index needs another factory, retraining or tuning (a commit)."""
    vectors = VectorIndex.load(generation.vectors_path, mmap=True)
    return (_target_factory(vectors, settings) != vectors.factory or vectors.needs_retraining()
            or _needs_tuning(vectors))


def _report_committed(report: IndexReport, generation: Generation) -> None:
    """Totals of a run that committed nothing: those of the generation that stays current."""
    info = generation.read_info()
    report.totals = dict(info.get("counts", {}))
    report.index_factory = str(info.get("index", {}).get("factory", ""))


@dataclass(frozen=True)
class _Settings:
    """What every batch of one run needs, besides the batch itself."""

    sarclip: RunModel
    manifest: dict[str, dict[str, object]]
    tile_size: int
    stride: int
    index_factory: str | None
    memory_budget: int | None
    strict: bool
    progress: Progress | None
    total: int  # tiles to embed in the whole run, as planned from the files' headers (progress)
    timer: StageTimer = field(default_factory=StageTimer)  # seconds per stage (the model's: it times embed)


def _fail(report: IndexReport, rel: str, reason: str, strict: bool) -> None:
    """Record a failed file; with --strict, stop the run (nothing of it is committed)."""
    rel = printable_path(rel)
    if strict:
        raise InputError(f"{rel}: {reason} (--strict: stopped at the first failed file, nothing was committed)")
    report.failed.append((rel, reason))
    log.info("skipping %s: %s", rel, reason)  # the report lists it; a warning here would print it twice


@dataclass(frozen=True)
class PrepareSettings:
    """What `prepare_file` needs besides the file: picklable (Ray ships it to its workers)."""

    tile_size: int
    stride: int
    image_size: int | Callable[[], int]  # the model's input size, or a function giving it (loads the model)
    timer: StageTimer | None = None  # decode, radiometry and resize seconds (one process; not pickled to Ray)


@dataclass
class Prepared:
    """One file of the plan as `prepare_file` left it, ready for the driver to apply (`_apply`).

    `kind`: "scene" (read and tiled: `windows`, `chips`, tile `boxes`; `vectors` when a Ray actor embedded
    them), "relabel" or "touched" (same pixels: `row` from the header only), or "failed" (`reason`).
    Plain data: it is pickled between Ray workers and the driver.
    """

    rel: str
    kind: str
    reason: str = ""
    row: dict | None = None
    windows: list[Window] = field(default_factory=list)
    chips: np.ndarray | None = None  # (tiles, size, size) float32
    boxes: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None  # (tiles, dim) float32, already embedded
    embed_seconds: float = 0.0  # the time its embedding took (Ray actors)
    node: str = ""  # the Ray node that read it
    embedded_on: dict[str, int] = field(default_factory=dict)  # Ray node -> tiles of it embedded there
    objects: list[dict] = field(default_factory=list)  # per tile: tile_label, tile_n_objects, tile_objects, tile_*_fraction

    def tile_rows(self) -> list[dict]:
        """The catalog rows of its tiles (`Catalog.add_tiles`): window, bbox and what each tile holds."""
        objects = self.objects or [{}] * len(self.windows)
        return [{**dict(zip(("col_off", "row_off", "width", "height"), w.as_list())), "bbox": box, **held}
                for w, box, held in zip(self.windows, self.boxes, objects)]


def prepare_file(item: Todo, settings: PrepareSettings, manifest_row: dict | None = None) -> Prepared:
    """The per-file work that needs no catalog: sidecar, content hash, one read of the scene (header,
    tiles, radiometry), metadata, the catalog row and tile bboxes. Runs in a read-ahead thread or a Ray
    task; a file that cannot be read comes back as kind "failed" with its one-line reason."""
    path, rel, previous = item.path, item.rel, item.previous
    try:
        if item.digest is not None:  # a re-label: plan_run read the sidecar and found the hash changed
            stac, digest = item.stac or {}, item.digest
        else:
            stac = load_stac_sidecar(path)
            digest = metadata_hash(manifest_row, stac)
        content_hash = previous[2] if item.relabel and previous is not None else file_sha256(path)
        if previous is not None and previous[2] == content_hash:
            info = raster.read_info(path)  # its tags are a metadata source; the pixels are not read
            row = _scene_row(item, content_hash, info, scene_metadata(rel, manifest_row, stac, info.tags), digest)
            parse_boxes(row.get("boxes_xyxy"), f"{rel}: boxes_xyxy")  # _relabel re-assigns them to the tiles
            # touched, not changed: keep the embeddings, record the mtime
            return Prepared(rel, "touched" if previous[3] == digest else "relabel", row=row)
        size = settings.image_size if isinstance(settings.image_size, int) else settings.image_size()
        dark = DarkMeter()  # the dark-water proxy, measured on each tile's pixels as they are read
        scene = raster.read_scene(path, settings.tile_size, settings.stride, size=size, timer=settings.timer,
                                  tile_values=dark)
        metadata = scene_metadata(rel, manifest_row, stac, scene.info.tags)
        row = _scene_row(item, content_hash, scene.info, metadata, digest)
        windows = [w.as_list() for w in scene.windows]
        objects = tile_object_columns(row, windows, f"{rel}: boxes_xyxy")
        areas, mask_warnings = tile_mask_columns(path, rel, (scene.info.width, scene.info.height), windows,
                                                 dark.fractions(row_polarization(row)))
    except (RasterError, MetadataError, OSError) as exc:
        return Prepared(rel, "failed", reason=failure_reason(exc, path))
    return Prepared(rel, "scene", row=row, windows=scene.windows, chips=np.stack(scene.chips),
                    boxes=_tile_bboxes(scene.info, scene.windows, row),
                    warnings=_constant_warning(scene.chips) + mask_warnings,
                    objects=[{**held, **area} for held, area in zip(objects, areas)])


def _prepare_settings(settings: _Settings) -> PrepareSettings:
    return PrepareSettings(settings.tile_size, settings.stride, lambda: settings.sarclip.image_size,
                           settings.timer)


# Files read ahead of the one being applied by the one-process path (threads; GDAL releases the GIL while it
# decodes): reading overlaps embedding and catalog writes. Each holds its chips (a 25k x 17k scene: ~430 MB).
READ_AHEAD = 2


@contextmanager
def read_ahead(todo: list[Todo], settings: _Settings, workers: int = READ_AHEAD) -> Iterator[Iterator[Prepared]]:
    """`prepare_file` of every file of `todo`, in order, read `workers` files ahead by as many threads."""
    prepare = _prepare_settings(settings)
    lock = threading.Lock()
    size_of = prepare.image_size

    def image_size() -> int:  # the model is loaded once, by the first thread that needs it
        with lock:
            return size_of()  # type: ignore[operator]

    prepare = PrepareSettings(prepare.tile_size, prepare.stride, image_size, prepare.timer)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sarsearch-read")

    def results() -> Iterator[Prepared]:
        pending: deque[Future[Prepared]] = deque()
        items = iter(todo)
        for item in items:
            pending.append(pool.submit(prepare_file, item, prepare, settings.manifest.get(item.rel)))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    with raster.georeferencing_warnings_ignored():  # per-call filters are not thread-safe (see there)
        try:
            yield results()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _apply(
    catalog: Catalog, vectors: VectorIndex, item: Todo, result: Prepared, pending: _Pending, settings: _Settings,
    report: IndexReport,
) -> bool:
    """Apply one prepared file to the staged generation (catalog rows; its tiles queued for embedding, or
    their vectors when already embedded); whether anything changed."""
    if result.kind == "failed":
        _fail(report, item.rel, result.reason, settings.strict)
        return False
    assert result.row is not None
    if result.kind in ("relabel", "touched"):
        touched = result.kind == "touched"
        report.warnings.extend((item.rel, line) for line in _relabel(catalog, result.row, touched=touched,
                                                                     path=item.path))
        if touched:
            report.unchanged += 1
        else:
            report.relabelled += 1
        return True
    for line in result.warnings:
        report.warnings.append((item.rel, line))
    if item.previous is not None:
        vectors.remove(catalog.remove_scene(item.rel))
    scene_id = catalog.add_scene(result.row)
    tile_ids = catalog.add_tiles(scene_id, result.tile_rows())
    pending.ids.extend(int(i) for i in tile_ids)
    if result.vectors is not None:
        pending.vectors.append(result.vectors)
    else:
        assert result.chips is not None
        pending.chips.extend(result.chips)
    report.indexed += 1
    report.tiles_added += len(tile_ids)
    report.embed_seconds += result.embed_seconds
    if result.node:
        report.nodes.setdefault(result.node, {"files": 0, "tiles": 0})["files"] += 1
    for node, tiles in result.embedded_on.items():
        report.nodes.setdefault(node, {"files": 0, "tiles": 0})["tiles"] += tiles
    return True


@dataclass
class _Applied:
    """What `_update_generation` did to a staged generation; counts and ids read on its catalog connection."""

    changed: bool
    counts: dict[str, int]  # scenes, tiles (Catalog.counts) after the batch
    tile_ids: np.ndarray  # the catalog's tile ids after the batch, sorted


def _update_generation(
    generation: Generation, todo: list[Todo], removed: list[str], settings: _Settings, report: IndexReport,
    *, done_before: int = 0, prepared: Iterator[Prepared] | None = None,
) -> _Applied:
    """Apply one batch (removals, then new and changed files) to a staged generation and save it.

    One catalog connection serves the batch: its writes (one transaction), then the counts and tile ids
    that `_write_info` checks against the saved vectors. `prepared` yields each file's `prepare_file` result
    in `todo`'s order (read ahead by threads, or by Ray workers that also embedded it); without it each file
    is prepared here. `done_before`: the tiles planned for the files of earlier batches (progress).

    `changed` says whether anything changed (a scene added, removed or rewritten, the vector index
    rebuilt or re-tuned); if not, the staged generation still holds what it was staged with.
    """
    sarclip = settings.sarclip
    changed = bool(removed)
    if generation.vectors_path.is_dir():
        vectors = VectorIndex.load(generation.vectors_path, expected_dim=sarclip.embed_dim)
    else:
        vectors = VectorIndex.create(sarclip.embed_dim, "Flat")
    with Catalog(generation.catalog_path) as catalog:
        with catalog.transaction():
            for rel in removed:
                vectors.remove(catalog.remove_scene(rel))
                report.removed += 1
            pending = _Pending()
            done = done_before
            if prepared is None:
                prepare = _prepare_settings(settings)
                prepared = (prepare_file(item, prepare, settings.manifest.get(item.rel)) for item in todo)
            for item in todo:
                if settings.progress is not None:
                    settings.progress("embed", done, settings.total, report.tiles_added)
                done += item.tiles
                result = next(prepared)
                if result.rel != item.rel:  # the stream is in plan order, one result per file
                    raise RuntimeError(f"prepared {result.rel!r} where {item.rel!r} was expected")
                with settings.timer.stage("catalog"):
                    changed |= _apply(catalog, vectors, item, result, pending, settings, report)
                if len(pending.ids) >= EMBED_BATCH:
                    _flush(pending, vectors, sarclip, report)
            _flush(pending, vectors, sarclip, report)
            if settings.progress is not None and todo:
                settings.progress("embed", done, settings.total, report.tiles_added)
            committing = time.perf_counter()  # COMMIT writes the rows add_scene/add_tiles held back
        with settings.timer.stage("catalog"):
            counts, all_ids = catalog.counts(), catalog.tile_ids()
        settings.timer.add("catalog", time.perf_counter() - committing)

    faiss_started = time.perf_counter()  # rebuild, tune, save: "faiss" seconds
    factory = _target_factory(vectors, settings)
    if factory != vectors.factory or vectors.needs_retraining():  # retrain after 4x growth (RETRAIN_GROWTH)
        vectors = _rebuild(vectors, factory)
        changed = True
    if _needs_tuning(vectors):
        # nprobe and re-rank depth for 0.95 recall@10 vs exact, for image and for text queries, saved with the index
        proxies = text_proxy_vectors(generation.catalog_path, lambda texts: sarclip.encode_texts(texts))
        # near-duplicates its codes cannot order: deeper re-ranking or another code within the budget (a rebuild)
        budget = None if settings.index_factory else settings.memory_budget or DEFAULT_MEMORY_BUDGET
        vectors = vectors.tuned(text_queries=proxies, memory_budget=budget)
        log.info("tuned %s: nprobe %s, rerank %s (recall %.3f)", vectors.factory, vectors.nprobe, vectors.rerank_factor,
                 (vectors.tuning or {}).get("recall", 1.0))
        changed = True
    if changed or not generation.vectors_path.is_dir():
        vectors.save(generation.vectors_path)
    settings.timer.add("faiss", time.perf_counter() - faiss_started)
    return _Applied(changed, counts, all_ids)


RETUNE_GROWTH = 2.0  # re-tune an approximate index once it holds this many times the vectors it was tuned on


def _needs_tuning(vectors: VectorIndex) -> bool:
    if vectors.is_flat or vectors.ntotal == 0:
        return False
    tuned_on = (vectors.tuning or {}).get("ntotal")
    return not tuned_on or vectors.ntotal >= RETUNE_GROWTH * tuned_on


def _constant_warning(chips: list[np.ndarray]) -> list[str]:
    """A constant image is indexed with a warning (tiles without valid pixels were dropped by the read)."""
    if all(float(chip.max()) == float(chip.min()) for chip in chips):
        return ["constant image (every valid pixel has the same value); indexed, but it has no texture to search by"]
    return []


def _write_info(
    generation: Generation, applied: _Applied, sarclip: RunModel, model_path: str | None, archive_root: str,
    tile_size: int, stride: int, report: IndexReport,
) -> None:
    """Check that the catalog (its batch's counts and ids) and the saved vectors hold the same ids, then
    write the generation's info.json."""
    counts, tile_ids = applied.counts, applied.tile_ids
    vectors = VectorIndex.load(generation.vectors_path, mmap=True)  # ids and counts only: the copy stays on disk
    if not np.array_equal(np.sort(vectors.ids()), tile_ids):
        raise RuntimeError(f"catalog has {counts['tiles']} tiles but the index {vectors.ntotal} vectors, or other ids")
    report.totals = {**counts, "vectors": vectors.ntotal}
    report.index_factory = vectors.factory
    write_json_atomic(
        generation.info_path,
        make_info(
            model_identity=sarclip.identity,
            model_path=model_path,
            vector_info=vectors.info(),
            counts=report.totals,
            archive_root=archive_root,
            tile_size=tile_size,
            tile_stride=stride,
            schema_version=SCHEMA_VERSION,
            generation=generation.number,
        ),
    )


def _relabel(catalog: Catalog, row: dict, *, touched: bool = False, path: Path | None = None) -> list[str]:
    """Rewrite the catalog rows of a scene whose pixels did not change: metadata, footprint, tile bboxes
    and what each tile holds (its boxes may have changed).

    `row` comes from the raster's header (its tags are a metadata source), not its pixels (`prepare_file`);
    tile ids and vectors stay. Tiles of a scene with a CRS keep their bboxes (same pixels, same CRS); the
    others take the scene's box. `touched`: only the file's mtime changed; it is recorded so that the next
    run skips the file unhashed. Otherwise the mask fractions are measured again from the masks (ingest/masks.py);
    the dark proxy is kept (same pixels) unless a tile has none: the upgrade to schema v4 reads each tile's
    pixels to fill it. `path`: the file as the
    walk found it (its masks are found from it); returns warning lines.
    """
    lines: list[str] = []
    scene_id = catalog.update_scene(row)
    if row["footprint_source"] != "raster":
        catalog.set_scene_tiles_bbox(scene_id, _scene_box(row))
    if not touched:  # the boxes may have changed: what each tile holds, again (same metadata: same objects)
        tiles = catalog.scene_tile_windows(scene_id)
        held = tile_object_columns(row, [window for _, window in tiles], f"{row['path']}: boxes_xyxy")
        catalog.set_tile_objects([(tile_id, values) for (tile_id, _), values in zip(tiles, held)])
        try:
            areas, lines = read_mask_columns(path or row["abs_path"], row["path"], row, [w for _, w in tiles],
                                             catalog.scene_tile_dark_fractions(scene_id))
            catalog.set_tile_fractions([(tile_id, values) for (tile_id, _), values in zip(tiles, areas)])
        except RasterError as exc:
            lines = [f"tile_dark_fraction and mask fractions not measured ({str(exc).splitlines()[0]})"]
    log.info("%s: %s (not re-embedded)", row["path"],
             "touched, new mtime recorded" if touched else "metadata changed, re-labelled")
    return lines


def _tile_bboxes(
    info: raster.RasterInfo, windows: list[Window], row: dict
) -> list[tuple[float, float, float, float] | None]:
    """The tiles' lon/lat bboxes: from the raster's CRS (one transform for all), else the scene's footprint.

    A scene placed by its metadata (stac or manifest point) has no pixel-to-ground mapping, so each tile
    claims the scene's box.
    """
    if row["footprint_source"] == "raster":
        return raster.windows_bbox_lonlat(info, windows)
    return [_scene_box(row)] * len(windows)


def _scene_box(row: dict) -> tuple[float, float, float, float] | None:
    """The scene's footprint as a tile bbox (None when nothing places the scene)."""
    if row["footprint_source"] is None:
        return None
    return tuple(row[name] for name in BBOX_COLUMNS)  # type: ignore[return-value]


def _scene_row(item: Todo, content_hash: str, info: raster.RasterInfo, metadata: dict, digest: str) -> dict:
    """A scene's catalog row: the file as the walk found it, its header, its metadata."""
    footprint, footprint_source = scene_footprint(info.bounds_lonlat, info.width, info.height, metadata)
    bounds = footprint or (None, None, None, None)
    row = {
        "path": item.rel,
        "abs_path": item.real,
        "size_bytes": item.stat.st_size,
        "mtime": item.stat.st_mtime,
        "content_hash": content_hash,
        "width": info.width,
        "height": info.height,
        "band_count": info.count,
        "dtype": info.dtype,
        "scale": info.scale,
        "crs": info.crs,
        **dict(zip(BBOX_COLUMNS, bounds)),
        "footprint_source": footprint_source,
        "metadata_hash": digest,
    }
    for key, value in metadata.items():
        if key == "bbox":
            continue  # in the bbox_* columns when it is the footprint (scene_footprint)
        row.setdefault(key, value)
    if "sar:polarizations" not in metadata and any(info.band_descriptions):
        row["sar:polarizations"] = "+".join(d for d in info.band_descriptions if d)
    return row


def _flush(pending: _Pending, vectors: VectorIndex, sarclip: RunModel, report: IndexReport) -> None:
    if not pending.ids:
        return
    started = time.perf_counter()
    if pending.vectors:  # embedded by Ray actors (their time is counted in `_apply`)
        vectors.add(np.asarray(pending.ids, dtype=np.int64), np.concatenate(pending.vectors))
    else:
        embeddings = sarclip.encode_images(np.stack(pending.chips))
        vectors.add(np.asarray(pending.ids, dtype=np.int64), embeddings)
        report.embed_seconds += time.perf_counter() - started
    pending.ids.clear()
    pending.chips.clear()
    pending.vectors.clear()


def _rebuild(vectors: VectorIndex, factory: str) -> VectorIndex:
    """The same vectors under another FAISS index type or a retrained quantizer, re-added from the index's exact copy."""
    rebuilt = vectors.rebuilt(factory)
    log.info("rebuilt the vector index as %s (%d vectors, was %s trained on %s)", factory, rebuilt.ntotal,
             vectors.factory, vectors.trained_on)
    return rebuilt
