"""The catalog's schema, written once: its version, tables, columns, the view filters run against,
how a column name is quoted, and how values cross it: the type a new dynamic column takes, a python
value bound into a column (a time into the catalog's TIMESTAMP), a DuckDB value as JSON.

`Catalog` (catalog.py) creates and upgrades it; filters, the indexer, the engine and the exports take
the column names from here.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np

from sarclip_search.errors import MetadataError

SCHEMA_VERSION = 4  # v2: scenes.metadata_hash and scenes.footprint_source; v3: the tiles' own objects and label;
# v4: the tiles' water / oil / look-alike fractions from masks and the dark-water proxy
# Older schemas this version still reads (queries) and upgrades when it opens them writable (`index`):
# v1 lacks the two v2 columns, v2 the three v3 tile columns, v3 the four v4 ones; they are added empty, and the
# next `index` run fills them by re-labelling every scene once (raster headers, masks and, for v4, each tile's
# pixels read again; nothing re-embedded).
READABLE_SCHEMA_VERSIONS = (1, 2, 3, SCHEMA_VERSION)
V2_SCENE_COLUMNS = ("metadata_hash", "footprint_source")  # what the v1 -> v2 upgrade adds (VARCHAR)
# What each tile holds (ingest/objects.py): its label (the scene's only when it holds an object of it, else
# `no_object`), how many boxed objects have their centre in it and their boxes in its pixels
# (`class:xmin,ymin,xmax,ymax;...`). NULL where the scene's metadata does not say.
V3_TILE_COLUMNS: dict[str, str] = {"tile_label": "VARCHAR", "tile_n_objects": "INTEGER", "tile_objects": "VARCHAR"}
# What each tile holds in area (ingest/masks.py): the shares of its pixels that its scene's mask calls water,
# oil spill and look-alike (NULL without a mask), and the dark-water proxy measured on its pixels (every tile).
V4_TILE_COLUMNS: dict[str, str] = dict.fromkeys(
    ("tile_water_fraction", "tile_oil_fraction", "tile_lookalike_fraction", "tile_dark_fraction"), "DOUBLE")

# A footprint, of a scene and of a tile: WGS84 degrees, minlon, minlat, maxlon, maxlat.
BBOX_COLUMNS = ("bbox_minlon", "bbox_minlat", "bbox_maxlon", "bbox_maxlat")
# Scene columns that tiles have too; tile_view shows the scene's as scene_<name> (scene_width, scene_bbox_minlon ...).
SCENE_COLUMNS_RENAMED_IN_VIEW = ("width", "height", *BBOX_COLUMNS)
SCENE_BBOX_COLUMNS = tuple(f"scene_{name}" for name in BBOX_COLUMNS)

# The fixed columns of `scenes` and their DuckDB types. Scene metadata beyond them (manifest columns, STAC
# properties) becomes dynamic columns, added by `Catalog.add_scene` with a type inferred from the value.
FIXED_SCENE_COLUMNS: dict[str, str] = {
    "scene_id": "BIGINT",
    "path": "VARCHAR",  # POSIX path relative to the archive root
    "abs_path": "VARCHAR",
    "size_bytes": "BIGINT",
    "mtime": "DOUBLE",  # seconds since the epoch
    "content_hash": "VARCHAR",
    "width": "INTEGER",  # pixels
    "height": "INTEGER",  # pixels
    "band_count": "INTEGER",
    "dtype": "VARCHAR",
    "scale": "VARCHAR",  # linear power / amplitude / dB
    "crs": "VARCHAR",
    **dict.fromkeys(BBOX_COLUMNS, "DOUBLE"),
    "datetime": "TIMESTAMP",  # acquisition time, UTC
    "metadata_hash": "VARCHAR",  # metadata.metadata_hash of the manifest row + sidecar (re-labelling)
    "footprint_source": "VARCHAR",  # where the bbox comes from: raster, stac, manifest_point (or NULL)
}
TILE_COLUMNS: dict[str, str] = {
    "tile_id": "BIGINT",  # the FAISS id
    "scene_id": "BIGINT",
    "col_off": "INTEGER", "row_off": "INTEGER", "width": "INTEGER", "height": "INTEGER",  # pixel window in the scene
    **dict.fromkeys(BBOX_COLUMNS, "DOUBLE"),
    **V3_TILE_COLUMNS,
    **V4_TILE_COLUMNS,
}
_CONSTRAINTS = {("scenes", "scene_id"): "PRIMARY KEY", ("scenes", "path"): "UNIQUE", ("tiles", "tile_id"): "PRIMARY KEY"}
# Names a scene column may not take, because tile_view already uses them for tile columns.
RESERVED_NAMES = frozenset({"tile_id", "col_off", "row_off", *V3_TILE_COLUMNS, *V4_TILE_COLUMNS} | {f"scene_{name}" for name in SCENE_COLUMNS_RENAMED_IN_VIEW})


def quote_identifier(name: str) -> str:
    """A name as a DuckDB identifier: double-quoted, with ``"`` doubled (any text is safe)."""
    return '"' + name.replace('"', '""') + '"'


