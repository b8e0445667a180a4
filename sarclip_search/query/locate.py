"""Semantic localisation: where in a scene a phrase (or an example image) matches.

    result = locate(engine.encoder, "scene.tif", engine.embed_text("ship"), cache_root=db / LOCATE_CACHE_DIR)
    write_heat_geotiff(result, "heat.tif"); overlay(result).save("overlay.png"); peaks_geojson(result)

The scene is cut into square sliding windows at several scales (`DEFAULT_SCALES`, 64/128/256 px, every half
window), each window read through the indexer's reader and radiometry (`raster.stream_window_chips`: band 1,
the scene's scale to dB, stretched per window, resized to the model input), and embedded in batches with
the index's image encoder (ONNX, no torch). The heat of a pixel is the mean cosine similarity of the query
to every window covering it (summed with 2-D difference arrays: O(windows + pixels), whatever the scales),
min-max normalized to [0, 1] as the SeLo benchmark's probability maps are. Peaks are the local maxima of the
heat, each with the box of the region around it that stays within `PEAK_DROP` of its height.

Embedding the windows is nearly all the time (about 95 % cold), so the window embeddings of a scene are kept
in `<db>/locate-cache/`, keyed by the scene's content hash, the scales, the stride, the checkpoint and the
chip size: a second phrase on the same scene only reads that file and takes one matrix product. A large
scene is streamed: rows of windows are read one band (strip) at a time, and a reader thread prepares the next
batch of chips while the encoder runs; only the heat accumulators (two float32 arrays of the scene's size)
and the window embeddings are held.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from sarclip_search import _fs
from sarclip_search.errors import InputError, RasterError, UnreadableRasterError
from sarclip_search.ingest import radiometry, raster
from sarclip_search.ingest.tiling import Window, tile_windows
from sarclip_search.model.encoders import Encoder
from sarclip_search.model.vectors import l2_normalize

__all__ = [
    "DEFAULT_SCALES",
    "DEFAULT_STRIDE",
    "LOCATE_CACHE_DIR",
    "LocateResult",
    "Peak",
    "heat_from_windows",
    "locate",
    "overlay",
    "parse_scales",
    "peaks_geojson",
    "plan_windows",
    "scene_scales",
    "window_embeddings",
    "write_heat_geotiff",
]

log = logging.getLogger(__name__)

DEFAULT_SCALES = (64, 128, 256)  # px, window sides
# A scene with a side longer than this defaults to `LARGE_SCENE_SCALES`: at 64 px every 32 px a 5,000 px
# scene is 24,000 windows (45 s of embedding on 2 cores) for targets a 128 px window still sees.
LARGE_SCENE_SIDE = 2048
LARGE_SCENE_SCALES = (128, 256, 512)
DEFAULT_STRIDE = 0.5  # step between windows, as a fraction of the window side
LOCATE_CACHE_DIR = "locate-cache"  # inside the index directory
CACHE_FORMAT = 1
CACHE_MAX_BYTES = 1024 ** 3  # least recently used scenes are dropped beyond this
BATCH = 64  # windows per encoder call
PEAK_DROP = 0.2  # a peak's box: the connected region around it within this much (normalized heat) of it
PEAK_MIN = 0.5  # peaks below this (normalized heat) are not reported
PEAK_GRID = 1024  # peaks are found on the heat decimated to at most this many px a side
OVERLAY_ALPHA = 0.45
SMOOTH_DIVISOR = 4  # the heat is smoothed by a box of a quarter of the smallest window, twice

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Peak:
    """A local maximum of the heat: rank (1 = best), normalized heat, the pixel, and its region's box."""

    rank: int
    score: float
    row: int
    col: int
    window: tuple[int, int, int, int]  # (col_off, row_off, width, height) in scene pixels
    bbox: tuple[float, float, float, float] | None = None  # lon/lat of the box when the scene is placed


@dataclass
class LocateResult:
    """What `locate` computed for one scene and one query."""

    path: str
    info: raster.RasterInfo
    heat: np.ndarray  # (H, W) float32 in [0, 1]
    scales: tuple[int, ...]
    stride: float
    windows: int  # windows embedded (or read from the cache)
    cached: bool  # window embeddings came from the cache
    raw_range: tuple[float, float]  # cosine range of the heat before normalization
    peaks: list[Peak] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- windows


