"""Query results as files: GeoJSON footprints and a STAC ItemCollection, each written atomically.

    write_geojson(hits, "hits.geojson")
    write_stac(hits, "hits.json")

GeoJSON: a FeatureCollection, one Feature per hit in rank order. The geometry is the tile's lon/lat
footprint (WGS84, the axis-aligned envelope of the tile's corners, counter-clockwise ring as RFC 7946
asks), or null for a tile of a scene without CRS; the properties are the hit's JSON fields plus its
rank.

STAC: an ItemCollection (pystac, STAC 1.1.0), one Item per hit. Fields of the extensions in
`EXTENSIONS` (`sar:`, `sat:`, `view:`, `processing:`) are cleaned to the types their schemas require
(`sar:polarizations` parsed to a list, `sar:frequency_band` when it names one band, numbers as numbers
...); a value that does not fit is left out (the catalog and `--json` keep it as found), and each
extension with a field on the item is listed in `stac_extensions`, so every item validates against
the schemas it declares. The data asset (the scene's file) and thumbnail carry media types by file
suffix (`media_type`).

Time: `datetime` is the catalog's acquisition time (`metadata.scene_times`), with `start_datetime` /
`end_datetime` when the catalog has them (a date known to the day: that day). When nothing is known,
`datetime` is null, as in the catalog; STAC 1.1 then requires `start_datetime` and `end_datetime` (the
core Item schema, and pystac refuses to build such an Item without them), and offers no way to say
"unknown". So those items carry the only interval that is certainly true, from `EARLIEST_SAR_TIME`
(1951: SAR was invented then) to the export time, flagged `sarsearch:datetime_unknown: true`; filter
on that flag to leave them out of time searches. The file's own `TIFFTAG_DATETIME` (when it was
written) is `processing:datetime`, never the acquisition time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sarclip_search import _fs
from sarclip_search.errors import ExportError, printable_path
from sarclip_search.query.hit import Hit
from sarclip_search.store.schema import SCENE_BBOX_COLUMNS, parse_datetime

log = logging.getLogger(__name__)

# Earliest possible SAR acquisition: Carl Wiley invented synthetic aperture radar in 1951. Only the lower
# bound of the interval STAC forces on items whose acquisition time is unknown (module docstring).
EARLIEST_SAR_TIME = datetime(1951, 1, 1, tzinfo=UTC)
# Catalog columns that describe files or tiles, not the scene; kept out of STAC properties
# (the file is the data asset, the tile is in sarsearch:window).
_NOT_PROPERTIES = frozenset({
    "id", "tile_id", "scene_id", "path", "abs_path", "size_bytes", "mtime", "content_hash", "col_off",
    "row_off", "width", "height", "scene_width", "scene_height", *SCENE_BBOX_COLUMNS, "bbox", "window", "score",
    "score_kind", "datetime", "start_datetime", "end_datetime", "geometry", "metadata_hash",
})
_POLARIZATION = re.compile(r"\b(HH|HV|VH|VV)\b", re.IGNORECASE)
# Asset media types by file suffix; a TIFF is a GeoTIFF when the catalog found a CRS in it.
GEOTIFF = "image/tiff; application=geotiff"
_MEDIA_TYPES = {".tif": "image/tiff", ".tiff": "image/tiff", ".png": "image/png", ".jpg": "image/jpeg",
                ".jpeg": "image/jpeg"}


# ---------------------------------------------------------------- writing files


def check_writable(path: str | Path, *, directory: bool = False) -> Path:
    """Raise ExportError now, before a query runs, if `path` cannot be written (or created, as a folder).

    Missing folders on the way are fine when they can be created (the writers create them, as
    `--thumbnails` creates its folder); nothing is created here.
    """
    target = Path(path)
    if directory:
        if target.exists() and not target.is_dir():
            raise ExportError(f"{printable_path(target)}: exists and is not a folder; give a folder for the thumbnails")
        parent = target if target.is_dir() else _existing_ancestor(target)
    else:
        if target.is_dir():
            raise ExportError(f"{printable_path(target)}: is a folder; give a file name, e.g. {printable_path(target / 'hits.json')}")
        parent = target.parent if target.parent.is_dir() else _existing_ancestor(target)
    if not parent.is_dir():
        raise ExportError(f"{printable_path(target)}: {printable_path(parent)} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{printable_path(target)}: no permission to write in {printable_path(parent)}; choose another path")
    return target


def _existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write a result file all or nothing (`_fs.write_atomic`, readable by all), creating the missing
    folders of `path` first; ExportError naming the path when it cannot be written.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _fs.write_atomic(target, data)
    except OSError as exc:
        raise ExportError(f"cannot write {printable_path(target)} ({exc.strerror or exc}); choose a writable path") from None
    log.info("wrote %s (%d bytes)", target, len(data))
    return target


def _json_bytes(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, default=str, allow_nan=False) + "\n").encode()


# ---------------------------------------------------------------- GeoJSON


def footprint_polygon(bbox: Sequence[float] | None) -> dict[str, Any] | None:
    """A GeoJSON Polygon of a (minlon, minlat, maxlon, maxlat) box: closed, counter-clockwise; None for None."""
    if bbox is None:
        return None
    minlon, minlat, maxlon, maxlat = (float(v) for v in bbox)
    ring = [[minlon, minlat], [maxlon, minlat], [maxlon, maxlat], [minlon, maxlat], [minlon, minlat]]
    return {"type": "Polygon", "coordinates": [ring]}


def geojson(hits: Sequence[Hit]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of the hits' footprints (geometry null without one), in rank order."""
    features = []
    for rank, hit in enumerate(hits, start=1):
        feature: dict[str, Any] = {
            "type": "Feature",
            "id": hit.id,
            "geometry": footprint_polygon(hit.bbox),
            "properties": {**hit.to_dict(), "rank": rank},
        }
        if hit.bbox is not None:
            feature["bbox"] = list(hit.bbox)
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}


