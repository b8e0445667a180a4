"""User filters -> one safe SQL predicate over the catalog's `tile_view`.

Shortcut filters (`--label`, `--bbox`, `--after` ...) become SQL with ``?`` parameters; their
values never enter the SQL text. A raw ``--where`` predicate is accepted only if DuckDB parses
``SELECT 1 FROM tile_view WHERE (<where>)`` as exactly that one SELECT, with no subquery, no
table function and no ``?``. Queries also run on a read-only connection, a second line of defence.

Each value is parsed once, into its type: `--bbox` text into a `BBox` (`parse_bbox`), dates into
datetimes (`parse_date`); `build_predicate` takes those as they are (and parses what a Python caller
gave as text or a plain tuple), checks the ``--where`` and returns a `Predicate`, which
`Catalog.tile_ids` runs without checking it again.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Self

import duckdb

from sarclip_search.errors import FilterError
from sarclip_search.store.schema import BBOX_COLUMNS, SCENE_BBOX_COLUMNS, parse_datetime, quote_identifier

WHERE_EXAMPLE = "\"label = 'T72' AND split = 'test'\""
BBOX_EXAMPLE = "--bbox 5.9,45.8,10.5,47.8 (minlon,minlat,maxlon,maxlat in degrees)"
DATE_EXAMPLE = "2021-06-30 or 2021-06-30T12:00:00Z"

_SENTINEL_NAME = "__sarclip_predicate_end__"
_SENTINEL = f'"{_SENTINEL_NAME}"'
# Words that start statements which write, attach or read files; never part of a predicate.
_STATEMENT_WORDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER", "ATTACH", "DETACH", "COPY", "EXPORT",
    "IMPORT", "INSTALL", "LOAD", "PRAGMA", "SET", "RESET", "CALL", "CHECKPOINT", "VACUUM", "TRUNCATE",
    "GRANT", "REVOKE", "USE", "BEGIN", "COMMIT", "ROLLBACK", "EXECUTE", "PREPARE",
})
# A parser-only connection for validating predicates: no tables, never touches a file. One thread at a time
# (DuckDB connections are not thread-safe; `sarsearch serve` checks filters from several threads).
_parser: duckdb.DuckDBPyConnection | None = None
_parser_lock = threading.Lock()

# Catalog columns kept for the catalog's own bookkeeping (ids, pixel offsets, file state, hashes, the bbox
# columns that --bbox reads). `--where` still accepts them; `sarsearch columns` and suggestions leave them out.
INTERNAL_COLUMNS = frozenset({
    "tile_id", "scene_id", "col_off", "row_off", "abs_path", "size_bytes", "mtime", "content_hash",
    "metadata_hash", "footprint_source",
    *BBOX_COLUMNS, *SCENE_BBOX_COLUMNS,
})
# Raster tags that reach the catalog (metadata.py keeps the ones it does not know) describe the file, not the
# scene: GDAL metadata items are SCREAMING_SNAKE_CASE (OVR_RESAMPLING_ALG, AREA_OR_POINT), EXIF tags EXIF_*.
_RASTER_TAG = re.compile(r"(?:EXIF_|TIFFTAG_|GDAL_).*|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# Shortcut options -> (catalog column, "exact" or "contains" match), as `build_predicate` applies them.
SHORTCUT_COLUMNS: dict[str, tuple[str, str]] = {
    "--label": ("label", "exact"),
    "--dataset": ("dataset", "exact"),
    "--split": ("split", "exact"),
    "--sensor": ("sensor", "contains"),
    "--polarization": ("sar:polarizations", "contains"),
}
_SUGGESTION_CUTOFF = 0.7  # difflib similarity a "did you mean" needs ("lable" -> label, not scale)


@dataclass(frozen=True)
class Filters:
    """Metadata filters of a search; all given filters must hold (AND)."""

    where: str | None = None  # raw SQL predicate over tile_view columns (--where)
    label: str | None = None  # exact match on `label`
    dataset: str | None = None  # exact match on `dataset`
    split: str | None = None  # exact match on `split`
    sensor: str | None = None  # case-insensitive substring of `sensor`
    polarization: str | None = None  # case-insensitive substring of "sar:polarizations"
    bbox: tuple[float, float, float, float] | None = None  # minlon,minlat,maxlon,maxlat (a BBox or any 4 numbers); tiles whose bbox intersects it
    after: str | datetime | None = None  # ISO date/time or `parse_date`'s datetime; datetime >= after (inclusive)
    before: str | datetime | None = None  # ISO date/time or `parse_date`'s datetime; datetime < before (exclusive)
    min_objects: int | None = None  # tiles holding at least this many boxed objects (tile_n_objects)


class Predicate(NamedTuple):
    """One SQL predicate over `tile_view` with its ``?`` parameters, as `build_predicate` made it (``sql`` None:
    no filter). Its ``--where`` part passed `check_predicate` and the rest is written by `build_predicate` from
    fixed clauses, so `Catalog.tile_ids` runs it as it is."""

    sql: str | None
    params: list[object]


def is_internal_column(name: str) -> bool:
    """True for catalog columns that are not offered as filters (bookkeeping, raster file tags)."""
    return name.lower() in INTERNAL_COLUMNS or bool(_RASTER_TAG.fullmatch(name))


def filterable_columns(columns: Iterable[str]) -> list[str]:
    """`columns` without the internal ones, in their order."""
    return [name for name in columns if not is_internal_column(name)]


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` of `candidates` that look like `word` (difflib, case-insensitive), best first.

    A candidate with a namespace (``sar:polarizations``) also matches by its bare name (``polarization``),
    and candidates that contain `word` (``mstar`` in ``MSTAR-SOC``) come first.
    """
    lowered = word.lower()
    matcher = difflib.SequenceMatcher(None, "", lowered)  # difflib caches the second sequence
    scored: dict[str, tuple[bool, float]] = {}
    for candidate in dict.fromkeys(candidates):
        best = 0.0
        for form in {candidate.lower(), candidate.lower().rpartition(":")[2]}:
            matcher.set_seq1(form)
            best = max(best, matcher.ratio())
        contains = len(lowered) > 1 and lowered in candidate.lower()
        if best >= _SUGGESTION_CUTOFF or contains:
            scored[candidate] = (contains, best)
    return sorted(scored, key=lambda c: scored[c], reverse=True)[:n]


