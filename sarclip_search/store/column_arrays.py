"""The shortcut filters as a numpy mask over tile ids: the common filter columns kept as arrays beside the catalog.

A filtered query first turns its filters into the matching tile ids. Through DuckDB that joins every tile row
to its scene for every query (9-20 ms at 1M tiles). The shortcut filters (`--label`, `--dataset`, `--split`,
`--sensor`, `--polarization`, `--after/--before`, `--bbox`, `--min-objects`; the server's `label`, `split`,
`sensor`, `polarization` and `bbox`) only compare a few columns with constants, so `ColumnArrays` keeps those
columns as arrays in tile-id order and answers them with vectorized comparisons:

- text columns (dataset, label, split, sensor, "sar:polarizations", tile_label): dictionary codes (uint16, or
  uint32 past 65,535 values; 0 is NULL) and the dictionary with each value's DuckDB ``lower()``: an exact
  match is one code, `contains` (sensor, polarization: case-insensitive substring) a lookup table over the codes;
- datetime: int64 microseconds since the epoch (NULL: the smallest int64);
- the tile's bbox: float64 (4, n) (NULL: NaN; float64 as DuckDB compares, so no boundary moves);
- tile_n_objects: int64 (NULL: the smallest int64).

Every array is built from the catalog (one DuckDB scan in tile-id order per column) when a generation is
committed (`build_at_commit`, called by `IndexStore.new_generation` on the staged generation, its catalog
written and closed), saved into the generation's `filter_columns/` folder (atomic writes: the array, then its
JSON record) and memory-mapped from there by every engine of that generation: the first filtered query after
an `index` reads them instead of building them (1M tiles: 0.64 s of scans, 65 MiB). A build that fails at
commit is logged and does not fail the commit (the arrays are a cache of the catalog); a kill during it leaves
the staged generation uncommitted, like any kill before the switch. An engine still builds a column on first use
when it is missing (an index committed before this, a failed build). The record says what made it (format,
generation folder, catalog schema version, catalog file size and mtime, tile count); an array whose record does
not match the catalog it is asked for is refused and built again. Where the folder cannot be written (a
read-only index), the arrays stay in memory.

The result is the DuckDB predicate's, tile for tile (tests/store/test_column_arrays.py): NULLs never match,
`contains` lowers both sides as DuckDB does, and whatever the arrays could answer differently is left to
DuckDB: a ``--where``, a column that is not of the expected type (a numeric `label`), a non-ASCII `contains`
value (Python and DuckDB may lower it differently), NaN bbox values or infinite times in the catalog (DuckDB
orders NaN above every number), a value of another Python type. `match` returns None for those and the caller
runs the predicate in DuckDB.

`IdSetCache` keeps the id sets of recent filters (a small LRU keyed by the normalized filters: `filter_key`),
so paging and a page's repeated queries do not rebuild them; the arrays it hands out are read-only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from sarclip_search._fs import atomic_file, write_atomic
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.filters import BBox, Filters, _as_time
from sarclip_search.store.schema import BBOX_COLUMNS, quote_identifier

log = logging.getLogger(__name__)

FORMAT = 2  # of the saved arrays and their records (2: the bbox as (4, n))
FOLDER = "filter_columns"  # inside a generation folder
# Filters field -> (catalog column, match): what the arrays answer (the shortcut options, store/filters.py).
EXACT_FIELDS = {"label": "label", "dataset": "dataset", "split": "split"}
CONTAINS_FIELDS = {"sensor": "sensor", "polarization": "sar:polarizations"}
TEXT_COLUMNS = ("dataset", "label", "split", "sensor", "sar:polarizations", "tile_label")
COLUMNS = ("ids", *TEXT_COLUMNS, "datetime", "bbox", "tile_n_objects")  # every array `match` may read
NULL_INT = np.iinfo(np.int64).min  # NULL in the int64 arrays (below every time and count DuckDB holds)
EPOCH = datetime(1970, 1, 1)
_TEXT_TYPES = ("VARCHAR",)
_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")
# File stems of the arrays (column names may hold characters file names should not).
_STEMS = {"ids": "ids", "datetime": "datetime", "bbox": "bbox", "tile_n_objects": "tile_n_objects",
          **{name: "text_" + name.replace(":", "_") for name in TEXT_COLUMNS}}
STAGING_SUFFIX = ".tmp"  # of a generation being written (store/layout.py)
FEW_CODES = 8  # `contains` matching at most this many values compares codes; more: a lookup table
ENV_SWITCH = "SARSEARCH_FILTER_COLUMNS"  # "0": every filter through DuckDB, no id-set cache (before / after runs)


def enabled() -> bool:
    """False when `SARSEARCH_FILTER_COLUMNS=0` asks for the DuckDB path (benchmarks' "before")."""
    return os.environ.get(ENV_SWITCH, "1").strip() not in ("0", "false", "no", "off")


class _Unanswerable(Exception):
    """The arrays cannot answer this filter exactly as DuckDB would: the caller runs the predicate."""


class _Text:
    """A dictionary-encoded text column: codes (0 = NULL) and values (code i is values[i - 1])."""

    def __init__(self, codes: np.ndarray, values: list[str], lowered: list[str]) -> None:
        self.codes = codes
        self.values = values
        self.lowered = lowered
        self._code = {value: code for code, value in enumerate(values, start=1)}

    def equal(self, value: str) -> np.ndarray:
        code = self._code.get(value)
        return np.zeros(len(self.codes), bool) if code is None else self.codes == code

    def contains(self, value: str) -> np.ndarray:
        if not value.isascii():  # Python and DuckDB may lower other letters differently
            raise _Unanswerable
        needle = value.lower()
        table = np.zeros(len(self.values) + 1, bool)
        table[1:] = [needle in lowered for lowered in self.lowered]
        matching = np.flatnonzero(table)
        if len(matching) == 0:
            return np.zeros(len(self.codes), bool)
        if len(matching) <= FEW_CODES:  # one pass per code: 1M uint16 codes ~0.2 ms each, the table lookup 2.5 ms
            mask = self.codes == matching[0]
            for code in matching[1:]:
                mask |= self.codes == code
            return mask
        return table[self.codes]


class ColumnArrays:
    """The filter columns of one catalog (one committed generation) as arrays; see the module docstring.

    `folder`: where the arrays are saved and found (a generation's `filter_columns/`), None to keep them in memory.
    """

    def __init__(self, catalog: Catalog, folder: Path | None, stamp: dict[str, Any]) -> None:
        self.catalog = catalog
        self.folder = folder
        self.stamp = stamp
        self._arrays: dict[str, Any] = {}  # column -> its arrays (or None: not answerable)
        self._types: dict[str, tuple[str, str]] | None = None  # tile_view column (lower case) -> (name, DuckDB type)

    @classmethod
    def for_generation(cls, generation_path: Path, catalog: Catalog) -> ColumnArrays:
        """The arrays of a committed generation's catalog, saved in (and read from) its `filter_columns/`."""
        stat = Path(catalog.path).stat() if catalog.path is not None else None
        stamp = {
            "format": FORMAT,
            "generation": Path(generation_path).name.removesuffix(STAGING_SUFFIX),  # the name it is committed as
            "schema_version": catalog.get_meta("schema_version"),
            "catalog_bytes": None if stat is None else stat.st_size,
            "catalog_mtime_ns": None if stat is None else stat.st_mtime_ns,
        }
        return cls(catalog, Path(generation_path) / FOLDER, stamp)

    # --- matching -------------------------------------------------------------------------------------

    def match(self, filters: Filters) -> np.ndarray | None:
        """Sorted int64 ids of the tiles matching `filters`, or None when the arrays cannot answer them exactly
        (a ``--where``, an unexpected column type ...: run the predicate in DuckDB).

        Call it after `filters.build_predicate` accepted the same filters: missing columns and malformed
        values are its errors, and with no filter given there is nothing to match.
        """
        if filters.where is not None and filters.where.strip():
            return None
        try:
            mask = self._mask(filters)
        except _Unanswerable:
            return None
        ids = np.asarray(self._column("ids"))  # a plain array (view) of the memory-mapped file
        return ids if mask is None else ids[mask]

    def _mask(self, filters: Filters) -> np.ndarray | None:
        mask: np.ndarray | None = None

        def both(part: np.ndarray) -> None:  # every part is a new array: the AND may go into the first
            nonlocal mask
            if mask is None:
                mask = part
            else:
                mask &= part

        for field_name, column in EXACT_FIELDS.items():
            value = getattr(filters, field_name)
            if value is not None:
                both(self._text(column, value).equal(value))
        for field_name, column in CONTAINS_FIELDS.items():
            value = getattr(filters, field_name)
            if value is not None:
                both(self._text(column, value).contains(value))
        if filters.min_objects is not None:
            threshold = int(filters.min_objects)
            if not NULL_INT < threshold <= np.iinfo(np.int64).max:
                raise _Unanswerable
            both(self._required("tile_n_objects") >= threshold)  # NULL (NULL_INT) is below any threshold
        if filters.bbox is not None:
            minlon, minlat, maxlon, maxlat = BBox.of(filters.bbox)
            box = self._required("bbox")  # NaN where NULL: every comparison False, as NULL excludes in SQL
            part = box[0] <= maxlon
            part &= box[2] >= minlon
            part &= box[1] <= maxlat
            part &= box[3] >= minlat
            both(part)
        if filters.after is not None:
            both(self._required("datetime") >= _microseconds(_as_time(filters.after)))  # NULL_INT < any time
        if filters.before is not None:
            times = self._required("datetime")
            part = times < _microseconds(_as_time(filters.before))
            part &= times != NULL_INT
            both(part)
        return mask

    def _text(self, column: str, value: object) -> _Text:
        if not isinstance(value, str):  # DuckDB would cast the column or the value: leave it to DuckDB
            raise _Unanswerable
        return self._required(column)

    def _required(self, column: str) -> Any:
        arrays = self._column(column)
        if arrays is None:
            raise _Unanswerable
        return arrays

    # --- building, saving, loading --------------------------------------------------------------------

    def _column(self, column: str) -> Any:
        if column not in self._arrays:
            self._arrays[column] = self._load(column)
            if self._arrays[column] is _MISSING:
                self._arrays[column] = self._build(column)
        return self._arrays[column]

    def _type_of(self, column: str) -> tuple[str, str] | None:
        """(name as the catalog spells it, DuckDB type) of a tile_view column, None when there is none."""
        if self._types is None:
            # DESCRIBE binds the view now (information_schema keeps the scene columns it had when it was made)
            rows = self.catalog.fetch_numpy("DESCRIBE SELECT * FROM tile_view")
            self._types = {str(name).lower(): (str(name), str(kind))
                           for name, kind in zip(rows["column_name"], rows["column_type"])}
        return self._types.get(column.lower())

    def _build(self, column: str) -> Any:
        """Build one column's arrays from the catalog (None when it cannot be answered) and save them."""
        record: dict[str, Any] = {"column": column}
        arrays: Any = None
        if column == "ids":
            arrays = self._scan("tile_id")
        elif column in TEXT_COLUMNS:
            arrays, record = self._build_text(column, record)
        elif column == "datetime":
            found = self._type_of("datetime")
            if found is not None and found[1] == "TIMESTAMP":
                name = quote_identifier(found[0])
                odd = self._count(f"{name} IS NOT NULL AND NOT isfinite({name})")
                if odd == 0:  # infinite times: DuckDB compares them, epoch_us() has none
                    arrays = self._scan(f"coalesce(epoch_us({name}), ?)", [int(NULL_INT)])
                else:
                    record["unanswerable"] = f"{odd} infinite times"
        elif column == "tile_n_objects":
            found = self._type_of("tile_n_objects")
            if found is not None and found[1] in _INTEGER_TYPES:
                arrays = self._scan(f"coalesce(CAST({quote_identifier(found[0])} AS BIGINT), ?)", [int(NULL_INT)])
        elif column == "bbox":
            found = [self._type_of(name) for name in BBOX_COLUMNS]
            if all(f is not None and f[1] == "DOUBLE" for f in found):
                names = [quote_identifier(f[0]) for f in found]  # type: ignore[index]
                odd = self._count(" OR ".join(f"isnan({name})" for name in names))
                if odd == 0:  # NaN orders above every number in DuckDB, compares False in numpy
                    parts = [self._scan(f"coalesce({name}, 'NaN'::DOUBLE)") for name in names]
                    arrays = np.ascontiguousarray(np.stack(parts), dtype=np.float64)  # (4, n): each one contiguous
                else:
                    record["unanswerable"] = f"{odd} NaN bbox values"
        else:
            raise ValueError(f"no filter column {column!r}")
        if arrays is None and "unanswerable" not in record:
            record["unanswerable"] = "no such column, or not of the type the shortcut filters compare"
        self._save(column, arrays, record)
        return arrays

    def _build_text(self, column: str, record: dict[str, Any]) -> tuple[_Text | None, dict[str, Any]]:
        found = self._type_of(column)
        if found is None or found[1] not in _TEXT_TYPES:
            return None, record
        name = quote_identifier(found[0])
        rows = self.catalog.fetch_numpy(
            f"SELECT DISTINCT {name} AS v, lower({name}) AS l FROM tile_view WHERE {name} IS NOT NULL ORDER BY v")
        values, lowered = [str(v) for v in rows["v"]], [str(v) for v in rows["l"]]
        dtype = np.uint16 if len(values) < np.iinfo(np.uint16).max else np.uint32
        codes = self.catalog.fetch_numpy(
            f"SELECT coalesce(d.code, 0) AS code FROM tile_view t LEFT JOIN "
            f"(SELECT unnest(?::VARCHAR[]) AS v, unnest(?::UINTEGER[]) AS code) d ON t.{name} = d.v "
            "ORDER BY t.tile_id", [values, list(range(1, len(values) + 1))])["code"]
        record.update(values=values, lowered=lowered)
        return _Text(np.asarray(codes, dtype=dtype), values, lowered), record

    def _scan(self, expression: str, params: list[object] | None = None) -> np.ndarray:
        """One value per tile_view row, in tile-id order."""
        found = self.catalog.fetch_numpy(f"SELECT {expression} AS x FROM tile_view ORDER BY tile_id", params)["x"]
        return np.ascontiguousarray(np.ma.getdata(found))

    def _count(self, condition: str) -> int:
        return int(self.catalog.fetch_numpy(f"SELECT count(*) AS n FROM tile_view WHERE {condition}")["n"][0])

    def _rows(self) -> int:
        return len(self._column("ids"))

    def _paths(self, column: str) -> tuple[Path, Path]:
        assert self.folder is not None
        stem = _STEMS[column]
        return self.folder / f"{stem}.npy", self.folder / f"{stem}.json"

    def _save(self, column: str, arrays: Any, record: dict[str, Any]) -> None:
        if self.folder is None:
            return
        data = arrays.codes if isinstance(arrays, _Text) else arrays
        record = {**record, "stamp": self.stamp, "rows": None if data is None else data.shape[-1]}
        array_path, record_path = self._paths(column)
        try:
            self.folder.mkdir(exist_ok=True)
            if data is not None:
                with atomic_file(array_path) as temporary, open(temporary, "wb") as stream:
                    np.save(stream, data, allow_pickle=False)
            write_atomic(record_path, json.dumps(record).encode())  # last: the record names a complete array
        except OSError as exc:  # a read-only index, or a generation a writer has just removed
            log.info("filter columns of %s kept in memory (%s)", self.folder.parent, exc)

    def _load(self, column: str) -> Any:
        """The saved arrays of `column` when their record matches this catalog, else _MISSING."""
        if self.folder is None:
            return _MISSING
        array_path, record_path = self._paths(column)
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            return _MISSING
        if record.get("stamp") != self.stamp or record.get("column") != column:
            log.info("filter column %s in %s was made from another catalog; building it again", column, self.folder)
            return _MISSING
        if "unanswerable" in record:
            return None
        try:
            data = np.load(array_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return _MISSING
        rows = record.get("rows")
        if data.shape[-1] != rows or (column != "ids" and rows != self._rows()):
            log.info("filter column %s in %s does not fit the catalog; building it again", column, self.folder)
            return _MISSING
        if column in TEXT_COLUMNS:
            return _Text(data, list(record["values"]), list(record["lowered"]))
        return data


_MISSING = object()


def build_at_commit(generation_path: Path, catalog_path: Path) -> bool:
    """Build and save every filter column of a staged generation (`generation_path`, its catalog at `catalog_path`
    written and closed), so that its engines map them instead of building them on their first filtered query.

    False, logged, when they could not be built (an unreadable catalog, a full disk ...): the commit goes on and
    an engine builds what is missing on first use. Nothing to do (False) with the arrays switched off
    (`SARSEARCH_FILTER_COLUMNS=0`) or without a catalog (an empty file stands for one in some tools' commits).
    """
    catalog_path = Path(catalog_path)
    if not enabled() or not catalog_path.is_file() or catalog_path.stat().st_size == 0:
        return False
    started = time.perf_counter()
    try:
        with Catalog(catalog_path, read_only=True) as catalog:
            arrays = ColumnArrays.for_generation(generation_path, catalog)
            for column in COLUMNS:
                arrays._column(column)
    except Exception as exc:  # noqa: BLE001 - a cache of the catalog: the commit must not fail for it
        log.warning("filter columns of %s not built at commit (%s: %s); the first filtered query builds them",
                    generation_path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return False
    log.info("filter columns of %s built in %.2f s", generation_path, time.perf_counter() - started)
    return True


def _microseconds(moment: datetime) -> int:
    """A naive UTC datetime as DuckDB's TIMESTAMP holds it: microseconds since the epoch."""
    return (moment - EPOCH) // timedelta(microseconds=1)


# --- id sets of recent filters ----------------------------------------------------------------------------

CACHE_ENTRIES = 32  # id sets kept per engine
CACHE_BYTES = 64 * 2**20  # and at most this many bytes of them (a 50% filter at 1M tiles: 4 MB)


def filter_key(filters: Filters) -> tuple | None:
    """The filters as a hashable key in which equal filters look alike (a BBox and a tuple, a date as text and
    as a datetime), or None when they cannot be keyed (let `build_predicate` say what is wrong with them)."""
    try:
        texts = (filters.where, filters.label, filters.dataset, filters.split, filters.sensor, filters.polarization)
        key = (
            *((type(value).__name__, value) for value in texts),  # 1, 1.0 and True are equal keys, not equal filters
            None if filters.bbox is None else tuple(BBox.of(filters.bbox)),
            None if filters.after is None else _as_time(filters.after),
            None if filters.before is None else _as_time(filters.before),
            None if filters.min_objects is None else int(filters.min_objects),
        )
        hash(key)
    except Exception:  # noqa: BLE001 - a FilterError, an unhashable value ...: not cached; build_predicate reports it
        return None
    return key


class IdSetCache:
    """Least recently used id sets by `filter_key`, bounded by entries and bytes; arrays are made read-only."""

    def __init__(self, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._sets: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple | None) -> np.ndarray | None:
        if key is None or key not in self._sets:
            self.misses += key is not None
            return None
        self.hits += 1
        self._sets.move_to_end(key)
        return self._sets[key]

    def put(self, key: tuple | None, ids: np.ndarray) -> np.ndarray:
        """Keep `ids` under `key` (when it fits) and return it read-only."""
        ids = ids if not ids.flags.writeable else _read_only(ids)
        if key is None or self.entries <= 0 or ids.nbytes > self.max_bytes:
            return ids
        if key in self._sets:
            self._bytes -= self._sets.pop(key).nbytes
        self._sets[key] = ids
        self._bytes += ids.nbytes
        while len(self._sets) > self.entries or self._bytes > self.max_bytes:
            self._bytes -= self._sets.popitem(last=False)[1].nbytes
        return ids

    def clear(self) -> None:
        self._sets.clear()
        self._bytes = 0


def _read_only(ids: np.ndarray) -> np.ndarray:
    view = ids.view()
    view.flags.writeable = False
    return view