def parse_scales(text: str) -> tuple[int, ...]:
    """'64,128,256' → (64, 128, 256); InputError naming --scales otherwise."""
    try:
        scales = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        scales = ()
    if not scales or min(scales) < 8:
        raise InputError(f"--scales {text!r}: give window sides in pixels, at least 8, e.g. 64,128,256")
    return scales


def scene_scales(width: int, height: int, scales: Sequence[int] | None) -> tuple[int, ...]:
    """The window sides used on a `width` x `height` scene.

    Given `scales` must each fit the scene (InputError otherwise). The default is `DEFAULT_SCALES`
    (`LARGE_SCENE_SCALES` for a side over `LARGE_SCENE_SIDE`), keeping those that fit; a scene smaller than
    every default window is one window of its shorter side.
    """
    side = min(width, height)
    if scales is not None:
        too_large = [s for s in scales if s > side]
        if too_large:
            raise InputError(
                f"--scales {','.join(map(str, too_large))}: larger than the {width} x {height} scene; "
                f"give window sides of at most {side} px"
            )
        return tuple(scales)
    default = LARGE_SCENE_SCALES if max(width, height) > LARGE_SCENE_SIDE else DEFAULT_SCALES
    fitting = tuple(s for s in default if s <= side)
    return fitting or (side,)


def plan_windows(width: int, height: int, scales: Sequence[int], stride: float) -> list[Window]:
    """Every sliding window: for each scale s, `tile_windows` of side s every round(s * stride) px."""
    if not 0.0 < stride <= 1.0:
        raise InputError(f"--stride {stride}: give the step as a fraction of the window, in (0, 1], e.g. 0.5")
    windows: list[Window] = []
    for scale in scales:
        windows.extend(tile_windows(width, height, scale, max(1, round(scale * stride))))
    return windows


def _batches(path: str, info: raster.RasterInfo, windows: Sequence[Window], size: int
             ) -> Iterator[tuple[list[int], np.ndarray]]:
    """(positions, chips) batches of the valid windows, prepared by a reader thread one batch ahead."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        positions: list[int] = []
        chips: list[np.ndarray] = []
        try:
            for position, chip in raster.stream_window_chips(path, windows, size, info):
                if stop.is_set():
                    return
                if chip is None:
                    continue
                positions.append(position)
                chips.append(chip)
                if len(chips) == BATCH:
                    handoff.put((positions, np.stack(chips)))
                    positions, chips = [], []
            if chips:
                handoff.put((positions, np.stack(chips)))
            handoff.put(None)
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer thread, raised there)
            handoff.put(exc)

    reader = threading.Thread(target=read, name="locate-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                handoff.get(timeout=0.05)
            except queue.Empty:
                pass


def window_embeddings(encoder: Encoder, path: str, info: raster.RasterInfo, windows: Sequence[Window],
                      progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, d) float16 unit, valid (n,) bool): each window's embedding; windows without a valid
    pixel (nodata) are not embedded (valid False, zero vector)."""
    vectors: np.ndarray | None = None
    valid = np.zeros(len(windows), dtype=bool)
    done = 0
    for positions, chips in _batches(path, info, windows, encoder.image_size):
        embedded = encoder.encode_images(chips)
        if vectors is None:
            vectors = np.zeros((len(windows), embedded.shape[1]), dtype=np.float16)
        vectors[positions] = embedded.astype(np.float16)
        valid[positions] = True
        done = max(done, positions[-1] + 1)
        if progress is not None:
            progress("windows", done, len(windows))
    if vectors is None:
        raise InputError(f"{path}: no window has a valid pixel (all nodata); nothing to locate in")
    if progress is not None:
        progress("windows", len(windows), len(windows))
    return vectors, valid


# ------------------------------------------------------------------------------------------------ cache


def _cache_key(content_sha256: str, scales: Sequence[int], stride: float, encoder: Encoder) -> str:
    text = json.dumps([CACHE_FORMAT, content_sha256, list(scales), round(stride, 6), encoder.checkpoint_sha256,
                       encoder.image_size])
    return _fs.bytes_sha256(text.encode())[:32]


