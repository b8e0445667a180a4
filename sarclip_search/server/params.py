"""The parameters of `/search` and `/feedback`: parsed from a query string or a JSON body, validated, and
turned into what the engine takes (`Filters`, texts, ids).

Both forms become one `SearchBody` (pydantic): a GET's comma lists (``bbox=0,0,1,1``,
``collections=A,B``, ``like=3,7``) and repeated names are split first. STAC parameters: bbox, intersects,
datetime, limit, collections, ids, filter + filter-lang, token; similarity: q, like, not, fusion, alpha,
dedup, image_id (an image uploaded earlier), positive/negative (feedback); shortcuts the page's deep links
use: label, split, sensor, polarization. Every filter ends up in one `Filters`, whose `where` (CQL2, dates,
collections, ids) `build_predicate` checks like `--where`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, ValidationError, WrapValidator

from sarclip_search.errors import FilterError
from sarclip_search.query.engine import DEFAULT_ALPHA, DEFAULT_FUSION, MAX_K
from sarclip_search.query.multi import REF_PATTERN
from sarclip_search.server.cql import cql_predicate
from sarclip_search.server.errors import ApiError
from sarclip_search.store.filters import Filters, close_matches, parse_bbox, parse_date

DEFAULT_LIMIT = 10
MAX_LIMIT = 100  # a larger limit is clamped to this (STAC: silently)
MAX_IDS = 1000  # ids, like, positive, negative: at most this many each


def _namespaced_id(value: Any, handler: Any) -> Any:
    """A NAME:ID (a tile of several indexes served as one, query/multi.py) as it is; anything else as an int."""
    if isinstance(value, str) and REF_PATTERN.fullmatch(value.strip()):
        return value.strip()
    return handler(value)


# A tile id as the catalog and FAISS hold it (int64, never negative): a larger number is a 400, not an overflow.
# Several indexes served as one (`serve --db A --db B`) take NAME:ID too.
TileId = Annotated[int, Field(ge=0, lt=2**63), WrapValidator(_namespaced_id), PlainSerializer(lambda v: v)]
BBOX_FIX = "give minlon,minlat,maxlon,maxlat in degrees, e.g. bbox=5.9,45.8,10.5,47.8"
DATETIME_FIX = ("give an RFC 3339 time or interval: 2015-06-01T00:00:00Z, 2015-06-01/2015-06-05, "
                "../2016-01-01 or 2015-01-01/..")
LIST_PARAMS = ("bbox", "collections", "ids", "like", "positive", "negative")  # comma lists in a query string
REPEATED_PARAMS = ("not",)  # repeated in a query string (texts may hold commas)


class SearchBody(BaseModel):
    """A search: STAC item-search parameters plus the similarity part (docs/server.md)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    q: str | None = Field(None, description="text query")
    like: list[TileId] = Field(default_factory=list, max_length=MAX_IDS, description="tile ids: more like these")
    not_: list[str] = Field(default_factory=list, alias="not", max_length=16, description="texts to push away from")
    fusion: Literal["blend", "rrf"] = DEFAULT_FUSION  # type: ignore[assignment]
    alpha: float = Field(DEFAULT_ALPHA, ge=0.0, le=1.0, description="text weight against examples")
    dedup: bool = Field(False, description="keep the best of overlapping tiles of a scene")
    image_id: str | None = Field(None, description="an image uploaded earlier (its `sarsearch:image_id`)")
    positive: list[TileId] = Field(default_factory=list, max_length=MAX_IDS, description="feedback: relevant tile ids")
    negative: list[TileId] = Field(default_factory=list, max_length=MAX_IDS, description="feedback: irrelevant tile ids")
    bbox: list[float] | None = Field(None, description="minlon,minlat,maxlon,maxlat (or 6 numbers with heights)")
    intersects: dict[str, Any] | None = Field(None, description="GeoJSON geometry; not with bbox")
    datetime: str | None = Field(None, description="RFC 3339 instant or interval (`/`, `..` open ends)")
    limit: int = Field(DEFAULT_LIMIT, ge=1, description=f"results per page (at most {MAX_LIMIT})")
    collections: list[str] | None = Field(None, description="datasets")
    ids: list[str] | None = Field(None, max_length=MAX_IDS, description="item (tile) ids")
    filter: str | dict[str, Any] | None = Field(None, description="CQL2 filter over /queryables")
    filter_lang: Literal["cql2-text", "cql2-json"] | None = Field(None, alias="filter-lang")
    token: str | None = Field(None, description="paging token from a next link")
    label: str | None = None
    split: str | None = None
    sensor: str | None = Field(None, description="sensor contains this (case-insensitive)")
    polarization: str | None = Field(None, description="polarizations contain this, e.g. VV")