def quoted_column(name: str) -> str:
    """A column name as the user writes it in --where: bare when it is a plain identifier, else in quotes."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else quote_identifier(name)


def unknown_column_message(name: str, columns: Sequence[str]) -> str:
    """`name` is not a catalog column: a one-line message with the closest filterable (else any) columns."""
    offered = filterable_columns(columns)
    suggestions = close_matches(name, offered) or close_matches(name, columns)
    if suggestions:
        hint = f"did you mean {' or '.join(quoted_column(s) for s in suggestions)}?"
    else:
        hint = f"filterable columns: {', '.join(quoted_column(c) for c in offered)}"
    return f"the catalog has no column {quote_identifier(name)}; {hint} (types and values: sarsearch columns)"


@dataclass(frozen=True)
class FilterHint:
    """A shortcut filter whose value no tile has, with the values it may have meant."""

    option: str  # --label ...
    value: str
    column: str
    match: str  # "exact" or "contains"
    suggestions: list[str] = field(default_factory=list)  # close values (difflib), best first
    values: list[str] = field(default_factory=list)  # the column's values, most frequent first (shown when no suggestion)

    @property
    def message(self) -> str:
        what = self.option.removeprefix("--")
        head = (f"no tile has {what} {self.value!r}" if self.match == "exact"
                else f"no tile has a {what} containing {self.value!r}")
        if self.suggestions:
            tail = f"did you mean {' or '.join(repr(s) for s in self.suggestions)}?"
        elif self.values:
            shown = self.values[:8]
            tail = f"{self.column} holds {', '.join(repr(v) for v in shown)}" + (" ..." if len(self.values) > 8 else "")
        else:
            tail = f"no tile has a {self.column} value"
        return f"{head}; {tail} (sarsearch columns)"


def _words(value: str) -> list[str]:
    """The parts of a value a 'contains' filter may have aimed at: 'Sentinel-1A (IW GRD)' -> Sentinel-1A, IW, GRD."""
    return [w for w in re.split(r"[\s/()+,;]+", value) if len(w) > 1]


def unmatched_filters(filters: Filters, values_of: Callable[[str], Sequence[str]], columns: Sequence[str]) -> list[FilterHint]:
    """The shortcut filters (--label, --dataset, --split, --sensor, --polarization) whose value no tile has.

    `values_of(column)` gives a column's distinct values, most frequent first (`Catalog.values`). Used to
    explain an empty result: each hint names the closest values (difflib) or, failing that, the column's values.
    """
    known = {c.lower(): c for c in columns}
    hints: list[FilterHint] = []
    for option, (column, match) in SHORTCUT_COLUMNS.items():
        value = getattr(filters, option.removeprefix("--"))
        if value is None or column.lower() not in known:
            continue
        values = [str(v) for v in values_of(known[column.lower()]) if v is not None]
        if match == "exact":
            if value in values:
                continue
            candidates = values
        else:
            if any(value.lower() in v.lower() for v in values):
                continue
            candidates = [*values, *(w for v in values for w in _words(v))]
        hints.append(FilterHint(option, value, known[column.lower()], match, close_matches(value, candidates), values))
    return hints


class BBox(tuple[float, float, float, float]):
    """A lon/lat box in degrees, (minlon, minlat, maxlon, maxlat), checked when made: a BBox is a valid ``--bbox``.

    ``BBox(values)`` takes any 4 numbers (or numeric strings); FilterError when they are not 4 finite numbers,
    out of range, or min > max. `shown` is how the values are quoted in that message (the ``--bbox`` text).
    """

    __slots__ = ()

    def __new__(cls, values: Iterable[object], shown: str | None = None) -> Self:
        values = list(values)
        text = shown if shown is not None else ",".join(str(v) for v in values)
        try:
            numbers = [float(v) for v in values]  # type: ignore[arg-type]
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
            raise FilterError(f"expected 4 comma-separated numbers, e.g. {BBOX_EXAMPLE}; got {text!r}")
        minlon, minlat, maxlon, maxlat = numbers
        if not (-180 <= minlon <= 180 and -180 <= maxlon <= 180 and -90 <= minlat <= 90 and -90 <= maxlat <= 90):
            raise FilterError(f"expected longitudes in [-180, 180] and latitudes in [-90, 90], e.g. {BBOX_EXAMPLE}; got {text!r}")
        if minlon > maxlon or minlat > maxlat:
            raise FilterError(f"expected min <= max for both longitude and latitude, e.g. {BBOX_EXAMPLE}; got {text!r}")
        return super().__new__(cls, numbers)

    @classmethod
    def of(cls, value: Iterable[object]) -> BBox:
        """`value` itself when it is a BBox already (checked when it was made), else `BBox(value)`."""
        return value if isinstance(value, BBox) else cls(value)


def parse_bbox(text: str) -> BBox:
    """``"minlon,minlat,maxlon,maxlat"`` in degrees -> a `BBox`; FilterError if malformed or out of range."""
    return BBox(str(text).split(","), shown=str(text))


def parse_date(text: str) -> datetime:
    """An ISO date or time (YYYY-MM-DD or ISO 8601) -> naive UTC datetime; FilterError otherwise."""
    try:
        moment = parse_datetime(str(text).strip()) if str(text).strip() else None
    except ValueError:
        moment = None
    if moment is None:
        raise FilterError(f"expected a date as YYYY-MM-DD or ISO 8601, e.g. {DATE_EXAMPLE}; got {text!r}")
    return moment


def _reject_where(where: str, reason: str) -> FilterError:
    return FilterError(
        f"--where must be a SQL predicate over catalog columns, e.g. {WHERE_EXAMPLE}; got: {where!r} ({reason})"
    )


def _walk(node: Any) -> Any:
    """Every dict in a JSON tree (depth first)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _reject_statement_words(where: str) -> None:
    """Reject ';' and statement keywords (DROP, ATTACH, COPY ...) outside literals and quoted names."""
    try:
        tokens = duckdb.tokenize(where)
    except duckdb.Error as exc:
        raise _reject_where(where, str(exc).splitlines()[0]) from exc
    ends = [position for position, _ in tokens[1:]] + [len(where)]
    for (position, kind), end in zip(tokens, ends):
        if kind in (duckdb.token_type.string_const, duckdb.token_type.comment):
            continue
        text = where[position:end].strip()
        if ";" in text:
            raise _reject_where(where, "';' is not allowed")
        if not text.startswith('"') and text.upper() in _STATEMENT_WORDS:
            raise _reject_where(where, f"{text.upper()} is a statement, not an expression")


