"""Files of a saved VectorIndex: what `save` writes (atomically: temporary files, fsync, rename) and
what `load` reads back and checks.

`write_index` is the package's one atomic save. It does not use the core's `sarclip_search._fs` because
index/ imports nothing else of sarclip_search (tests/system/test_layering.py); `_fs` is the core's only copy.

A saved index (format 2) is a directory of
    vectors.faiss            the FAISS index (always the CPU form); rewritten only when its vectors changed
    vectors_f32.NNNNNN.seg   the exact copy in id order, as a chain of append-only segments (`segments.py`):
                             float32 for PQ indexes, else vectors_f16.NNNNNN.seg (float16)
    vector_ids.NNNNNN.seg    the ids, ascending: the id -> row lookup itself
    subset_codes.NNNNNN.seg  PQ indexes: the 4-bit subset codes of every row, in id order (filtered.scan_subset)
    subset_pq.faiss          ... and their trained quantizer (an IndexPQ without codes)
    index_info.json          factory, dim, metric, counts, search settings, versions (VectorIndex.info), and
                             `files`: each file above with its size or byte range and uid (what made it)

A save into a directory holding the files the rows were loaded from (`Rows.origin`; in an index directory,
a new generation hard-links them) keeps the segments lying in the rows' unchanged prefix and writes one new
segment per column for the rest: a commit that adds rows writes those rows, the FAISS file and
index_info.json, not the whole copy. Files are never written in place, so a reader's mapping and an older
generation's hard link keep their contents.

Format 1 (before segments: `vectors_f32.npy` or `vectors_f16.npy`, `vector_ids.npy`, `subset_codes.npy`)
is still read; the next save writes format 2.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import faiss
import numpy as np

from . import segments
from .errors import REBUILD, VectorIndexError
from .rows import Rows

logger = logging.getLogger(__name__)

METRIC = "inner_product"  # vectors are L2-normalized float32 by the caller; scores are cosine similarities
FORMAT_VERSION = 2  # 2: segment chains listed in index_info.json's `files`; 1: one .npy per array
READABLE_FORMATS = (1, 2)
INFO_FILE = "index_info.json"
INDEX_FILE = "vectors.faiss"
STORE_FILES = {"float16": "vectors_f16.npy", "float32": "vectors_f32.npy"}  # format 1, by store_dtype (absent: f16)
IDS_FILE = "vector_ids.npy"  # format 1
SUBSET_CODES_FILE = "subset_codes.npy"  # format 1; PQ indexes: 4-bit PQ codes of every row, in id order
STORE_STEMS = {"float16": "vectors_f16", "float32": "vectors_f32"}  # format 2 segment names: STEM.NNNNNN.seg
IDS_STEM, CODES_STEM = "vector_ids", "subset_codes"
SUBSET_PQ_FILE = "subset_pq.faiss"  # their trained quantizer (an IndexPQ without codes)


class SavedIndex(NamedTuple):
    """The parts of a saved index, as `read_index` returns them."""

    index: faiss.Index
    info: dict[str, Any]
    store: np.ndarray  # the exact copy, in id order
    ids: np.ndarray  # int64, ascending
    codes: np.ndarray | None  # the subset codes, in id order; None without them
    subset_pq: faiss.IndexPQ | None
    files: dict[str, Any] | None  # index_info.json's `files` (format 2), the rows' origin; None for format 1
    capacity: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None  # store, ids, codes with spare rows after
    # the live ones (format 2 read into memory: a writer's next add fills them instead of copying the arrays)


def fsync_directory(directory: Path) -> None:
    """Make renames in `directory` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(directory: Path, name: str) -> Path:
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    return Path(path)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        handle.flush()
        os.fsync(handle.fileno())


