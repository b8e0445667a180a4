"""Files of a saved VectorIndex: atomic temporary files, fsync, and the checks `load` makes."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .errors import VectorIndexError

logger = logging.getLogger(__name__)

METRIC = "inner_product"  # vectors are L2-normalized float32 by the caller; scores are cosine similarities
FORMAT_VERSION = 1
INFO_FILE = "index_info.json"


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
            f"expected keys {absent} in {directory / INFO_FILE}, they are missing; rebuild the index"
        )
    if info.get("format_version") != FORMAT_VERSION:
        raise VectorIndexError(
            f"expected index format_version {FORMAT_VERSION} at {directory}, "
            f"found {info.get('format_version')}; "
            "rebuild the index with this version (`sarsearch index ARCHIVE`)"
        )
    if info.get("metric") != METRIC:
        raise VectorIndexError(
            f"expected metric {METRIC!r} at {directory}, found {info.get('metric')!r}; rebuild the index"
        )
    if expected_dim is not None and info.get("dim") != expected_dim:
        raise VectorIndexError(
            f"expected dimension {expected_dim} (the model's), "
            f"the index at {directory} has {info.get('dim')}; "
            "rebuild the index with this model (`sarsearch index ARCHIVE`)"
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
        f"cannot read {path} ({reason}); rebuild the index with `sarsearch index ARCHIVE --rebuild`"
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
            f"cannot read FAISS index {path} ({str(error).strip().splitlines()[-1]}); "
            "rebuild the index with `sarsearch index ARCHIVE --rebuild`"
        ) from None
