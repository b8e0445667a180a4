"""Tiling: the window formula, coverage and edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sarclip_search.ingest.tiling import Window, axis_offsets, tile_windows


def test_small_image_is_one_whole_window() -> None:
    assert tile_windows(40, 30, 64) == [Window(0, 0, 40, 30)]
    assert tile_windows(64, 64, 64) == [Window(0, 0, 64, 64)]


def test_exact_multiple_without_overlap() -> None:
    windows = tile_windows(128, 128, 64)
    assert [w.as_list() for w in windows] == [
        [0, 0, 64, 64],
        [64, 0, 64, 64],
        [0, 64, 64, 64],
        [64, 64, 64, 64],
    ]


def test_last_window_is_shifted_back_to_the_edge() -> None:
    windows = tile_windows(160, 96, 64)
    assert [(w.col_off, w.row_off) for w in windows] == [
        (0, 0),
        (64, 0),
        (96, 0),
        (0, 32),
        (64, 32),
        (96, 32),
    ]
    assert all(w.width == 64 and w.height == 64 for w in windows)


def test_side_smaller_than_size_is_clipped() -> None:
    windows = tile_windows(40, 200, 64)
    assert [w.as_list() for w in windows] == [
        [0, 0, 40, 64],
        [0, 64, 40, 64],
        [0, 128, 40, 64],
        [0, 136, 40, 64],
    ]


def test_stride_gives_overlap() -> None:
    windows = tile_windows(128, 128, 64, stride=32)
    assert axis_offsets(128, 64, 32) == [0, 32, 64]
    assert len(windows) == 9


def test_row_major_order() -> None:
    windows = tile_windows(200, 150, 64)
    keys = [(w.row_off, w.col_off) for w in windows]
    assert keys == sorted(keys)


def test_as_list() -> None:
    assert Window(1, 2, 3, 4).as_list() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("width", "height", "size", "stride"),
    [(10, 10, 0, None), (10, 10, -4, None), (10, 10, 4, 0), (10, 10, 4, -1), (0, 10, 4, None)],
)
def test_invalid_arguments_raise_value_error(width: int, height: int, size: int, stride: int | None) -> None:
    with pytest.raises(ValueError):
        tile_windows(width, height, size, stride)


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    size=st.integers(16, 96),  # small sizes are covered per axis below; here they would only be slow
    stride_fraction=st.floats(0.25, 1.0),
)
def test_windows_cover_the_image_and_stay_inside(
    width: int, height: int, size: int, stride_fraction: float
) -> None:
    stride = max(1, int(size * stride_fraction))
    windows = tile_windows(width, height, size, stride)
    covered = np.zeros((height, width), dtype=bool)
    for w in windows:
        assert 0 <= w.col_off and w.col_off + w.width <= width
        assert 0 <= w.row_off and w.row_off + w.height <= height
        assert (w.width, w.height) == (min(size, width), min(size, height))
        covered[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = True
    assert covered.all()
    assert len(set(windows)) == len(windows)
    cols, rows = axis_offsets(width, size, stride), axis_offsets(height, size, stride)
    assert len(windows) == len(cols) * len(rows)
    assert all(b - a <= stride for a, b in itertools.pairwise(cols))


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 2000), size=st.integers(1, 128), stride=st.integers(1, 128))
def test_axis_offsets_cover_the_axis(length: int, size: int, stride: int) -> None:
    offsets = axis_offsets(length, size, min(stride, size))
    extent = min(size, length)
    covered = np.zeros(length, dtype=bool)
    for offset in offsets:
        assert 0 <= offset and offset + extent <= length
        covered[offset : offset + extent] = True
    assert covered.all()
    assert offsets == sorted(set(offsets))


@settings(max_examples=100, deadline=None)
@given(length=st.integers(1, 500), size=st.integers(1, 64), stride=st.integers(65, 200))
def test_stride_larger_than_size_stays_inside_and_touches_both_edges(
    length: int, size: int, stride: int
) -> None:
    offsets = axis_offsets(length, size, stride)
    assert offsets[0] == 0
    assert offsets[-1] == max(0, length - size)
    assert offsets == sorted(set(offsets))