def check_info(info: dict[str, Any], directory: Path, expected_dim: int | None) -> None:
    """Refuse an index_info.json of another format, metric or dimension."""
    absent = [key for key in ("factory", "dim", "metric", "ntotal", "format_version") if key not in info]
    if absent:
        raise VectorIndexError(
            f"expected keys {absent} in {directory / INFO_FILE}, they are missing; {REBUILD}"
        )
    if info.get("format_version") not in READABLE_FORMATS:
        raise VectorIndexError(
            f"expected index format_version {' or '.join(map(str, READABLE_FORMATS))} at {directory}, "
            f"found {info.get('format_version')}; {REBUILD}"
        )
    if info.get("format_version") >= 2 and not isinstance(info.get("files"), dict):
        raise VectorIndexError(f"expected the list of files in {directory / INFO_FILE}, it is missing; {REBUILD}")
    if info.get("metric") != METRIC:
        raise VectorIndexError(
            f"expected metric {METRIC!r} at {directory}, found {info.get('metric')!r}; {REBUILD}"
        )
    if expected_dim is not None and info.get("dim") != expected_dim:
        raise VectorIndexError(
            f"expected dimension {expected_dim} (the model's), "
            f"the index at {directory} has {info.get('dim')}; {REBUILD}"
        )


def read_array(path: Path, mmap: bool) -> np.ndarray:
    """np.load of a saved array, memory-mapped when asked (a plain ndarray view: np.memmap's __getitem__
    costs ~0.3 ms per re-ranked query; the view keeps the mapping alive through .base)."""
    try:
        return np.asarray(np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False))
    except OSError as error:
        reason = error.strerror or str(error)
    except (ValueError, EOFError):  # numpy's own text would suggest unpickling it
        reason = "not a NumPy array file: corrupt or truncated"
    raise VectorIndexError(
        f"cannot read {path} ({reason}); {REBUILD}"
    )


def read_faiss(path: Path, mmap: bool) -> faiss.Index:
    """faiss.read_index, memory-mapped when asked and supported.

    Mapped zero-copy first (IO_FLAG_MMAP_IFC: the codes stay in the page cache, searched in place as if read);
    IO_FLAG_MMAP instead wraps an IVF index's lists in OnDiskInvertedLists, which searched half as fast: 1M x 256
    IVF4096,Flat, 215 text queries at nprobe 16, idle 2 cores: 3,860 q/s vs 6,827 zero-copy, 7,363 read into
    memory (0.57 s to load; 0.02 s mapped)."""
    try:
        if mmap:
            for flag in (getattr(faiss, "IO_FLAG_MMAP_IFC", None), faiss.IO_FLAG_MMAP):
                if flag is None:
                    continue
                try:
                    return faiss.read_index(str(path), flag)
                except RuntimeError:
                    logger.info("FAISS cannot memory-map %s with flag %d", path, flag)
            logger.info("FAISS cannot memory-map %s; reading it into memory", path)
        return faiss.read_index(str(path))
    except RuntimeError as error:
        raise VectorIndexError(
            f"cannot read FAISS index {path} ({str(error).strip().splitlines()[-1]}); {REBUILD}"
        ) from None


