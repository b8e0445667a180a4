"""The DuckDB catalog of scenes and tiles.

`Catalog` owns the DuckDB connection; it is the only module (with `filters`) that imports duckdb.
A tile id is the FAISS id of the tile's embedding, so ids are never reused: scene and tile ids
come from counters kept in the `meta` table, which only grow.

Scene metadata beyond the fixed columns (manifest columns, STAC properties) becomes dynamic
`scenes` columns, added on first use with a type inferred from the python value (`schema` says
which type, and how a value is bound); filters run against the view `tile_view` (every tile with
every column of its scene). What the columns hold (`sarsearch columns`, a column's values with their
tile counts, the summary) is read by `columns` through this connection.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import duckdb
import numpy as np

from sarclip_search.errors import REBUILD, ArtifactMismatchError, CatalogError, FilterError, MetadataError
from sarclip_search.store.artifacts import check_catalog_schema
from sarclip_search.store.columns import ColumnInfo, column_info, column_values, scene_summary
from sarclip_search.store.filters import Predicate, check_predicate, unknown_column_message
from sarclip_search.store.schema import (
    BBOX_COLUMNS,
    FIXED_SCENE_COLUMNS,
    RESERVED_NAMES,
    SCHEMA_DDL,
    SCHEMA_VERSION,
    TILE_COLUMNS,
    TILE_VIEW_DDL,
    V2_SCENE_COLUMNS,
    V3_TILE_COLUMNS,
    V4_TILE_COLUMNS,
    fits_type,
    fixed_value,
    json_value,
    new_column_identifier,
    quote_identifier,
    sql_type_of,
    to_sql_value,
)

log = logging.getLogger(__name__)

QUERY_THREADS = 1  # DuckDB threads of a read-only catalog (see Catalog.__init__)
_UNKNOWN_COLUMN = re.compile(r'Referenced column "((?:[^"]|"")+)" not found')

_SCENES_PER_INSERT = 200  # scene rows per INSERT of held-back scenes (a statement's parameters stay few thousand)
_READ_ONLY_HINT = "open it without read_only to change it"


def _scene_values(scene: Mapping[str, object]) -> tuple[str, dict[str, object]]:
    """(path, column values) of a scene dict: `bbox` spread over the bbox_* columns, `scene_id` dropped."""
    path = scene.get("path")
    if not isinstance(path, str) or not path:
        raise MetadataError(f"expected a scene with a non-empty `path`, found {path!r}; pass the path relative to the archive")
    values: dict[str, object] = {k: v for k, v in scene.items() if k not in ("bbox", "scene_id")}
    bbox = scene.get("bbox")
    if bbox is not None:
        if len(bbox) != 4:  # type: ignore[arg-type]
            raise MetadataError(f"{path}: expected bbox as (minlon, minlat, maxlon, maxlat), found {bbox!r}")
        values.update(zip(BBOX_COLUMNS, bbox))  # type: ignore[arg-type]
    return path, values


# One statement for all pending tiles: parallel unnest of list parameters zips them row-wise.
_INSERT_TILES = (f"INSERT INTO tiles ({', '.join(map(quote_identifier, TILE_COLUMNS))}) SELECT "
                 + ", ".join(f"unnest(?::{sql_type}[])" for sql_type in TILE_COLUMNS.values()))


class Catalog:
    """The DuckDB catalog: ``Catalog(path)`` for a file, ``Catalog(None)`` in memory.

    ``read_only=True`` opens the file read-only (as queries do); write methods then raise
    CatalogError. Use as a context manager, or call `close`.
    """

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False) -> None:
        self.path = None if path is None else Path(path)
        self.read_only = read_only
        self._transaction_depth = 0
        # Caches of the scene column types and of the id counters, valid inside a transaction and
        # across committed ones; a rollback drops them (it may undo an ALTER or an id reservation).
        self._scene_types: dict[str, str] | None = None
        self._counters: dict[str, int] = {}
        self._dirty_counters: set[str] = set()
        self._scene_ids: dict[str, int] | None = None  # path -> scene_id
        self._view_columns: list[str] | None = None  # tile_view's columns, kept when read-only (`columns`)
        self._checked_predicates: set[str] = set()  # predicates `check_predicate` accepted (`tile_ids`)
        # Rows add_scene / add_tiles hold back inside a transaction and write in bulk (`_write_pending`) before
        # the next statement on the connection: one INSERT per batch instead of two per scene (~1 ms each).
        self._pending_scenes: list[tuple[tuple[str, ...], list[object]]] = []  # (columns, values) per scene
        self._pending_tiles: dict[str, list[object]] = {name: [] for name in TILE_COLUMNS}
        if self.path is None and read_only:
            raise CatalogError("an in-memory catalog cannot be read-only; pass the catalog file path")
        if read_only and not self.path.is_file():  # type: ignore[union-attr]
            raise CatalogError(f"expected a catalog at {self.path}, found nothing; build it with `sarsearch index`")
        # Read-only catalogs serve queries: id sets and a few rows, next to onnxruntime and FAISS threads on
        # the same cores. One DuckDB thread returns ids in table (id) order and does not wait on busy cores:
        # 1M tiles, 2 shared cores, a 50% filter's ids in 20 vs 60 ms, smaller ones 5-10% faster.
        config = {"threads": QUERY_THREADS} if read_only else {}
        try:
            self._db = duckdb.connect(":memory:" if self.path is None else str(self.path), read_only=read_only,
                                      config=config)
        except duckdb.Error as exc:
            raise CatalogError(
                f"could not open the catalog {self.path} ({str(exc).splitlines()[0]}); "
                "check that no other process is writing it and that it is a DuckDB file"
            ) from exc
        try:
            self._open_schema()
        except BaseException:
            self._db.close()
            raise

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        """The connection, once the rows add_scene / add_tiles hold back are written: every statement sees them."""
        if self._pending_scenes or self._pending_tiles["tile_id"]:
            self._write_pending()
        return self._db

    def _write_pending(self) -> None:
        """Insert the held-back scenes (one statement per run of scenes with the same columns), then tiles."""
        scenes, self._pending_scenes = self._pending_scenes, []
        tiles, self._pending_tiles = self._pending_tiles, {name: [] for name in TILE_COLUMNS}
        start = 0
        while start < len(scenes):
            names = scenes[start][0]
            end = start + 1
            while end < len(scenes) and scenes[end][0] == names and end - start < _SCENES_PER_INSERT:
                end += 1
            row_marks = "(" + ", ".join(["?"] * len(names)) + ")"
            # Values are bound parameters; the SQL text holds only quoted column names and placeholders.
            self._db.execute(
                f"INSERT INTO scenes ({', '.join(map(quote_identifier, names))}) VALUES "
                + ", ".join([row_marks] * (end - start)),
                [value for _, values in scenes[start:end] for value in values],
            )
            start = end
        if tiles["tile_id"]:
            # One statement for all tiles: parallel unnest of list parameters zips them row-wise.
            self._db.execute(_INSERT_TILES, list(tiles.values()))

    # ------------------------------------------------------------------ lifecycle

    def _open_schema(self) -> None:
        tables = {row[0] for row in self._con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        where = self.path or "memory"
        if "meta" not in tables:
            if tables:
                raise ArtifactMismatchError(f"{where} is a DuckDB file but not a sarclip-search catalog (no meta table); {REBUILD}")
            if self.read_only:
                raise CatalogError(f"expected a catalog at {where}, found an empty database; build it with `sarsearch index`")
            with self.transaction():
                self._con.execute(SCHEMA_DDL)
                self._con.execute(TILE_VIEW_DDL)
                self._con.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ["schema_version", str(SCHEMA_VERSION)], ["next_scene_id", "1"], ["next_tile_id", "1"]])
            log.info("created catalog schema v%d in %s", SCHEMA_VERSION, where)
            return
        found = check_catalog_schema(self.get_meta("schema_version"), where)
        if found != SCHEMA_VERSION and not self.read_only:
            self._upgrade_schema(found)

    def _upgrade_schema(self, found: int) -> None:
        """Bring an older catalog (see READABLE_SCHEMA_VERSIONS) to SCHEMA_VERSION, in one transaction."""
        with self.transaction():
            for name in V2_SCENE_COLUMNS:  # v1 -> v2
                self._con.execute(f"ALTER TABLE scenes ADD COLUMN IF NOT EXISTS {name} VARCHAR")
            if found < 3:  # v2 -> v3: the tile columns, filled by re-labelling every scene once (next `index`)
                for name, sql_type in V3_TILE_COLUMNS.items():
                    self._con.execute(f"ALTER TABLE tiles ADD COLUMN IF NOT EXISTS {name} {sql_type}")
            if found < 4:  # v3 -> v4: the tiles' mask fractions and dark proxy, filled by the same re-labelling
                for name, sql_type in V4_TILE_COLUMNS.items():
                    self._con.execute(f"ALTER TABLE tiles ADD COLUMN IF NOT EXISTS {name} {sql_type}")
                self._con.execute("UPDATE scenes SET metadata_hash = NULL")
                self._con.execute(TILE_VIEW_DDL)  # t.* is expanded when the view is made
            self._con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
        self._scene_types = None
        log.info("upgraded catalog %s from schema v%d to v%d", self.path or "memory", found, SCHEMA_VERSION)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT, or ROLLBACK on an exception. Nested uses join the outer transaction."""
        if self._transaction_depth:
            self._transaction_depth += 1
            try:
                yield
            finally:
                self._transaction_depth -= 1
            return
        self._con.execute("BEGIN TRANSACTION")
        self._transaction_depth = 1
        try:
            yield
        except BaseException:
            self._transaction_depth = 0
            self._rollback()
            raise
        try:
            # Counters are written once per transaction, not once per scene (each statement costs ~1 ms).
            for counter in sorted(self._dirty_counters):
                self._con.execute("UPDATE meta SET value = ? WHERE key = ?", [str(self._counters[counter]), counter])
            self._dirty_counters.clear()
            self._con.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._transaction_depth = 0

    def _rollback(self) -> None:
        """Roll back and drop the caches a rollback may invalidate (an ALTER, an id reservation)."""
        self._scene_types = None
        self._scene_ids = None
        self._counters.clear()
        self._dirty_counters.clear()
        self._pending_scenes = []
        self._pending_tiles = {name: [] for name in TILE_COLUMNS}
        self._db.execute("ROLLBACK")

    def _require_writable(self, action: str) -> None:
        if self.read_only:
            raise CatalogError(f"cannot {action}: catalog {self.path} is open read-only; {_READ_ONLY_HINT}")

    # ------------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        """The value stored under `key` in the meta table, or None."""
        if key in self._counters:
            return str(self._counters[key])
        row = self._con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Store `value` under `key` in the meta table."""
        self._require_writable("set meta")
        self._counters.pop(key, None)
        self._dirty_counters.discard(key)
        with self.transaction():
            if self.get_meta(key) is None:
                self._con.execute("INSERT INTO meta VALUES (?, ?)", [key, str(value)])
            else:
                self._con.execute("UPDATE meta SET value = ? WHERE key = ?", [str(value), key])

    def _take_ids(self, counter: str, n: int) -> int:
        """Reserve `n` ids from a meta counter; returns the first. Call inside a transaction.

        The new counter value is written to `meta` when the transaction commits.
        """
        if counter not in self._counters:
            self._counters[counter] = int(self.get_meta(counter) or 1)
        first = self._counters[counter]
        self._counters[counter] = first + n
        self._dirty_counters.add(counter)
        return first

    # ------------------------------------------------------------------ writes

    def _scene_column_types(self) -> dict[str, str]:
        """Column name -> DuckDB type of `scenes` (cached; `_prepare_column` keeps it current)."""
        if self._scene_types is not None:
            return self._scene_types
        rows = self._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = 'scenes' ORDER BY ordinal_position").fetchall()
        self._scene_types = {name: data_type for name, data_type in rows}
        return self._scene_types

    def _prepare_column(self, key: str, value: object, types: dict[str, str]) -> tuple[str, str]:
        """The existing (or newly added / widened) column for `key`; returns (name, type)."""
        by_lower = {name.lower(): name for name in types}  # DuckDB identifiers are case-insensitive
        name = by_lower.get(key.lower())
        if name is None:
            if key.lower() in RESERVED_NAMES:
                raise MetadataError(f"metadata field {key!r} clashes with a tile column of the catalog; rename it")
            sql_type = sql_type_of(value)
            self._con.execute(f"ALTER TABLE scenes ADD COLUMN {new_column_identifier(key)} {sql_type}")
            types[key] = sql_type
            log.debug("added scene column %r %s", key, sql_type)
            return key, sql_type
        sql_type = types[name]
        if fits_type(value, sql_type) or name in FIXED_SCENE_COLUMNS:
            return name, sql_type
        widened = "DOUBLE" if sql_type == "BIGINT" and fits_type(value, "DOUBLE") else "VARCHAR"
        self._con.execute(f"ALTER TABLE scenes ALTER COLUMN {quote_identifier(name)} TYPE {widened}")
        types[name] = widened
        log.info("widened scene column %r from %s to %s for value %r", name, sql_type, widened, value)
        return name, widened

    def _scene_id_by_path(self) -> dict[str, int]:
        """path -> scene_id of every scene (cached; add_scene / remove_scene keep it current)."""
        if self._scene_ids is None:
            self._scene_ids = dict(self._con.execute("SELECT path, scene_id FROM scenes").fetchall())
        return self._scene_ids

    def add_scene(self, scene: Mapping[str, object]) -> int:
        """Insert one scene and return its new scene_id.

        `path` is required (POSIX, relative to the archive root) and must not be in the catalog.
        `bbox` (minlon, minlat, maxlon, maxlat) fills the bbox_* columns. Keys that are not
        columns yet become dynamic columns typed from their value (int -> BIGINT, float ->
        DOUBLE, bool -> BOOLEAN, else VARCHAR; lists and dicts JSON-encoded). A value that does
        not fit an existing dynamic column widens it (BIGINT -> DOUBLE, otherwise -> VARCHAR).
        """
        self._require_writable("add a scene")
        path, values = _scene_values(scene)
        with self.transaction():
            known = self._scene_id_by_path()
            if path in known:
                raise CatalogError(f"scene {path!r} is already in the catalog; remove it first (remove_scene)")
            names, params = self._bind_scene_values(path, values)
            scene_id = self._take_ids("next_scene_id", 1)
            self._pending_scenes.append((("scene_id", *names), [scene_id, *params]))  # written by _write_pending
            known[path] = scene_id
        return scene_id

    def _bind_scene_values(self, path: str, values: Mapping[str, object]) -> tuple[list[str], list[object]]:
        """(column names, bound values) of a scene's values; adds or widens dynamic columns as needed."""
        types = self._scene_column_types()
        names: list[str] = []
        params: list[object] = []
        for key, value in values.items():
            if not isinstance(key, str):
                raise MetadataError(f"{path}: expected string metadata keys, found {key!r}")
            name, sql_type = self._prepare_column(key, value, types)
            if name in names:
                raise MetadataError(f"{path}: metadata fields {key!r} and {name!r} name the same column; keep one")
            names.append(name)
            if name in FIXED_SCENE_COLUMNS:
                params.append(fixed_value(name, value, path))
            else:
                params.append(to_sql_value(value, sql_type))
        return names, params

    def update_scene(self, scene: Mapping[str, object]) -> int:
        """Replace the metadata of a scene already in the catalog; returns its scene_id (unchanged).

        The scene keeps its id and its tiles (so their vectors stay valid); every column is set from
        `scene` as in `add_scene`, and a column `scene` does not name is cleared (a field removed from
        the manifest does not keep its old value). CatalogError if the path is not in the catalog.
        """
        self._require_writable("update a scene")
        path, values = _scene_values(scene)
        with self.transaction():
            scene_id = self._scene_id_by_path().get(path)
            if scene_id is None:
                raise CatalogError(f"scene {path!r} is not in the catalog; add it first (add_scene)")
            names, params = self._bind_scene_values(path, values)
            assignments = [(name, value) for name, value in zip(names, params) if name != "path"]
            given = {name for name, _ in assignments}
            assignments += [(name, None) for name in self._scene_column_types()
                            if name not in given and name not in ("scene_id", "path")]
            set_sql = ", ".join(f"{quote_identifier(name)} = ?" for name, _ in assignments)
            # scene_id and path (the keyed columns) are not assigned: DuckDB updates other columns in place
            self._con.execute(f"UPDATE scenes SET {set_sql} WHERE scene_id = ?",
                              [*(value for _, value in assignments), scene_id])
        return scene_id

    def set_scene_tiles_bbox(self, scene_id: int, bbox: tuple[float, float, float, float] | None) -> None:
        """Set the bbox (minlon, minlat, maxlon, maxlat in degrees, or None) of every tile of a scene.

        For scenes placed by their metadata (no CRS), whose tiles all claim the scene's box.
        """
        self._require_writable("update tiles")
        if bbox is not None and len(bbox) != 4:
            raise CatalogError(f"expected a tile bbox as (minlon, minlat, maxlon, maxlat) or None, found {bbox!r}")
        values = [None if v is None else float(v) for v in (bbox if bbox is not None else (None,) * 4)]
        with self.transaction():
            assignments = ", ".join(f"{name} = ?" for name in BBOX_COLUMNS)
            self._con.execute(f"UPDATE tiles SET {assignments} WHERE scene_id = ?", [*values, int(scene_id)])

    def scene_tile_windows(self, scene_id: int) -> list[tuple[int, list[int]]]:
        """(tile_id, [col_off, row_off, width, height]) of each tile of a scene, by tile id."""
        rows = self._con.execute(
            "SELECT tile_id, col_off, row_off, width, height FROM tiles WHERE scene_id = ? ORDER BY tile_id",
            [int(scene_id)]).fetchall()
        return [(int(row[0]), [int(v) for v in row[1:]]) for row in rows]

    def scene_tile_dark_fractions(self, scene_id: int) -> list[float | None] | None:
        """tile_dark_fraction of each tile of a scene, by tile id; None when any tile has none (never measured)."""
        rows = self._con.execute(
            "SELECT tile_dark_fraction FROM tiles WHERE scene_id = ? ORDER BY tile_id", [int(scene_id)]).fetchall()
        values = [row[0] for row in rows]
        return None if any(value is None for value in values) else [float(value) for value in values]

    def set_tile_objects(self, tiles: Sequence[tuple[int, Mapping[str, object]]]) -> None:
        """Rewrite tile_label, tile_n_objects and tile_objects of existing tiles: (tile_id, values) pairs."""
        self._require_writable("update tiles")
        if not tiles:
            return
        with self.transaction():
            self._con.executemany(
                "UPDATE tiles SET tile_label = ?, tile_n_objects = ?, tile_objects = ? WHERE tile_id = ?",
                [[values.get("tile_label"), values.get("tile_n_objects"), values.get("tile_objects"), int(tile_id)]
                 for tile_id, values in tiles])

    def set_tile_fractions(self, tiles: Sequence[tuple[int, Mapping[str, object]]]) -> None:
        """Rewrite the mask fractions and dark proxy (`V4_TILE_COLUMNS`) of existing tiles: (tile_id, values)
        pairs; a column absent from values becomes NULL."""
        self._require_writable("update tiles")
        if not tiles:
            return
        names = list(V4_TILE_COLUMNS)
        with self.transaction():
            self._con.executemany(
                f"UPDATE tiles SET {', '.join(f'{name} = ?' for name in names)} WHERE tile_id = ?",
                [[None if values.get(name) is None else float(values[name]) for name in names]  # type: ignore[arg-type]
                 + [int(tile_id)] for tile_id, values in tiles])

    def add_tiles(self, scene_id: int, tiles: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Insert the tiles of one scene; returns their new tile ids (int64, in input order).

        Each tile: col_off, row_off, width, height (pixels) and bbox (minlon, minlat, maxlon,
        maxlat in degrees, or None); optionally what it holds: tile_label, tile_n_objects, tile_objects
        (`ingest.objects.tile_object_columns`) and its mask fractions and dark proxy (`ingest.masks`); NULL when
        absent.
        """
        self._require_writable("add tiles")
        if not tiles:
            return np.empty(0, dtype=np.int64)
        columns: dict[str, list[object]] = {name: [] for name in list(TILE_COLUMNS)[2:]}
        for tile in tiles:
            try:
                for name in ("col_off", "row_off", "width", "height"):
                    columns[name].append(int(tile[name]))  # type: ignore[call-overload]
            except (KeyError, TypeError, ValueError) as exc:
                raise CatalogError(f"expected tiles with integer col_off, row_off, width, height; found {tile!r}") from exc
            bbox = tile.get("bbox")
            if bbox is not None and len(bbox) != 4:  # type: ignore[arg-type]
                raise CatalogError(f"expected a tile bbox as (minlon, minlat, maxlon, maxlat) or None, found {bbox!r}")
            for name, value in zip(BBOX_COLUMNS, bbox if bbox is not None else (None,) * 4):  # type: ignore[arg-type]
                columns[name].append(None if value is None else float(value))
            count = tile.get("tile_n_objects")
            columns["tile_n_objects"].append(None if count is None else int(count))  # type: ignore[call-overload]
            for name in ("tile_label", "tile_objects"):
                value = tile.get(name)
                columns[name].append(None if value is None else str(value))
            for name in V4_TILE_COLUMNS:
                value = tile.get(name)
                columns[name].append(None if value is None else float(value))  # type: ignore[arg-type]
        with self.transaction():
            if int(scene_id) not in self._scene_id_by_path().values():
                raise CatalogError(f"expected an existing scene_id, found {scene_id}; add the scene first")
            first = self._take_ids("next_tile_id", len(tiles))
            ids = np.arange(first, first + len(tiles), dtype=np.int64)
            pending = self._pending_tiles  # written by _write_pending, with the batch's other tiles
            pending["tile_id"].extend(ids.tolist())
            pending["scene_id"].extend([int(scene_id)] * len(tiles))
            for name, values in columns.items():
                pending[name].extend(values)
        return ids

    def remove_scene(self, path: str) -> np.ndarray:
        """Delete a scene and its tiles; returns the removed tile ids (int64, sorted; empty if absent)."""
        self._require_writable("remove a scene")
        with self.transaction():
            row = self._con.execute("SELECT scene_id FROM scenes WHERE path = ?", [path]).fetchone()
            if row is None:
                log.debug("remove_scene: %r is not in the catalog", path)
                return np.empty(0, dtype=np.int64)
            ids = self._con.execute(
                "SELECT tile_id FROM tiles WHERE scene_id = ? ORDER BY tile_id", [row[0]]).fetchall()
            self._con.execute("DELETE FROM tiles WHERE scene_id = ?", [row[0]])
            self._con.execute("DELETE FROM scenes WHERE scene_id = ?", [row[0]])
            self._scene_id_by_path().pop(path, None)
        return np.array([i for (i,) in ids], dtype=np.int64)

    # ------------------------------------------------------------------ reads

    def scene_states(self) -> dict[str, tuple[int, float, str, str | None]]:
        """path -> (size_bytes, mtime, content_hash, metadata_hash) of every scene, for incremental indexing."""
        # a read-only v1 catalog has no metadata_hash, a v2 or v3 one lacks tile columns the re-labelling fills:
        # every scene then counts as re-labelled once (the run's writable copy is upgraded, `_upgrade_schema`)
        tile_columns = {row[0] for row in self._con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tiles'").fetchall()}
        current = ("metadata_hash" in self._scene_column_types()
                   and {*V3_TILE_COLUMNS, *V4_TILE_COLUMNS} <= tile_columns)
        digest = "metadata_hash" if current else "NULL"
        rows = self._con.execute(f"SELECT path, size_bytes, mtime, content_hash, {digest} FROM scenes").fetchall()
        return {path: (size, mtime, content_hash, metadata) for path, size, mtime, content_hash, metadata in rows}

    def columns(self) -> list[str]:
        """The column names of `tile_view`, the table filters run against.

        Read-only catalogs (queries) keep them after the first call: binding the view costs ~1 ms, and
        their columns cannot change. A writable catalog asks again each time (add_scene may add one).
        """
        if self._view_columns is not None:
            return list(self._view_columns)
        names = [d[0] for d in self._con.execute("SELECT * FROM tile_view LIMIT 0").description]
        if self.read_only:
            self._view_columns = names
        return list(names)

    def tile_ids(self, where: str | Predicate | None = None, params: Sequence[object] | None = None) -> np.ndarray:
        """Sorted int64 ids of the tiles matching a SQL predicate over `tile_view` (all if None).

        A `filters.Predicate` (what `filters.build_predicate` returns, its --where checked there) runs as
        it is; predicate text is checked here first. A DuckDB error (unknown column, type mismatch)
        becomes a FilterError listing the columns.
        The ids come back as one numpy column and are sorted in numpy when DuckDB's (parallel) scan
        did not return them in order: 1M tiles, 50% matching, that is ~40 ms where `ORDER BY` and a
        Python tuple per row took ~500 ms (benchmarks/bench_retrieval.py --latency).
        """
        checked = isinstance(where, Predicate)
        if checked:
            where, params = where
        if where is None:
            sql, args = "SELECT tile_id FROM tiles", []
        else:
            if not checked and where not in self._checked_predicates:
                check_predicate(where, allow_parameters=True)
                self._checked_predicates.add(where)  # the same predicate text comes back with every query
            sql, args = f"SELECT tile_id FROM tile_view WHERE ({where})", list(params or [])
        try:
            ids = np.asarray(self._con.execute(sql, args).fetchnumpy()["tile_id"], dtype=np.int64)
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0]
            unknown = _UNKNOWN_COLUMN.search(message)
            if unknown is not None:
                raise FilterError(unknown_column_message(unknown.group(1).replace('""', '"'), self.columns())) from exc
            raise FilterError(
                f"the filter could not run on the catalog ({message}); "
                "check the columns and their types with `sarsearch columns`"
            ) from exc
        return ids if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()) else np.sort(ids)

    def fetch_numpy(self, sql: str, params: Sequence[object] | None = None) -> dict[str, np.ndarray]:
        """The columns of one read the store writes itself (`column_arrays`: filter columns in tile-id order) as
        numpy arrays (masked where NULL); CatalogError when DuckDB refuses it."""
        try:
            return self._con.execute(sql, list(params or [])).fetchnumpy()
        except duckdb.Error as exc:
            raise CatalogError(f"could not read the catalog {self.path or 'memory'} ({str(exc).splitlines()[0]})") from exc

    def fetch_tiles(self, ids: Sequence[int]) -> list[dict[str, object]]:
        """One dict per id, in the given order, with every `tile_view` column; unknown ids skipped.

        Values are JSON-serializable: times as ISO strings, NaN as None.
        """
        id_list = [int(i) for i in ids]
        if not id_list:
            return []
        cursor = self._con.execute(
            "SELECT * FROM tile_view WHERE tile_id IN (SELECT unnest(?::BIGINT[]))", [id_list])
        names = [d[0] for d in cursor.description]
        by_id = {}
        for row in cursor.fetchall():
            record = {name: json_value(value) for name, value in zip(names, row)}
            by_id[record["tile_id"]] = record
        return [dict(by_id[i]) for i in id_list if i in by_id]

    def counts(self) -> dict[str, int]:
        """{"scenes": n, "tiles": n}."""
        scenes = self._con.execute("SELECT count(*) FROM scenes").fetchone()[0]  # type: ignore[index]
        tiles = self._con.execute("SELECT count(*) FROM tiles").fetchone()[0]  # type: ignore[index]
        return {"scenes": int(scenes), "tiles": int(tiles)}

    def orphan_tiles(self) -> int:
        """Number of tiles whose scene is missing (0 in a consistent catalog)."""
        row = self._con.execute(
            "SELECT count(*) FROM tiles t LEFT JOIN scenes s USING (scene_id) WHERE s.scene_id IS NULL").fetchone()
        return int(row[0])  # type: ignore[index]

    def summary(self) -> dict[str, object]:
        """`counts` plus, for dataset, label and split (when present), scenes per value (`columns.scene_summary`).

        A missing value is counted under the key ``"null"``.
        """
        return {**self.counts(), **scene_summary(self._con, list(self._scene_column_types()))}

    def values(self, column: str, limit: int | None = None) -> list[tuple[object, int]]:
        """(value, tiles) of a `tile_view` column's distinct non-NULL values, most frequent first (ties by value).

        CatalogError if the catalog has no such column (`columns.column_values`).
        """
        return column_values(self._con, self.columns(), column, limit)

    def column_info(self, include_internal: bool = False) -> list[ColumnInfo]:
        """Every filterable `tile_view` column (all of them with `include_internal`), as `columns.column_info`
        describes it for `sarsearch columns`."""
        return column_info(self._con, include_internal)