def write_geojson(hits: Sequence[Hit], path: str | Path) -> Path:
    """Write `geojson(hits)` to `path` atomically; ExportError if it cannot be written."""
    return write_atomic(check_writable(path), _json_bytes(geojson(hits)))


# ---------------------------------------------------------------- STAC extension fields
#
# Each cleaner returns the value as its extension's JSON schema wants it, or None when it does not fit.


def _text(value: object) -> str | None:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value).strip()
        return text or None
    return None


def _number(low: float | None = None, high: float | None = None, *, above: bool = False) -> Callable[[object], float | None]:
    """A number within [low, high] (above low, when `above`), from a number or numeric text."""
    def clean(value: object) -> float | None:
        if isinstance(value, bool):
            return None
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        if not math.isfinite(number) or (low is not None and (number <= low if above else number < low)):
            return None
        if high is not None and number > high:
            return None
        return int(number) if isinstance(value, int) else number
    return clean


def _integer(low: int) -> Callable[[object], int | None]:
    def clean(value: object) -> int | None:
        number = _number(low)(value)
        return int(number) if number is not None and float(number).is_integer() else None
    return clean


def _one_of(*choices: str) -> Callable[[object], str | None]:
    by_lower = {c.lower(): c for c in choices}
    return lambda value: by_lower.get(str(value).strip().lower()) if isinstance(value, str) else None


def _strings(value: object) -> list[str] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    return None


def _utc_text(value: object) -> str | None:
    moment = _utc(value)
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def parse_polarizations(value: object) -> list[str] | None:
    """["VV", "VH"] from "VV+VH", '["VV", "VH"]', "VV+VH (2 bands, float32 dB)" ...; None if none named."""
    if value is None:
        return None
    found = [p.upper() for p in _POLARIZATION.findall(str(value))]
    return list(dict.fromkeys(found)) or None


def parse_frequency_band(value: object) -> str | None:
    """The STAC frequency band ("C", "X", "Ku" ...) when `value` names exactly one; None for "C or X"."""
    return _one_of("P", "L", "S", "C", "X", "Ku", "K", "Ka")(value) if value is not None else None


# prefix -> (schema URI, field -> cleaner). The extension versions whose schemas tests/data/stac_schemas holds:
# SAR v1.3.0 (no required field since v1.2.0, so a chip that knows only its band and polarization is a
# valid SAR item), sat and view v1.0.0 (as pystac writes them), processing v1.2.0 (`processing:datetime`).
EXTENSIONS: dict[str, tuple[str, dict[str, Callable[[object], object]]]] = {
    "sar": ("https://stac-extensions.github.io/sar/v1.3.0/schema.json", {
        "sar:instrument_mode": _text,
        "sar:frequency_band": parse_frequency_band,
        "sar:center_frequency": _number(0, above=True),
        "sar:bandwidth": _number(0, above=True),
        "sar:polarizations": parse_polarizations,
        "sar:product_type": _text,
        "sar:resolution_range": _number(0),
        "sar:resolution_azimuth": _number(0),
        "sar:pixel_spacing_range": _number(0),
        "sar:pixel_spacing_azimuth": _number(0),
        "sar:looks_range": _integer(0),
        "sar:looks_azimuth": _integer(0),
        "sar:looks_equivalent_number": _number(0),
        "sar:observation_direction": _one_of("left", "right"),
        "sar:beam_ids": _strings,
    }),
    "sat": ("https://stac-extensions.github.io/sat/v1.0.0/schema.json", {
        "sat:platform_international_designator": _text,
        "sat:orbit_state": _one_of("ascending", "descending", "geostationary"),
        "sat:absolute_orbit": _integer(1),
        "sat:relative_orbit": _integer(1),
        "sat:anx_datetime": _utc_text,
    }),
    "view": ("https://stac-extensions.github.io/view/v1.0.0/schema.json", {
        "view:off_nadir": _number(0, 90),
        "view:incidence_angle": _number(0, 90),
        "view:azimuth": _number(0, 360),
        "view:sun_azimuth": _number(0, 360),
        "view:sun_elevation": _number(-90, 90),
    }),
    "processing": ("https://stac-extensions.github.io/processing/v1.2.0/schema.json", {
        "processing:datetime": _utc_text,
        "processing:level": _text,
        "processing:lineage": _text,
        "processing:facility": _text,
        "processing:version": _text,
    }),
}


