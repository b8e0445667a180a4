"""SAR radiometry: the one place where SAR pixel values become model input.

Every raster has a *scale*, one of `SCALES`:

- ``linear_power``: backscatter intensity (sigma0/gamma0 in linear units, |s|^2), e.g. Sentinel-1 GRD float;
- ``amplitude``: backscatter amplitude |s| (or digital numbers proportional to it), e.g. KOMPSAT-5 uint16,
  and the magnitude of complex SLC data;
- ``db``: backscatter already in decibels, e.g. Sen1Floods11 float32;
- ``display8``: 8-bit display products (JPEG/PNG/8-bit TIFF chips), treated as amplitude digital numbers.

The model sees every chip the same way: values go to dB (`to_db`), then a per-chip robust stretch maps
the 1st..99.5th percentile of the chip to [0, 1] (`normalize_db`). `to_model_input` does both. The stretch
is per chip on purpose: absolute calibration differs between sensors and products, texture and contrast
do not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

__all__ = [
    "AMPLITUDE_FLOOR",
    "POWER_FLOOR",
    "SCALES",
    "SCALE_TAG_KEYS",
    "detect_scale",
    "normalize_db",
    "to_db",
    "to_model_input",
]

logger = logging.getLogger(__name__)

SCALES: tuple[str, ...] = ("linear_power", "amplitude", "db", "display8")

# Metadata keys that state the scale explicitly (compared case-insensitively): STAC-style and GeoTIFF tag.
SCALE_TAG_KEYS: tuple[str, ...] = ("sar:scale", "scale", "sar_scale")

# Noise floor before the log: -60 dB, well below any SAR noise-equivalent sigma0 (about -25 to -30 dB),
# so zeros and negative calibration artefacts become "very dark" instead of -inf.
POWER_FLOOR = 1e-6
AMPLITUDE_FLOOR = 1e-3  # the same -60 dB in amplitude: 20 log10(1e-3) == 10 log10(1e-6)

# A float sample is taken as dB when at least this share of its finite values is negative ...
_DB_MIN_NEGATIVE_SHARE = 0.1
# ... and its median lies in this range, typical of sigma0 in dB over sea and land.
_DB_MEDIAN_RANGE = (-40.0, 10.0)


def _explicit_scale(tags: Mapping[str, str] | None) -> str | None:
    """The scale named by a tag in `SCALE_TAG_KEYS`, or None; a tag with an unknown value is ignored."""
    if not tags:
        return None
    lowered = {str(key).lower(): str(value).strip().lower() for key, value in tags.items()}
    for key in SCALE_TAG_KEYS:
        value = lowered.get(key)
        if value is None:
            continue
        if value in SCALES:
            return value
        logger.warning("ignoring scale tag %s=%r: expected one of %s", key, value, ", ".join(SCALES))
    return None


def _looks_like_db(sample: np.ndarray) -> bool:
    """True when a float sample has the signature of dB: many negative values, a median in dB range."""
    values = np.asarray(sample)
    if np.iscomplexobj(values):
        return False
    values = values[np.isfinite(values)]
    if values.size == 0:
        return False
    negative_share = float(np.count_nonzero(values < 0)) / values.size
    median = float(np.median(values))
    low, high = _DB_MEDIAN_RANGE
    return negative_share >= _DB_MIN_NEGATIVE_SHARE and low <= median <= high


def detect_scale(dtype: str, tags: Mapping[str, str] | None = None, sample: np.ndarray | None = None) -> str:
    """The radiometric scale of a raster, one of `SCALES`.

    Rule, first match wins:

    1. an explicit tag: a key in `SCALE_TAG_KEYS` (``sar:scale``, ``scale``, ``sar_scale``; any case,
       from GeoTIFF tags or STAC properties) whose value is one of `SCALES`;
    2. ``uint8``/``int8`` -> ``display8``;
    3. ``uint16``/``int16``/``uint32``/``int32`` -> ``amplitude``;
    4. complex (``complex64``, ``complex_int16`` ...) -> ``amplitude`` (the reader takes ``abs``);
    5. float: ``db`` when `sample` has at least 10 % negative values and a median in [-40, 10];
       otherwise ``linear_power`` (also without a sample: float SAR products are power by default).

    Raises:
        ValueError: `dtype` is not a numeric raster type this rule knows.
    """
    explicit = _explicit_scale(tags)
    if explicit is not None:
        return explicit
    name = str(dtype).lower()
    if name in ("uint8", "int8"):
        return "display8"
    if name in ("uint16", "int16", "uint32", "int32"):
        return "amplitude"
    if name.startswith("complex"):
        return "amplitude"
    if name.startswith("float"):
        if sample is not None and _looks_like_db(sample):
            return "db"
        return "linear_power"
    raise ValueError(
        f"unsupported raster data type {dtype!r}: expected uint8, (u)int16, (u)int32, float or complex"
    )


def to_db(values: np.ndarray, scale: str) -> np.ndarray:
    """Convert `values` of `scale` to decibels, as float32 of the same shape.

    - ``linear_power``: ``10 log10(max(v, 1e-6))``;
    - ``amplitude``: ``20 log10(max(|v|, 1e-3))`` (complex input is taken as its magnitude);
    - ``display8``: 8-bit amplitude digital numbers, ``20 log10(DN + 1)`` (0 maps to 0 dB);
    - ``db``: unchanged.

    NaN stays NaN; infinities become NaN (they are not backscatter).

    Raises:
        ValueError: `scale` is not one of `SCALES`.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown SAR scale {scale!r}: expected one of {', '.join(SCALES)}")
    array = np.asarray(values)
    if np.iscomplexobj(array):
        array = np.abs(array)
    array = array.astype(np.float32, copy=True)
    array[np.isinf(array)] = np.nan
    if scale == "db":
        return array
    # NaN passes through np.maximum and np.log10 silently; the floor keeps log10 away from <= 0.
    if scale == "linear_power":
        return (10.0 * np.log10(np.maximum(array, np.float32(POWER_FLOOR)))).astype(np.float32)
    if scale == "amplitude":
        return (20.0 * np.log10(np.maximum(np.abs(array), np.float32(AMPLITUDE_FLOOR)))).astype(np.float32)
    # display8: DN + 1 so that DN 0 is finite; negative DNs (not expected) are floored like amplitude.
    return (20.0 * np.log10(np.maximum(array + 1.0, np.float32(AMPLITUDE_FLOOR)))).astype(np.float32)


