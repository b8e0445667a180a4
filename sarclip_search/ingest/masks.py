"""What each tile holds in area: water, oil and look-alike fractions from a scene's mask, and a measured
dark-water proxy for every tile.

Mask fractions. Some datasets ship a mask per image, found by the dataset's naming (`MASK_RULES`: the image's
archive-relative path -> the mask's, in the same archive). Each tile's fractions are computed on its own window
of the mask (a windowed read; the mask has the image's size): `tile_water_fraction` (water or flood water; for
the MKLab oil-spill classes sea + oil + look-alike + ship, i.e. everything but land), `tile_oil_fraction` and
`tile_lookalike_fraction` (MKLab only). Fractions are of the window's labelled pixels (no-data pixels of the
mask left out); NULL where the scene has no mask or the window no labelled pixel. HRSID's masks are ship
masks, not water, and are not read here (its ships are boxes: ingest/objects.py).

The proxy, `tile_dark_fraction`, is measured on every tile's pixels in dB (`radiometry.to_db`): the tile is cut
into `DARK_BLOCK`-pixel blocks and a block counts as dark calm water when its mean dB is below the threshold of
its radiometric regime and its dB spread (std) below a homogeneity bound (`DARK_THRESHOLDS`). The thresholds
were fitted on the train split's masks (benchmarks/fit_dark_proxy.py, which also validates them on train and
val tiles): calibrated backscatter (Sentinel-1 dB / linear power) per co- and cross-polarization,
uncalibrated amplitude on the KOMPSAT-5 tiles, 8-bit display products on weak labels (HRSID offshore crops:
sea but the ship mask; MSTAR composite scenes and SOC chips: land). Its fraction is of blocks with valid
pixels; NULL for a tile without one. It is a proxy: flooded vegetation and wind-roughened water are not dark,
and the 8-bit products' levels depend on how each was stretched (`proxy_water_fraction` keeps it only where
it was shown to mean water).

A change to these rules bumps `metadata.METADATA_RULES_VERSION`, as for the objects (every scene re-labelled once).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from sarclip_search.errors import RasterError, printable_path
from sarclip_search.ingest import radiometry, raster
from sarclip_search.ingest.tiling import Window
from sarclip_search.store.schema import V4_TILE_COLUMNS

log = logging.getLogger(__name__)

# The catalog's tile columns this module fills (DOUBLE, NULL where unknown).
MASK_COLUMNS = tuple(V4_TILE_COLUMNS)

# MKLab oil-spill mask colours (RGB) and what they are; off-palette pixels take the nearest colour.
MKLAB_PALETTE: dict[str, tuple[int, int, int]] = {
    "sea": (0, 0, 0), "oil": (0, 255, 255), "lookalike": (255, 0, 0), "ship": (153, 76, 0), "land": (0, 153, 0),
}


@dataclass(frozen=True)
class MaskRule:
    """How a dataset names an image's mask and what the mask's values mean.

    `pattern` matches the image's archive-relative POSIX path; `mask` is the mask's path, formatted with the
    match's named groups. `kind` "binary": `water` and `land` list the values of labelled pixels (others are
    no-data); "mklab_rgb": the `MKLAB_PALETTE` classes.
    """

    dataset: str
    pattern: str
    mask: str
    kind: str = "binary"
    water: tuple[float, ...] = (1.0,)
    land: tuple[float, ...] = (0.0,)


MASK_RULES: tuple[MaskRule, ...] = (
    MaskRule("KOMPSAT-5-water", r"^(?P<root>(?:.+/)?kompsat5_water)/images/(?P<stem>[^/]+)\.tiff?$",
             "{root}/masks/{stem}_label.tif", water=(255.0,)),
    MaskRule("Sen1Floods11", r"^(?P<root>(?:.+/)?sen1floods11)/images/(?P<chip>[^/]+)_S1Hand\.tiff?$",
             "{root}/labels/{chip}_LabelHand.tif"),  # 1 water, 0 not water, -1 no data
    MaskRule("C2S-MS-Floods", r"^(?P<root>(?:.+/)?stac_overflow_floods)/images/(?P<chip>[^/_]+)_v[vh]\.tiff?$",
             "{root}/labels/{chip}.tif"),  # 1 water, 0 no water, 255 missing
    MaskRule("MKLab-Oil-Spill", r"^(?P<root>(?:.+/)?oil_spill_mklab)/images/(?P<stem>[^/]+)\.jpe?g$",
             "{root}/masks/{stem}.png", kind="mklab_rgb"),
)


def find_mask(rel: str) -> tuple[MaskRule, str] | None:
    """The rule and the archive-relative mask path of an image (its archive-relative POSIX path), or None."""
    for rule in MASK_RULES:
        match = re.match(rule.pattern, rel)
        if match:
            return rule, rule.mask.format(**match.groupdict())
    return None


def _binary_fractions(values: np.ndarray, rule: MaskRule) -> dict[str, float | None]:
    band = values[0]
    water = np.isin(band, rule.water)
    labelled = int(np.count_nonzero(water | np.isin(band, rule.land)))
    return {"tile_water_fraction": float(np.count_nonzero(water)) / labelled if labelled else None}


def _mklab_fractions(values: np.ndarray) -> dict[str, float | None]:
    if values.shape[0] < 3:
        raise ValueError(f"expected an RGB class mask, found {values.shape[0]} band(s)")
    pixels = np.nan_to_num(values[:3].reshape(3, -1).T, nan=-1000.0)
    palette = np.array(list(MKLAB_PALETTE.values()), dtype=np.float32)
    nearest = np.argmin(((pixels[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2), axis=1)
    counts = np.bincount(nearest, minlength=len(palette)) / max(len(nearest), 1)
    share = dict(zip(MKLAB_PALETTE, counts.tolist()))
    if not len(nearest):
        return {}
    return {"tile_water_fraction": 1.0 - share["land"], "tile_oil_fraction": share["oil"],
            "tile_lookalike_fraction": share["lookalike"]}


def mask_fractions(mask_path: str | Path, rule: MaskRule, windows: Sequence[Sequence[int]],
                   image_size: tuple[int, int]) -> list[dict[str, float | None]]:
    """Per window (col_off, row_off, width, height), the fractions the mask gives (`MASK_COLUMNS` keys; absent
    ones are unknown), each window read on its own.

    Raises RasterError (the mask cannot be read) or ValueError (its size is not the image's, or it is not of
    its rule's kind).
    """
    info = raster.read_info(mask_path)
    if (info.width, info.height) != tuple(image_size):
        raise ValueError(f"mask is {info.width} x {info.height} pixels, the image {image_size[0]} x {image_size[1]}")
    rows = []
    for window in windows:
        values = raster.read_window(mask_path, Window(*(int(v) for v in window)))
        rows.append(_mklab_fractions(values) if rule.kind == "mklab_rgb" else _binary_fractions(values, rule))
    return rows


# --------------------------------------------------------------------------- the dark, homogeneous proxy

DARK_BLOCK = 16  # px: the side of the blocks whose mean and spread in dB are compared with the thresholds


@dataclass(frozen=True)
class DarkThreshold:
    """A block is dark calm water when its mean dB < `mean_db` and its dB std < `std_db`."""

    mean_db: float
    std_db: float


# Fitted on the train split's masks by benchmarks/fit_dark_proxy.py (its output: runs/masks/dark_fit.json);
# keys: the raster's scale, and for calibrated scales the polarization of band 1 (co: VV/HH, cross: VH/HV).
# The fit never chose a homogeneity bound (std inf): within these blocks speckle spreads water and land alike
# in dB, and the mean of a block (a 16 x 16 multi-look) is what tells dark water; a block holding a bright
# target or shore is not dark. Blocks of 4, 8, 16 and 32 px were fitted: larger ones fit better on train
# (balanced accuracy of blocks 0.94 at 16 px for amplitude and display8, 0.98/0.96 at 32) and 16 px keeps
# the small chips (OpenSARShip, 20-200 px) in several blocks.
DARK_THRESHOLDS: dict[str, DarkThreshold] = {
    "calibrated_co": DarkThreshold(-17.1, math.inf),
    "calibrated_cross": DarkThreshold(-21.2, math.inf),
    "amplitude": DarkThreshold(27.3, math.inf),
    "display8": DarkThreshold(26.0, math.inf),
}
# Scales whose dark fraction stands for water (validated on real masks: the calibrated C2S-MS / Sen1Floods11
# chips and the KOMPSAT-5 amplitude tiles). On 8-bit products it measures darkness only: half of the MSTAR
# chips' grass is as dark as HRSID's sea, and the MKLab scenes' sea is a mid grey (docs/query.md).
PROXY_WATER_SCALES = ("db", "linear_power", "amplitude")


def proxy_water_fraction(dark: float | None, scale: object) -> float | None:
    """A tile's dark fraction as a water fraction where its scale makes that meaningful (`PROXY_WATER_SCALES`),
    else None: what captions may say "water" from when no mask gives `tile_water_fraction`."""
    return dark if str(scale) in PROXY_WATER_SCALES else None


def dark_regime(scale: str, polarization: object = None) -> str:
    """The `DARK_THRESHOLDS` key of a raster: its scale, and for calibrated data (dB, linear power) whether band 1
    is cross-polarized (`polarization` such as ``VH`` or ``VV+VH``: its first name is band 1's)."""
    if scale in ("db", "linear_power"):
        first = re.split(r"[^A-Za-z]+", str(polarization or "").strip())[0].upper()
        return "calibrated_cross" if first in ("VH", "HV") else "calibrated_co"
    return scale


def _block_sums(values: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Sums over bh x bw blocks of a (h, w) array whose sides are multiples of them: along rows, then columns
    (two contiguous reductions; a 4-D reshape reduced over two strided axes is several times slower)."""
    h, w = values.shape
    return values.reshape(h, w // bw, bw).sum(axis=2, dtype=np.float64).reshape(h // bh, bh, w // bw).sum(axis=1)


def block_stats(db: np.ndarray, block: int = DARK_BLOCK, spread: bool = True,
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Mean and std of dB per `block` x `block` block of a (h, w) array, and whether the block has enough
    valid pixels (at least half finite). Blocks are cut from the top-left; a remainder narrower than a block
    is left out, unless the whole array is (then one block is the array). `spread=False`: no std (None)."""
    values = np.asarray(db, dtype=np.float32)
    if values.ndim == 3:
        values = values[0]
    h, w = values.shape
    bh, bw = min(block, h), min(block, w)
    h, w = (h // bh) * bh, (w // bw) * bw
    cells = values[:h, :w]
    finite = np.isfinite(cells)
    if finite.all():
        count = np.full((h // bh, w // bw), float(bh * bw))
    else:
        count = _block_sums(finite, bh, bw)
        cells = np.where(finite, cells, np.float32(0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _block_sums(cells, bh, bw) / count
        std = None
        if spread:
            var = _block_sums(cells.astype(np.float64) ** 2, bh, bw) / count - mean * mean
            std = np.sqrt(np.maximum(var, 0.0))
    return mean, std, count >= (bh * bw) / 2


def _spread_needed(thresholds: Mapping[str, DarkThreshold]) -> bool:
    return any(math.isfinite(t.std_db) for t in thresholds.values())


def dark_fraction(values: np.ndarray, scale: str, polarization: object = None,
                  thresholds: Mapping[str, DarkThreshold] | None = None, block: int = DARK_BLOCK) -> float | None:
    """The share of a tile's blocks that are dark and homogeneous (see the module docstring), from its pixel
    values of `scale` ((h, w) or (bands, h, w): band 1); None without a valid block."""
    threshold = (thresholds or DARK_THRESHOLDS).get(dark_regime(scale, polarization))
    if threshold is None:
        return None
    db = radiometry.to_db(values[0] if np.ndim(values) == 3 else values, scale)
    mean, std, valid = block_stats(db, block, spread=math.isfinite(threshold.std_db))
    n = int(np.count_nonzero(valid))
    if not n:
        return None
    dark = valid & (mean < threshold.mean_db)
    if std is not None:
        dark &= std < threshold.std_db
    return float(np.count_nonzero(dark)) / n


class DarkMeter:
    """Collects each tile's block means as its pixels are read (`raster.read_scene(tile_values=meter)`), so a
    large scene's pixels need not be kept; `fractions(polarization)` then gives each tile's `dark_fraction`
    (the polarization comes with the scene's metadata, after the read)."""

    def __init__(self, block: int = DARK_BLOCK, thresholds: Mapping[str, DarkThreshold] | None = None) -> None:
        self.block = block
        self.scale = ""
        self.thresholds = thresholds or DARK_THRESHOLDS
        self._spread = _spread_needed(self.thresholds)  # the std only when some regime bounds it
        self._tiles: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []

    def __call__(self, values: np.ndarray, scale: str) -> None:
        self.scale = scale
        self._tiles.append(block_stats(radiometry.to_db(values[0] if np.ndim(values) == 3 else values, scale),
                                       self.block, self._spread))

    def fractions(self, polarization: object = None) -> list[float | None]:
        threshold = self.thresholds.get(dark_regime(self.scale, polarization))
        out: list[float | None] = []
        for mean, std, valid in self._tiles:
            n = int(np.count_nonzero(valid))
            if threshold is None or not n:
                out.append(None)
                continue
            dark = valid & (mean < threshold.mean_db)
            if std is not None:
                dark &= std < threshold.std_db
            out.append(float(np.count_nonzero(dark)) / n)
        return out


def row_polarization(row: Mapping[str, object]) -> object:
    """The polarization a scene row states (manifest `polarization`, else STAC `sar:polarizations`)."""
    return row.get("polarization") or row.get("sar:polarizations")


# --------------------------------------------------------------------------- per tile, for the catalog

def archive_root(path: str | Path, rel: str) -> Path:
    """The archive folder of a file given its path and its archive-relative POSIX path."""
    return Path(path).parents[len(PurePosixPath(rel).parts) - 1]


def tile_mask_columns(
    path: str | Path, rel: str, size: tuple[int, int], windows: Sequence[Sequence[int]],
    dark: Sequence[float | None] | None = None,
) -> tuple[list[dict[str, float | None]], list[str]]:
    """The `MASK_COLUMNS` of each window of a scene, and warning lines (a mask that cannot be used).

    `path`: the image; `rel`: its archive-relative path (the mask is found from it, `find_mask`); `size`: its
    (width, height); `dark`: the windows' `dark_fraction`s, measured where the pixels were read.
    """
    rows: list[dict[str, float | None]] = [dict.fromkeys(MASK_COLUMNS) for _ in windows]
    if dark is not None:
        for row, value in zip(rows, dark):
            row["tile_dark_fraction"] = value
    found = find_mask(rel)
    if found is None:
        return rows, []
    rule, mask_rel = found
    mask_path = archive_root(path, rel) / mask_rel
    if not mask_path.is_file():
        log.info("%s: no %s mask at %s; its tiles' mask fractions stay empty", rel, rule.dataset, mask_rel)
        return rows, []
    try:
        fractions = mask_fractions(mask_path, rule, windows, size)
    except (RasterError, ValueError) as exc:
        line = f"mask {printable_path(mask_rel)} not used ({str(exc).splitlines()[0]}); tile_water_fraction left empty"
        return rows, [line]
    for row, values in zip(rows, fractions):
        row.update(values)
    return rows, []


def read_mask_columns(path: str | Path, rel: str, row: Mapping[str, object], windows: Sequence[Sequence[int]],
                      dark: Sequence[float | None] | None = None,
                      ) -> tuple[list[dict[str, float | None]], list[str]]:
    """`tile_mask_columns` of a scene already in the catalog (a re-label: the upgrade to schema v4, a changed
    manifest row). `dark`: the tiles' stored dark proxies, kept as they are (same pixels); when None (never
    measured: the upgrade to schema v4) the tiles' pixels are read again window by window (nothing embedded).

    Raises RasterError when the image cannot be read.
    """
    if dark is None:
        meter = DarkMeter()
        for window in windows:
            meter(raster.read_window(path, Window(*(int(v) for v in window)), bands=[1]), str(row.get("scale") or ""))
        dark = meter.fractions(row_polarization(row))
    size = (int(row["width"]), int(row["height"]))  # type: ignore[call-overload]
    return tile_mask_columns(path, rel, size, windows, dark)


# --------------------------------------------------------------------------- words, for captions

# A tile's water fraction (the mask's, else the dark proxy) -> how a caption can say it: (upper bound, phrases).
WATER_CONTEXT: tuple[tuple[float, tuple[str, ...]], ...] = (
    (0.02, ("dry land", "land without water", "no water")),
    (0.15, ("land with a little water", "land with a small stream or pond")),
    (0.5, ("land with a river or lake", "land and water", "fields along a river")),
    (0.9, ("mostly water with some land", "water with a shoreline", "a lake or bay with its shore")),
    (math.inf, ("open water", "mostly water", "a water surface")),
)


def water_context(fraction: float | None) -> tuple[str, ...]:
    """Phrases for a tile's water fraction ("mostly water", "land with a river or lake" ...); () when unknown.

    For captions of tiles without `scene_type` context: pass `tile_water_fraction`, else
    `proxy_water_fraction(tile_dark_fraction, scale)` (None on 8-bit products, where darkness is not water).
    """
    if fraction is None or not math.isfinite(fraction):
        return ()
    return next(words for bound, words in WATER_CONTEXT if fraction < bound)