class FeedbackBody(SearchBody):
    """`POST /feedback`: positive (at least one) and negative tile ids, an optional text, and any filter."""


def validation_error(exc: ValidationError) -> ApiError:
    """One line for pydantic's list of errors: the first one, naming its parameter."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "request"
    if first.get("type") == "extra_forbidden":
        known = [field.alias or name for name, field in SearchBody.model_fields.items()]
        hint = close_matches(where, known)
        return ApiError(400, f"unknown parameter {where!r}", f"did you mean {' or '.join(hint)}?" if hint
                        else f"parameters: {', '.join(known)}")
    got = first.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {str(got)[:80]!r})"
    return ApiError(400, f"{where}: {first.get('msg', 'invalid')}{shown}", "see /openapi.json for the parameters")


def from_query(params: Iterable[tuple[str, str]]) -> SearchBody:
    """A SearchBody from a query string's (name, value) pairs; ApiError 400 when invalid."""
    values: dict[str, Any] = {}
    for name, value in params:
        if name in LIST_PARAMS:
            values.setdefault(name, []).extend(part.strip() for part in value.split(",") if part.strip())
        elif name in REPEATED_PARAMS:
            values.setdefault(name, []).append(value)
        elif name == "intersects":
            try:
                values[name] = json.loads(value)
            except ValueError:
                raise ApiError(400, "intersects: not a JSON GeoJSON geometry",
                               'give e.g. {"type":"Point","coordinates":[10,50]}, or use bbox') from None
        elif name in values:
            raise ApiError(400, f"{name} is given twice", f"give {name} once")
        else:
            values[name] = value
    return from_mapping(values)


def from_mapping(values: Mapping[str, Any], model: type[SearchBody] = SearchBody) -> SearchBody:
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_json_body(raw: bytes, model: type[SearchBody] = SearchBody) -> SearchBody:
    """A SearchBody from a JSON request body; ApiError 400 for malformed JSON or invalid parameters."""
    if not raw.strip():
        return model()
    try:
        values = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON body ({str(exc).splitlines()[0][:120]})",
                       'send a JSON object, e.g. {"q": "ship near harbor", "limit": 10}') from None
    if not isinstance(values, dict):
        raise ApiError(400, "the JSON body must be an object", 'send e.g. {"q": "ship near harbor"}')
    return from_mapping(values, model)


# ---------------------------------------------------------------- paging


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def decode_token(token: str | None) -> int:
    """The offset a paging token stands for (0 without one); ApiError 400 for a token we did not make."""
    if not token:
        return 0
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = payload["offset"]
        if not isinstance(offset, int) or not 0 <= offset < MAX_K:
            raise ValueError(offset)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, "token: not a paging token of this server",
                       "follow the `next` link of a result, or leave token out for the first page") from None
    return offset


# ---------------------------------------------------------------- filters


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _timestamp(moment: Any) -> str:
    return f"CAST('{moment.isoformat(sep=' ')}' AS TIMESTAMP)"


def datetime_clause(text: str) -> str:
    """The catalog predicate of a STAC datetime: an instant (a day, for a date) or a closed/open interval."""
    parts = [part.strip() for part in text.split("/")]
    if len(parts) > 2 or not all(parts) and len(parts) == 1:
        raise ApiError(400, f"datetime {text!r} is not an instant or an interval", DATETIME_FIX)

    def moment(part: str):
        try:
            return parse_date(part)
        except FilterError:
            raise ApiError(400, f"datetime {text!r}: {part!r} is not an RFC 3339 time", DATETIME_FIX) from None

    if len(parts) == 1:
        start = moment(parts[0])
        if len(parts[0]) == 10:  # a date: that day
            return f'("datetime" >= {_timestamp(start)} AND "datetime" < {_timestamp(start + timedelta(days=1))})'
        return f'"datetime" = {_timestamp(start)}'
    low, high = (None if part in ("", "..") else part for part in parts)
    if low is None and high is None:
        raise ApiError(400, f"datetime {text!r}: both ends are open", DATETIME_FIX)
    clauses = []
    start = moment(low) if low is not None else None
    end = moment(high) if high is not None else None
    if start is not None and end is not None and start > end:
        raise ApiError(400, f"datetime {text!r}: the start is after the end", DATETIME_FIX)
    if start is not None:
        clauses.append(f'"datetime" >= {_timestamp(start)}')
    if end is not None:
        clauses.append(f'"datetime" < {_timestamp(end + timedelta(days=1))}' if len(high) == 10  # type: ignore[arg-type]
                       else f'"datetime" <= {_timestamp(end)}')
    return "(" + " AND ".join(clauses) + ")"


def _positions(coordinates: Any) -> Iterable[Sequence[float]]:
    if isinstance(coordinates, (list, tuple)) and coordinates and all(isinstance(v, (int, float)) for v in coordinates):
        yield coordinates
    elif isinstance(coordinates, (list, tuple)):
        for part in coordinates:
            yield from _positions(part)
    else:
        raise ValueError("coordinates")


GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")


def geometry_bbox(geometry: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """The lon/lat envelope of a GeoJSON geometry (GeometryCollection included); ApiError 400 when invalid."""
    fix = 'give a GeoJSON geometry in lon/lat, e.g. {"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]}'
    kind = geometry.get("type")
    try:
        if kind == "GeometryCollection":
            boxes = [geometry_bbox(part) for part in geometry.get("geometries") or []]
            if not boxes:
                raise ValueError("empty")
            return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
        if kind not in GEOMETRY_TYPES:
            raise ApiError(400, f"intersects: {str(kind)[:40]!r} is not a GeoJSON geometry type", fix)
        points = [p for p in _positions(geometry.get("coordinates")) if len(p) >= 2]
        if not points or not all(math.isfinite(float(v)) for p in points for v in p[:2]):
            raise ValueError("no positions")
    except (ValueError, TypeError, AttributeError):
        raise ApiError(400, "intersects: not a valid GeoJSON geometry (its coordinates are not positions)", fix) from None
    lons, lats = [float(p[0]) for p in points], [float(p[1]) for p in points]
    return checked_bbox([min(lons), min(lats), max(lons), max(lats)], "intersects")


def checked_bbox(values: Sequence[float], name: str = "bbox") -> tuple[float, float, float, float]:
    if len(values) == 6:  # minx, miny, minz, maxx, maxy, maxz
        values = [values[0], values[1], values[3], values[4]]
    if len(values) != 4:
        raise ApiError(400, f"{name}: expected 4 numbers (or 6 with heights), got {len(values)}", BBOX_FIX)
    try:
        return parse_bbox(",".join(repr(float(v)) for v in values))
    except FilterError as exc:
        raise ApiError(400, f"{name}: {str(exc).partition('; got')[0]}", BBOX_FIX) from None


def item_ids(values: Sequence[Any], name: str) -> list[int | str]:
    """Tile ids from item ids (decimal integers, or NAME:ID of several indexes); ApiError 400 naming the first
    that is neither."""
    ids: list[int | str] = []
    for value in values:
        text = str(value).strip()
        if REF_PATTERN.fullmatch(text):
            ids.append(text)
            continue
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise ApiError(400, f"{name}: {text[:60]!r} is not an item id (a tile id: a whole number)",
                           "use the `id` of an item from an earlier result")
        ids.append(int(text))
    return ids


def build_filters(body: SearchBody, columns: Sequence[str], datasets: Callable[[], Sequence[str]]) -> Filters | None:
    """The `Filters` of a search (None without any); ApiError 400 for an invalid part.

    `columns` are the catalog's columns, `datasets()` its dataset names (to refuse an unknown collection).
    """
    if body.bbox is not None and body.intersects is not None:
        raise ApiError(400, "bbox and intersects are both given", "give one of them (STAC item search)")
    clauses: list[str] = []
    if body.filter is not None:
        try:
            clauses.append(f"({cql_predicate(body.filter, body.filter_lang, columns)})")
        except FilterError as exc:
            message, _, fix = str(exc).partition("; ")
            raise ApiError(400, message, fix or "see /queryables for the properties") from None
    elif body.filter_lang is not None:
        raise ApiError(400, "filter-lang is given without a filter", "add filter, or leave filter-lang out")
    if body.datetime:
        clauses.append(datetime_clause(body.datetime))
    if body.collections:
        known = list(datasets())
        for name in body.collections:
            if name not in known:
                hint = close_matches(name, known)
                raise ApiError(400, f"collections: no collection {name!r} in this index",
                               f"did you mean {' or '.join(hint)}?" if hint else f"collections: {', '.join(known)}")
        clauses.append(f'"dataset" IN ({", ".join(_literal(name) for name in body.collections)})')
    if body.ids is not None:
        ids = item_ids(body.ids, "ids")
        if any(isinstance(i, str) for i in ids):
            raise ApiError(400, "ids: NAME:ID item ids do not filter a search of several indexes",
                           "fetch each item at /items/NAME:ID, or search with like=NAME:ID")
        clauses.append(f'"tile_id" IN ({", ".join(str(i) for i in ids)})' if ids else "FALSE")
    bbox = checked_bbox(body.bbox) if body.bbox is not None else None
    if body.intersects is not None:
        bbox = geometry_bbox(body.intersects)
    shortcuts = {name: getattr(body, name) for name in ("label", "split", "sensor", "polarization")}
    if not clauses and bbox is None and all(value is None for value in shortcuts.values()):
        return None
    return Filters(where=" AND ".join(clauses) or None, bbox=bbox, **shortcuts)