def normalize_db(db: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.5) -> np.ndarray:
    """Robust per-chip stretch of dB values to [0, 1], as float32 of the same shape.

    ``out = clip((db - p_low) / (p_high - p_low), 0, 1)`` with ``p_low``/``p_high`` the `low_pct`/`high_pct`
    percentiles of the finite values. NaN (nodata) and infinite pixels become 0. A chip with no finite
    value or with ``p_high == p_low`` (e.g. constant) is all zeros, without warnings.

    The percentiles are numpy's (``np.percentile``, linear method), bit for bit (`_percentiles`).

    Raises:
        ValueError: not ``0 <= low_pct < high_pct <= 100``.
    """
    _check_percentiles(low_pct, high_pct)
    array = np.asarray(db, dtype=np.float32)
    finite = np.isfinite(array)
    out = np.zeros(array.shape, dtype=np.float32)
    every = bool(finite.all())
    values = array.ravel().copy() if every else array[finite]
    if values.size == 0:
        return out
    p_low, p_high = _percentiles(values, low_pct, high_pct)
    spread = p_high - p_low
    if not spread > 0.0:
        return out
    # float64: with values near the float32 limits (±3e38) the difference would overflow to inf and inf/inf is NaN.
    if every:
        stretched = array.astype(np.float64)  # in place from here: the same operations, fewer temporaries
        stretched -= p_low
        stretched /= spread
        return np.clip(stretched, 0.0, 1.0, out=stretched).astype(np.float32)
    else:
        stretched = (array[finite].astype(np.float64) - p_low) / spread
        out[finite] = np.clip(stretched, 0.0, 1.0)
    return out


def _check_percentiles(low_pct: float, high_pct: float) -> None:
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(
            f"percentiles must satisfy 0 <= low_pct < high_pct <= 100, got {low_pct}, {high_pct}"
        )


def _percentiles(
    values: np.ndarray, low_pct: float, high_pct: float, counts: np.ndarray | None = None
) -> tuple[float, float]:
    """``np.percentile(values, [low_pct, high_pct])`` (linear method) with the same float64 results, faster.

    numpy partitions the values around six ranks (first, last and the two neighbours of each percentile);
    here only the four neighbours are placed (`values`, 1-D float32 without NaN, is partitioned in place),
    or, with `counts` (a histogram: `values` are the distinct sorted values, `counts[i]` how often
    `values[i]` occurs), read from the cumulative counts without sorting anything. The interpolation is
    numpy's ``_lerp`` step by step (the tests compare both on random chips, bit for bit).
    """
    n = int(counts.sum()) if counts is not None else values.size
    quantiles = np.true_divide(np.asarray([low_pct, high_pct], dtype=np.float64), 100)
    virtual = (n - 1) * quantiles
    previous = np.floor(virtual)
    following = previous + 1
    last = virtual >= n - 1
    previous[last] = n - 1
    following[last] = n - 1
    gamma = virtual - previous  # at the last value a == b, so gamma does not matter
    ranks = np.asarray([previous[0], following[0], previous[1], following[1]], dtype=np.intp)
    if counts is not None:
        ordered = values[np.searchsorted(np.cumsum(counts), ranks, side="right")]
    else:
        ordered = _order_statistics(values, ranks)
    a, b = ordered[[0, 2]], ordered[[1, 3]]
    diff = b - a  # float32, as numpy computes it
    result = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe")
    return float(result[0]), float(result[1])