def check_predicate(where: str, *, allow_parameters: bool = False) -> None:
    """Raise FilterError unless `where` is exactly one SQL expression usable as a WHERE clause.

    Checked with DuckDB's own parser: ``SELECT 1 FROM tile_view WHERE (<where>)`` must be one
    plain SELECT (no UNION, ORDER BY, LIMIT ...), and the predicate must hold no subquery or table
    function (no reading other tables or files) and, unless `allow_parameters`, no ``?``.
    """
    global _parser
    if not isinstance(where, str) or not where.strip():
        raise _reject_where(str(where), "it is empty")
    if "\x00" in where:
        raise _reject_where(where, "it contains a NUL character")
    # The sentinel column shows where the predicate ends: "x) OR (y" would parse as
    # OR(x, AND(y, sentinel)) and escape the parentheses that keep it AND-ed with other filters.
    sql = f"SELECT 1 FROM tile_view WHERE ({where}) AND {_SENTINEL}"
    with _parser_lock:  # duckdb.tokenize and extract_statements use DuckDB's default connection
        _reject_statement_words(where)
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise _reject_where(where, str(exc).splitlines()[0]) from exc
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise _reject_where(where, "it is not a single expression")
        if _parser is None:
            _parser = duckdb.connect(":memory:")
        tree = json.loads(_parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])  # type: ignore[index]
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise _reject_where(where, tree.get("error_message", "it is not a single expression"))
    node = tree["statements"][0]["node"]
    from_table = node.get("from_table") or {}
    where_clause = node.get("where_clause") or {}
    children = where_clause.get("children") or [{}]
    plain_select = (
        node.get("type") == "SELECT_NODE"
        and not node.get("modifiers")
        and not (node.get("cte_map") or {}).get("map")
        and not node.get("group_expressions")
        and node.get("having") is None
        and node.get("qualify") is None
        and node.get("sample") is None
        and len(node.get("select_list", [])) == 1
        and from_table.get("type") == "BASE_TABLE"
        and from_table.get("table_name") == "tile_view"
        and where_clause.get("type") == "CONJUNCTION_AND"
        and children[-1].get("class") == "COLUMN_REF"
        and children[-1].get("column_names") == [_SENTINEL_NAME]
    )
    if not plain_select:
        raise _reject_where(where, "it reaches outside its own parentheses")
    for part in _walk(node.get("where_clause")):
        if part.get("class") == "SUBQUERY" or part.get("type") == "TABLE_FUNCTION" or "subquery" in part:
            raise _reject_where(where, "subqueries are not allowed")
        if part.get("class") == "PARAMETER" and not allow_parameters:
            raise _reject_where(where, "write values as literals, not ?")