def _saved_files(directory: Path) -> dict[str, Any] | None:
    """The `files` listing of the format-2 index saved in `directory`, or None (none, unreadable, format 1)."""
    try:
        info = json.loads((directory / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    files = info.get("files") if isinstance(info, dict) and info.get("format_version") == 2 else None
    return files if isinstance(files, dict) else None


def _write_faiss(directory: Path, name: str, index: faiss.Index, temps: dict[str, Path]) -> dict[str, Any]:
    temps[name] = temp_path(directory, name)
    faiss.write_index(index, str(temps[name]))
    return {"name": name, "size": temps[name].stat().st_size, "uid": os.urandom(16).hex()}


def _next_segment_number(directory: Path) -> int:
    numbers = [0]
    for path in directory.glob(f"*{segments.SUFFIX}"):
        try:
            numbers.append(int(path.name.split(".")[-2]))
        except (ValueError, IndexError):
            continue
    return max(numbers) + 1


def write_index(
    directory: Path, index: faiss.Index, rows: Rows, subset_pq: faiss.IndexPQ | None, info: dict[str, Any]
) -> dict[str, int]:
    """Write a FAISS index, its rows (in id order) and index_info.json to `directory` (created if missing);
    returns the bytes written per file kind (`faiss`, `segments`, `info`).

    When `directory` holds the files `rows` were loaded from (`rows.origin` equals its listing), the
    segments in the rows' unchanged prefix are kept and one new segment per column holds the rest
    (`segments.plan_segments`); the FAISS files are kept when no row changed. Otherwise everything is
    written. Each new file goes to a temporary name and is fsynced; then all are os.replace()d,
    index_info.json last, and only then are files it no longer lists deleted. A crash before the last
    replace keeps the previous index loadable (its listing names only files still there, unchanged);
    a crash between replaces is detected by `read_index` (sizes or counts disagree with index_info.json).
    No file is written in place, so a reader that mapped one (or a hard link in an older generation)
    keeps its contents.
    """
    directory.mkdir(parents=True, exist_ok=True)
    previous = _saved_files(directory)
    reuse = previous is not None and rows.origin is not None and previous == rows.origin
    unchanged = rows.unchanged_rows() if reuse else 0
    same_faiss = reuse and unchanged == rows.size == int(previous["rows"])
    store, sorted_ids, codes = rows.in_id_order()
    arrays = {"store": (STORE_STEMS[rows.dtype], store), "ids": (IDS_STEM, sorted_ids)}
    if codes is not None:
        arrays["codes"] = (CODES_STEM, codes)
    temps: dict[str, Path] = {}
    written = {"faiss": 0, "segments": 0, "info": 0}
    try:
        files: dict[str, Any] = {"rows": rows.size, "columns": {}}
        if reuse and codes is not None and "subset_pq" in previous:
            files["subset_pq"] = previous["subset_pq"]  # trained once per build: the same quantizer
        if same_faiss:
            files["faiss"] = previous["faiss"]
        else:
            files["faiss"] = _write_faiss(directory, INDEX_FILE, index, temps)
            written["faiss"] += files["faiss"]["size"]
        if codes is not None and "subset_pq" not in files:
            files["subset_pq"] = _write_faiss(directory, SUBSET_PQ_FILE, subset_pq, temps)
            written["faiss"] += files["subset_pq"]["size"]
        number = _next_segment_number(directory)
        for column, (stem, array) in arrays.items():
            array = np.ascontiguousarray(array)
            listing = {"dtype": array.dtype.name, "row_shape": list(array.shape[1:])}
            old = (previous or {}).get("columns", {}).get(column) if reuse else None
            if old is not None and {key: old.get(key) for key in listing} != listing:
                old = None  # another dtype or width: nothing to keep
            listing["align"] = int(old.get("align", segments.LEGACY_ALIGN)) if old else segments.ALIGN  # kept: its own
            row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
            stream = memoryview(array.reshape(-1).view(np.uint8))
            kept, start = segments.plan_segments(old["segments"] if old else [], unchanged * row_bytes,
                                                 stream.nbytes, listing["align"])
            listing["segments"] = list(kept)
            if start < stream.nbytes:
                name = segments.segment_name(stem, number)
                temps[name] = temp_path(directory, name)
                segment = segments.write_segment(temps[name], stream[start:], start, stream.nbytes)
                listing["segments"].append({**segment, "name": name})
                written["segments"] += stream.nbytes - start + segments.TRAILER.size
            files["columns"][column] = listing
        temps[INFO_FILE] = temp_path(directory, INFO_FILE)
        text = json.dumps({**info, "files": files}, indent=2) + "\n"
        temps[INFO_FILE].write_text(text)
        written["info"] = len(text.encode())
        for path in temps.values():
            fsync_file(path)
        for name in [name for name in temps if name != INFO_FILE] + [INFO_FILE]:
            os.replace(temps[name], directory / name)
            del temps[name]
        listed = {files["faiss"]["name"], INFO_FILE, *([files["subset_pq"]["name"]] if "subset_pq" in files else [])}
        listed |= {segment["name"] for listing in files["columns"].values() for segment in listing["segments"]}
        stale = set(STORE_FILES.values()) | {IDS_FILE, SUBSET_CODES_FILE, SUBSET_PQ_FILE}
        stale |= {path.name for path in directory.glob(f"*{segments.SUFFIX}")}
        for name in stale - listed:  # format 1 files, segments merged away, subset files of another factory
            (directory / name).unlink(missing_ok=True)
        rows.origin, rows.unchanged = files, rows.size  # the rows are now as saved here
    finally:
        for path in temps.values():
            path.unlink(missing_ok=True)
        fsync_directory(directory)
    return written


def _read_info(directory: Path, expected_dim: int | None) -> dict[str, Any]:
    paths = {name: directory / name for name in (INDEX_FILE, INFO_FILE)}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise VectorIndexError(
            f"expected {', '.join(missing)}: no vector index at {directory}; "
            "run `sarsearch index ARCHIVE` first"
        )
    try:
        info = json.loads(paths[INFO_FILE].read_text())
    except (OSError, ValueError) as error:
        raise VectorIndexError(f"cannot read {paths[INFO_FILE]} ({error}); {REBUILD}") from None
    if not isinstance(info, dict):
        raise VectorIndexError(f"cannot read {paths[INFO_FILE]} (not a JSON object); {REBUILD}")
    check_info(info, directory, expected_dim)
    store_dtype = info.get("store_dtype", "float16")  # indexes saved before it was recorded: float16
    if store_dtype not in STORE_FILES:
        raise VectorIndexError(
            f"unknown store_dtype {store_dtype!r} in {paths[INFO_FILE]}; {REBUILD}"
        )
    return info


def _read_arrays_v1(directory: Path, info: dict[str, Any], mmap: bool) -> dict[str, np.ndarray]:
    """Format 1: one .npy per array."""
    names = {"store": STORE_FILES[info.get("store_dtype", "float16")], "ids": IDS_FILE}
    if info.get("subset_codes"):
        names["codes"] = SUBSET_CODES_FILE
    for name in names.values():
        if not (directory / name).is_file():
            raise VectorIndexError(f"expected {name}: the vector index at {directory} is incomplete; {REBUILD}")
    return {column: read_array(directory / name, mmap) for column, name in names.items()}


SPARE_FRACTION = 8  # read into memory, the arrays get room for ntotal / 8 more rows (at least 1,024)


def _read_arrays_v2(directory: Path, info: dict[str, Any], mmap: bool) -> dict[str, np.ndarray]:
    """Format 2: each column's segment chain, as one array (mapped side by side when `mmap`; else read into
    memory with SPARE_FRACTION spare rows after the live ones, which the caller slices off)."""
    files = info["files"]
    listed = [files.get("faiss")] + ([files.get("subset_pq")] if info.get("subset_codes") else [])
    for entry in listed:
        path = directory / str((entry or {}).get("name"))
        if not isinstance(entry, dict) or not path.is_file():
            raise VectorIndexError(f"expected {path.name}: the vector index at {directory} is incomplete; {REBUILD}")
        if path.stat().st_size != entry.get("size"):
            raise VectorIndexError(
                f"{path} is {path.stat().st_size} bytes, index_info.json says {entry.get('size')}: "
                f"a save was probably interrupted, or the file replaced; {REBUILD}"
            )
    columns = files.get("columns", {})
    wanted = ["store", "ids"] + (["codes"] if info.get("subset_codes") else [])
    absent = [column for column in wanted if column not in columns]
    if absent:
        raise VectorIndexError(f"expected {absent} in {directory / INFO_FILE}, they are missing; {REBUILD}")
    try:
        spare = 0 if mmap else max(1024, int(info["ntotal"]) // SPARE_FRACTION)
        return {column: segments.load_chain(directory, columns[column], mmap, spare) for column in wanted}
    except (KeyError, TypeError, ValueError) as error:
        raise VectorIndexError(f"cannot read the file list of {directory / INFO_FILE} ({error}); {REBUILD}") from None


def read_index(directory: Path, expected_dim: int | None, mmap: bool) -> SavedIndex:
    """Read the files `write_index` wrote (or format 1's), memory-mapped where asked and supported, and check them.

    Refuses (VectorIndexError) a missing index, another format version or metric, a dimension other
    than `expected_dim`, files that are missing, of another size than listed or of another save
    (segment trailers), and files whose counts disagree.
    """
    info = _read_info(directory, expected_dim)
    store_dtype = info.get("store_dtype", "float16")
    version = int(info["format_version"])
    arrays = _read_arrays_v1(directory, info, mmap) if version == 1 else _read_arrays_v2(directory, info, mmap)
    capacity = None
    if version >= 2 and not mmap:  # spare rows after the live ones: the live rows are what each column lists
        listed = {column: int(listing["segments"][-1]["end"]) // (arrays[column].itemsize * int(
            np.prod(arrays[column].shape[1:], dtype=np.int64))) if listing["segments"] else 0
            for column, listing in info["files"]["columns"].items() if column in arrays}
        capacity = (arrays["store"], arrays["ids"], arrays.get("codes"))
        arrays = {column: array[: listed[column]] for column, array in arrays.items()}
    store, ids = arrays["store"], arrays["ids"]
    store_name = STORE_FILES[store_dtype] if version == 1 else STORE_STEMS[store_dtype]
    ids_name = IDS_FILE if version == 1 else IDS_STEM
    dim = int(info["dim"])
    index = read_faiss(directory / INDEX_FILE, mmap)
    counts = {
        "index_info.json": info["ntotal"],
        INDEX_FILE: index.ntotal,
        store_name: len(store),
        ids_name: len(ids),
    }
    subset_pq = codes = None
    if info.get("subset_codes"):  # indexes saved before subset codes existed have none: no subset scan
        if not (directory / SUBSET_PQ_FILE).is_file():
            raise VectorIndexError(
                f"expected {SUBSET_CODES_FILE} and {SUBSET_PQ_FILE}: the vector index at {directory} "
                f"is incomplete; {REBUILD}"
            )
        subset_pq = read_faiss(directory / SUBSET_PQ_FILE, mmap=False)  # an IndexPQ (never downcast a temporary)
        codes = arrays["codes"]
        codes_name = SUBSET_CODES_FILE if version == 1 else CODES_STEM
        counts[codes_name] = len(codes)
        if not isinstance(subset_pq, faiss.IndexPQ) or subset_pq.d != dim or codes.shape[1:] != (
            subset_pq.code_size,
        ):
            raise VectorIndexError(
                f"{SUBSET_PQ_FILE} and {codes_name} at {directory} do not match "
                f"(dim {dim}, code array of shape {codes.shape}); {REBUILD}"
            )
    if (len(set(counts.values())) != 1 or index.d != dim or store.shape[1:] != (dim,)
            or store.dtype.name != store_dtype or ids.dtype != np.int64):
        raise VectorIndexError(
            f"files of the vector index at {directory} disagree "
            f"(counts {counts}, dim {dim}, FAISS dim {index.d}, copy {store.dtype.name} vs {store_dtype}); "
            "a save was probably interrupted: save again or run `sarsearch index ARCHIVE`"
        )
    files = info.get("files") if version >= 2 else None
    return SavedIndex(index, info, store, ids.astype(np.int64, copy=False), codes, subset_pq, files, capacity)
