"""The query layer: text→image, image→image and both fused, with metadata filters.

    engine = Engine.open(".sarsearch")
    hits = engine.query(text="ship near harbor", filters=Filters(split="test"), k=10)

Filters become an id set in the catalog first, and the vector search runs only over those ids, so
k results come back whenever k tiles match. Queries are embedded by the index's ONNX export of its
model (`encoders.py`) and never import torch; an index without one loads the torch model lazily.

What `query(text, filters=...)` runs, once each (docs/query.md, "What a query runs"):
the arguments checked (`_checked_text`); `filter_ids`: `filters.build_predicate` (the --where checked,
the --bbox a `BBox` already) -> `Catalog.tile_ids` (the checked `Predicate` runs as it is); `embed_text`
(the encoder's unit vector, the only normalization of a text-only query); `fusion.blend_tiles` (a single
part comes back as it is; combinations are normalized once); `hit.first_k` -> `_search`: one
`VectorIndex.search` of the unit vectors as they are, then one `Catalog.fetch_tiles` -> `Hit.from_row`.
`search_vector(s)` are the entry points for any vector: they normalize it and call `_search`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import numpy as np

from sarclip_search._fs import file_sha256
from sarclip_search.errors import ArtifactMismatchError, InputError, SarclipError, UnreadableRasterError
from sarclip_search.index import VectorIndex
from sarclip_search.index.errors import VectorIndexError
from sarclip_search.model.encoders import Encoder, load_onnx_encoder
from sarclip_search.model.vectors import l2_normalize
from sarclip_search.query.feedback import CANDIDATES_PER_PART, fit_probe, fit_probe_with_text
from sarclip_search.query.fusion import (
    FUSION_METHODS,
    blend_tiles,
    mean_direction,
    part_weights,
    push_away,
    reciprocal_rank_fusion,
)
from sarclip_search.query.hit import MAX_K, Hit, dedup_hits, first_k, windows_overlap
from sarclip_search.store.artifacts import check_query_checkpoint, check_recorded_schema
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.column_arrays import CACHE_ENTRIES, ColumnArrays, IdSetCache, filter_key
from sarclip_search.store.column_arrays import enabled as column_arrays_enabled
from sarclip_search.store.filters import Filters, build_predicate
from sarclip_search.store.layout import Generation, IndexStore

__all__ = ["DEFAULT_ALPHA", "DEFAULT_FUSION", "MAX_K", "Engine", "Hit", "RankedQueries", "dedup_hits", "given_text",
           "local_id", "windows_overlap"]

log = logging.getLogger(__name__)

# A reader retries when a writer replaced the generation it was opening; 5 commits in a row is plenty.
OPEN_ATTEMPTS = 5
# Defaults of a fused text + image query, chosen by benchmarks/bench_retrieval.py (see docs/query.md).
DEFAULT_FUSION = "blend"
DEFAULT_ALPHA = 0.75
# Each RRF part ranking goes this deep, so a tile ranked well by one part only is still seen by the fusion.
RRF_DEPTH = 100
# A query image is cut with the index's tiling; one of more tiles than this is refused (cropping it is the fix).
MAX_QUERY_TILES = 1024
# Relevance feedback: this many random tiles (seeded) are added to the negatives the analyst marked.
BACKGROUND_NEGATIVES = 64
BACKGROUND_SEED = 0


def given_text(text: str | None) -> str | None:
    """`text`, or None when it is empty or only whitespace: a blank text is no text query."""
    return text if text is not None and text.strip() else None


def local_id(value: Any, option: str = "id") -> int:
    """A tile id of one index from what a caller gave (an int, or its decimal text); InputError naming `option`
    for a NAME:ID (an id of several indexes searched as one, query/multi.py) or anything else."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            _, colon, number = text.partition(":")
            fix = (f"this query searches one index: give the tile id ({number})" if colon and number.isdigit()
                   else "give a tile id (a whole number) from an earlier result")
            raise InputError(f"{option} {text}: not a tile id of this index; {fix}")
        return int(text)
    return int(value)


def _check_k(k: int, nprobe: int | None) -> None:
    if k <= 0 or k > MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {k}")
    if nprobe is not None and nprobe < 1:
        raise InputError(f"--nprobe must be >= 1 (IVF lists probed per query), got {nprobe}; "
                         "leave it out to use the index's tuned value")