def _read_cache(file: Path, count: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(file) as data:
            vectors, valid = data["vectors"], data["valid"]
    except (OSError, ValueError, KeyError) as exc:
        log.info("%s: unreadable locate cache (%s); embedding again", file, exc)
        return None
    if vectors.shape[0] != count or valid.shape != (count,):
        return None
    os.utime(file)  # least recently used goes first
    return vectors, valid


def _write_cache(folder: Path, file: Path, vectors: np.ndarray, valid: np.ndarray) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _fs.atomic_file(file) as temporary, open(temporary, "wb") as stream:
            np.savez(stream, vectors=vectors, valid=valid)
        entries = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for entry in entries:
            total += entry.stat().st_size
            if total > CACHE_MAX_BYTES and entry != file:
                entry.unlink(missing_ok=True)
    except OSError as exc:  # a read-only index directory: locate still works, only uncached
        log.warning("cannot write the locate cache in %s (%s); the next query embeds the scene again", folder, exc)


# ------------------------------------------------------------------------------------------------- heat


def heat_from_windows(windows: Sequence[Window], scores: np.ndarray, valid: np.ndarray, width: int,
                      height: int) -> np.ndarray:
    """(H, W) float32: per pixel, the mean score of the valid windows covering it (NaN where none does).

    Each window adds its score and 1 at its four corners of two difference arrays; their 2-D prefix sums
    are the per-pixel sums and counts.
    """
    boxes = np.array([[w.row_off, w.col_off, w.row_off + w.height, w.col_off + w.width] for w in windows],
                     dtype=np.int64)[valid]
    values = np.asarray(scores, dtype=np.float64)[valid]
    total = np.zeros((height + 1, width + 1), dtype=np.float64 if height * width <= 4_000_000 else np.float32)
    count = np.zeros((height + 1, width + 1), dtype=np.float32)
    for array, weight in ((total, values), (count, np.ones_like(values))):
        np.add.at(array, (boxes[:, 0], boxes[:, 1]), weight)
        np.add.at(array, (boxes[:, 0], boxes[:, 3]), -weight)
        np.add.at(array, (boxes[:, 2], boxes[:, 1]), -weight)
        np.add.at(array, (boxes[:, 2], boxes[:, 3]), weight)
        np.cumsum(array, axis=0, out=array)
        np.cumsum(array, axis=1, out=array)
    total, count = total[:height, :width], count[:height, :width]
    heat = np.full((height, width), np.nan, dtype=np.float32)
    covered = count > 0.5
    np.divide(total, count, out=heat, where=covered, casting="unsafe")
    return heat


def _smooth(heat: np.ndarray, size: int) -> np.ndarray:
    """Two passes of a `size` px box filter (close to a Gaussian), as the benchmark blurs its maps: the
    window grid's steps become slopes. Pixels no window covered stay NaN."""
    if size < 3:
        return heat
    from scipy import ndimage

    missing = ~np.isfinite(heat)
    filled = np.where(missing, np.nanmin(heat) if (~missing).any() else 0.0, heat).astype(np.float32)
    for _ in range(2):
        filled = ndimage.uniform_filter(filled, size=size, mode="nearest")
    filled[missing] = np.nan
    return filled


def _normalize(heat: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    finite = np.isfinite(heat)
    low, high = float(np.min(heat, where=finite, initial=np.inf)), float(np.max(heat, where=finite, initial=-np.inf))
    out = np.zeros_like(heat, dtype=np.float32)
    if high > low:
        np.subtract(heat, low, out=out, where=finite)
        out /= high - low
        np.clip(out, 0.0, 1.0, out=out)
    out[~finite] = 0.0
    return out, (low, high)


def _decimate(heat: np.ndarray, grid: int) -> tuple[np.ndarray, int]:
    """Block means so that the longer side is at most `grid` px; (decimated, factor)."""
    factor = max(1, -(-max(heat.shape) // grid))
    if factor == 1:
        return heat, 1
    height, width = heat.shape[0] // factor, heat.shape[1] // factor
    trimmed = heat[: height * factor, : width * factor]
    return trimmed.reshape(height, factor, width, factor).mean(axis=(1, 3)), factor


def find_peaks(heat: np.ndarray, k: int, min_side: int) -> list[Peak]:
    """The `k` highest local maxima of the normalized heat (at least `PEAK_MIN`), each with its region's box.

    Maxima are taken over a neighbourhood of the smallest window side; a peak's box is the connected region
    around it whose heat stays within `PEAK_DROP` of the peak; a maximum inside a better peak's region is
    not reported again.
    """
    from scipy import ndimage

    small, factor = _decimate(heat, PEAK_GRID)
    size = max(3, int(min_side // factor) | 1)
    maxima = (small == ndimage.maximum_filter(small, size=size, mode="nearest")) & (small >= PEAK_MIN)
    rows, cols = np.nonzero(maxima)
    order = np.argsort(-small[rows, cols], kind="stable")
    peaks: list[Peak] = []
    taken = np.zeros(small.shape, dtype=bool)
    for index in order:
        row, col = int(rows[index]), int(cols[index])
        if taken[row, col]:
            continue
        value = float(small[row, col])
        labels, _ = ndimage.label(small >= value - PEAK_DROP)
        region = labels == labels[row, col]
        taken |= region
        region_rows, region_cols = np.nonzero(region)
        top, left = int(region_rows.min()) * factor, int(region_cols.min()) * factor
        bottom = min(heat.shape[0], (int(region_rows.max()) + 1) * factor)
        right = min(heat.shape[1], (int(region_cols.max()) + 1) * factor)
        peaks.append(Peak(len(peaks) + 1, round(value, 4), row * factor + factor // 2, col * factor + factor // 2,
                          (left, top, right - left, bottom - top)))
        if len(peaks) == k:
            break
    return peaks


# ------------------------------------------------------------------------------------------------ locate


def locate(encoder: Encoder, path: str | os.PathLike[str], query: np.ndarray, *,
           scales: Sequence[int] | None = None, stride: float = DEFAULT_STRIDE, cache_root: str | Path | None = None,
           k: int = 5, progress: Progress | None = None) -> LocateResult:
    """The heat map of unit vector `query` over the scene at `path` (see the module's description).

    `scales`: window sides (default `scene_scales`); `stride`: step as a fraction of the window;
    `cache_root`: folder of the per-scene window-embedding cache (None: no cache); `k`: peaks reported.
    InputError (one line naming the file or option) for a file that is no raster, scales larger than the
    scene, a bad stride, or a scene with no valid pixel.
    """
    started = time.perf_counter()
    file = str(path)
    try:
        info = raster.read_info(file)
    except UnreadableRasterError as exc:
        raise InputError(f"{exc.path}: not a readable raster (GeoTIFF, TIFF, PNG or JPEG); give a scene file") from exc
    except RasterError:
        raise
    used = scene_scales(info.width, info.height, scales)
    windows = plan_windows(info.width, info.height, used, stride)
    seconds: dict[str, float] = {}
    cached = False
    vectors = valid = None
    cache_file = None
    if cache_root is not None:
        key = _cache_key(_fs.file_sha256(file), used, stride, encoder)
        cache_file = Path(cache_root) / f"{key}.npz"
        if cache_file.is_file():
            found = _read_cache(cache_file, len(windows))
            if found is not None:
                vectors, valid = found
                cached = True
    seconds["read"] = time.perf_counter() - started
    if vectors is None or valid is None:
        embed_start = time.perf_counter()
        vectors, valid = window_embeddings(encoder, file, info, windows, progress)
        seconds["embed"] = time.perf_counter() - embed_start
        if cache_file is not None:
            _write_cache(cache_file.parent, cache_file, vectors, valid)
    heat_start = time.perf_counter()
    unit = l2_normalize(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
    scores = vectors.astype(np.float32) @ unit
    heat, raw_range = _normalize(_smooth(heat_from_windows(windows, scores, valid, info.width, info.height),
                                         min(used) // SMOOTH_DIVISOR))
    peaks = find_peaks(heat, k, min(used))
    if info.crs is not None:
        boxes = raster.windows_bbox_lonlat(info, [Window(*peak.window) for peak in peaks])
        peaks = [Peak(p.rank, p.score, p.row, p.col, p.window, box) for p, box in zip(peaks, boxes)]
    seconds["heat"] = time.perf_counter() - heat_start
    seconds["total"] = time.perf_counter() - started
    log.info("%s: %d windows (%s), %.2f s", file, len(windows), "cached" if cached else "embedded", seconds["total"])
    return LocateResult(file, info, heat, tuple(used), stride, len(windows), cached, raw_range, peaks, seconds)


# ----------------------------------------------------------------------------------------------- outputs


def write_heat_geotiff(result: LocateResult, path: str | Path) -> Path:
    """The normalized heat as a float32 GeoTIFF on the scene's grid (its CRS and transform when it has them)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _fs.atomic_file(target) as temporary:
        raster.write_float_geotiff(temporary, result.heat, result.info)
    return target


# Colour map of the overlay: dark blue → cyan → yellow → red (a "jet"-like ramp), 256 entries.
_RAMP = np.array([[0, 0, 0.5], [0, 0.2, 1], [0, 1, 1], [1, 1, 0], [1, 0.2, 0], [0.5, 0, 0]], dtype=np.float32)
_LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_RAMP)), _RAMP[:, c]) for c in range(3)],
                axis=1)


def colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) heat in [0, 1] → (H, W, 3) uint8 colours."""
    index = np.clip(np.round(np.nan_to_num(heat) * 255), 0, 255).astype(np.int64)
    return np.round(_LUT[index] * 255).astype(np.uint8)


def overlay(result: LocateResult, size: int = 1024, boxes: bool = True) -> Image.Image:
    """The scene's quicklook (band 1 in dB, percentile stretch, longer side `size` px) with the heat blended
    over it and the peaks' boxes drawn and numbered."""
    info = result.info
    values = raster.read_window(result.path, Window(0, 0, info.width, info.height), bands=[1], max_side=2 * size)
    grey = radiometry.to_model_input(values, info.scale)
    factor = size / max(info.width, info.height)
    shape = (max(1, round(info.width * factor)), max(1, round(info.height * factor)))
    base = Image.fromarray(np.round(grey * 255).astype(np.uint8), mode="L").resize(shape, Image.Resampling.BILINEAR)
    small, _ = _decimate(result.heat, 2 * size)
    heat = Image.fromarray(colorize(small), mode="RGB").resize(shape, Image.Resampling.BILINEAR)
    image = Image.blend(base.convert("RGB"), heat, OVERLAY_ALPHA)
    if boxes and result.peaks:
        draw = ImageDraw.Draw(image)
        for peak in result.peaks:
            col, row, width, height = peak.window
            box = [col * factor, row * factor, (col + width) * factor - 1, (row + height) * factor - 1]
            draw.rectangle(box, outline=(255, 255, 255), width=max(1, round(size / 400)))
            draw.text((box[0] + 3, box[1] + 2), str(peak.rank), fill=(255, 255, 255))
    return image


def peaks_geojson(result: LocateResult, query: str | None = None) -> dict[str, Any]:
    """The peaks as a GeoJSON FeatureCollection of boxes: lon/lat (WGS84) when the scene is placed, else
    polygons in scene pixels (x = column, y = row; `"sarsearch:coordinates": "pixel"`)."""
    features = []
    for peak in result.peaks:
        col, row, width, height = peak.window
        if peak.bbox is not None:
            x0, y0, x1, y1 = peak.bbox
        else:
            x0, y0, x1, y1 = col, row, col + width, row + height
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "bbox": [x0, y0, x1, y1],
            "properties": {"rank": peak.rank, "score": peak.score, "peak": [peak.col, peak.row],
                           "sarsearch:window": list(peak.window)},
        })
    return {
        "type": "FeatureCollection",
        "sarsearch:coordinates": "lonlat" if result.info.crs is not None else "pixel",
        "sarsearch:scene": result.path,
        "sarsearch:query": query,
        "sarsearch:scales": list(result.scales),
        "sarsearch:stride": result.stride,
        "features": features,
    }