def _as_time(value: str | datetime) -> datetime:
    """A --after/--before value as the naive UTC datetime the catalog compares: text parsed, a datetime as it is."""
    if not isinstance(value, datetime):
        return parse_date(value)
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _shown_time(value: str | datetime) -> str:
    """A time as the user wrote it, quoted: the text, or a datetime as its date when it is midnight."""
    if isinstance(value, datetime):
        return repr(value.date().isoformat() if value == datetime(value.year, value.month, value.day) else value.isoformat())
    return repr(value)


def build_predicate(filters: Filters, columns: Sequence[str]) -> Predicate:
    """The AND of all given filters as one `Predicate` over tile_view, with its ``?`` parameters.

    Returns ``Predicate(None, [])`` (equal to ``(None, [])``) when no filter is given. A shortcut naming a
    column the catalog does not have raises FilterError listing the filterable columns; so does an invalid
    ``--where``. A `BBox` and datetimes are used as they are; text and plain tuples are parsed here, once.
    """
    available = list(columns)
    known = {c.lower() for c in available}
    clauses: list[str] = []
    params: list[object] = []

    def need(column: str, option: str) -> str:
        if column.lower() not in known:
            raise FilterError(
                f"{option} filters on column {column!r}, which this catalog does not have; "
                f"available columns: {', '.join(filterable_columns(available))} (sarsearch columns)"
            )
        return quote_identifier(column)

    if filters.where is not None and filters.where.strip():
        check_predicate(filters.where)
        clauses.append(f"({filters.where})")
    for option, column in (("--label", "label"), ("--dataset", "dataset"), ("--split", "split")):
        value = getattr(filters, column)
        if value is not None:
            clauses.append(f"{need(column, option)} = ?")
            params.append(value)
    for option, column, value in (
        ("--sensor", "sensor", filters.sensor),
        ("--polarization", "sar:polarizations", filters.polarization),
    ):
        if value is not None:
            # contains() rather than ILIKE: no escaping of % and _ in the user's text.
            clauses.append(f"contains(lower(CAST({need(column, option)} AS VARCHAR)), lower(?))")
            params.append(value)
    if filters.min_objects is not None:
        if int(filters.min_objects) < 0:
            raise FilterError(f"expected --min-objects of 0 or more objects, got {filters.min_objects}")
        clauses.append(f"{need('tile_n_objects', '--min-objects')} >= ?")
        params.append(int(filters.min_objects))
    if filters.bbox is not None:
        minlon, minlat, maxlon, maxlat = BBox.of(filters.bbox)
        col_minlon, col_minlat, col_maxlon, col_maxlat = (need(column, "--bbox") for column in BBOX_COLUMNS)
        # Two boxes intersect iff each starts before the other ends (tiles without bbox: NULL -> excluded).
        clauses.append(f"({col_minlon} <= ? AND {col_maxlon} >= ? AND {col_minlat} <= ? AND {col_maxlat} >= ?)")
        params.extend([maxlon, minlon, maxlat, minlat])
    after = _as_time(filters.after) if filters.after is not None else None
    before = _as_time(filters.before) if filters.before is not None else None
    if after is not None and before is not None and after >= before:
        raise FilterError(f"expected --after earlier than --before, got after {_shown_time(filters.after)} "
                          f"and before {_shown_time(filters.before)}")
    if after is not None:
        clauses.append(f"{need('datetime', '--after')} >= ?")
        params.append(after)
    if before is not None:
        clauses.append(f"{need('datetime', '--before')} < ?")
        params.append(before)
    if not clauses:
        return Predicate(None, [])
    return Predicate(" AND ".join(clauses), params)

