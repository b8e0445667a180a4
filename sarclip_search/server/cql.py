"""CQL2 filters (STAC API filter extension) -> one predicate over the catalog, checked like `--where`.

    cql_predicate("label = 'T72' AND datetime > TIMESTAMP('2015-01-01T00:00:00Z')", "cql2-text", columns)
    -> "label = 'T72' AND datetime > CAST('2015-01-01 00:00:00' AS TIMESTAMP)"

The `cql2` package (maintained, Rust) parses cql2-text and cql2-json, validates the expression against the
CQL2 JSON schema and writes SQL. Before that SQL is used, the parsed tree is walked here:

- every property must be a catalog column (`sarsearch columns`; STAC's ``collection`` is ``dataset`` and
  ``id`` is ``tile_id``); an unknown one is refused naming the closest columns;
- only the operators and functions of `ALLOWED_OPS` may appear: comparisons, LIKE, BETWEEN, IN, IS NULL,
  CASEI/ACCENTI, arithmetic and the temporal operators on instants. Anything else (``read_csv(...)``,
  ``copy(...)``, spatial operators) is refused, so the SQL holds column names, literals and those
  operators only;
- IN becomes an OR of equalities (cql2's ``= SOME(ARRAY[...])`` reads as a subquery to DuckDB's parser);
- timestamps are compared as the catalog stores them (naive UTC), not as TIMESTAMPTZ in the server's zone.

The result then goes into `Filters.where`, which `build_predicate` checks with DuckDB's parser exactly as
`--where` (one expression, no subquery, no statement), and it runs on the catalog's read-only connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from sarclip_search.errors import FilterError
from sarclip_search.store.filters import is_internal_column, unknown_column_message
from sarclip_search.store.schema import BBOX_COLUMNS, parse_datetime

CQL2_TEXT = "cql2-text"
CQL2_JSON = "cql2-json"
FILTER_LANGS = (CQL2_TEXT, CQL2_JSON)
TEXT_EXAMPLE = "label = 'T72' AND datetime >= TIMESTAMP('2015-01-01T00:00:00Z')"

# CQL2 operator names (as cql2 writes them in cql2-json) that may appear in a filter.
ALLOWED_OPS = frozenset({
    "and", "or", "not", "=", "<>", "<", "<=", ">", ">=", "like", "between", "in", "isnull", "casei", "accenti",
    "+", "-", "*", "/", "%", "^", "div",
    "t_before", "t_after", "t_during", "t_intersects", "t_equals", "t_disjoint",
})
# STAC names of item fields -> catalog columns
ALIASES = {"collection": "dataset", "id": "tile_id"}
# Bookkeeping columns that may still be filtered on (ids, pixel offsets, footprint boxes); the rest of
# the internal ones (file paths on the server, hashes, mtimes) are not offered to HTTP clients.
_OFFERED_INTERNAL = frozenset({"tile_id", "scene_id", "col_off", "row_off", *BBOX_COLUMNS})
# cql2 writes timestamps as TIMESTAMPTZ literals; the catalog holds naive UTC times.
_TIMESTAMPTZ = re.compile(r"CAST\('([^']*)' AS TIMESTAMP WITH TIME ZONE\)")


def filter_columns(columns: Sequence[str]) -> list[str]:
    """The catalog columns a CQL2 filter may name: the filterable ones and a few bookkeeping ones."""
    return [c for c in columns if not is_internal_column(c) or c.lower() in _OFFERED_INTERNAL]


def _refuse(message: str, fix: str) -> FilterError:
    return FilterError(f"filter: {message}; {fix}")


def parse(expression: str | dict[str, Any], lang: str | None):
    """The cql2.Expr of a filter in `lang` (default: text for a string, JSON for an object); FilterError if
    it does not parse or is not valid CQL2."""
    import cql2

    if lang is None:
        lang = CQL2_TEXT if isinstance(expression, str) else CQL2_JSON
    if lang not in FILTER_LANGS:
        raise _refuse(f"filter-lang {lang!r} is not supported", f"use {' or '.join(FILTER_LANGS)}")
    try:
        if lang == CQL2_TEXT:
            if not isinstance(expression, str):
                raise _refuse("cql2-text must be a string", f"e.g. {TEXT_EXAMPLE}, or set filter-lang cql2-json")
            if not expression.strip():
                raise _refuse("it is empty", f"e.g. {TEXT_EXAMPLE}, or leave filter out")
            expr = cql2.parse_text(expression)
        else:
            text = expression if isinstance(expression, str) else json.dumps(expression)
            expr = cql2.parse_json(text)
        expr.validate()
    except (cql2.ParseError, cql2.ValidationError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise _refuse(f"not valid {lang} ({reason})", f"e.g. {TEXT_EXAMPLE} (CQL2, OGC 21-065)") from None
    return expr


def _walk(node: Any, columns: dict[str, str], all_columns: Sequence[str]) -> Any:
    """`node` with properties resolved to catalog columns; FilterError for an unknown property or operator."""
    if isinstance(node, list):
        return [_walk(item, columns, all_columns) for item in node]
    if not isinstance(node, dict):
        return node
    if "property" in node:
        name = str(node["property"])
        column = columns.get(ALIASES.get(name.lower(), name).lower())
        if column is None:
            raise FilterError("filter: " + unknown_column_message(name, all_columns))
        return {**node, "property": column}
    if "op" in node:
        op = str(node["op"])
        if op.lower() not in ALLOWED_OPS:
            what = ("spatial operators are not supported" if op.lower().startswith("s_")
                    else f"{op!r} is not an operator or function a filter may use")
            fix = ("filter footprints with the bbox or intersects parameter" if op.lower().startswith("s_")
                   else "use comparisons, LIKE, BETWEEN, IN, IS NULL, CASEI, ACCENTI, arithmetic and T_BEFORE, "
                        "T_AFTER, T_DURING, T_INTERSECTS, T_EQUALS, T_DISJOINT")
            raise _refuse(what, fix)
        args = _walk(node.get("args", []), columns, all_columns)
        if op.lower() == "in" and len(args) == 2 and isinstance(args[1], list):
            # cql2 writes IN as `= SOME(ARRAY[...])`, which DuckDB's parser (and so `check_predicate`) reads as
            # a subquery: an OR of equalities means the same
            if not args[1]:
                return False
            return {"op": "or", "args": [{"op": "=", "args": [args[0], value]} for value in args[1]]}
        return {**node, "args": args}
    return {key: _walk(value, columns, all_columns) for key, value in node.items()}


def _naive_utc(match: re.Match[str]) -> str:
    text = match.group(1)
    if text.lower() in ("infinity", "-infinity"):
        return f"CAST('{text.lower()}' AS TIMESTAMP)"
    try:
        moment = parse_datetime(text)
    except ValueError:
        moment = None
    if moment is None:
        raise _refuse(f"{text!r} is not a timestamp", "write TIMESTAMP('2015-01-01T00:00:00Z')")
    return f"CAST('{moment.isoformat(sep=' ')}' AS TIMESTAMP)"


def cql_predicate(expression: str | dict[str, Any], lang: str | None, columns: Sequence[str]) -> str:
    """The SQL predicate over the catalog's `tile_view` of a CQL2 filter (see the module docstring)."""
    import cql2

    expr = parse(expression, lang)
    offered = filter_columns(columns)
    tree = _walk(expr.to_json(), {c.lower(): c for c in offered}, offered)
    sql = cql2.parse_json(json.dumps(tree)).to_sql()
    return _TIMESTAMPTZ.sub(_naive_utc, sql)