def _create_table(table: str, columns: dict[str, str]) -> str:
    parts = [" ".join(filter(None, (quote_identifier(name), sql_type, _CONSTRAINTS.get((table, name)))))
             for name, sql_type in columns.items()]
    return f"CREATE TABLE {table} ({', '.join(parts)});"


# The whole schema of a new catalog (dynamic scene columns are added with ALTER TABLE).
SCHEMA_DDL = "\n".join([
    "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);",
    _create_table("scenes", FIXED_SCENE_COLUMNS),
    _create_table("tiles", TILE_COLUMNS),
])

# tile_view: every tile with every column of its scene. Tile columns win; the scene's columns of the same
# name are exposed as scene_<name>. `s.*` is expanded at query time, so dynamic columns appear without a rebuild.
TILE_VIEW_DDL = f"""
CREATE OR REPLACE VIEW tile_view AS
SELECT t.*,
       {', '.join(f's.{name} AS scene_{name}' for name in SCENE_COLUMNS_RENAMED_IN_VIEW)},
       s.* EXCLUDE (scene_id, {', '.join(SCENE_COLUMNS_RENAMED_IN_VIEW)})
FROM tiles t JOIN scenes s USING (scene_id)
"""


def parse_datetime(value: object) -> datetime | None:
    """A naive UTC datetime (what the catalog's TIMESTAMP holds) from a datetime, date, ISO 8601 string or
    TIFF ``YYYY:MM:DD HH:MM:SS``.

    Returns None for None / ''. Raises ValueError if the value cannot be read as a time.
    A date alone (``2019-09-17``) is its midnight; `metadata.is_date_only` tells such values apart.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        tiff = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}:\d{2}:\d{2})", text)
        if tiff:
            text = f"{tiff[1]}-{tiff[2]}-{tiff[3]}T{tiff[4]}"
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a time: {value!r}")  # noqa: TRY004 - callers catch ValueError for any unreadable time
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


# ------------------------------------------------------------------ values

def new_column_identifier(name: str) -> str:
    """A metadata key that is to become a scene column, as a quoted identifier (`quote_identifier`).

    Raises MetadataError for names that cannot be columns (empty, too long, control characters).
    """
    if not isinstance(name, str) or not name.strip() or len(name) > 255 or any(ord(c) < 32 for c in name):
        raise MetadataError(
            f"expected a column name of 1-255 printable characters, found {name!r}; rename that metadata field"
        )
    return quote_identifier(name)


def sql_type_of(value: object) -> str:
    """The DuckDB type of a new dynamic column, from its first value."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, (int, np.integer)):
        return "BIGINT"
    if isinstance(value, (float, np.floating)):
        return "DOUBLE"
    return "VARCHAR"


def fits_type(value: object, sql_type: str) -> bool:
    """Whether a python value fits a dynamic column of `sql_type` as it is (else the column is widened)."""
    if value is None or sql_type == "VARCHAR":
        return True
    if sql_type == "BOOLEAN":
        return isinstance(value, bool)
    if sql_type == "BIGINT":
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and -(2**63) <= int(value) < 2**63
    if sql_type == "DOUBLE":
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return False


def to_sql_value(value: object, sql_type: str) -> object:
    """A python value ready to bind into a column of `sql_type`."""
    if value is None:
        return None
    if sql_type == "VARCHAR":
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple, dict, bool)):
            return json.dumps(value, default=str)
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def fixed_value(name: str, value: object, path: str) -> object:
    """Check and convert a value for one of the fixed scene columns (MetadataError naming `path` if it does not fit)."""
    if value is None:
        return None
    sql_type = FIXED_SCENE_COLUMNS[name]
    if sql_type == "TIMESTAMP":
        try:
            return parse_datetime(value)
        except ValueError as exc:
            raise MetadataError(f"{path}: expected `datetime` as ISO 8601, found {value!r}; fix that metadata") from exc
    if sql_type in ("BIGINT", "INTEGER"):
        ok = fits_type(value, "BIGINT") or (isinstance(value, float) and value.is_integer())
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value, ok = int(value), True
        if not ok:
            raise MetadataError(f"{path}: expected an integer for `{name}`, found {value!r}; fix that metadata")
        return int(value)  # type: ignore[call-overload]
    if sql_type == "DOUBLE":
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise MetadataError(f"{path}: expected a number for `{name}`, found {value!r}; fix that metadata") from exc
    return to_sql_value(value, "VARCHAR")


def json_value(value: object) -> object:
    """A value from DuckDB as something `json.dumps` accepts (and strict JSON readers too)."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value
