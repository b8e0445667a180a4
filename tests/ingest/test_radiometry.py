"""Radiometry: scale detection, dB conversion, the per-chip stretch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sarclip_search.ingest.radiometry import SCALES, detect_scale, normalize_db, to_db, to_model_input


def test_scales_are_the_documented_four() -> None:
    assert SCALES == ("linear_power", "amplitude", "db", "display8")


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("uint8", "display8"),
        ("uint16", "amplitude"),
        ("int16", "amplitude"),
        ("uint32", "amplitude"),
        ("complex64", "amplitude"),
        ("complex_int16", "amplitude"),
        ("float32", "linear_power"),
        ("float64", "linear_power"),
    ],
)
def test_detect_scale_from_dtype(dtype: str, expected: str) -> None:
    assert detect_scale(dtype) == expected


def test_detect_scale_float_sample_in_db() -> None:
    rng = np.random.default_rng(0)
    db_sample = rng.normal(-15.0, 4.0, size=(32, 32)).astype(np.float32)
    db_sample[0, 0] = np.nan
    assert detect_scale("float32", sample=db_sample) == "db"
    power = 10 ** (db_sample / 10)
    assert detect_scale("float32", sample=power) == "linear_power"
    assert detect_scale("float32", sample=np.full((4, 4), np.nan)) == "linear_power"


def test_detect_scale_explicit_tag_wins() -> None:
    db_sample = np.full((8, 8), -12.0, dtype=np.float32)
    assert detect_scale("float32", {"SAR_SCALE": "linear_power"}, db_sample) == "linear_power"
    assert detect_scale("uint8", {"sar:scale": "db"}) == "db"
    assert detect_scale("uint16", {"scale": "Linear_Power"}) == "linear_power"


def test_detect_scale_ignores_an_unknown_tag_value() -> None:
    assert detect_scale("uint16", {"sar:scale": "sigma_nought"}) == "amplitude"


def test_detect_scale_rejects_unknown_dtype() -> None:
    with pytest.raises(ValueError, match="unsupported raster data type"):
        detect_scale("bool")


def test_to_db_linear_power() -> None:
    db = to_db(np.array([1.0, 0.01, 100.0, 0.0, -1.0, np.nan]), "linear_power")
    assert db.dtype == np.float32
    np.testing.assert_allclose(db[:5], [0.0, -20.0, 20.0, -60.0, -60.0], atol=1e-5)
    assert np.isnan(db[5])


def test_to_db_amplitude_matches_power() -> None:
    amplitude = np.array([[0.1, 1.0, 10.0]], dtype=np.float32)
    np.testing.assert_allclose(to_db(amplitude, "amplitude"), to_db(amplitude**2, "linear_power"), atol=1e-5)
    np.testing.assert_allclose(to_db(np.array([0.0]), "amplitude"), [-60.0])


def test_to_db_complex_is_magnitude() -> None:
    values = np.array([3 + 4j, 0j], dtype=np.complex64)
    np.testing.assert_allclose(to_db(values, "amplitude"), [20 * np.log10(5.0), -60.0], atol=1e-5)


def test_to_db_display8_and_db() -> None:
    np.testing.assert_allclose(
        to_db(np.array([0, 9, 255], dtype=np.uint8), "display8"), [0.0, 20.0, 20 * np.log10(256)], atol=1e-5
    )
    values = np.array([-12.5, np.nan, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(to_db(values, "db"), values)
    assert np.isnan(to_db(np.array([np.inf]), "db")[0])


def test_to_db_rejects_unknown_scale() -> None:
    with pytest.raises(ValueError, match="unknown SAR scale"):
        to_db(np.ones(3), "sigma0")


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(1e-5, 1e5)))
def test_power_and_amplitude_round_trip(power: np.ndarray) -> None:
    np.testing.assert_allclose(10 ** (to_db(power, "linear_power") / 10), power, rtol=1e-4)
    amplitude = np.sqrt(power)
    np.testing.assert_allclose(10 ** (to_db(amplitude, "amplitude") / 20), amplitude, rtol=1e-4)


def test_normalize_db_maps_percentiles_to_unit_range() -> None:
    db = np.linspace(-30.0, 0.0, 1001, dtype=np.float32).reshape(7, 143)
    out = normalize_db(db, low_pct=0.0, high_pct=100.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), np.linspace(0.0, 1.0, 1001), atol=1e-6)
    clipped = normalize_db(db)
    assert clipped.min() == 0.0 and clipped.max() == 1.0


@pytest.mark.parametrize(
    "db",
    [
        np.full((8, 8), -12.0),
        np.full((8, 8), np.nan),
        np.array([[np.nan, 5.0], [np.nan, 5.0]]),
        np.zeros((0, 0)),
    ],
)
def test_normalize_db_degenerate_input_gives_zeros_without_warnings(db: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_db(db)
        chip = to_model_input(db, "db")
    assert out.shape == db.shape and out.dtype == np.float32
    assert not out.any() and not chip.any()


def test_normalize_db_nodata_becomes_zero() -> None:
    db = np.array([[np.nan, -20.0, -10.0, np.inf], [-15.0, -5.0, -25.0, -np.inf]])
    out = normalize_db(db)
    assert out[0, 0] == 0.0 and out[0, 3] == 0.0 and out[1, 3] == 0.0
    assert np.isfinite(out).all()


def test_normalize_db_rejects_bad_percentiles() -> None:
    with pytest.raises(ValueError):
        normalize_db(np.zeros((2, 2)), low_pct=50.0, high_pct=10.0)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=16)))
def test_normalize_db_output_is_always_in_unit_range(db: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_db(db)
    assert out.dtype == np.float32 and out.shape == db.shape
    assert np.isfinite(out).all() and out.min(initial=0.0) >= 0.0 and out.max(initial=0.0) <= 1.0


def test_to_model_input_uses_band_zero() -> None:
    rng = np.random.default_rng(1)
    stack = rng.gamma(4.0, 0.01, size=(2, 16, 16)).astype(np.float32)
    out = to_model_input(stack, "linear_power")
    assert out.shape == (16, 16) and out.dtype == np.float32
    np.testing.assert_array_equal(out, to_model_input(stack[0], "linear_power"))
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_to_model_input_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        to_model_input(np.ones(5), "db")
    with pytest.raises(ValueError):
        to_model_input(np.ones((0, 4, 4)), "db")
