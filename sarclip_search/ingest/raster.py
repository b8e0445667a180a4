"""Raster reader: the only module that imports rasterio.

Reads metadata (`read_info`), pixel windows (`read_window`) and model-ready chips (`read_chip`) from
GeoTIFF, PNG and JPEG files (`walk.py` finds them under a folder). Windows are in pixels
(`tiling.Window`); footprints are lon/lat in WGS84 (`window_bbox_lonlat`, `windows_bbox_lonlat`). Every failure a
user can cause (missing, empty, corrupt, truncated, unsupported or oversized file) is a `RasterError` naming the file.

The indexer reads a scene with `read_scene`: one open of the file for its header, scale and footprint and every
tile (a windowed read of that open dataset); `windows_bbox_lonlat` then places all its tiles with one
coordinate transform.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from sarclip_search.errors import (
    NoValidPixelsError,
    RasterError,
    UnreadableRasterError,
    printable_path,
)
from sarclip_search.ingest import radiometry
from sarclip_search.ingest.tiling import Window, tile_windows
from sarclip_search.ingest.timing import StageTimer

__all__ = [
    "MAX_PIXELS",
    "RasterInfo",
    "SceneTiles",
    "header_size",
    "read_chip",
    "read_info",
    "read_scene",
    "read_tile_chips",
    "read_window",
    "window_bbox_lonlat",
    "windows_bbox_lonlat",
]

logger = logging.getLogger(__name__)

# Refuse anything larger before reading pixels: a decompression bomb or a whole-scene mosaic that
# should be cut with gdal_translate first. 40k x 40k covers a full Sentinel-1 IW GRD scene (~26k x 17k).
MAX_PIXELS = 40_000 * 40_000

# Side of the centre window read to tell dB from linear power in float rasters (see radiometry).
_SCALE_SAMPLE_SIZE = 256

_READ_ERRORS = (RasterioError, CPLE_BaseError)

_FIX_CORRUPT = "re-download or remove the file"
_NO_VALID_PIXELS_FIX = "(all NaN, nodata or infinite); check the nodata value or re-export the band"


@dataclasses.dataclass(frozen=True)
class RasterInfo:
    """What the catalog needs to know about a raster, read from its header without reading all pixels."""

    path: str  # as given to read_info
    width: int  # pixels
    height: int  # pixels
    count: int  # number of bands
    dtype: str  # numpy name of the band data type, e.g. "float32", "uint16", "complex64"
    driver: str  # GDAL driver, e.g. "GTiff", "PNG", "JPEG"
    crs: str | None  # "EPSG:32632", or WKT when the CRS has no EPSG code; None when not georeferenced
    # affine (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f; None when not georeferenced
    transform: tuple[float, ...] | None
    bounds_lonlat: tuple[float, float, float, float] | None  # (minlon, minlat, maxlon, maxlat), WGS84
    nodata: float | None  # nodata value of the bands (may be NaN), None when unset
    tags: dict[str, str]  # dataset tags, e.g. TIFFTAG_DATETIME
    band_descriptions: tuple[str | None, ...]  # e.g. ("VV", "VH")
    scale: str  # radiometric scale, see radiometry.detect_scale


@contextmanager
def _open(path: Path) -> Iterator[rasterio.io.DatasetReader]:
    """Open `path` with rasterio, turning every way it can fail into a `RasterError`."""
    if not path.exists():
        raise RasterError(path, "no such file; check the path")
    if path.is_dir():
        raise RasterError(path, "is a directory, not a raster file; give a file or use iter_rasters")
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise RasterError(
            path, "file name is not valid UTF-8 (GDAL cannot open it); rename the file, e.g. with convmv -t utf8"
        ) from None
    if path.stat().st_size == 0:
        raise UnreadableRasterError(path, f"empty file (0 bytes); {_FIX_CORRUPT}")
    try:
        with warnings.catch_warnings():
            # Plain PNG/JPEG chips carry no georeferencing; that is expected, not worth a warning.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except _READ_ERRORS as error:
        raise UnreadableRasterError(
            path, f"not a readable raster (truncated or not an image: {_first_line(error)}); {_FIX_CORRUPT}"
        ) from error
    with dataset:
        if dataset.count == 0:
            raise RasterError(
                path, "has no raster bands (a container of subdatasets?); convert the wanted band to GeoTIFF"
            )
        if dataset.width * dataset.height > MAX_PIXELS:
            raise RasterError(
                path,
                f"raster is {dataset.width} x {dataset.height} pixels, more than the limit of "
                f"{MAX_PIXELS} pixels; cut it into smaller files (e.g. gdal_translate -srcwin) first",
            )
        if dataset.driver == "PNG" and not _has_png_trailer(path):
            # GDAL decodes a truncated PNG without any error; the IEND chunk closes every complete file.
            raise UnreadableRasterError(path, f"truncated PNG (no IEND chunk at the end); {_FIX_CORRUPT}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            yield dataset


@contextmanager
def georeferencing_warnings_ignored() -> Iterator[None]:
    """Rasterio's NotGeoreferencedWarning ignored in every thread for the block (plain PNG/JPEG chips carry
    no georeferencing: expected). The reads here ignore it per call with `warnings.catch_warnings`, which is
    not thread-safe: two threads entering and leaving it can restore each other's filters and let the warning
    reach the user. Code that reads rasters from several threads (the indexer's read-ahead, the server)
    runs inside this instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def _has_png_trailer(path: Path) -> bool:
    """True when the last bytes of `path` hold the PNG end chunk (IEND)."""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64))
        return b"IEND" in handle.read()


