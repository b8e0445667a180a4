"""Where scene metadata comes from, and how the sources are merged.

Four sources, in order of precedence (a value from an earlier source wins):

1. the archive manifest, ``ARCHIVE/manifest.csv`` (one row per file, keyed by ``path``);
2. a STAC Item sidecar next to the raster, ``<file>.json`` (e.g. ``x.tif.json``);
3. the raster's own tags, as read by the raster reader;
4. a Sentinel-1 product name in the file's path (`sentinel1_name_metadata`): acquisition start,
   instrument mode, platform and product type, for chips cut from a product that carry none of these.

When the scene was acquired (`scene_times`): ``datetime`` from the manifest, else the sidecar, else a
Sentinel-1 product name; ``start_datetime``/``end_datetime`` as a pair from the manifest, else the
sidecar; a date without a time (``2019-09-17``) is that day (``datetime`` its midnight, the range the
whole day). Raster tags never give it: ``TIFFTAG_DATETIME`` is when the file was written (TIFF 6.0
"date and time of image creation"), often years after the acquisition, and is kept as
``processing:datetime``. Unknown stays None.

Where a scene is when its raster has no CRS: `scene_footprint` takes a STAC sidecar's bbox, else a
point location from the manifest (`point_location`: ``lon``/``lat`` or ``center_lon``/``center_lat``
columns, or OpenSARShip's ``ship centre lon/lat ... (EPSG:4326)`` notes), boxed by the chip's extent
when the manifest gives its pixel spacing (`pixel_spacing_m`).

Known keys are renamed to their STAC names (`STAC_FIELD_MAP`) so that a manifest column
``polarization`` and a STAC property ``sar:polarizations`` end up in the same catalog column.
Values are kept as found (``'VV+VH (2 bands, float32 dB)'`` stays that string); only times are
normalized: ``datetime`` to a naive UTC `datetime.datetime` (or None), ``start_datetime``,
``end_datetime`` and ``processing:datetime`` to naive UTC ISO 8601 text.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import posixpath
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path, PurePosixPath

from sarclip_search._fs import bytes_sha256
from sarclip_search.errors import MetadataError
from sarclip_search.store.schema import parse_datetime  # times as the catalog keeps them: naive UTC

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"

# Manifest / common names -> STAC names (SAR extension `sar:`, satellite extension `sat:`,
# view extension `view:`). Keys are matched case-insensitively. Names not listed here keep
# their own name (e.g. `dataset`, `label`, `split`, `sensor`).
STAC_FIELD_MAP: dict[str, str] = {
    "polarization": "sar:polarizations",
    "polarizations": "sar:polarizations",
    "band": "sar:frequency_band",
    "frequency_band": "sar:frequency_band",
    "center_frequency": "sar:center_frequency",
    "instrument_mode": "sar:instrument_mode",
    "product_type": "sar:product_type",
    "observation_direction": "sar:observation_direction",
    "looks_range": "sar:looks_range",
    "looks_azimuth": "sar:looks_azimuth",
    "resolution_range": "sar:resolution_range",
    "resolution_azimuth": "sar:resolution_azimuth",
    "orbit_state": "sat:orbit_state",
    "relative_orbit": "sat:relative_orbit",
    "absolute_orbit": "sat:absolute_orbit",
    "incidence_angle": "view:incidence_angle",
}

# Raster tags worth keeping under another name. `TIFFTAG_DATETIME` is when the file was written, not
# when the scene was acquired (KOMPSAT-5 GeoTIFFs of a 2015 pass say 2020): it is the STAC processing
# extension's `processing:datetime`, never `datetime`. Other `TIFFTAG_*` tags and GDAL's `AREA_OR_POINT`
# describe the file, not the scene, and are dropped.
RASTER_TAG_MAP: dict[str, str] = {"TIFFTAG_DATETIME": "processing:datetime"}
_DROPPED_RASTER_TAGS = {"AREA_OR_POINT"}
# Acquisition time fields (STAC common metadata), resolved together by `scene_times`.
TIME_FIELDS = ("datetime", "start_datetime", "end_datetime")

# Bump when a rule here changes what `scene_metadata` / `scene_footprint` derive from unchanged inputs:
# it is part of `metadata_hash`, so the next `index` run refreshes every scene's metadata (no re-embedding).
# 2: TIFFTAG_DATETIME is processing:datetime, not datetime; start/end_datetime; a date alone is its day.
# 3: each tile's objects and label (objects.py; a tile holding all of its scene's objects takes its label).
METADATA_RULES_VERSION = 3

# Sentinel-1 product names (ESA naming): MMM_BB_TTTR_LFPP_<start>_<stop>_<orbit>_<datatake>_<id>, e.g.
# S1A_IW_GRDH_1SDV_20150823T221233_20150823T221258_007396_00A2CA_54D0. Stripmap products name their
# beam (S1-S6) where the mode would be.
_S1_PRODUCT_NAME = re.compile(
    r"(?<![A-Za-z0-9])(S1[A-D])_(IW|EW|WV|S[1-6])_(RAW|SLC|GRD|OCN)[FHM_]_[0-2][SA](?:SH|SV|DH|DV|HH|HV|VV|VH)"
    r"_(\d{8}T\d{6})_(\d{8}T\d{6})"
)
# Manifest column pairs read as a point location (lon, lat in WGS84 degrees), in this order.
POINT_COLUMNS = (("lon", "lat"), ("center_lon", "center_lat"))
# OpenSARShip rows of the developer corpus say where the ship is only in `notes`:
# "...; ship centre lon/lat 118.04760,38.87066 (EPSG:4326); ...". The explicit EPSG:4326 is required.
_NOTES_POINT = re.compile(
    r"\blon/lat\s+([+-]?\d+(?:\.\d+)?)\s*,\s*([+-]?\d+(?:\.\d+)?)\s*\(EPSG:4326\)", re.IGNORECASE)
# `resolution_m` as pixel spacing: "10", "10 (GRD pixel spacing)", "2.3x13.9 (SLC range x azimuth)"
# (column x row spacing). A range such as "0.5-3" is no spacing.
_SPACING = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:[x\u00d7]\s*(\d+(?:\.\d+)?))?\s*(?:\(.*\))?\s*")
METRES_PER_DEGREE = 111_320.0  # of latitude (mean, WGS84 varies 110,574-111,694); of longitude at the equator

# Integers with a leading zero ("007") are identifiers and stay strings.
_INT_RE = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


# ---------------------------------------------------------------------------- manifest


def normalize_rel_path(text: str) -> str | None:
    """A manifest `path` as a POSIX path relative to the archive root, or None if it leaves it.

    Backslashes become slashes, ``./`` and ``a/../`` collapse; an absolute or ``..`` path is None.
    """
    text = text.strip().replace("\\", "/")
    if not text or text.startswith("/") or re.match(r"^[A-Za-z]:/", text):
        return None
    normalized = posixpath.normpath(text)
    if normalized == "." or normalized == ".." or normalized.startswith("../"):
        return None
    return normalized


def _infer_column(values: list[str]) -> type:
    """int if every non-empty value is an int, float likewise, else str."""
    present = [v.strip() for v in values if v.strip() != ""]
    if not present:
        return str
    if all(_INT_RE.fullmatch(v) for v in present):
        return int
    if all(_FLOAT_RE.fullmatch(v) for v in present):
        return float
    return str


def load_manifest(
    archive_root: Path, *, skipped_rows: list[tuple[str, str]] | None = None
) -> dict[str, dict[str, object]]:
    """Read ``ARCHIVE/manifest.csv`` if present (else ``{}``).

    Key: the `path` column, normalized as a POSIX path relative to the archive root. The row
    holds every other column, typed per column: int if all non-empty values parse as int,
    float likewise, else str; an empty cell is None.

    Raises MetadataError (naming the manifest and the fix) for: no `path` column, a row with more
    cells than the header, duplicate paths, and a blank path or one leaving the archive (absolute,
    or ``..``). Given a `skipped_rows` list, a row of the last kind is left out instead and
    appended to it as (``"manifest.csv row N"``, one-line reason with the fix): `index` lists it and
    indexes every other file (a manifest with no other row is still an error). Rows whose file
    does not exist are not an error here; see `missing_paths`.
    """
    manifest_path = Path(archive_root) / MANIFEST_NAME
    if not manifest_path.is_file():
        return {}
    try:
        with manifest_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            records = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MetadataError(
            f"{manifest_path}: expected a UTF-8 CSV file, could not read it ({exc}); "
            "re-save it as UTF-8 CSV"
        ) from exc
    if header is None:
        raise MetadataError(f"{manifest_path}: expected a header row with a `path` column, found an empty file; add the header or delete the file")
    header = [name.strip() for name in header]
    if "path" not in header:
        raise MetadataError(
            f"{manifest_path}: expected a `path` column (file path relative to the archive), found columns "
            f"{', '.join(header) or '(none)'}; rename the file-path column to `path`"
        )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates or "" in header:
        found = f"duplicate columns {', '.join(duplicates)}" if duplicates else "an unnamed column"
        raise MetadataError(f"{manifest_path}: expected unique, non-empty column names, found {found}; rename them")

    records = [r for r in records if any(cell.strip() for cell in r)]  # blank lines
    for line_offset, record in enumerate(records):
        if len(record) > len(header):
            raise MetadataError(
                f"{manifest_path}: row {line_offset + 2} has {len(record)} cells, expected at most {len(header)}; "
                "quote cells that contain commas"
            )
    columns = {name: [r[i] if i < len(r) else "" for r in records] for i, name in enumerate(header)}
    types = {name: _infer_column(values) for name, values in columns.items() if name != "path"}

    manifest: dict[str, dict[str, object]] = {}
    first_skipped = ""
    for row_index, raw_path in enumerate(columns["path"]):
        rel_path = normalize_rel_path(raw_path)
        if rel_path is None:
            if skipped_rows is None:
                raise MetadataError(
                    f"{manifest_path}: row {row_index + 2} has path {raw_path!r}, expected a path relative to the "
                    "archive root inside it; fix that row"
                )
            problem = f"path {raw_path!r} is {'outside the archive' if raw_path.strip() else 'empty'}"
            first_skipped = first_skipped or f"row {row_index + 2}: {problem}"
            skipped_rows.append((
                f"{MANIFEST_NAME} row {row_index + 2}",
                f"{problem}, not indexed; give the file's path relative to the archive folder, inside it, or remove the row",
            ))
            continue
        if rel_path in manifest:
            raise MetadataError(
                f"{manifest_path}: expected one row per file, found duplicate path {rel_path!r} "
                f"(row {row_index + 2}); remove or merge the duplicate rows"
            )
        row: dict[str, object] = {}
        for name, kind in types.items():
            cell = columns[name][row_index].strip()
            row[name] = None if cell == "" else kind(cell)
        manifest[rel_path] = row
    if skipped_rows and not manifest:  # indexing "the other files" would be indexing none, emptying the index
        raise MetadataError(
            f"{manifest_path}: expected paths relative to the archive root inside it, but no row has one "
            f"({first_skipped}); fix the paths"
        )
    log.info("read %d manifest rows from %s", len(manifest), manifest_path)
    return manifest


def missing_paths(manifest: Mapping[str, object], archive_root: Path) -> list[str]:
    """Manifest paths (sorted) whose file does not exist under `archive_root`."""
    root = Path(archive_root)
    return sorted(p for p in manifest if not (root / PurePosixPath(p)).is_file())


# ---------------------------------------------------------------------------- STAC sidecar


def sidecar_path(raster_path: Path) -> Path:
    """The STAC sidecar of a raster: ``<file>.json`` in the same folder."""
    raster_path = Path(raster_path)
    return raster_path.with_name(raster_path.name + ".json")


def load_stac_sidecar(raster_path: Path) -> dict[str, object]:
    """Properties of the STAC Item next to `raster_path` (``x.tif`` -> ``x.tif.json``), or ``{}``.

    Returns the Item's ``properties`` (``datetime``, ``start_datetime`` ... as written; `scene_times`
    reads them) plus ``bbox`` (a tuple, when the Item has one).
    Malformed JSON or a document that is not a STAC Item raises MetadataError.
    """
    path = sidecar_path(raster_path)
    if not path.is_file():
        return {}
    try:
        item = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{path}: expected a STAC Item in JSON, found malformed JSON ({exc}); fix or delete the sidecar") from exc
    if not isinstance(item, dict) or item.get("type") != "Feature" or not isinstance(item.get("properties"), dict):
        found = f"type={item.get('type')!r}" if isinstance(item, dict) else type(item).__name__
        raise MetadataError(
            f"{path}: expected a STAC Item (a GeoJSON Feature with `properties`), found {found}; "
            "fix or delete the sidecar"
        )
    result: dict[str, object] = dict(item["properties"])
    bbox = item.get("bbox")
    if bbox is not None:
        if not isinstance(bbox, list) or len(bbox) not in (4, 6) or not all(isinstance(v, (int, float)) for v in bbox):
            raise MetadataError(f"{path}: expected `bbox` as 4 (or 6) numbers, found {bbox!r}; fix the sidecar")
        # A 3D bbox is [minx, miny, minz, maxx, maxy, maxz]; keep the 2D part.
        values = [float(v) for v in bbox]
        result["bbox"] = tuple(values) if len(values) == 4 else (values[0], values[1], values[3], values[4])
    return result


# ---------------------------------------------------------------------------- merging


def is_date_only(value: object) -> bool:
    """True for a date without a time of day: a `datetime.date`, or text such as ``2019-09-17``."""
    if isinstance(value, datetime):
        return False
    if isinstance(value, date):
        return True
    if not isinstance(value, str):
        return False
    try:
        date.fromisoformat(value.strip())
    except ValueError:
        return False
    return True


def iso_text(moment: datetime) -> str:
    """A naive UTC datetime as the ISO 8601 text the catalog keeps (``2019-09-17T23:59:59.999999``)."""
    return moment.isoformat()


def stac_name(key: str) -> str:
    """The catalog name of a metadata key: its STAC name if known, else the key itself."""
    return STAC_FIELD_MAP.get(key.lower(), key)


def _renamed(source: Mapping[str, object]) -> dict[str, object]:
    return {stac_name(str(key)): value for key, value in source.items()}


def _tags_as_metadata(raster_tags: Mapping[str, str]) -> dict[str, object]:
    kept: dict[str, object] = {}
    for key, value in raster_tags.items():
        if key.lower() in TIME_FIELDS:
            continue  # a raster tag is no acquisition time (see RASTER_TAG_MAP); other sources give it
        if key in RASTER_TAG_MAP:
            kept[RASTER_TAG_MAP[key]] = value
        elif not key.startswith("TIFFTAG_") and key not in _DROPPED_RASTER_TAGS:
            kept[key] = value
    return kept


def sentinel1_name_metadata(rel_path: str) -> dict[str, object]:
    """What a Sentinel-1 product name in `rel_path` says (``{}`` without one).

    ``datetime`` (the acquisition start, naive UTC), ``sar:instrument_mode`` (IW, EW, WV, or SM for
    the stripmap beams S1-S6), ``platform`` (``sentinel-1a`` ...) and ``sar:product_type`` (GRD, SLC,
    RAW, OCN). The name nearest the file wins (the file name, then its folders); a name with an
    impossible date is ignored.
    """
    matches = list(_S1_PRODUCT_NAME.finditer(rel_path))
    if not matches:
        return {}
    mission, mode, product, start, _stop = matches[-1].groups()
    try:
        started = datetime.strptime(start, "%Y%m%dT%H%M%S")
    except ValueError:
        log.info("%s: Sentinel-1 name with an impossible start time %s; ignored", rel_path, start)
        return {}
    return {
        "datetime": started,
        "sar:instrument_mode": "SM" if mode[1].isdigit() else mode,
        "platform": f"sentinel-1{mission[-1].lower()}",
        "sar:product_type": product,
    }


def metadata_hash(manifest_row: Mapping[str, object] | None, stac: Mapping[str, object]) -> str:
    """sha256 of what can change a scene's metadata without changing its file: its manifest row,
    its STAC sidecar and `METADATA_RULES_VERSION` (raster tags and the path change only with the file).

    The catalog keeps it per scene; `index` re-labels a scene whose hash differs, without re-embedding.
    """
    payload = {"rules": METADATA_RULES_VERSION, "manifest": dict(manifest_row) if manifest_row is not None else None,
               "stac": dict(stac)}
    text = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return bytes_sha256(text.encode("utf-8"))


def _lookup(metadata: Mapping[str, object], key: str) -> object:
    """A metadata value by case-insensitive key (catalog columns ignore case), or None."""
    for name, value in metadata.items():
        if name.lower() == key:
            return value
    return None


def _as_float(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def point_location(metadata: Mapping[str, object]) -> tuple[float, float] | None:
    """(lon, lat) in WGS84 degrees of a scene's centre, from its merged metadata, or None.

    From the first of the column pairs `POINT_COLUMNS` with both values, else from a ``notes`` text
    saying ``lon/lat <lon>,<lat> (EPSG:4326)`` (the OpenSARShip rows of the developer corpus). A value
    outside [-180, 180] x [-90, 90] is logged and ignored.
    """
    path = metadata.get("path")
    candidates: list[tuple[object, object]] = [(_lookup(metadata, lon), _lookup(metadata, lat))
                                               for lon, lat in POINT_COLUMNS]
    notes = _lookup(metadata, "notes")
    if isinstance(notes, str):
        found = _NOTES_POINT.search(notes)
        if found:
            candidates.append((found[1], found[2]))
    for lon_value, lat_value in candidates:
        lon, lat = _as_float(lon_value), _as_float(lat_value)
        if lon is None or lat is None:
            continue
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            log.warning("%s: ignoring point location lon %s, lat %s (outside WGS84 degrees)", path, lon, lat)
            continue
        return lon, lat
    return None


def pixel_spacing_m(metadata: Mapping[str, object]) -> tuple[float, float] | None:
    """(column, row) pixel spacing in metres from the ``resolution_m`` field, or None when unknown.

    A number, or text starting with one (``"10 (GRD pixel spacing)"``) or with two as
    ``"<column>x<row>"`` (``"2.3x13.9 (SLC range x azimuth)"``); a range (``"0.5-3"``) is unknown.
    """
    value = _lookup(metadata, "resolution_m")
    number = _as_float(value) if not isinstance(value, str) else None
    if number is not None:
        spacing = (number, number)
    elif isinstance(value, str) and (found := _SPACING.fullmatch(value)):
        spacing = (float(found[1]), float(found[2] or found[1]))
    else:
        return None
    return spacing if spacing[0] > 0 and spacing[1] > 0 else None


def point_footprint(
    lon: float, lat: float, width: int, height: int, spacing: tuple[float, float] | None
) -> tuple[float, float, float, float]:
    """The (minlon, minlat, maxlon, maxlat) box of a `width` x `height` px chip centred on (lon, lat).

    Its half sides are ``width * spacing[0] / 2`` and ``height * spacing[1] / 2`` metres, converted
    with the local metres per degree (`METRES_PER_DEGREE`, times cos(lat) for longitude). The chip's
    orientation is unknown (radar geometry is not north-up), so this is its extent, not its outline;
    without a spacing the box is the point itself. Latitudes are clamped to +-90 (no box crosses a pole
    or, for longitude, the antimeridian: it is clamped to +-180).
    """
    if spacing is None:
        return (lon, lat, lon, lat)
    half_lat = height * spacing[1] / 2.0 / METRES_PER_DEGREE
    half_lon = width * spacing[0] / 2.0 / (METRES_PER_DEGREE * max(math.cos(math.radians(lat)), 1e-6))
    return (max(lon - half_lon, -180.0), max(lat - half_lat, -90.0),
            min(lon + half_lon, 180.0), min(lat + half_lat, 90.0))


def scene_footprint(
    raster_bbox: tuple[float, float, float, float] | None, width: int, height: int, metadata: Mapping[str, object]
) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """(bbox, source) of a scene: the raster's own footprint, else the STAC sidecar's bbox, else a box
    around the manifest's point location (`point_footprint`); (None, None) when nothing places it.

    `source` is ``"raster"``, ``"stac"`` or ``"manifest_point"`` (the catalog's `footprint_source`).
    A footprint beats a point: the sidecar's bbox wins over a manifest point even though the manifest
    wins for every other field.
    """
    if raster_bbox is not None:
        return tuple(raster_bbox), "raster"  # type: ignore[return-value]
    stac_bbox = metadata.get("bbox")
    if isinstance(stac_bbox, tuple) and len(stac_bbox) == 4:
        return stac_bbox, "stac"  # type: ignore[return-value]
    point = point_location(metadata)
    if point is not None:
        return point_footprint(point[0], point[1], width, height, pixel_spacing_m(metadata)), "manifest_point"
    return None, None


def _read_time(rel_path: str, field: str, value: object, where: str) -> datetime | None:
    """`parse_datetime(value)`, or None (logged) when the value is no readable time."""
    try:
        return parse_datetime(value)
    except ValueError:
        log.warning("%s: ignoring unreadable %s %r in the %s", rel_path, field, value, where)
        return None


def scene_times(
    rel_path: str,
    manifest_row: Mapping[str, object] | None,
    stac: Mapping[str, object],
    name_datetime: datetime | None = None,
) -> dict[str, object]:
    """When a scene was acquired: ``datetime`` (naive UTC datetime or None) and, when known,
    ``start_datetime`` / ``end_datetime`` (naive UTC ISO text, both or neither).

    ``datetime``: the first readable value of the manifest row, the STAC sidecar, then `name_datetime`
    (a Sentinel-1 product name's start). A date alone (``2019-09-17``) counts from its midnight, so
    ``--after 2019-09-17 --before 2019-09-18`` holds it, and, unless a range is given, makes the range
    that whole day (``2019-09-17T00:00:00`` to ``2019-09-17T23:59:59.999999``); when the product name
    gives a time on that very day, that time is taken instead. ``start_datetime``/``end_datetime``: the
    first source that gives both, readable, start <= end. Raster tags are no source (`RASTER_TAG_MAP`).
    Unreadable or incomplete values are logged and skipped; nothing known leaves ``datetime`` None.
    """
    sources = (("manifest", manifest_row or {}), ("STAC sidecar", stac))
    moment: datetime | None = None
    day_only = False
    for where, source in sources:
        value = _lookup(source, "datetime")
        moment = _read_time(rel_path, "datetime", value, where)
        if moment is not None:
            day_only = is_date_only(value)
            break
    if moment is None:
        moment = name_datetime
    elif day_only and name_datetime is not None and name_datetime.date() == moment.date():
        moment, day_only = name_datetime, False

    times: dict[str, object] = {"datetime": moment}
    for where, source in sources:
        start_value, end_value = _lookup(source, "start_datetime"), _lookup(source, "end_datetime")
        if start_value in (None, "") and end_value in (None, ""):
            continue
        start = _read_time(rel_path, "start_datetime", start_value, where)
        end = _read_time(rel_path, "end_datetime", end_value, where)
        if is_date_only(end_value) and end is not None:
            end += timedelta(days=1, microseconds=-1)  # an end date includes its day
        if start is None or end is None or start > end:
            log.warning("%s: ignoring start_datetime %r / end_datetime %r in the %s (expected both, start <= end)",
                        rel_path, start_value, end_value, where)
            continue
        times["start_datetime"], times["end_datetime"] = iso_text(start), iso_text(end)
        break
    if "start_datetime" not in times and moment is not None and day_only:
        times["start_datetime"] = iso_text(moment)
        times["end_datetime"] = iso_text(moment + timedelta(days=1, microseconds=-1))
    return times


def scene_metadata(
    rel_path: str,
    manifest_row: Mapping[str, object] | None,
    stac: Mapping[str, object],
    raster_tags: Mapping[str, str],
) -> dict[str, object]:
    """Merge the metadata of one scene: manifest row > STAC sidecar > raster tags > product name.

    Keys are renamed to STAC names via `STAC_FIELD_MAP` before merging, so a manifest
    `polarization` overrides a sidecar `sar:polarizations`. None values do not override.
    ``path`` is `rel_path`. The acquisition time fields (`TIME_FIELDS`) come from `scene_times`:
    ``datetime`` is always there (None when unknown), ``start_datetime``/``end_datetime`` when known.
    ``processing:datetime`` (from ``TIFFTAG_DATETIME``: when the file was written) becomes ISO text
    when readable. A Sentinel-1 product name in the path (`sentinel1_name_metadata`) fills the fields
    no other source gives. Returns a flat dict of column -> python value.
    """
    from_name = sentinel1_name_metadata(rel_path)
    name_datetime = from_name.pop("datetime", None)
    merged: dict[str, object] = {}
    spelled: dict[str, str] = {}  # lower-case key -> the spelling kept (catalog columns ignore case)
    for source in (from_name, _tags_as_metadata(raster_tags), dict(stac), dict(manifest_row or {})):
        for key, value in _renamed(source).items():
            previous = spelled.get(key.lower())
            if previous is not None and value is None:
                continue
            if previous is not None and previous != key:
                del merged[previous]  # a higher-precedence source spells the same field differently
            merged[key] = value
            spelled[key.lower()] = key
    merged["path"] = rel_path
    for key in [k for k in merged if k.lower() in TIME_FIELDS]:
        del merged[key]
    merged.update(scene_times(rel_path, manifest_row, stac, name_datetime))
    processed = spelled.get("processing:datetime")
    if processed is not None and merged[processed] is not None:
        try:
            merged[processed] = iso_text(parse_datetime(merged[processed]))  # type: ignore[arg-type]
        except ValueError:
            log.info("%s: processing:datetime %r kept as found (not a readable time)", rel_path, merged[processed])
    return merged
