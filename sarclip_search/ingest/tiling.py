"""Tiling of a raster into pixel windows: a pure function, no I/O.

All quantities here are in pixels of the full raster (never CRS units). The formula is written out in
`tile_windows`; `raster.read_window` turns a `Window` into a windowed read and `raster.window_bbox_lonlat`
into a lon/lat bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Window", "axis_offsets", "tile_count", "tile_windows"]


@dataclass(frozen=True)
class Window:
    """A pixel window of a raster: column/row of its top-left pixel, then width and height, in pixels."""

    col_off: int
    row_off: int
    width: int
    height: int

    def as_list(self) -> list[int]:
        """`[col_off, row_off, width, height]`, the form stored in the catalog and in JSON."""
        return [self.col_off, self.row_off, self.width, self.height]


def axis_offsets(length: int, size: int, stride: int) -> list[int]:
    """Window offsets along one axis of `length` pixels for windows of `size` and a step of `stride`.

    With `n = ceil((length - size) / stride)`, the offsets are `min(k * stride, length - size)` for
    `k = 0 .. n`, duplicates removed: regular steps, the last one pulled back to end at the edge.
    An axis no longer than `size` has the single offset 0.
    """
    if length <= size:
        return [0]
    last = length - size
    steps = -(-last // stride)  # ceil((length - size) / stride) without floats
    offsets = [min(k * stride, last) for k in range(steps + 1)]
    return sorted(set(offsets))


def tile_windows(width: int, height: int, size: int, stride: int | None = None) -> list[Window]:
    """Cut a `width` x `height` raster into square windows of `size` pixels every `stride` pixels.

    Formula, per axis of length `L` (width for columns, height for rows), with `s = size`,
    `t = stride` (default `size`, i.e. no overlap):

    - `L <= s`: one offset, 0, and the window spans the whole axis (its extent is `L`, not `s`);
    - otherwise offsets `o_k = min(k * t, L - s)` for `k = 0 .. ceil((L - s) / t)`, duplicates removed,
      each window `s` long. The last window is shifted back to end exactly at the edge, so no window
      leaves the raster and, for `t <= s`, every pixel is covered. A stride larger than `size` samples
      the raster sparsely: the first and last windows still touch the edges, pixels between steps are
      skipped.

    Windows are the product of the row and column offsets, in row-major order (rows outer, columns
    inner). An image with both sides `<= size` is one window: the whole image.

    Raises:
        ValueError: `size` or `stride` is not positive, or `width`/`height` is not positive.
    """
    stride = _checked_stride(width, height, size, stride)
    tile_width = min(size, width)
    tile_height = min(size, height)
    return [
        Window(col_off=col, row_off=row, width=tile_width, height=tile_height)
        for row in axis_offsets(height, size, stride)
        for col in axis_offsets(width, size, stride)
    ]


def tile_count(width: int, height: int, size: int, stride: int | None = None) -> int:
    """`len(tile_windows(width, height, size, stride))`, without making the windows (same errors)."""
    stride = _checked_stride(width, height, size, stride)
    return len(axis_offsets(width, size, stride)) * len(axis_offsets(height, size, stride))


def _checked_stride(width: int, height: int, size: int, stride: int | None) -> int:
    """The stride (`size` when None), after checking that every quantity is positive (ValueError if not)."""
    if size <= 0:
        raise ValueError(f"tile size must be a positive number of pixels, got {size}")
    if stride is None:
        stride = size
    if stride <= 0:
        raise ValueError(f"tile stride must be a positive number of pixels, got {stride}")
    if width <= 0 or height <= 0:
        raise ValueError(f"raster size must be positive, got width={width}, height={height}")
    return stride