def _first_line(error: BaseException) -> str:
    """First line of the innermost cause's message (rasterio wraps GDAL's words in "Read failed")."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _read(
    dataset: rasterio.io.DatasetReader,
    path: Path,
    indexes: list[int],
    window: rasterio.windows.Window | None,
    out_shape: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Masked read of `indexes` in `window` as (B, h, w) float32 with masked/nodata/non-finite -> NaN
    (decimated to `out_shape` when given)."""
    try:
        data = dataset.read(indexes, window=window, masked=True, out_shape=out_shape)
    except _READ_ERRORS as error:
        raise UnreadableRasterError(
            path, f"pixel data cannot be read (truncated or corrupt: {_first_line(error)}); {_FIX_CORRUPT}"
        ) from error
    mask = np.ma.getmaskarray(data)
    values = np.ma.getdata(data)
    if np.iscomplexobj(values):
        values = np.abs(values)  # complex SLC -> amplitude, see radiometry.detect_scale
    out = values.astype(np.float32)
    out[mask] = np.nan
    out[~np.isfinite(out)] = np.nan
    return out


def _probe_tail(dataset: rasterio.io.DatasetReader, path: Path) -> None:
    """Read the last block of the last band of a GeoTIFF: a truncated file fails here, cheaply.

    TIFF blocks are tiled/stripped, so this reads one block. JPEG/PNG decode sequentially, a tail probe
    would decode the whole image; their truncation surfaces in `read_window` instead.
    """
    if dataset.driver != "GTiff":
        return
    band = dataset.count
    block_height, block_width = dataset.block_shapes[band - 1]
    row = ((dataset.height - 1) // block_height) * block_height
    col = ((dataset.width - 1) // block_width) * block_width
    window = rasterio.windows.Window(col, row, dataset.width - col, dataset.height - row)
    _read(dataset, path, [band], window)


def _crs_text(crs: CRS | None) -> str | None:
    """ "EPSG:<code>" when the CRS has an EPSG code, else its WKT; None without CRS."""
    if crs is None:
        return None
    code = crs.to_epsg()
    return f"EPSG:{code}" if code is not None else crs.to_wkt()


def _scale_sample(dataset: rasterio.io.DatasetReader, path: Path) -> np.ndarray | None:
    """A centre window of band 1 for float rasters (to tell dB from power); None for other types."""
    if not str(dataset.dtypes[0]).startswith("float"):  # "complex_int16" is no numpy dtype: compare names
        return None
    width = min(_SCALE_SAMPLE_SIZE, dataset.width)
    height = min(_SCALE_SAMPLE_SIZE, dataset.height)
    window = rasterio.windows.Window(
        (dataset.width - width) // 2, (dataset.height - height) // 2, width, height
    )
    return _read(dataset, path, [1], window)


def _info(dataset: rasterio.io.DatasetReader, path: Path, original: object) -> RasterInfo:
    """Build a `RasterInfo` from an open dataset (reads at most one sample window)."""
    dtype = str(dataset.dtypes[0])
    tags = {str(key): str(value) for key, value in dataset.tags().items()}
    try:
        scale = radiometry.detect_scale(dtype, tags, _scale_sample(dataset, path))
    except ValueError as error:
        raise RasterError(path, f"unsupported raster: {error}; convert it to float32 or uint16") from error
    crs = _crs_text(dataset.crs)
    georeferenced = dataset.crs is not None or not dataset.transform.is_identity
    transform = tuple(float(v) for v in tuple(dataset.transform)[:6]) if georeferenced else None
    info = RasterInfo(
        path=str(original),
        width=int(dataset.width),
        height=int(dataset.height),
        count=int(dataset.count),
        dtype=dtype,
        driver=str(dataset.driver),
        crs=crs,
        transform=transform,
        bounds_lonlat=None,
        nodata=None if dataset.nodata is None else float(dataset.nodata),
        tags=tags,
        band_descriptions=tuple(dataset.descriptions),
        scale=scale,
    )
    full = Window(0, 0, info.width, info.height)
    return dataclasses.replace(info, bounds_lonlat=window_bbox_lonlat(info, full))


def read_info(path: str | os.PathLike[str]) -> RasterInfo:
    """Header metadata of the raster at `path`: size, bands, data type, CRS, footprint, tags and scale.

    Reads no pixels except one block to detect truncated GeoTIFFs and, for float rasters, a centre
    window of at most 256 x 256 of band 1 to tell dB from linear power.

    Raises:
        RasterError: the file is missing, empty, not an image, truncated, of an unsupported data type,
            or larger than `MAX_PIXELS`.
    """
    file = Path(path)
    with _open(file) as dataset:
        _probe_tail(dataset, file)
        return _info(dataset, file, path)


def _rasterio_window(
    dataset: rasterio.io.DatasetReader, window: Window | None
) -> rasterio.windows.Window | None:
    """Check that `window` lies inside the raster and convert it; None reads the whole raster."""
    if window is None:
        return None
    inside = (
        window.col_off >= 0
        and window.row_off >= 0
        and window.width > 0
        and window.height > 0
        and window.col_off + window.width <= dataset.width
        and window.row_off + window.height <= dataset.height
    )
    if not inside:
        raise ValueError(
            f"window {window.as_list()} is not inside the {dataset.width} x {dataset.height} raster; "
            "use tiling.tile_windows to make windows"
        )
    return rasterio.windows.Window(window.col_off, window.row_off, window.width, window.height)


def _band_indexes(dataset: rasterio.io.DatasetReader, path: Path, bands: Sequence[int] | None) -> list[int]:
    """1-based band indexes to read; all bands when `bands` is None."""
    if bands is None:
        return list(range(1, dataset.count + 1))
    indexes = [int(band) for band in bands]
    if not indexes:
        raise ValueError("bands must name at least one band (1-based), or be None for all bands")
    for band in indexes:
        if not 1 <= band <= dataset.count:
            raise RasterError(
                path, f"band {band} requested but the raster has {dataset.count} band(s), numbered from 1"
            )
    return indexes


def read_window(
    path: str | os.PathLike[str], window: Window | None = None, bands: Sequence[int] | None = None,
    max_side: int | None = None,
) -> np.ndarray:
    """Pixels of `window` (whole raster when None) as a (B, h, w) float32 array, via a windowed read.

    `bands` are 1-based band indexes as in GDAL (default: all). Complex values become their magnitude
    (amplitude). Nodata, masked and non-finite pixels are NaN. Values keep their scale (see `read_info`).
    `max_side`: a window whose longer side exceeds it is read decimated by GDAL (nearest pixel, overviews
    when the file has them) to that longer side, so a quicklook of a whole scene never reads it at full size.

    Raises:
        RasterError: the file cannot be opened or its pixels cannot be read (e.g. truncated), or a band
            index is out of range.
        ValueError: `window` is not inside the raster.
    """
    file = Path(path)
    with _open(file) as dataset:
        rio_window = _rasterio_window(dataset, window)
        indexes = _band_indexes(dataset, file, bands)
        height, width = (dataset.height, dataset.width) if rio_window is None else (
            int(rio_window.height), int(rio_window.width))
        shape = None
        if max_side is not None and max(height, width) > max_side:
            factor = max_side / max(height, width)
            shape = (len(indexes), max(1, round(height * factor)), max(1, round(width * factor)))
        return _read(dataset, file, indexes, rio_window, shape)


def window_bbox_lonlat(info: RasterInfo, window: Window) -> tuple[float, float, float, float] | None:
    """WGS84 (minlon, minlat, maxlon, maxlat) of a pixel window; None without CRS or transform.

    The 4 outer corners of the window go through the affine transform to CRS coordinates, then to
    EPSG:4326 with `rasterio.warp.transform`. Exact for north-up rasters in geographic CRS, within
    a fraction of a pixel for UTM tiles; windows crossing the antimeridian are not handled.
    """
    return windows_bbox_lonlat(info, [window])[0]


def windows_bbox_lonlat(
    info: RasterInfo, windows: Sequence[Window]
) -> list[tuple[float, float, float, float] | None]:
    """`window_bbox_lonlat` of each window, with the CRS read once and one transform call for all corners.

    Each corner is transformed on its own, so every box is the one `window_bbox_lonlat` gives. If the
    call for all corners fails (a corner outside the CRS's domain), each window is transformed alone, as
    `window_bbox_lonlat` would: only the windows that fail on their own have no box.
    """
    if info.crs is None or info.transform is None or not windows:
        return [None] * len(windows)
    a, b, c, d, e, f = info.transform[:6]
    xs: list[float] = []
    ys: list[float] = []
    for window in windows:
        cols = [window.col_off, window.col_off + window.width]
        rows = [window.row_off, window.row_off + window.height]
        xs.extend(a * col + b * row + c for row in rows for col in cols)
        ys.extend(d * col + e * row + f for row in rows for col in cols)
    try:
        crs = CRS.from_user_input(info.crs)
        if crs.to_epsg() == 4326:
            lons, lats = xs, ys
        else:
            lons, lats = rasterio.warp.transform(crs, CRS.from_epsg(4326), xs, ys)
    except _READ_ERRORS as error:
        if len(windows) > 1:
            return [windows_bbox_lonlat(info, [window])[0] for window in windows]
        logger.warning("%s: cannot transform footprint to lon/lat (%s)", info.path, _first_line(error))
        return [None]
    corners = np.array([lons, lats], dtype=np.float64).reshape(2, len(windows), 4)
    boxes: list[tuple[float, float, float, float] | None] = []
    for corner in corners.transpose(1, 0, 2):  # (window, lon/lat, 4 corners)
        if not np.isfinite(corner).all():
            logger.warning("%s: footprint has no finite lon/lat in WGS84", info.path)
            boxes.append(None)
            continue
        boxes.append((
            float(corner[0].min()),
            float(corner[1].min()),
            float(corner[0].max()),
            float(corner[1].max()),
        ))
    return boxes


def read_chip(path: str | os.PathLike[str], window: Window | None = None, size: int = 128) -> np.ndarray:
    """A model input chip: band 1 of `window`, in dB, stretched to [0, 1] and resized to (size, size) float32.

    The scale comes from `read_info` (`radiometry.detect_scale`), the conversion from
    `radiometry.to_model_input`. Resizing is bilinear (Pillow, mode "F"); a non-square window is
    stretched to a square.

    Raises:
        RasterError: as `read_window`.
        NoValidPixelsError: every pixel of the window is NaN, nodata or infinite (a blank chip would
            match every query equally badly, so it is refused rather than embedded).
        ValueError: `size` is not positive or `window` is not inside the raster.
    """
    _check_chip_size(size)
    file = Path(path)
    with _open(file) as dataset:
        info = _info(dataset, file, path)
        values = _read(dataset, file, [1], _rasterio_window(dataset, window))
    if not np.isfinite(values).any():
        where = "the image" if window is None else f"window {window.as_list()}"
        raise NoValidPixelsError(path, f"no valid pixels in {where} {_NO_VALID_PIXELS_FIX}")
    return _to_chip(values, info.scale, size)


def read_tile_chips(
    path: str | os.PathLike[str],
    tile_size: int,
    stride: int | None = None,
    size: int = 128,
    info: RasterInfo | None = None,
) -> tuple[list[Window], list[np.ndarray]]:
    """The tiles of a raster as `sarsearch index` embeds them: windows and one model chip per window.

    The windows are `tiling.tile_windows(width, height, tile_size, stride)`; each chip is what
    `read_chip(path, window)` returns (band 1, the raster's scale to dB, stretched per tile, resized
    to `size`), read through one open dataset. An image with both sides <= `tile_size` is one window,
    read whole. Windows without any valid pixel (nodata edges of a scene) are dropped. The indexer
    embeds these chips (`read_scene`) and the engine cuts a query image with them, so both see the same
    pixels. `info` (from `read_info`) spares reading the raster's header and scale sample again.

    Raises:
        RasterError: as `read_window`.
        NoValidPixelsError: no window has a valid pixel.
        ValueError: `size`, `tile_size` or `stride` is not positive.
    """
    _check_chip_size(size)
    file = Path(path)
    with _open(file) as dataset:
        scale = info.scale if info is not None else _info(dataset, file, path).scale
        return _tile_chips(dataset, file, path, scale, tile_size, stride, size)


class SceneTiles(NamedTuple):
    """A scene as the indexer reads it (`read_scene`): its header and its tiles' windows and chips."""

    info: RasterInfo
    windows: list[Window]
    chips: list[np.ndarray]


def read_scene(
    path: str | os.PathLike[str], tile_size: int, stride: int | None = None, size: int = 128,
    timer: StageTimer | None = None, tile_values: Callable[[np.ndarray, str], None] | None = None,
) -> SceneTiles:
    """`read_info(path)` and `read_tile_chips(path, tile_size, stride, size)` through one open of the file.

    The header, the truncation probe, the scale sample and the footprint are read once, then every tile
    is a windowed read of the same open dataset: the same info, windows and chips as the two calls, with
    the same errors in the same order (the header's first, then the pixels'). `timer` (the indexer's)
    receives the time spent in "decode" (opening, header, pixel reads), "radiometry" and "resize".
    `tile_values(values, scale)`, when given, sees each kept tile's pixels as read ((1, h, w), the scene's
    scale), in the order of the windows (the indexer measures its dark-water proxy on them, ingest/masks.py).

    Raises:
        RasterError: as `read_info` and `read_window`.
        NoValidPixelsError: no window has a valid pixel.
        ValueError: `size`, `tile_size` or `stride` is not positive.
    """
    _check_chip_size(size)
    file = Path(path)
    timer = timer or _NO_TIMER
    with timer.stage("decode"), _open(file) as dataset:
        _probe_tail(dataset, file)
        info = _info(dataset, file, path)
        windows, chips = _tile_chips(dataset, file, path, info.scale, tile_size, stride, size, timer, tile_values)
    return SceneTiles(info, windows, chips)


def _tile_chips(
    dataset: rasterio.io.DatasetReader,
    file: Path,
    path: str | os.PathLike[str],
    scale: str,
    tile_size: int,
    stride: int | None,
    size: int,
    timer: StageTimer | None = None,
    tile_values: Callable[[np.ndarray, str], None] | None = None,
) -> tuple[list[Window], list[np.ndarray]]:
    """The windows with a valid pixel and their chips, read from the open `dataset` (see `read_tile_chips`);
    the time of radiometry and resizing goes to `timer` (decoding: the caller's stage)."""
    windows = tile_windows(dataset.width, dataset.height, tile_size, stride)
    kept: list[tuple[Window, np.ndarray]] = []
    for window in windows:
        whole = window if len(windows) > 1 else None
        values = _read(dataset, file, [1], _rasterio_window(dataset, whole))
        if np.isfinite(values).any():
            kept.append((window, _to_chip(values, scale, size, timer)))
            if tile_values is not None:
                tile_values(values, scale)
        else:
            logger.info("%s: window %s has no valid pixels; left out", printable_path(path), window.as_list())
    if not kept:
        where = "the image" if len(windows) == 1 else "any tile"
        raise NoValidPixelsError(path, f"no valid pixels in {where} {_NO_VALID_PIXELS_FIX}")
    return [window for window, _ in kept], [chip for _, chip in kept]


def header_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) of an image from its header, cheaply (~50 us), or None when it cannot be read.

    For planning only (the indexer's progress counts tiles with it): Pillow reads the first bytes of
    PNG, JPEG and most TIFFs; other files are asked of GDAL. Nothing is checked or reported here: a file
    that fails is reported when it is read (`read_scene`).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning on large scenes
            with Image.open(path) as image:
                width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):  # not for Pillow (BigTIFF, over its pixel limit ...)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as dataset:
                    width, height = dataset.width, dataset.height
        except (*_READ_ERRORS, OSError, ValueError):  # unreadable: reported by the read itself
            return None
    return (int(width), int(height)) if width > 0 and height > 0 else None


_NO_TIMER = StageTimer()  # what an untimed read times into (never read)


def _check_chip_size(size: int) -> None:
    if size <= 0:
        raise ValueError(f"chip size must be a positive number of pixels, got {size}")


def _to_chip(values: np.ndarray, scale: str, size: int, timer: StageTimer | None = None) -> np.ndarray:
    """(1, h, w) pixel values of `scale` with some valid pixel -> (size, size) float32 chip in [0, 1].

    The stretch gives values in [0, 1] already; Pillow's bilinear filter (mode "F") keeps them there up to
    float rounding, so only a resized chip is clipped again. `timer`: "radiometry" and "resize" seconds.
    """
    timer = timer or _NO_TIMER
    with timer.stage("radiometry"):
        chip = radiometry.to_model_input(values, scale)
    if chip.shape == (size, size):
        return chip
    with timer.stage("resize"):
        from PIL import Image

        resized = Image.fromarray(np.ascontiguousarray(chip, dtype=np.float32)).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def stream_window_chips(
    path: str | os.PathLike[str], windows: Sequence[Window], size: int = 128, info: RasterInfo | None = None
) -> Iterator[tuple[int, np.ndarray | None]]:
    """(position in `windows`, model chip or None when the window has no valid pixel) for each window.

    One open of the file; windows sharing a row band (same `row_off` and `height`, as `tile_windows` makes
    them) are cut from one strip read of that band (full width, band 1), so a large scene is read band by
    band and never whole. Each chip is what `read_chip(path, window, size)` gives (the raster's scale to dB,
    stretched per window, resized to `size`). Used by `query.locate` for its sliding windows.

    Raises:
        RasterError: as `read_window`.
        ValueError: `size` is not positive or a window is not inside the raster.
    """
    _check_chip_size(size)
    file = Path(path)
    bands: dict[tuple[int, int], list[int]] = {}
    for position, window in enumerate(windows):
        bands.setdefault((window.row_off, window.height), []).append(position)
    with _open(file) as dataset:
        scale = info.scale if info is not None else _info(dataset, file, path).scale
        for (row_off, height), positions in bands.items():
            strip = _read(dataset, file, [1], _rasterio_window(dataset, Window(0, row_off, dataset.width, height)))
            for position in positions:
                window = windows[position]
                values = strip[:, :, window.col_off: window.col_off + window.width]
                if values.shape[2] != window.width:
                    raise ValueError(f"window {window.as_list()} is not inside the {dataset.width} x "
                                     f"{dataset.height} raster")
                yield position, (_to_chip(values, scale, size) if np.isfinite(values).any() else None)


def write_float_geotiff(path: str | os.PathLike[str], values: np.ndarray, info: RasterInfo | None) -> None:
    """Write a (H, W) float32 array as a one-band GeoTIFF (DEFLATE, tiled) on the grid of `info`'s raster.

    The CRS and affine transform of `info` are written when it has them (a scene without georeferencing
    gives a plain pixel-grid GeoTIFF). The caller writes to a temporary name and renames it (atomic).
    """
    height, width = values.shape
    profile: dict[str, object] = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "float32",
        "compress": "deflate", "predictor": 3, "tiled": True, "blockxsize": 256, "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
    }
    if info is not None and info.transform is not None:
        profile["transform"] = rasterio.Affine(*info.transform[:6])
    if info is not None and info.crs is not None:
        profile["crs"] = CRS.from_user_input(info.crs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as out:
            out.write(np.asarray(values, dtype=np.float32), 1)