_SAMPLE = 1024  # values sampled to bracket a percentile's order statistics before selecting among few


def _order_statistics(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The values of 0-based `ranks` (lower pair, then upper pair) in sorted `values` (1-D, no NaN).

    A tile's 1st and 99.5th percentiles sit in its tails, so each pair is selected among the values beyond
    a threshold taken from a strided sample (a compare over the tile, then a partition of ~2% of it)
    instead of partitioning the whole tile; when the sample's threshold does not bracket the ranks, the
    whole tile is partitioned. Same values either way (an order statistic does not depend on how it is found).
    """
    n = values.size
    if n <= 4 * _SAMPLE:
        values.partition(np.unique(ranks))
        return values[ranks]
    sample = np.sort(values[:: n // _SAMPLE])
    out = np.empty(len(ranks), dtype=values.dtype)
    low, high = ranks[:2], ranks[2:]
    # lower pair: every value <= a threshold a little above the rank's place in the sample
    threshold = sample[min(len(sample) - 1, int(low.max() * len(sample) / n) + 8)]
    below = values[values <= threshold]
    if below.size > low.max():
        below.partition(np.unique(low))
        out[:2] = below[low]
    else:
        values.partition(np.unique(ranks))
        return values[ranks]
    # upper pair: every value >= a threshold a little below the rank's place in the sample
    threshold = sample[max(0, int(high.min() * len(sample) / n) - 8)]
    above = values[values >= threshold]
    offset = n - above.size  # the rank of above's smallest value in the whole tile
    if offset <= high.min():
        above.partition(np.unique(high - offset))
        out[2:] = above[high - offset]
    else:
        values.partition(np.unique(ranks))
        return values[ranks]
    return out


def _display8_model_input(values: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.5) -> np.ndarray | None:
    """`normalize_db(to_db(values, "display8"))` for a chip of whole numbers 0..255 without NaN, through
    256-entry tables (the dB of each code, then its stretched value): the same float32 results, without
    taking a log per pixel or sorting the chip. None when `values` is not such a chip."""
    array = np.asarray(values)
    if array.dtype == np.uint8:
        codes = array
    else:
        if array.dtype.kind != "f" or array.size == 0:
            return None
        low, high = float(array.min()), float(array.max())  # NaN propagates: not a plain 8-bit chip
        if not (low >= 0.0 and high <= 255.0):
            return None
        codes = array.astype(np.uint8)
        if not np.array_equal(codes, array):
            return None
    counts = np.bincount(codes.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    db = _DISPLAY8_DB[present]
    p_low, p_high = _percentiles(db, low_pct, high_pct, counts=counts[present])
    spread = p_high - p_low
    if not spread > 0.0:
        return np.zeros(codes.shape, dtype=np.float32)
    table = np.clip((_DISPLAY8_DB.astype(np.float64) - p_low) / spread, 0.0, 1.0).astype(np.float32)
    return np.take(table, codes)


def to_model_input(values: np.ndarray, scale: str) -> np.ndarray:
    """The model's view of a chip: ``normalize_db(to_db(values, scale))``, (H, W) float32 in [0, 1].

    `values` is (H, W) or (B, H, W). For multi-band input only band 0 is used: by convention the first
    band is the co-polarization (VV or HH), which every SAR product has; cross-pol (VH/HV) is optional.

    Raises:
        ValueError: `values` is not 2-D or 3-D, has no band, or `scale` is unknown.
    """
    array = np.asarray(values)
    if array.ndim == 3:
        if array.shape[0] == 0:
            raise ValueError(f"expected at least one band, got an array of shape {array.shape}")
        array = array[0]
    elif array.ndim != 2:
        raise ValueError(f"expected an (H, W) or (B, H, W) array, got shape {array.shape}")
    if scale == "display8":  # 8-bit chips (most of an archive of JPEG/PNG chips): by table, same values
        fast = _display8_model_input(array)
        if fast is not None:
            return fast
    return normalize_db(to_db(array, scale))


# to_db of every 8-bit code, computed by to_db itself (so a table lookup gives its exact float32 values)
_DISPLAY8_DB = to_db(np.arange(256, dtype=np.uint8), "display8")
