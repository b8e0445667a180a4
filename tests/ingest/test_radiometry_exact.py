"""The fast radiometry (8-bit tables, percentiles from a few order statistics) gives numpy's results bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from sarclip_search.ingest import radiometry
from sarclip_search.ingest.radiometry import normalize_db, to_db, to_model_input


def reference_normalize_db(db: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.5) -> np.ndarray:
    """The stretch as it was written first: np.percentile over the finite values."""
    array = np.asarray(db, dtype=np.float32)
    finite = np.isfinite(array)
    out = np.zeros(array.shape, dtype=np.float32)
    if not finite.any():
        return out
    p_low, p_high = np.percentile(array[finite], [low_pct, high_pct])
    spread = float(p_high) - float(p_low)
    if not spread > 0.0:
        return out
    out[finite] = np.clip((array[finite].astype(np.float64) - float(p_low)) / spread, 0.0, 1.0)
    return out


def _chip(rng: np.random.Generator, kind: str, shape: tuple[int, int]) -> np.ndarray:
    if kind == "uint8 noise":
        return rng.integers(0, 256, shape).astype(np.float32)
    if kind == "uint8 dark speckle":  # many ties, most values near 0: the table path's hard case
        return rng.gamma(1.0, 20.0, shape).clip(0, 255).round().astype(np.float32)
    if kind == "uint8 few values":
        return rng.choice(np.float32([0, 3, 200]), shape)
    if kind == "db with nodata":
        values = rng.normal(-15.0, 5.0, shape).astype(np.float32)
        values[rng.random(shape) < 0.1] = np.nan
        return values
    if kind == "power":
        return rng.gamma(1.0, 0.1, shape).astype(np.float32)
    return rng.integers(0, 4000, shape).astype(np.float32)  # amplitude DNs with ties


KINDS = ("uint8 noise", "uint8 dark speckle", "uint8 few values", "db with nodata", "power", "amplitude")


@pytest.mark.parametrize("kind", KINDS)
def test_model_input_equals_the_reference_bit_for_bit(kind: str) -> None:
    rng = np.random.default_rng(KINDS.index(kind))
    shapes = [(1, 1), (1, 7), (3, 2), (128, 128), (256, 256), (491, 300), *map(tuple, rng.integers(1, 300, (40, 2)))]
    for shape in shapes:
        values = _chip(rng, kind, shape)
        for scale in radiometry.SCALES:
            fast = to_model_input(values, scale)
            assert fast.dtype == np.float32 and fast.shape == values.shape
            np.testing.assert_array_equal(fast, reference_normalize_db(to_db(values, scale)), err_msg=f"{shape} {scale}")


@pytest.mark.parametrize(("low", "high"), [(0.0, 100.0), (1.0, 99.5), (2.0, 98.0), (50.0, 50.5)])
def test_percentiles_equal_numpy_for_any_percentile_pair(low: float, high: float) -> None:
    rng = np.random.default_rng(7)
    for size in (1, 2, 5, 4096, 4097, 65536, 100_003):
        values = rng.standard_normal(size).astype(np.float32)
        if size > 10:
            values[: size // 3] = values[0]  # a run of ties
        expected = np.percentile(values, [low, high])
        assert radiometry._percentiles(values.copy(), low, high) == (float(expected[0]), float(expected[1]))
        np.testing.assert_array_equal(normalize_db(values, low, high), reference_normalize_db(values, low, high))


def test_the_8bit_table_path_is_taken_only_for_whole_numbers_0_to_255() -> None:
    assert radiometry._display8_model_input(np.float32([[0, 255], [3, 4]])) is not None
    assert radiometry._display8_model_input(np.uint8([[0, 255], [3, 4]])) is not None
    for values in (np.float32([[0, 256]]), np.float32([[-1, 2]]), np.float32([[0.5, 2]]), np.float32([[np.nan, 2]])):
        assert radiometry._display8_model_input(values) is None  # the general path handles these
        np.testing.assert_array_equal(to_model_input(values, "display8"),
                                      reference_normalize_db(to_db(values, "display8")))
