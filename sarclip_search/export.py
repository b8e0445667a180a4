"""Query results as files: GeoJSON footprints and a STAC ItemCollection, each written atomically.

    write_geojson(hits, "hits.geojson")
    write_stac(hits, "hits.json")

GeoJSON: a FeatureCollection, one Feature per hit in rank order. The geometry is the tile's lon/lat
footprint (WGS84, the axis-aligned envelope of the tile's corners, counter-clockwise ring as RFC 7946
asks), or null for a tile of a scene without CRS; the properties are the hit's JSON fields plus its
rank.

STAC: an ItemCollection (pystac), one Item per hit with `sar:` fields from the catalog
(`sar:polarizations` parsed to a list, `sar:frequency_band` when it names one band,
`sar:instrument_mode`, `sar:product_type` ...) and `sat:orbit_state` where known. The SAR extension
is declared only when its four required fields are all known, so every declared extension
validates; otherwise the known `sar:` fields stay as plain properties. STAC requires a time: when the
catalog has no acquisition time, `datetime` is null and the item carries the interval it is known to
lie in, `start_datetime` 1951-01-01 (SAR was invented that year; no SAR image is older) to
`end_datetime` the export time (the image existed then), with `sarsearch:datetime_unknown: true`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sarclip_search.engine import Hit
from sarclip_search.errors import ExportError, printable_path

log = logging.getLogger(__name__)

# Earliest possible SAR acquisition: Carl Wiley invented synthetic aperture radar in 1951.
EARLIEST_SAR_TIME = datetime(1951, 1, 1, tzinfo=UTC)
# Catalog columns that describe files or tiles, not the scene; kept out of STAC properties
# (the file is the data asset, the tile is in sarsearch:window).
_NOT_PROPERTIES = frozenset({
    "id", "tile_id", "scene_id", "path", "abs_path", "size_bytes", "mtime", "content_hash", "col_off",
    "row_off", "width", "height", "scene_width", "scene_height", "scene_bbox_minlon", "scene_bbox_minlat",
    "scene_bbox_maxlon", "scene_bbox_maxlat", "bbox", "window", "score", "score_kind", "datetime",
    "start_datetime", "end_datetime", "geometry", "metadata_hash",
})
_SAR_REQUIRED = ("sar:instrument_mode", "sar:frequency_band", "sar:polarizations", "sar:product_type")
_POLARIZATION = re.compile(r"\b(HH|HV|VH|VV)\b", re.IGNORECASE)


# ---------------------------------------------------------------- writing files


def check_writable(path: str | Path, *, directory: bool = False) -> Path:
    """Raise ExportError now, before a query runs, if `path` cannot be written (or created, as a folder)."""
    target = Path(path)
    if directory:
        if target.exists() and not target.is_dir():
            raise ExportError(f"{printable_path(target)}: exists and is not a folder; give a folder for the thumbnails")
        parent = target if target.is_dir() else _existing_ancestor(target)
    else:
        if target.is_dir():
            raise ExportError(f"{printable_path(target)}: is a folder; give a file name, e.g. {printable_path(target / 'hits.json')}")
        parent = target.parent
        if not parent.is_dir():
            raise ExportError(f"{printable_path(target)}: folder {printable_path(parent)} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{printable_path(target)}: no permission to write in {printable_path(parent)}; choose another path")
    return target


def _existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same folder and a rename: all or nothing."""
    target = Path(path)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(temporary, target)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
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


# ---------------------------------------------------------------- STAC


def parse_polarizations(value: object) -> list[str] | None:
    """["VV", "VH"] from "VV+VH", '["VV", "VH"]', "VV+VH (2 bands, float32 dB)" ...; None if none named."""
    if value is None:
        return None
    found = [p.upper() for p in _POLARIZATION.findall(str(value))]
    return list(dict.fromkeys(found)) or None


def parse_frequency_band(value: object) -> str | None:
    """The STAC frequency band ("C", "X", "Ku" ...) when `value` names exactly one; None for "C or X"."""
    from pystac.extensions.sar import FrequencyBand

    bands = {band.value.upper(): band.value for band in FrequencyBand}
    return bands.get(str(value).strip().upper()) if value is not None else None


def _acquired(metadata: Mapping[str, Any]) -> datetime | None:
    text = metadata.get("datetime")
    if not text:
        return None
    moment = datetime.fromisoformat(str(text))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # the catalog stores naive UTC


def _sar_sat_fields(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The `sar:` and `sat:` properties of a hit, cleaned up to the extensions' types."""
    fields = {k: v for k, v in metadata.items() if k.startswith(("sar:", "sat:")) and v is not None}
    polarizations = parse_polarizations(fields.pop("sar:polarizations", None))
    band = parse_frequency_band(fields.pop("sar:frequency_band", None))
    if polarizations:
        fields["sar:polarizations"] = polarizations
    if band:
        fields["sar:frequency_band"] = band
    orbit = fields.pop("sat:orbit_state", None)
    if str(orbit).lower() in ("ascending", "descending", "geostationary"):
        fields["sat:orbit_state"] = str(orbit).lower()
    return fields


def stac_item(hit: Hit, rank: int, *, thumbnail: str | Path | None = None, exported_at: datetime | None = None):
    """One pystac.Item for a hit (see the module docstring for fields and the datetime rule)."""
    import pystac
    from pystac.extensions.sar import SarExtension
    from pystac.extensions.sat import SatExtension

    properties = {k: v for k, v in hit.metadata.items()
                  if k not in _NOT_PROPERTIES and not k.startswith(("sar:", "sat:")) and v is not None}
    properties.update(_sar_sat_fields(hit.metadata))
    properties.update({
        "sarsearch:rank": rank, "sarsearch:score": round(hit.score, 6), "sarsearch:score_kind": hit.score_kind,
        "sarsearch:tile_id": hit.id, "sarsearch:scene_id": hit.scene_id, "sarsearch:window": list(hit.window),
    })
    acquired = _acquired(hit.metadata)
    if acquired is None:
        properties.update({
            "start_datetime": EARLIEST_SAR_TIME.isoformat().replace("+00:00", "Z"),
            "end_datetime": (exported_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
            "sarsearch:datetime_unknown": True,
        })
    extensions = []
    if all(key in properties for key in _SAR_REQUIRED):
        extensions.append(SarExtension.get_schema_uri())
    if "sat:orbit_state" in properties or "sat:absolute_orbit" in properties or "sat:relative_orbit" in properties:
        extensions.append(SatExtension.get_schema_uri())
    item = pystac.Item(
        id=f"{Path(hit.path).stem}-tile{hit.id}",
        geometry=footprint_polygon(hit.bbox),
        bbox=list(hit.bbox) if hit.bbox is not None else None,
        datetime=acquired,
        properties=properties,
        stac_extensions=extensions,
    )
    item.add_asset("data", pystac.Asset(
        href=str(hit.metadata.get("abs_path") or hit.path), roles=["data"],
        title=f"scene of this tile (pixel window {list(hit.window)})"))
    if thumbnail is not None:
        item.add_asset("thumbnail", pystac.Asset(href=str(thumbnail), media_type=pystac.MediaType.PNG, roles=["thumbnail"]))
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
