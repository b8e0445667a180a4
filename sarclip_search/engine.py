"""The query layer: text→image, image→image and both fused, with metadata filters.

    engine = Engine.open(".sarsearch")
    hits = engine.query(text="ship near harbor", filters=Filters(split="test"), k=10)

Filters become an id set in the catalog first, and the vector search runs only over those ids, so
k results come back whenever k tiles match. The model loads lazily: metadata-only work (info) never
imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarclip_search.catalog import SCHEMA_VERSION, Catalog
from sarclip_search.errors import ArtifactMismatchError, InputError, SarclipError
from sarclip_search.filters import Filters, build_predicate
from sarclip_search.index import VectorIndex
from sarclip_search.index.errors import VectorIndexError
from sarclip_search.store import Generation, IndexStore

log = logging.getLogger(__name__)

MAX_K = 10_000
# A reader retries when a writer replaced the generation it was opening; 5 commits in a row is plenty.
OPEN_ATTEMPTS = 5


@dataclass(frozen=True)
class Hit:
    """One search result: a tile, where it is, and what the catalog knows of its scene."""

    id: int
    score: float
    path: str
    scene_id: int
    window: tuple[int, int, int, int]  # col_off, row_off, width, height in pixels of the scene
    bbox: tuple[float, float, float, float] | None  # lon/lat footprint of the tile, when the scene has a CRS
    metadata: dict[str, Any] = field(default_factory=dict)  # every catalog column of the tile's row

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.metadata,
            "id": self.id,
            "score": round(self.score, 6),
            "path": self.path,
            "scene_id": self.scene_id,
            "window": list(self.window),
            "bbox": list(self.bbox) if self.bbox is not None else None,
        }


def _hit(tile_id: int, score: float, row: dict[str, Any]) -> Hit:
    bbox_values = [row.get(f"bbox_{k}") for k in ("minlon", "minlat", "maxlon", "maxlat")]
    bbox = tuple(float(v) for v in bbox_values) if all(v is not None for v in bbox_values) else None
    metadata = {k: v for k, v in row.items() if not k.startswith("bbox_")}
    return Hit(
        id=tile_id,
        score=score,
        path=str(row.get("path")),
        scene_id=int(row["scene_id"]),
        window=(int(row["col_off"]), int(row["row_off"]), int(row["width"]), int(row["height"])),
        bbox=bbox,  # type: ignore[arg-type]
        metadata=metadata,
    )


class Engine:
    """Read-only access to one committed generation of an index directory."""

    def __init__(self, generation: Generation, info: dict[str, Any], catalog: Catalog, vectors: VectorIndex,
                 model_path: str | Path | None = None) -> None:
        self.generation = generation
        self.info = info
        self.catalog = catalog
        self.vectors = vectors
        self._model_path = model_path
        self._model = None

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
        if info.get("catalog_schema_version") != SCHEMA_VERSION:
            raise ArtifactMismatchError(
                f"{generation.path}: catalog schema v{info.get('catalog_schema_version')}, this version reads "
                f"v{SCHEMA_VERSION}; rebuild with `sarsearch index ARCHIVE --rebuild`"
            )
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

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- model ------------------------------------------------------------------------------------

    @property
    def model(self):  # -> SarClip; imported lazily (torch)
        """The SARCLIP model the index was built with; refuses any other."""
        if self._model is None:
            from sarclip_search.model import load_model

            recorded = self.info["model"]
            path = self._model_path or recorded.get("checkpoint_path")
            model = load_model(path)
            if model.checkpoint_sha256 != recorded.get("checkpoint_sha256"):
                raise ArtifactMismatchError(
                    f"the index at {self.generation.path.parent} was built with checkpoint "
                    f"{str(recorded.get('checkpoint_sha256'))[:12]}, but {path or 'the default model'} is "
                    f"{model.checkpoint_sha256[:12]}; pass the right --model or re-index with --rebuild"
                )
            self._model = model
        return self._model

    def embed_text(self, text: str) -> np.ndarray:
        return self.model.encode_texts([text])[0]

    def embed_image_file(self, path: str | Path) -> np.ndarray:
        from sarclip_search import raster

        chip = raster.read_chip(path, size=self.model.image_size)
        return self.model.encode_images(chip[None])[0]

    # --- query ------------------------------------------------------------------------------------

    def filter_ids(self, filters: Filters | None) -> np.ndarray | None:
        """Tile ids matching the filters, or None when no filter is set."""
        if filters is None:
            return None
        where, params = build_predicate(filters, self.catalog.columns())
        if where is None:
            return None
        return self.catalog.tile_ids(where, params)

    def query(
        self,
        text: str | None = None,
        images: Sequence[str | Path] = (),
        *,
        filters: Filters | None = None,
        k: int = 10,
        alpha: float = 0.5,
        nprobe: int | None = None,
    ) -> list[Hit]:
        """Best-k tiles for a text, example images, or both (blended: alpha·text + (1-alpha)·mean image).

        With filters, only matching tiles are ranked.
        """
        if k <= 0 or k > MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, got {k}")
        if not text and not images:
            raise InputError("give a text query, --image PATH, or both")
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"--alpha must be in [0, 1], got {alpha}")
        subset = self.filter_ids(filters)
        if subset is not None and len(subset) == 0:
            return []
        parts = []
        if text:
            parts.append((alpha if images else 1.0, self.embed_text(text)))
        if images:
            image_vectors = np.stack([self.embed_image_file(p) for p in images]).mean(axis=0)
            parts.append(((1.0 - alpha) if text else 1.0, image_vectors))
        return self.search_vector(sum(w * v for w, v in parts), k=k, subset=subset, nprobe=nprobe)

    def search_vector(self, vector: np.ndarray, *, k: int = 10, subset: np.ndarray | None = None,
                      nprobe: int | None = None) -> list[Hit]:
        """Best-k tiles for a query embedding (normalized here, in the model's one normalize)."""
        import torch

        from sarclip_search.model import normalize

        query = normalize(torch.as_tensor(np.asarray(vector, dtype=np.float32))[None]).numpy()
        scores, ids = self.vectors.search(query, k, subset=subset, nprobe=nprobe)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        rows = {int(r["tile_id"]): r for r in self.catalog.fetch_tiles([i for i, _ in found])}
        return [_hit(i, s, rows[i]) for i, s in found if i in rows]

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
