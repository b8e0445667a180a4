"""Files of a saved VectorIndex: what `save` writes (atomically: temporary files, fsync, rename) and
what `load` reads back and checks.

`write_index` is the package's one atomic save. It does not use the core's `sarclip_search._fs` because
index/ imports nothing else of sarclip_search (tests/system/test_layering.py); `_fs` is the core's only copy.

A saved index is a directory of
    vectors.faiss       the FAISS index (always the CPU form)
    vectors_f32.npy     the exact copy in id order: float32 for PQ indexes, else vectors_f16.npy (float16;
                        indexes saved before `store_dtype` was recorded have only that one)
    vector_ids.npy      the ids, ascending: the id -> row lookup itself
    subset_codes.npy    PQ indexes: the 4-bit subset codes of every row, in id order (filtered.scan_subset)
    subset_pq.faiss     ... and their trained quantizer (an IndexPQ without codes)
    index_info.json     factory, dim, metric, counts, search settings, versions (VectorIndex.info)
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

from .errors import REBUILD, VectorIndexError
from .rows import Rows

logger = logging.getLogger(__name__)

METRIC = "inner_product"  # vectors are L2-normalized float32 by the caller; scores are cosine similarities
FORMAT_VERSION = 1
INFO_FILE = "index_info.json"
INDEX_FILE = "vectors.faiss"
STORE_FILES = {"float16": "vectors_f16.npy", "float32": "vectors_f32.npy"}  # by store_dtype (absent: float16)
IDS_FILE = "vector_ids.npy"
SUBSET_CODES_FILE = "subset_codes.npy"  # PQ indexes: 4-bit PQ codes of every row, in id order
SUBSET_PQ_FILE = "subset_pq.faiss"  # their trained quantizer (an IndexPQ without codes)


class SavedIndex(NamedTuple):
    """The parts of a saved index, as `read_index` returns them."""

    index: faiss.Index
    info: dict[str, Any]
    store: np.ndarray  # the exact copy, in id order
    ids: np.ndarray  # int64, ascending
    codes: np.ndarray | None  # the subset codes, in id order; None without them
    subset_pq: faiss.IndexPQ | None


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
    if info.get("format_version") != FORMAT_VERSION:
        raise VectorIndexError(
            f"expected index format_version {FORMAT_VERSION} at {directory}, "
            f"found {info.get('format_version')}; {REBUILD}"
        )
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
    """faiss.read_index, memory-mapped when asked and supported."""
    try:
        if mmap:
            try:
                return faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
            except RuntimeError:
                logger.info("FAISS cannot memory-map %s; reading it into memory", path)
        return faiss.read_index(str(path))
    except RuntimeError as error:
        raise VectorIndexError(
            f"cannot read FAISS index {path} ({str(error).strip().splitlines()[-1]}); {REBUILD}"
        ) from None


def write_index(
    directory: Path, index: faiss.Index, rows: Rows, subset_pq: faiss.IndexPQ | None, info: dict[str, Any]
) -> None:
    """Write a FAISS index, its rows (in id order) and index_info.json to `directory` (created if missing).

    Each file goes to a temporary name in the same directory and is fsynced; then all are os.replace()d,
    index_info.json last. A crash before the first replace keeps the previous index intact; a crash
    between replaces is detected by `read_index` (counts disagree with index_info.json). Existing files
    are replaced, never written in place, so a reader that mapped them (or a hard link in an older
    generation) keeps the old contents.
    """
    directory.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        temps[INDEX_FILE] = temp_path(directory, INDEX_FILE)
        faiss.write_index(index, str(temps[INDEX_FILE]))
        store, sorted_ids, codes = rows.in_id_order()
        store_file = STORE_FILES[rows.dtype]
        arrays = [(store_file, store), (IDS_FILE, sorted_ids)]
        if codes is not None:
            arrays.append((SUBSET_CODES_FILE, codes))
            temps[SUBSET_PQ_FILE] = temp_path(directory, SUBSET_PQ_FILE)
            faiss.write_index(subset_pq, str(temps[SUBSET_PQ_FILE]))
        for name, array in arrays:
            temps[name] = temp_path(directory, name)
            with open(temps[name], "wb") as handle:
                np.save(handle, np.ascontiguousarray(array))
        temps[INFO_FILE] = temp_path(directory, INFO_FILE)
        temps[INFO_FILE].write_text(json.dumps(info, indent=2) + "\n")
        for path in temps.values():
            fsync_file(path)
        written = [name for name in temps if name != INFO_FILE] + [INFO_FILE]
        for name in written:
            os.replace(temps[name], directory / name)
            del temps[name]
        stale = set(STORE_FILES.values()) | {SUBSET_CODES_FILE, SUBSET_PQ_FILE}
        for name in stale - set(written):  # a previous save of the other dtype, or with subset codes
            (directory / name).unlink(missing_ok=True)
    finally:
        for path in temps.values():
            path.unlink(missing_ok=True)
        fsync_directory(directory)


def read_index(directory: Path, expected_dim: int | None, mmap: bool) -> SavedIndex:
    """Read the files `write_index` wrote, memory-mapped where asked and supported, and check them.

    Refuses (VectorIndexError) a missing index, another format version or metric, a dimension other
    than `expected_dim`, and files whose counts disagree.
    """
    paths = {name: directory / name for name in (INDEX_FILE, IDS_FILE, INFO_FILE)}
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
    check_info(info, directory, expected_dim)
    store_dtype = info.get("store_dtype", "float16")  # indexes saved before it was recorded: float16
    if store_dtype not in STORE_FILES:
        raise VectorIndexError(
            f"unknown store_dtype {store_dtype!r} in {paths[INFO_FILE]}; {REBUILD}"
        )
    store_path = directory / STORE_FILES[store_dtype]
    if not store_path.is_file():
        raise VectorIndexError(
            f"expected {store_path.name}: the vector index at {directory} is incomplete; {REBUILD}"
        )
    dim = int(info["dim"])
    index = read_faiss(paths[INDEX_FILE], mmap)
    store = read_array(store_path, mmap)
    ids = read_array(paths[IDS_FILE], mmap)  # read-only: never grown
    counts = {
        "index_info.json": info["ntotal"],
        INDEX_FILE: index.ntotal,
        store_path.name: len(store),
        IDS_FILE: len(ids),
    }
    subset_pq = codes = None
    if info.get("subset_codes"):  # indexes saved before subset codes existed have none: no subset scan
        codes_path, pq_path = directory / SUBSET_CODES_FILE, directory / SUBSET_PQ_FILE
        if not (codes_path.is_file() and pq_path.is_file()):
            raise VectorIndexError(
                f"expected {SUBSET_CODES_FILE} and {SUBSET_PQ_FILE}: the vector index at {directory} "
                f"is incomplete; {REBUILD}"
            )
        subset_pq = read_faiss(pq_path, mmap=False)  # an IndexPQ (never downcast a temporary: it is freed)
        codes = read_array(codes_path, mmap)
        counts[SUBSET_CODES_FILE] = len(codes)
        if not isinstance(subset_pq, faiss.IndexPQ) or subset_pq.d != dim or codes.shape[1:] != (
            subset_pq.code_size,
        ):
            raise VectorIndexError(
                f"{SUBSET_PQ_FILE} and {SUBSET_CODES_FILE} at {directory} do not match "
                f"(dim {dim}, code array of shape {codes.shape}); {REBUILD}"
            )
    if (len(set(counts.values())) != 1 or index.d != dim or store.shape[1:] != (dim,)
            or store.dtype.name != store_dtype):
        raise VectorIndexError(
            f"files of the vector index at {directory} disagree "
            f"(counts {counts}, dim {dim}, FAISS dim {index.d}, copy {store.dtype.name} vs {store_dtype}); "
            "a save was probably interrupted: save again or run `sarsearch index ARCHIVE`"
        )
    return SavedIndex(index, info, store, ids.astype(np.int64, copy=False), codes, subset_pq)
