"""Embedding shards: a folder of Parquet files holding scenes, tiles and their vectors, and its reader.

For archives too large to stream through one process, embedding can run elsewhere (`index --ray` writing
shards) and `sarsearch index --from-shards DIR` builds the index generation from the folder
(`ingest/from_shards.py`). A shard holds one batch of scenes: the catalog rows the indexer would write
(`indexer._scene_row`), their tiles and the tiles' float32 vectors, row-aligned. Tile ids are not stored:
the build assigns them as the one-process indexer would for the same order (shards by number, scenes in
their shard's order, each scene's tiles in order).

Folder layout::

    DIR/shards.json                 the header (ShardHeader): what made the shards
    DIR/shard-00000000.parquet      one batch of scenes; its footer repeats the header and holds the scene rows
    DIR/shard-00000001.parquet      ...
    DIR/.shard-00000002.parquet.XXXX.tmp   a write in progress, or left by a killed writer: never read

A shard's Parquet table has one row per tile: ``path`` (string, the scene's ``path``), ``col_off``,
``row_off``, ``width``, ``height`` (int64 pixels), ``bbox`` (fixed_size_list<float64>[4], null when nothing
places the tile), the catalog's other tile columns (`EXTRA_TILE_COLUMNS`: ``tile_label``, ``tile_n_objects``,
``tile_objects`` and the mask fractions and dark proxy ``tile_*_fraction``; null when a tile row lacks them) and ``vector`` (fixed_size_list<float32>[embed_dim]). Its footer's key-value metadata holds
``sarclip.header`` (the header as JSON) and ``sarclip.scenes`` (the scene rows as a JSON list; datetimes
and dates tagged ``{"$datetime": ISO}`` / ``{"$date": ISO}`` so they come back as they went in).

Why Parquet (pyarrow, installed with ray[data]) rather than .npy + JSON: one self-describing file per shard
(schema, vectors, tiles, scenes and header together), so a shard is published by one rename and can never be
half of a set of files; vectors are stored as a fixed-size list column and read back as one contiguous
float32 array without a copy; Ray Data (`ray.data.read_parquet`), DuckDB and pandas read the same files.

API::

    header = ShardHeader.create(model_identity, tile_size=256, tile_stride=256, archive_root="/data/archive",
                                model_path="model.pt")   # model_identity: model_name, checkpoint_sha256, embed_dim
    writer = ShardWriter(dir, header)                    # creates DIR and DIR/shards.json, or checks the header
    writer.write(scene_rows, tile_rows, vectors)         # -> Path of the shard; number = next free one
    writer.write(scene_rows, tile_rows, vectors, number=7)   # parallel writers: each its own number
                                                         # (rewriting a number replaces that shard: retries)
    header, batches = iter_shards(dir, expect=header)    # expect: refuse shards made by anything else
    for batch in batches:                                # ShardBatch, in shard-number order
        batch.scene_rows, batch.tile_rows, batch.vectors
    shard_set = scan_shards(dir)                         # header, shard files, leftover temporary files

`scene_rows`: dicts with at least ``path`` (unique in the folder). `tile_rows`: dicts with ``path`` (of a scene
of the same shard), ``col_off``, ``row_off``, ``width``, ``height`` and ``bbox`` (4 floats or None), optionally ``tile_label``,
``tile_n_objects``, ``tile_objects`` (as `Catalog.add_tiles` takes them), grouped by scene in the order of
`scene_rows` (a scene may have no tiles). `vectors`: (len(tile_rows), embed_dim),
float32 (cast if not).

Writes are atomic (`_fs.atomic_file`: temporary name, fsync, rename): a killed writer leaves at most a
hidden ``.shard-*.tmp`` file, which readers skip (`scan_shards` lists them). A shard file that cannot be read
as one (damaged, or another program's file named like one) stops the reader with an InputError naming it.
A header that differs from the folder's, or from `expect`, is an ArtifactMismatchError naming the field.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sarclip_search import __version__
from sarclip_search._fs import atomic_file, write_atomic
from sarclip_search.errors import ArtifactMismatchError, InputError, MissingDependencyError
from sarclip_search.store.schema import BBOX_COLUMNS, SCHEMA_VERSION, TILE_COLUMNS

log = logging.getLogger(__name__)

SHARD_FORMAT = "sarclip-search/embedding-shards"
SHARD_FORMAT_VERSION = 1
HEADER_FILE = "shards.json"
SHARD_NAME = re.compile(r"shard-(\d{8})\.parquet")
HEADER_KEY = b"sarclip.header"
SCENES_KEY = b"sarclip.scenes"
TILE_FIELDS = ("col_off", "row_off", "width", "height")
# the catalog's other tile columns (what a tile holds: tile_label, tile_n_objects, tile_objects, tile_*_fraction),
# optional per tile and stored as the catalog stores them (Catalog.add_tiles: str / int / float, null when absent)
EXTRA_TILE_COLUMNS = {name: kind for name, kind in TILE_COLUMNS.items()
                      if name not in ("tile_id", "scene_id", *TILE_FIELDS, *BBOX_COLUMNS)}
# header fields that must agree between shards, the folder and the reader; model_path is where the checkpoint
# was on the writing machine (recorded as info.json's checkpoint_path), not what made the vectors
COMPARED_FIELDS = ("format", "format_version", "model_name", "checkpoint_sha256", "embed_dim", "tile_size",
                   "tile_stride", "archive_root", "catalog_schema_version", "sarclip_search_version")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:  # pragma: no cover - pyarrow comes with the [ray] extra
        raise MissingDependencyError("embedding shards need pyarrow: pip install -e '.[ray]'") from exc
    return pyarrow


@dataclass(frozen=True)
class ShardHeader:
    """What made a folder of shards: model, tiling, archive, schema and versions (checked by every reader)."""

    model_name: str
    checkpoint_sha256: str
    embed_dim: int
    tile_size: int
    tile_stride: int
    archive_root: str
    model_path: str | None = None
    catalog_schema_version: int = SCHEMA_VERSION
    sarclip_search_version: str = __version__
    format: str = SHARD_FORMAT
    format_version: int = SHARD_FORMAT_VERSION

    @classmethod
    def create(cls, model_identity: Mapping[str, Any], *, tile_size: int, tile_stride: int, archive_root: str,
               model_path: str | None = None) -> ShardHeader:
        """The header of shards embedded by a model (`RunModel.identity` / `SarClip.identity`) in this version."""
        return cls(model_name=str(model_identity["model_name"]),
                   checkpoint_sha256=str(model_identity["checkpoint_sha256"]),
                   embed_dim=int(model_identity["embed_dim"]), tile_size=int(tile_size),
                   tile_stride=int(tile_stride), archive_root=str(archive_root), model_path=model_path)

    @property
    def model_identity(self) -> dict[str, Any]:
        """model_name, checkpoint_sha256, embed_dim: as an index's info.json records them."""
        return {"model_name": self.model_name, "checkpoint_sha256": self.checkpoint_sha256,
                "embed_dim": self.embed_dim}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: object) -> ShardHeader:
        """Parse a header; InputError naming `source` when it is not one of ours."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
                raise ValueError("not an embedding-shard header")
            names = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})
        except (ValueError, TypeError) as exc:
            raise InputError(f"{source}: not a sarclip-search shard header ({exc}); "
                             "point to a folder of embedding shards (its shards.json)") from exc

    def differences(self, other: ShardHeader) -> list[str]:
        """`field expected X, found Y` (X ours, Y `other`'s) for each compared field that differs."""
        return [f"{name} expected {getattr(self, name)!r}, found {getattr(other, name)!r}"
                for name in COMPARED_FIELDS if getattr(self, name) != getattr(other, name)]

    def check_readable(self, source: object) -> None:
        """Refuse shards of another shard format or catalog schema than this version reads."""
        if self.format_version != SHARD_FORMAT_VERSION or self.catalog_schema_version != SCHEMA_VERSION:
            raise ArtifactMismatchError(
                f"{source}: shards of format v{self.format_version} / catalog schema v{self.catalog_schema_version} "
                f"(sarclip-search {self.sarclip_search_version}); this version reads format v{SHARD_FORMAT_VERSION} "
                f"/ schema v{SCHEMA_VERSION}; write the shards again with this version")


def check_header(expected: ShardHeader, found: ShardHeader, source: object, fix: str) -> None:
    """ArtifactMismatchError naming `source`, each differing field and `fix` when `found` is not `expected`."""
    diff = expected.differences(found)
    if diff:
        raise ArtifactMismatchError(f"{source}: made by another model, tiling, archive or version ({'; '.join(diff)}); {fix}")


# ------------------------------------------------------------------ scene rows as JSON

def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_value(v) for k, v in value.items()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
        if len(value) == 1 and "$date" in value:
            return date.fromisoformat(value["$date"])
        return {k: _decode_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    return value


def encode_scene_rows(rows: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps([{str(k): _encode_value(v) for k, v in row.items()} for row in rows]).encode()


def decode_scene_rows(data: bytes) -> list[dict[str, Any]]:
    return [{k: _decode_value(v) for k, v in row.items()} for row in json.loads(data)]


# ------------------------------------------------------------------ writing

def _check_batch(scene_rows: Sequence[Mapping[str, Any]], tile_rows: Sequence[Mapping[str, Any]],
                 vectors: np.ndarray, dim: int) -> np.ndarray:
    """Validate one batch (InputError naming the problem); returns the vectors as C-contiguous float32."""
    paths = [row.get("path") for row in scene_rows]
    if any(not isinstance(p, str) or not p for p in paths) or len(set(paths)) != len(paths):
        raise InputError("shard scene rows need a non-empty, unique `path` each")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape != (len(tile_rows), dim):
        raise InputError(f"shard vectors must be ({len(tile_rows)}, {dim}) (one per tile row, the model's "
                         f"embed_dim), got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise InputError("shard vectors hold NaN or infinite values; embed those tiles again")
    order = {p: i for i, p in enumerate(paths)}
    last = -1
    for tile in tile_rows:
        position = order.get(tile.get("path"))  # type: ignore[arg-type]
        if position is None:
            raise InputError(f"shard tile row of scene {tile.get('path')!r}, which is not among the shard's scene rows")
        if position < last:
            raise InputError(f"shard tile rows must be grouped by scene in the order of the scene rows; "
                             f"{tile.get('path')!r} comes back after another scene")
        last = position
        bbox = tile.get("bbox")
        if bbox is not None and len(bbox) != 4:
            raise InputError(f"shard tile bbox must be (minlon, minlat, maxlon, maxlat) or None, found {bbox!r}")
    return vectors


def _tile_table(tile_rows: Sequence[Mapping[str, Any]], vectors: np.ndarray) -> Any:
    pa = _pyarrow()
    n, dim = vectors.shape
    columns: dict[str, Any] = {"path": pa.array([str(t["path"]) for t in tile_rows], type=pa.string())}
    for name in TILE_FIELDS:
        columns[name] = pa.array([int(t[name]) for t in tile_rows], type=pa.int64())
    boxes = np.zeros((n, 4), dtype=np.float64)
    valid = np.ones(n, dtype=bool)
    for i, tile in enumerate(tile_rows):
        bbox = tile.get("bbox")
        if bbox is None:
            valid[i] = False
        else:
            boxes[i] = [np.nan if v is None else float(v) for v in bbox]
    bbox_values = pa.array(boxes.reshape(-1), type=pa.float64())
    columns["bbox"] = pa.FixedSizeListArray.from_arrays(bbox_values, 4, mask=pa.array(~valid))
    for name, kind in EXTRA_TILE_COLUMNS.items():
        values = [t.get(name) for t in tile_rows]
        if kind == "VARCHAR":
            columns[name] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        elif kind == "DOUBLE":  # the mask fractions and dark proxy (ingest/masks.py)
            columns[name] = pa.array([None if v is None else float(v) for v in values], type=pa.float64())
        else:
            columns[name] = pa.array([None if v is None else int(v) for v in values], type=pa.int64())
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
    return pa.table(columns)


class ShardWriter:
    """Writes shards into a folder whose header is `header` (created, or checked to be the same)."""

    def __init__(self, folder: str | Path, header: ShardHeader) -> None:
        _pyarrow()
        self.folder = Path(folder)
        self.header = header
        self.folder.mkdir(parents=True, exist_ok=True)
        header_path = self.folder / HEADER_FILE
        if header_path.is_file():
            existing = ShardHeader.from_json(header_path.read_bytes(), header_path)
            check_header(existing, header, self.folder,
                        "write these shards to another folder, or empty this one first")
        else:
            write_atomic(header_path, (header.to_json() + "\n").encode())
        self._next = max((n for n, _ in _shard_files(self.folder)), default=-1) + 1

    def write(self, scene_rows: Sequence[Mapping[str, Any]], tile_rows: Sequence[Mapping[str, Any]],
              vectors: np.ndarray, *, number: int | None = None) -> Path:
        """Write one shard atomically and return its path. `number` orders shards (the build reads them by number,
        so tile ids follow it); default: the next after the highest in the folder when the writer was made and
        those it wrote since. A shard with the same number is replaced (a retried task rewrites its own)."""
        pq = _pyarrow().parquet
        vectors = _check_batch(scene_rows, tile_rows, vectors, self.header.embed_dim)
        if number is None:
            number = self._next
        if not 0 <= number < 10**8:
            raise InputError(f"shard number must be in [0, 1e8), got {number}")
        self._next = max(self._next, number + 1)
        table = _tile_table(tile_rows, vectors)
        table = table.replace_schema_metadata({HEADER_KEY: self.header.to_json().encode(),
                                               SCENES_KEY: encode_scene_rows(scene_rows)})
        target = self.folder / f"shard-{number:08d}.parquet"
        if target.exists():
            log.info("replacing %s", target)
        with atomic_file(target) as temporary:
            pq.write_table(table, temporary)
        return target


# ------------------------------------------------------------------ reading

@dataclass
class ShardBatch:
    """One shard as read back: its scenes, their tiles and the tiles' vectors (row-aligned)."""

    path: Path
    number: int
    scene_rows: list[dict[str, Any]]
    tile_rows: list[dict[str, Any]]
    vectors: np.ndarray  # (len(tile_rows), embed_dim) float32


@dataclass
class ShardSet:
    """A shard folder as found: its header, its shard files by number, and leftover temporary files."""

    folder: Path
    header: ShardHeader
    files: list[tuple[int, Path]]
    leftovers: list[Path]


def _shard_files(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.iterdir():
        match = SHARD_NAME.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match[1]), path))
    return sorted(found)


def scan_shards(folder: str | Path) -> ShardSet:
    """The folder's header and shard files (InputError when it is not a shard folder). Temporary files left by
    killed writers are listed in `leftovers` (callers report them), never read."""
    folder = Path(folder)
    header_path = folder / HEADER_FILE
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass the folder of embedding shards")
    if not header_path.is_file():
        raise InputError(f"{folder}: no {HEADER_FILE} in it, so not an embedding-shard folder; "
                         "pass the folder the embedding run wrote its shards to")
    header = ShardHeader.from_json(header_path.read_bytes(), header_path)
    leftovers = sorted(p for p in folder.iterdir() if p.name.startswith(".shard-") and p.name.endswith(".tmp"))
    for path in leftovers:
        log.info("%s: an unfinished shard write (a writer was killed or is still running); not read", path.name)
    return ShardSet(folder, header, _shard_files(folder), leftovers)


def _open(path: Path) -> Any:
    pq = _pyarrow().parquet
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for damaged files
        raise InputError(f"{path}: not a readable shard ({str(exc).splitlines()[0]}); "
                         "delete it and write that shard again") from exc


def read_shard_header(path: str | Path) -> ShardHeader:
    """The header in a shard file's footer."""
    path = Path(path)
    metadata = _open(path).schema_arrow.metadata or {}
    if HEADER_KEY not in metadata:
        raise InputError(f"{path}: a Parquet file without a shard header; delete it or move it out of the folder")
    return ShardHeader.from_json(metadata[HEADER_KEY], path)


def _vectors_of(table: Any, dim: int, path: Path) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    if column.type.list_size != dim:
        raise InputError(f"{path}: vectors of {column.type.list_size} dimensions, the header says {dim}; "
                         "write that shard again")
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def read_shard_vectors(path: str | Path, header: ShardHeader) -> np.ndarray:
    """Only the vectors of a shard file, (n, embed_dim) float32 (for training samples and encoding tasks)."""
    path = Path(path)
    parquet = _open(path)
    try:
        table = parquet.read(columns=["vector"])
    except Exception as exc:
        raise InputError(f"{path}: not a readable shard ({str(exc).splitlines()[0]}); "
                         "delete it and write that shard again") from exc
    return _vectors_of(table, header.embed_dim, path)


def read_shard(path: str | Path, number: int, header: ShardHeader) -> ShardBatch:
    """One shard file, checked against the folder's `header`."""
    path = Path(path)
    found = read_shard_header(path)
    check_header(header, found, path, "move that shard out of the folder or write it again with the folder's model")
    parquet = _open(path)
    try:
        table = parquet.read()
        metadata = table.schema.metadata or {}
        scene_rows = decode_scene_rows(metadata[SCENES_KEY])
    except Exception as exc:
        raise InputError(f"{path}: not a readable shard ({str(exc).splitlines()[0]}); "
                         "delete it and write that shard again") from exc
    vectors = _vectors_of(table, header.embed_dim, path)
    columns = {name: table.column(name).to_pylist() for name in ("path", *TILE_FIELDS, "bbox")}
    extras = {name: table.column(name).to_pylist() for name in EXTRA_TILE_COLUMNS}
    tile_rows = [
        {"path": columns["path"][i], **{name: columns[name][i] for name in TILE_FIELDS},
         "bbox": None if columns["bbox"][i] is None else tuple(columns["bbox"][i]),
         **{name: values[i] for name, values in extras.items() if values[i] is not None}}
        for i in range(table.num_rows)
    ]
    return ShardBatch(path, number, scene_rows, tile_rows, vectors)


def iter_shards(folder: str | Path, expect: ShardHeader | None = None) -> tuple[ShardHeader, Iterator[ShardBatch]]:
    """The folder's header and its shards in number order, each read when the iterator reaches it.

    `expect`: the header the caller needs (ArtifactMismatchError naming the field otherwise). Every shard's own
    header must equal the folder's. Leftover temporary files are skipped (`scan_shards`).
    """
    shard_set = scan_shards(folder)
    header = shard_set.header
    header.check_readable(shard_set.folder)
    if expect is not None:
        check_header(expect, header, shard_set.folder, "use shards made with the same model, tiling and archive")

    def batches() -> Iterator[ShardBatch]:
        for number, path in shard_set.files:
            yield read_shard(path, number, header)

    return header, batches()