def extension_fields(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(properties, schema URIs): a hit's fields of the `EXTENSIONS`, cleaned, and the extensions they use
    (in `EXTENSIONS` order). A field an extension does not define, or a value that does not fit its type,
    is left out (logged).
    """
    fields: dict[str, Any] = {}
    used: set[str] = set()
    for key, value in metadata.items():
        prefix, colon, _ = key.partition(":")
        if not colon or prefix not in EXTENSIONS or value is None:
            continue
        schema, cleaners = EXTENSIONS[prefix]
        cleaned = cleaners[key](value) if key in cleaners else None
        if cleaned is None:
            log.debug("STAC: %s = %r does not fit the %s extension; left out", key, value, prefix)
            continue
        fields[key] = cleaned
        used.add(schema)
    return fields, [schema for schema, _ in EXTENSIONS.values() if schema in used]


# ---------------------------------------------------------------- STAC items


def _utc(value: object) -> datetime | None:
    """A catalog time (naive UTC datetime or ISO text) as an aware UTC datetime; None if absent or unreadable."""
    try:
        moment = parse_datetime(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment is not None else None


def media_type(path: str | Path, *, georeferenced: bool = False) -> str | None:
    """The media type of a file by its suffix (`_MEDIA_TYPES`); a georeferenced TIFF is a GeoTIFF. None if unknown."""
    kind = _MEDIA_TYPES.get(Path(path).suffix.lower())
    return GEOTIFF if kind == "image/tiff" and georeferenced else kind


def stac_item(hit: Hit, rank: int, *, thumbnail: str | Path | None = None, exported_at: datetime | None = None):
    """One pystac.Item for a hit (see the module docstring for fields and the datetime rule)."""
    import pystac

    properties = {k: v for k, v in hit.metadata.items()
                  if k not in _NOT_PROPERTIES and k.partition(":")[0] not in EXTENSIONS and v is not None}
    fields, extensions = extension_fields(hit.metadata)
    properties.update(fields)
    properties.update({
        "sarsearch:rank": rank, "sarsearch:score": round(hit.score, 6), "sarsearch:score_kind": hit.score_kind,
        "sarsearch:tile_id": hit.id, "sarsearch:scene_id": hit.scene_id, "sarsearch:window": list(hit.window),
    })
    acquired = _utc(hit.metadata.get("datetime"))
    start, end = _utc(hit.metadata.get("start_datetime")), _utc(hit.metadata.get("end_datetime"))
    if start is None or end is None or start > end:
        start = end = None
    if acquired is None and start is None:
        start, end = EARLIEST_SAR_TIME, exported_at or datetime.now(UTC)
        properties["sarsearch:datetime_unknown"] = True
    item = pystac.Item(
        id=f"{Path(hit.path).stem}-tile{hit.id}",
        geometry=footprint_polygon(hit.bbox),
        bbox=list(hit.bbox) if hit.bbox is not None else None,
        datetime=acquired,
        start_datetime=start,
        end_datetime=end,
        properties=properties,
        stac_extensions=extensions,
    )
    item.add_asset("data", pystac.Asset(
        href=str(hit.metadata.get("abs_path") or hit.path), roles=["data"],
        media_type=media_type(hit.path, georeferenced=bool(hit.metadata.get("crs"))),
        title=f"scene of this tile (pixel window {list(hit.window)})"))
    if thumbnail is not None:
        item.add_asset("thumbnail", pystac.Asset(href=str(thumbnail), media_type=media_type(thumbnail), roles=["thumbnail"]))
    return item


def stac_items(hits: Sequence[Hit], *, thumbnails: Mapping[int, str | Path] | None = None):
    """A pystac.ItemCollection of the hits in rank order; `thumbnails` maps hit id -> quicklook PNG."""
    import pystac

    now = datetime.now(UTC)
    thumbnails = thumbnails or {}
    return pystac.ItemCollection([stac_item(hit, rank, thumbnail=thumbnails.get(hit.id), exported_at=now)
                                  for rank, hit in enumerate(hits, start=1)])


def write_stac(hits: Sequence[Hit], path: str | Path, *, thumbnails: Mapping[int, str | Path] | None = None) -> Path:
    """Write `stac_items(hits)` as JSON to `path` atomically; ExportError if it cannot be written."""
    target = check_writable(path)
    return write_atomic(target, _json_bytes(stac_items(hits, thumbnails=thumbnails).to_dict(transform_hrefs=False)))
