"""What the catalog's columns hold: the listing behind `sarsearch columns` (`ColumnInfo`), a column's values
with their tile counts (the source of the empty-result hints, `filters.unmatched_filters`), and the scenes
per dataset, label and split that `sarsearch info` shows.

Each function reads through the connection of a `Catalog`, which calls them (`Catalog.column_info`,
`Catalog.values`, `Catalog.summary`); counts are tiles, as filters select tiles, except the summary's scenes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sarclip_search.errors import CatalogError
from sarclip_search.store.filters import is_internal_column
from sarclip_search.store.schema import json_value, quote_identifier

if TYPE_CHECKING:
    import duckdb

SUMMARY_COLUMNS = ("dataset", "label", "split")
# `column_info` lists every value (with its tile count) of a column with at most this many distinct values
LOW_CARDINALITY = 30
_ORDERED_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "DATE",
                  "TIMESTAMP")


@dataclass
class ColumnInfo:
    """What a `tile_view` column holds, for `sarsearch columns` (counts are tiles, as filters select tiles)."""

    name: str
    type: str  # DuckDB type, e.g. VARCHAR, BIGINT, TIMESTAMP
    tiles: int  # tiles with a value (not NULL)
    distinct: int  # distinct values
    values: list[tuple[object, int]] | None = None  # (value, tiles), most frequent first: text/integer columns
    #                                                  with at most LOW_CARDINALITY distinct values
    minimum: object = None  # for numbers and times
    maximum: object = None
    internal: bool = False  # bookkeeping or a raster file tag: not offered as a filter (filters.is_internal_column)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "type": self.type, "tiles": self.tiles, "distinct": self.distinct,
            "values": None if self.values is None else [{"value": v, "tiles": n} for v, n in self.values],
            "min": self.minimum, "max": self.maximum, "internal": self.internal,
        }


def scene_summary(con: duckdb.DuckDBPyConnection, scene_columns: Sequence[str]) -> dict[str, dict[str, int]]:
    """Scenes per value of dataset, label and split (those of them among `scene_columns`), most first.

    A missing value is counted under the key ``"null"``.
    """
    result = {}
    for name in SUMMARY_COLUMNS:
        if name not in scene_columns:
            continue
        rows = con.execute(
            f"SELECT {quote_identifier(name)}, count(*) AS n FROM scenes GROUP BY 1 ORDER BY n DESC, 1").fetchall()
        result[name] = {("null" if value is None else str(value)): int(n) for value, n in rows}
    return result


def column_values(con: duckdb.DuckDBPyConnection, view_columns: Sequence[str], column: str,
                  limit: int | None = None) -> list[tuple[object, int]]:
    """(value, tiles) of a `tile_view` column's distinct non-NULL values, most frequent first (ties by value).

    `column` is matched case-insensitively against `view_columns`; CatalogError if none is it.
    """
    names = {name.lower(): name for name in view_columns}
    if column.lower() not in names:
        raise CatalogError(f"the catalog has no column {column!r}; see `sarsearch columns`")
    quoted = quote_identifier(names[column.lower()])
    sql = (f"SELECT {quoted}, count(*) AS n FROM tile_view WHERE {quoted} IS NOT NULL "
           f"GROUP BY 1 ORDER BY n DESC, 1" + (f" LIMIT {int(limit)}" if limit is not None else ""))
    return [(json_value(value), int(n)) for value, n in con.execute(sql).fetchall()]


def column_info(con: duckdb.DuckDBPyConnection, include_internal: bool = False) -> list[ColumnInfo]:
    """Every filterable `tile_view` column (all of them with `include_internal`): type, tiles with a value,
    distinct values, min/max of numbers and times, and every value with its tile count when a column has
    at most `LOW_CARDINALITY` distinct values. One scan of the view for the counts, one per listed column.
    """
    described = con.execute("DESCRIBE tile_view").fetchall()
    types = {row[0]: str(row[1]) for row in described}
    names = [name for name in types if include_internal or not is_internal_column(name)]
    if not names:
        return []
    aggregates = []
    for name in names:
        quoted = quote_identifier(name)
        ordered = types[name].split("(")[0] in _ORDERED_TYPES
        aggregates += [f"count({quoted})", f"count(DISTINCT {quoted})",
                       f"min({quoted})" if ordered else "NULL", f"max({quoted})" if ordered else "NULL"]
    row = con.execute(f"SELECT {', '.join(aggregates)} FROM tile_view").fetchone()
    infos = []
    for position, name in enumerate(names):
        tiles, distinct, low, high = row[4 * position: 4 * position + 4]  # type: ignore[index]
        info = ColumnInfo(name, types[name], int(tiles), int(distinct), minimum=json_value(low),
                          maximum=json_value(high), internal=is_internal_column(name))
        continuous = types[name].split("(")[0] in ("FLOAT", "DOUBLE", "DECIMAL", "DATE", "TIMESTAMP")
        if 0 < info.distinct <= LOW_CARDINALITY and not continuous:  # times and reals: their range says more
            info.values = column_values(con, list(types), name)
        infos.append(info)
    return infos