def _checked_text(text: str | None, images: Sequence[object], like: Sequence[int], negative_texts: Sequence[str],
                  k: int, alpha: float, fusion: str, nprobe: int | None) -> str | None:
    """The query's text (None when blank) once its arguments are checked; InputError naming the bad one."""
    _check_k(k, nprobe)
    text = given_text(text)
    if not text and not images and not like:
        raise InputError("give a text query, --image PATH, --like ID, or a combination")
    for negative in negative_texts:
        if given_text(negative) is None:
            raise InputError(f"--not {negative!r}: blank text; give the words to push results away from, or leave --not out")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"--alpha must be in [0, 1], got {alpha}")
    if fusion not in FUSION_METHODS:
        raise InputError(f"--fusion must be one of {', '.join(FUSION_METHODS)}, got {fusion!r}")
    return text


class RankedQueries:
    """`query` and `feedback` over whatever holds the tiles: one index (`Engine`) or several (`query/multi.py`).

    A subclass supplies the hooks that touch the index: `embed_text`, `embed_image_tiles`, `embed_image_file`,
    `stored_vectors`, `_subset` (the filters, evaluated), `_pool` (tiles a subset holds), `_search` (unit
    vectors -> best hits), `_hit_vectors` (stored vectors of hits' ids), `_background` (random tiles for the
    feedback probe) and `_ref` (an id as the caller gave it -> the id hits carry).
    """

    # --- hooks (see the class docstring) --------------------------------------------------------------

    def embed_text(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def embed_image_tiles(self, path: str | Path, option: str = "--image") -> np.ndarray:
        raise NotImplementedError

    def embed_image_file(self, path: str | Path, option: str = "--image") -> np.ndarray:
        """One unit embedding (d,) of an image file: the mean direction of its tiles (`embed_image_tiles`)."""
        return mean_direction(self.embed_image_tiles(path, option))

    def stored_vectors(self, ids: Sequence[Any], option: str = "--like") -> np.ndarray:
        raise NotImplementedError

    def _subset(self, filters: Filters | None) -> Any:
        raise NotImplementedError

    def _pool(self, subset: Any) -> int:
        raise NotImplementedError

    def _search(self, queries: np.ndarray, k: int, subset: Any, nprobe: int | None) -> list[Hit]:
        raise NotImplementedError

    def _hit_vectors(self, ids: Sequence[Any]) -> np.ndarray:
        raise NotImplementedError

    def _background(self, subset: Any, exclude: Sequence[Any]) -> np.ndarray:
        raise NotImplementedError

    def _ref(self, tile_id: Any, option: str = "id") -> Any:
        raise NotImplementedError


    def query(
        self,
        text: str | None = None,
        images: Sequence[str | Path] = (),
        *,
        like: Sequence[int] = (),
        negative_texts: Sequence[str] = (),
        negative_images: Sequence[str | Path] = (),
        filters: Filters | None = None,
        k: int = 10,
        alpha: float = DEFAULT_ALPHA,
        fusion: str = DEFAULT_FUSION,
        dedup: bool = False,
        exclude: Sequence[int] = (),
        nprobe: int | None = None,
    ) -> list[Hit]:
        """Best-k tiles for a text, example images, stored tiles (`like` ids), or any mix of them.

        Several positive parts are fused by `fusion` (see `sarclip_search.query.fusion`): "blend" searches
        ``alpha·text + (1-alpha)·mean(examples)`` once (scores: cosine), "rrf" searches each part and
        merges the rankings (scores: RRF). An image larger than a tile is cut with the index's tiling
        (`embed_image_tiles`) and each tile searched, a hit scoring its best match (`search_vectors`), so
        an indexed scene finds its own tiles first. Negative texts and images push the query away. With
        filters, only matching tiles are ranked; `exclude` ids never come back; `dedup` keeps the best
        of overlapping tiles of one scene and still returns k hits when k distinct ones exist.
        """
        text = _checked_text(text, images, like, negative_texts, k, alpha, fusion, nprobe)
        # every part is unit: the encoders' vectors, and the stored float16 copies of `like` tiles normalized once
        liked = l2_normalize(self.stored_vectors(like)) if like else []
        subset = self._subset(filters)
        if subset is not None and self._pool(subset) == 0:
            return []
        text_vector = self.embed_text(text) if text else None
        # every example is a set of unit vectors: one for a stored tile or an image no larger than a tile,
        # one per tile for a larger image (searched tile by tile, a hit scoring its best match: docs/query.md)
        examples = [self.embed_image_tiles(p) for p in images] + [vector[None] for vector in liked]
        negatives = ([self.embed_text(t) for t in negative_texts]
                     + [self.embed_image_file(p, "--not-image") for p in negative_images])
        if fusion == "blend" or (text_vector is not None) + len(examples) == 1:
            queries = blend_tiles(text_vector, examples, alpha, negatives)

            def fetch(depth: int) -> list[Hit]:
                return self._search(queries, depth, subset, nprobe)
        else:
            parts = [push_away(text_vector, negatives)[None]] if text_vector is not None else []
            parts += [np.stack([push_away(tile, negatives) for tile in example]) for example in examples]
            weights = part_weights(text_vector is not None, len(examples), alpha)

            def fetch(depth: int) -> list[Hit]:
                return self._fuse_rankings(parts, weights, depth, subset, nprobe)

        return first_k(fetch, k, dedup=dedup, exclude=[self._ref(i, "exclude") for i in exclude], pool=self._pool(subset))

    def feedback(
        self,
        positive: Sequence[int],
        negative: Sequence[int] = (),
        *,
        text: str | None = None,
        filters: Filters | None = None,
        k: int = 10,
        include_marked: bool = False,
        dedup: bool = False,
        nprobe: int | None = None,
    ) -> list[Hit]:
        """Re-rank with a linear probe fitted on tiles marked relevant (`positive`) and not (`negative`).

        The probe's negatives are the marked ones plus `BACKGROUND_NEGATIVES` random tiles of the filtered
        set. With a text, the text is the probe's prior (`feedback.fit_probe_with_text`): the marks move
        the text query rather than replace it. Candidates are the `CANDIDATES_PER_PART` best tiles by the
        probe's weights (an inner-product search ranks as its logit does), by the positives' centroid and
        by the text; the probe's logit orders them (scores: the logit). Marked ids are left out of the
        results unless `include_marked`. Unknown ids raise InputError naming the id; a blank text is none.
        """
        _check_k(k, nprobe)
        text = given_text(text)
        if not positive:
            raise InputError("relevance feedback needs at least one --positive ID (a tile id from an earlier result)")
        positive = [self._ref(i, "--positive") for i in positive]
        negative = [self._ref(i, "--negative") for i in negative]
        both = sorted(set(positive) & set(negative))
        if both:
            raise InputError(f"tile {both[0]} is marked both --positive and --negative; mark it once")
        positives = self.stored_vectors(positive, "--positive")
        negatives = self.stored_vectors(negative, "--negative")
        subset = self._subset(filters)
        if subset is not None and self._pool(subset) == 0:
            return []
        # Random tiles join the marked negatives: without them the probe only learns what sets the positives
        # apart from a few hard negatives and ranks unrelated tiles high (P@10 0.81 vs 1.00 on MSTAR test).
        background = self._background(subset, exclude=[*positive, *negative])
        contrast = np.vstack([negatives, background])
        text_vector = self.embed_text(text) if text else None
        if text_vector is None:
            probe = fit_probe(positives, contrast)
        else:  # the text only adding candidates left it without effect: the probe ranked them alone
            probe = fit_probe_with_text(positives, contrast, text_vector, background)
        # unit query vectors: the probe's weights and the stored positives normalized once, the text as it is
        queries = [l2_normalize(probe.weights.astype(np.float32)), mean_direction(l2_normalize(positives))]
        queries += [text_vector] if text_vector is not None else []

        def fetch(depth: int) -> list[Hit]:
            pool: dict[Any, Hit] = {}
            for query in queries:
                for hit in self._search(query[None], max(depth, CANDIDATES_PER_PART), subset, nprobe):
                    pool.setdefault(hit.id, hit)
            ids = list(pool)
            logits = probe.decision(self._hit_vectors(ids)) if ids else np.empty(0)
            order = np.argsort(-logits, kind="stable")[:depth]
            return [replace(pool[ids[i]], score=float(logits[i]), score_kind="probe") for i in order]

        exclude = () if include_marked else [*positive, *negative]
        return first_k(fetch, k, dedup=dedup, exclude=exclude, pool=self._pool(subset))

    def _fuse_rankings(self, queries: Sequence[np.ndarray], weights: Sequence[float], depth: int,
                       subset: Any, nprobe: int | None) -> list[Hit]:
        """Best `depth` tiles by reciprocal rank fusion of one ranking per query part ((m, d) unit vectors each)."""
        found: dict[Any, Hit] = {}
        rankings = []
        for query in queries:
            hits = self._search(query, max(depth, RRF_DEPTH), subset, nprobe)
            rankings.append([hit.id for hit in hits])
            for hit in hits:
                found.setdefault(hit.id, hit)
        fused = reciprocal_rank_fusion(rankings, weights)[:depth]
        return [replace(found[i], score=score, score_kind="rrf") for i, score in fused]


class Engine(RankedQueries):
    """Read-only access to one committed generation of an index directory."""

    def __init__(self, generation: Generation, info: dict[str, Any], catalog: Catalog, vectors: VectorIndex,
                 model_path: str | Path | None = None) -> None:
        self.generation = generation
        self.info = info
        self.catalog = catalog
        self.vectors = vectors
        # filters: the shortcuts as a numpy mask over tile ids (store/column_arrays.py), recent id sets kept;
        # SARSEARCH_FILTER_COLUMNS=0 runs every filter in DuckDB without the cache
        self.filter_columns = ColumnArrays.for_generation(generation.path, catalog) if column_arrays_enabled() else None
        self.id_sets = IdSetCache(CACHE_ENTRIES if self.filter_columns is not None else 0)
        self._model_path = model_path
        self._model = None
        self._encoder = None
        self.last_population: str | None = None  # "image" or "text": the tuned setting the last search used

    @classmethod
    def open(cls, db: str | Path | None = None, *, model_path: str | Path | None = None) -> Engine:
        """Open the committed state of an index directory (default ./.sarsearch) for queries.

        Lock-free: a writer may commit a new generation and delete this one while it is being opened
        (catalog, then vectors). Files already open stay readable (POSIX unlink), and a generation that
        vanished half-way is retried from CURRENT, up to `OPEN_ATTEMPTS` times.
        """
        store = IndexStore(db)
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            generation = store.require_current()
            try:
                return cls._open_generation(generation, model_path)
            except (SarclipError, VectorIndexError, OSError):
                superseded = not generation.path.is_dir() or store.current() != generation
                if not superseded or attempt == OPEN_ATTEMPTS:
                    raise
                log.info("%s was replaced while opening it; opening the new committed generation", generation.path)
        raise AssertionError("unreachable")  # the loop returns or raises

    @classmethod
    def _open_generation(cls, generation: Generation, model_path: str | Path | None) -> Engine:
        info = generation.read_info()
        check_recorded_schema(info, generation.path)
        catalog = Catalog(generation.catalog_path, read_only=True)
        try:
            vectors = VectorIndex.load(generation.vectors_path, expected_dim=info["embedding"]["dim"], mmap=True)
        except VectorIndexError as exc:
            catalog.close()
            raise ArtifactMismatchError(f"{exc}") from exc
        except BaseException:
            catalog.close()
            raise
        return cls(generation, info, catalog, vectors, model_path)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- model ------------------------------------------------------------------------------------

    @property
    def model(self):  # -> SarClip; imported lazily (torch)
        """The SARCLIP torch model the index was built with; refuses any other. Queries use `encoder`."""
        if self._model is None:
            from sarclip_search.model.sarclip import load_model

            model = load_model(self._checkpoint_path)
            self._check_checkpoint(model.checkpoint_sha256)
            self._model = model
        return self._model

    @property
    def encoder(self) -> Encoder:
        """What embeds queries: the index's ONNX export of its checkpoint (no torch), else `model`.

        The export is made by `sarsearch index` (`encoders.py`); without one (an older index, or
        onnxruntime not installed) the torch model is loaded instead, with the same embeddings.
        """
        if self._encoder is None:
            explicit = Path(self._model_path) if self._model_path is not None else None
            encoder = None
            if explicit is None or explicit.is_file():  # a missing --model is reported by load_model
                if explicit is not None:  # an explicit --model must still be the index's checkpoint
                    self._check_checkpoint(file_sha256(explicit))
                recorded = str(self.info["model"].get("checkpoint_sha256"))
                encoder = load_onnx_encoder(self.generation.path.parent, recorded)
            self._encoder = encoder if encoder is not None else self.model
        return self._encoder

    @property
    def _checkpoint_path(self) -> str | Path | None:
        return self._model_path or self.info["model"].get("checkpoint_path")

    def _check_checkpoint(self, sha256: str) -> None:
        check_query_checkpoint(self.info, sha256, self.generation.path.parent, self._checkpoint_path)

    def embed_text(self, text: str) -> np.ndarray:
        """The unit embedding (d,) of a text (the encoder normalizes it)."""
        return self.encoder.encode_texts([text])[0]

    def embed_image_tiles(self, path: str | Path, option: str = "--image") -> np.ndarray:
        """Unit embeddings (t, d) of a query image's tiles, read as `sarsearch index` read the archive.

        The image is cut with the index's tiling (`info["tiling"]`: tile size and stride) and each tile
        read by the indexer's own reader and radiometry (`raster.read_tile_chips`): an image no larger than
        a tile is one chip (t = 1), a scene of the archive gives back the embeddings of its own tiles.
        InputError naming `option` and the file when it is no readable image, or has more than
        `MAX_QUERY_TILES` tiles.
        """
        from sarclip_search.ingest import raster
        from sarclip_search.ingest.tiling import tile_windows

        tiling = self.info["tiling"]
        size, stride = int(tiling["size"]), tiling.get("stride")
        try:
            info = raster.read_info(path)
            count = len(tile_windows(info.width, info.height, size, stride))
            if count > MAX_QUERY_TILES:
                raise InputError(
                    f"{option} {path}: {info.width} x {info.height} px is {count} tiles at this index's tiling "
                    f"({size} px, stride {stride}), more than the {MAX_QUERY_TILES} a query reads; crop the area "
                    "you are looking for (e.g. gdal_translate -srcwin) and query with that"
                )
            _, chips = raster.read_tile_chips(path, size, stride, size=self.encoder.image_size, info=info)
        except UnreadableRasterError as exc:
            raise InputError(
                f"{option} {exc.path}: not a readable image (GeoTIFF, TIFF, PNG or JPEG); give an image file"
            ) from exc
        if len(chips) > 1:
            log.info("%s: %d tiles of %d px at stride %s", path, len(chips), size, stride)
        return self.encoder.encode_images(np.stack(chips))  # unit vectors: the encoder normalizes them

    # --- query ------------------------------------------------------------------------------------

    def filter_ids(self, filters: Filters | None) -> np.ndarray | None:
        """Sorted tile ids (read-only) matching the filters, or None when no filter is set.

        Recent filters' id sets come from `id_sets`; otherwise the filters are checked (`build_predicate`) and
        the shortcut filters answered by `filter_columns` (a numpy mask), a ``--where`` by the catalog (DuckDB).
        Both give the same ids (tests/store/test_column_arrays.py).
        """
        if filters is None:
            return None
        key = filter_key(filters)
        cached = self.id_sets.get(key)
        if cached is not None:
            return cached
        predicate = build_predicate(filters, self.catalog.columns())
        if predicate.sql is None:
            return None
        ids = self.filter_columns.match(filters) if self.filter_columns is not None else None
        return self.id_sets.put(key, self.catalog.tile_ids(predicate) if ids is None else ids)

    def stored_vectors(self, ids: Sequence[int], option: str = "--like") -> np.ndarray:
        """The stored embeddings (n, d) of tile ids from earlier results; InputError naming an unknown id."""
        id_array = np.asarray([local_id(i, option) for i in ids], dtype=np.int64)
        if not len(id_array):
            return np.empty((0, self.vectors.dim), np.float32)
        found = self.vectors.contains(id_array)
        if not found.all():
            raise InputError(
                f"{option} {int(id_array[~found][0])}: no tile with that id in {self.generation.path.parent}; "
                "use an `id` from an earlier result (sarsearch query ... --json)"
            )
        return self.vectors.vectors(id_array)

    def _subset(self, filters: Filters | None) -> np.ndarray | None:
        return self.filter_ids(filters)

    def _pool(self, subset: np.ndarray | None) -> int:
        return self.vectors.ntotal if subset is None else len(subset)

    def _hit_vectors(self, ids: Sequence[int]) -> np.ndarray:
        return self.vectors.vectors(ids)

    def _ref(self, tile_id: Any, option: str = "id") -> int:
        return local_id(tile_id, option)

    def hits_by_id(self, ids: Sequence[int]) -> list[Hit]:
        """Hits (score 0, kind "none") of tile ids in the given order, from the catalog; unknown ids left out."""
        wanted = [int(i) for i in ids if not isinstance(i, str) or (i.isascii() and i.isdigit())]  # NAME:ID: none here
        return [replace(Hit.from_row(int(row["tile_id"]), 0.0, row), score_kind="none")
                for row in self.catalog.fetch_tiles(wanted)]

    def scene_tile_ids(self, scene_id: int) -> list[int]:
        """The tile ids of a scene, in id order (empty for an unknown scene)."""
        if isinstance(scene_id, str) and not (scene_id.isascii() and scene_id.isdigit()):
            return []  # NAME:SCENE_ID: a scene of several indexes searched as one, none here
        ids = self.filter_ids(Filters(where=f"scene_id = {int(scene_id)}"))
        return [] if ids is None else [int(i) for i in ids]

    def _background(self, subset: np.ndarray | None, exclude: Sequence[int]) -> np.ndarray:
        """Embeddings of up to BACKGROUND_NEGATIVES random tiles (seeded), not in `exclude`."""
        ids = self.vectors.ids() if subset is None else subset
        ids = np.setdiff1d(ids, np.asarray(list(exclude), dtype=np.int64))
        if not len(ids):
            raise InputError("relevance feedback needs tiles besides the marked ones to contrast them with; widen the filters")
        rng = np.random.default_rng(BACKGROUND_SEED)
        chosen = rng.choice(ids, size=min(BACKGROUND_NEGATIVES, len(ids)), replace=False)
        return self.vectors.vectors(np.sort(chosen))

    def search_vector(self, vector: np.ndarray, *, k: int = 10, subset: np.ndarray | None = None,
                      nprobe: int | None = None) -> list[Hit]:
        """Best-k tiles for any query embedding (d,): normalized here (`vectors.l2_normalize`), then searched."""
        return self._search(l2_normalize(vector)[None], k, subset, nprobe)

    def search_vectors(self, vectors: np.ndarray, *, k: int = 10, subset: np.ndarray | None = None,
                       nprobe: int | None = None) -> list[Hit]:
        """Best-k tiles for any query embeddings (m, d), normalized here; a tile scores its best cosine to any."""
        return self._search(l2_normalize(np.atleast_2d(vectors)), k, subset, nprobe)

    def _search(self, queries: np.ndarray, k: int, subset: np.ndarray | None, nprobe: int | None) -> list[Hit]:
        """Best-k tiles for unit query vectors (m, d), searched as they are: one FAISS search, one catalog fetch.

        With m > 1 a tile scores its best cosine to any of them. Each vector is searched k deep, so the merged
        top k is exact: a tile whose best match is vector i and that is in the top k of the merge is in vector
        i's own top k.
        """
        # text-led queries (text alone, or a blend the text dominates) sit on the text side of the modality gap:
        # the index's text setting (tune(text_queries=...)); last_population says which one the last search used
        self.last_population = self.vectors.population(queries)
        scores, ids = self.vectors.search(queries, k, subset=subset, nprobe=nprobe, population=self.last_population)
        if len(queries) == 1:
            found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        else:
            best: dict[int, float] = {}
            for tile_id, score in zip(ids.ravel().tolist(), scores.ravel().tolist()):
                if tile_id >= 0 and score > best.get(tile_id, -np.inf):
                    best[tile_id] = score
            found = sorted(best.items(), key=lambda pair: -pair[1])[:k]
        rows = {int(r["tile_id"]): r for r in self.catalog.fetch_tiles([i for i, _ in found])}
        return [Hit.from_row(i, s, rows[i]) for i, s in found if i in rows]

    def summary(self) -> dict[str, Any]:
        """What is indexed: counts, datasets, labels, model, index type, size on disk."""
        store = IndexStore(self.generation.path.parent)
        return {
            "db": str(self.generation.path.parent),
            "generation": self.info.get("generation"),
            "catalog": self.catalog.summary(),
            "model": self.info.get("model"),
            "embedding": self.info.get("embedding"),
            "index": self.info.get("index"),
            "archive_root": self.info.get("archive_root"),
            "tiling": self.info.get("tiling"),
            "versions": self.info.get("versions"),
            "size_bytes": store.size_bytes(),
        }
