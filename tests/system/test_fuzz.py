"""Property-based fuzzing (hypothesis) of everything that reads user data.

- raster reader: random bytes and randomly mutated valid GeoTIFF/PNG files either read or raise
  RasterError, never another exception;
- tiler: any sizes give in-bounds windows covering the raster, or ValueError;
- radiometry: any float array (NaN, Inf, huge, tiny) gives a finite chip in [0, 1] of the same shape;
- filters: any string given as --where is refused with FilterError or is a predicate that runs on a
  read-only catalog, which stays byte-identical.

Default run: `FUZZ_EXAMPLES` cases per property. `pytest -m slow tests/system/test_fuzz.py` runs
`SLOW_EXAMPLES` per property (see docs/reliability.md for the figures).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sarclip_search.errors import FilterError, RasterError
from sarclip_search.ingest import radiometry
from sarclip_search.ingest.raster import read_chip, read_info
from sarclip_search.ingest.tiling import tile_windows
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.filters import Filters, build_predicate, check_predicate

FUZZ_EXAMPLES = 40
SLOW_EXAMPLES = 1000

ARCHIVE = Path(__file__).resolve().parents[1] / "data" / "archive"
VALID_TIF = ARCHIVE / "sentinel1" / "S1A_IW_GRDH_1SDV_20210101T054512_20210101T054537_035951_043656_1A2B_tiny.tif"
VALID_PNG = ARCHIVE / "chips" / "chip_ship_0001.png"
SCRATCH = Path(tempfile.mkdtemp(prefix="sarclip-fuzz-"))


def budget(examples: int):
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    database=None)


def both_budgets(prop, **strategies):
    """The property as a default test (FUZZ_EXAMPLES) and as a slow one (SLOW_EXAMPLES)."""
    fast = budget(FUZZ_EXAMPLES)(given(**strategies)(prop))
    slow = pytest.mark.slow(budget(SLOW_EXAMPLES)(given(**strategies)(prop)))
    return fast, slow


# --- raster reader -----------------------------------------------------------------------------------


def _read_or_raster_error(data: bytes, suffix: str) -> None:
    path = SCRATCH / f"fuzz{suffix}"
    path.write_bytes(data)
    for reader in (read_info, read_chip):
        try:
            result = reader(path)
        except RasterError as exc:
            assert "\n" not in str(exc) and path.name in str(exc)
            continue
        if reader is read_chip:
            assert result.shape == (128, 128) and np.isfinite(result).all()


def _random_bytes(data: bytes, suffix: str) -> None:
    _read_or_raster_error(data, suffix)


def _mutate(original: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    data = bytearray(original)
    for position, value in edits:
        data[position % len(data)] = value
    return bytes(data[:cut] if cut else data)


_EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=12)


def _mutated_tiff(edits: list[tuple[int, int]], cut: int | None, header_only: bool) -> None:
    original = VALID_TIF.read_bytes()
    if header_only:  # the first 512 bytes: TIFF header, IFD, GeoTIFF keys
        edits = [(position % 512, value) for position, value in edits]
    _read_or_raster_error(_mutate(original, edits, cut), ".tif")


def _mutated_png(edits: list[tuple[int, int]], cut: int | None) -> None:
    _read_or_raster_error(_mutate(VALID_PNG.read_bytes(), edits, cut), ".png")


_CUT = st.none() | st.integers(1, 4000)
test_reader_random_bytes, test_reader_random_bytes_slow = both_budgets(
    _random_bytes, data=st.binary(max_size=2048), suffix=st.sampled_from([".tif", ".png", ".jpg"]))
test_reader_mutated_tiff, test_reader_mutated_tiff_slow = both_budgets(
    _mutated_tiff, edits=_EDITS, cut=_CUT, header_only=st.booleans())
test_reader_mutated_png, test_reader_mutated_png_slow = both_budgets(_mutated_png, edits=_EDITS, cut=_CUT)


# --- tiler -------------------------------------------------------------------------------------------


def _tiler(width: int, height: int, size: int, stride: int | None) -> None:
    try:
        windows = tile_windows(width, height, size, stride)
    except ValueError:
        assert size <= 0 or (stride is not None and stride <= 0) or width <= 0 or height <= 0
        return
    assert windows
    for window in windows:
        assert 0 <= window.col_off and window.col_off + window.width <= width
        assert 0 <= window.row_off and window.row_off + window.height <= height
    if stride is None or stride <= size:  # every pixel covered: first and last windows touch the edges
        assert max(w.col_off + w.width for w in windows) == width
        assert max(w.row_off + w.height for w in windows) == height
    assert len({(w.col_off, w.row_off) for w in windows}) == len(windows)


test_tiler, test_tiler_slow = both_budgets(
    _tiler, width=st.integers(-5, 5000), height=st.integers(-5, 5000), size=st.integers(-5, 600),
    stride=st.none() | st.integers(-5, 600))


# --- radiometry ----------------------------------------------------------------------------------------

_ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)
_ARRAYS = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=12), elements=_ANY_FLOAT)


def _radiometry(values: np.ndarray, scale: str) -> None:
    chip = radiometry.to_model_input(values, scale)
    assert chip.dtype == np.float32 and chip.shape == values.shape[-2:]
    assert np.isfinite(chip).all() and chip.min() >= 0.0 and chip.max() <= 1.0
    db = radiometry.to_db(values, scale)
    assert db.shape == values.shape and not np.isinf(db).any()


def test_values_near_the_float32_limit_give_a_finite_chip() -> None:
    """Found by fuzzing: p_high - p_low overflowed float32 and the stretch returned NaN."""
    chip = radiometry.to_model_input(np.array([[3e38, -3e38], [0.0, 1.0]], np.float32), "db")
    assert np.isfinite(chip).all() and chip.min() >= 0.0 and chip.max() <= 1.0


def _detect_scale(dtype: str, tags: dict[str, str]) -> None:
    try:
        assert radiometry.detect_scale(dtype, tags) in radiometry.SCALES
    except ValueError:
        pass


test_radiometry, test_radiometry_slow = both_budgets(
    _radiometry, values=_ARRAYS, scale=st.sampled_from(radiometry.SCALES))
test_detect_scale, test_detect_scale_slow = both_budgets(
    _detect_scale, dtype=st.text(max_size=20),
    tags=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))


# --- filters -------------------------------------------------------------------------------------------

_SQL_WORDS = ["SELECT", "FROM", "tiles", "scenes", "DROP", "TABLE", "COPY", "TO", "ATTACH", "DELETE", "AND", "OR",
              "NOT", ";", "(", ")", "'", '"', "--", "/*", "*/", "=", "<", "label", "split", "'T72'", "1", "?", "$1",
              "read_csv_auto('/etc/passwd')", "UNION", "IN", "LIKE", "'%'", "IS", "NULL", ",", "INSTALL", "httpfs",
              "PRAGMA", "SET", "CALL", "getenv('HOME')", "query_table('scenes')", "\\", "\n", "\x00"]
_WHERE = st.one_of(st.text(max_size=80), st.lists(st.sampled_from(_SQL_WORDS), max_size=12).map(" ".join))


@pytest.fixture(scope="module")
def catalog_file(indexed_db, tmp_path_factory) -> Path:
    db, _, _ = indexed_db
    generation = db / (db / "CURRENT").read_text().strip()
    path = tmp_path_factory.mktemp("fuzz-catalog") / "catalog.duckdb"
    shutil.copy2(generation / "catalog.duckdb", path)
    return path


def _filters(catalog_file: Path, where: str) -> None:
    before = hashlib.sha256(catalog_file.read_bytes()).hexdigest()
    try:
        check_predicate(where)
    except FilterError:
        pass
    with Catalog(catalog_file, read_only=True) as catalog:
        try:
            predicate, params = build_predicate(Filters(where=where), catalog.columns())
        except FilterError:
            predicate = None
        if predicate is not None:
            try:
                ids = catalog.tile_ids(predicate, params)
                assert ids.dtype == np.int64
            except FilterError:
                pass
    assert hashlib.sha256(catalog_file.read_bytes()).hexdigest() == before


@budget(FUZZ_EXAMPLES)
@given(where=_WHERE)
def test_filters(catalog_file: Path, where: str) -> None:
    _filters(catalog_file, where)


@pytest.mark.slow
@budget(SLOW_EXAMPLES)
@given(where=_WHERE)
def test_filters_slow(catalog_file: Path, where: str) -> None:
    _filters(catalog_file, where)
