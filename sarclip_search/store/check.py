"""`sarsearch info --check`: does the committed index agree with itself?

Checks one committed generation of an index directory without loading the model (no torch):

- catalog ↔ vectors: the same tile ids on both sides (so the same counts), each tile's scene present;
- info.json ↔ both: the counts, the embedding dimension and the catalog schema version it records;
- info.json ↔ checkpoint: the sha256 of the checkpoint file it names, when that file still exists;
- the ONNX query encoders, when present: made from that checkpoint, files complete (absent is not a
  problem: queries then load the torch model).

Each problem is one line naming what disagrees and the fix (`errors.REBUILD`); the compatibility checks
are those of `artifacts.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sarclip_search.errors import REBUILD, ArtifactMismatchError, SarclipError
from sarclip_search.index import VectorIndex
from sarclip_search.index.errors import VectorIndexError
from sarclip_search.model.encoders import encoder_dir, read_manifest
from sarclip_search.store.artifacts import check_recorded_checkpoint, check_recorded_schema
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.layout import IndexStore

log = logging.getLogger(__name__)

@dataclass
class CheckReport:
    """What `check_index` looked at and what it found wrong (empty `problems`: all agree)."""

    db: str
    generation: str = ""
    tiles: int = 0
    vectors: int = 0
    checkpoint_checked: bool = False
    encoders: str = "absent"  # the ONNX query encoders: "ok", "absent" (queries load torch) or "damaged"
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _describe(ids: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return f"{len(ids)} ({shown}{', ...' if len(ids) > limit else ''})"


def check_index(db: str | Path | None = None) -> CheckReport:
    """Verify the committed generation of the index directory `db`; problems are listed, not raised.

    Raises only when there is nothing to check (IndexNotFoundError: no index at `db`).
    """
    store = IndexStore(db)
    generation = store.require_current()
    report = CheckReport(db=str(store.root), generation=generation.path.name)
    problems = report.problems
    try:
        info = generation.read_info()
    except SarclipError as exc:
        problems.append(f"{exc}")
        return report
    try:
        check_recorded_schema(info, generation.info_path)
    except ArtifactMismatchError as exc:
        problems.append(f"{exc}")
    try:
        with Catalog(generation.catalog_path, read_only=True) as catalog:
            tile_ids = catalog.tile_ids()
            counts = catalog.counts()
            orphans = catalog.orphan_tiles()
    except SarclipError as exc:
        problems.append(f"catalog: {exc}")
        return report
    try:
        vectors = VectorIndex.load(generation.vectors_path)
    except VectorIndexError as exc:
        problems.append(f"vectors: {exc}")
        return report
    vector_ids = np.sort(vectors.ids())
    report.tiles, report.vectors = len(tile_ids), len(vector_ids)
    if len(np.unique(vector_ids)) != len(vector_ids):
        problems.append(f"the vector index holds duplicate ids; {REBUILD}")
    only_catalog = np.setdiff1d(tile_ids, vector_ids)
    only_vectors = np.setdiff1d(vector_ids, tile_ids)
    if len(only_catalog):
        problems.append(f"tiles in the catalog without a vector: {_describe(only_catalog)}; {REBUILD}")
    if len(only_vectors):
        problems.append(f"vectors without a catalog tile: {_describe(only_vectors)}; {REBUILD}")
    if orphans:
        problems.append(f"{orphans} catalog tiles belong to no scene; {REBUILD}")
    recorded = info.get("counts", {})
    found = {**counts, "vectors": len(vector_ids)}
    for key, value in found.items():
        if recorded.get(key) != value:
            problems.append(f"info.json records {recorded.get(key)} {key}, the index holds {value}; {REBUILD}")
    dim = info.get("embedding", {}).get("dim")
    if dim != vectors.dim:
        problems.append(f"info.json records embedding dim {dim}, the vectors have {vectors.dim}; {REBUILD}")
    model = info.get("model", {})
    if model.get("embed_dim") not in (None, vectors.dim):
        problems.append(f"the model embeds in {model.get('embed_dim')} dims, the vectors have {vectors.dim}; {REBUILD}")
    try:
        report.checkpoint_checked = check_recorded_checkpoint(info)
    except ArtifactMismatchError as exc:
        report.checkpoint_checked = True
        problems.append(f"{exc}")
    if not report.checkpoint_checked and model.get("checkpoint_path"):
        log.info("checkpoint %s not found; its hash is not checked", model.get("checkpoint_path"))
    encoders = encoder_dir(store.root, str(model.get("checkpoint_sha256") or ""))
    if encoders.is_dir():
        try:
            read_manifest(encoders, str(model.get("checkpoint_sha256")))
            report.encoders = "ok"
        except ArtifactMismatchError as exc:
            report.encoders = "damaged"
            problems.append(f"ONNX query encoders: {exc}")
    return report
