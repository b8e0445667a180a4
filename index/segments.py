"""Append-only column files of a saved VectorIndex: each array (the exact copy, the ids, the subset codes) is
a byte stream kept as a chain of immutable segment files, so a save that only adds rows writes only them.

A stream of `total` bytes (rows in saved order, C order) is held by segments k = 0..m-1. Segment k holds the
stream's bytes [start_k, end_k): start_0 = 0, start_k = end_(k-1) rounded down to the chain's `align`
(recorded with it; ALIGN = 2 MiB for new chains), end_(m-1) = total. So consecutive segments overlap by less
than `align` bytes: a new segment repeats the last partial block of the one before. That lets a reader map
every segment at its own offset into one reserved address range (`mmap` MAP_FIXED at page-aligned
offsets), later ones over the overlap: the array is one contiguous, read-only view over the files, searched
and re-ranked exactly like one file. The range starts on a 2 MiB boundary and 2 MiB segment offsets keep
every segment's file offsets congruent with its addresses modulo 2 MiB, so the kernel can map the page
cache's large folios with huge pages as it does for one file (measured: with 64 KiB offsets, random
re-rank gathers ran at ~0.6x). Where mapping cannot be done (not Linux, a page size that does not divide
`align`) the segments are read into memory instead.

A segment file is the raw bytes followed by a 64-byte trailer (magic, a random uid, start, end): the file
records what made it, and `check_segment` refuses a file whose trailer or size disagrees with the
index_info.json listing it. Segment files are never written again once renamed into place: a new
generation of an index directory hard-links them (`store/layout.py`), and a save adds files under new names.

Which segments a save keeps (`plan_segments`): those lying wholly in the unchanged prefix of the stream
(rows before the first removed or reordered row), then size-tiered: while the last kept segment is no
larger than what would be written after it, it is merged into the new one (so a chain holds O(log n)
segments, each byte is rewritten O(log n) times over the life of an index, and most commits write only
their own rows), and at most MAX_SEGMENTS are kept.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import secrets
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .errors import REBUILD, VectorIndexError

ALIGN = 1 << 21  # new chains: segment starts are multiples of this (2 MiB: a huge page, a multiple of page sizes)
HUGE = 1 << 21  # the mapped view starts on this boundary (huge-page mappings of the page cache)
LEGACY_ALIGN = 1 << 16  # chains listed without `align` (written by commit 5d23908 only) used 64 KiB blocks
MAX_SEGMENTS = 24  # per column; beyond, the tail is merged (size-tiered merging keeps far fewer at 1M rows)
MAGIC = b"SARSEG01"
TRAILER = struct.Struct("<8s16sQQ24x")  # magic, uid, start, end; 64 bytes
SUFFIX = ".seg"

_MAP_FIXED = 0x10  # Linux
_libc: Any = None


def aligned(offset: int, align: int) -> int:
    return offset - offset % align


def segment_name(column: str, number: int) -> str:
    return f"{column}.{number:06d}{SUFFIX}"


def plan_segments(
    previous: list[dict[str, Any]], unchanged: int, total: int, align: int
) -> tuple[list[dict[str, Any]], int]:
    """(segments kept, start of the new segment) for a stream of `total` bytes whose first `unchanged` bytes
    equal those of the stream `previous` (of alignment `align`) describes. The new segment covers
    [start, total); start == total means nothing new to write."""
    kept = [segment for segment in previous if segment["end"] <= unchanged]
    if kept and kept[-1]["end"] == total and len(kept) == len(previous):
        return kept, total  # nothing changed
    while kept:
        last = kept[-1]
        tail = total - aligned(last["end"], align)
        if len(kept) < MAX_SEGMENTS and last["end"] - last["start"] > tail:
            break
        kept.pop()  # size-tiered: merge a segment no larger than what follows it
    start = aligned(kept[-1]["end"], align) if kept else 0
    return kept, start


def write_segment(path: Path, data: memoryview, start: int, end: int) -> dict[str, Any]:
    """Write the stream bytes [start, end) (`data` is exactly them) and the trailer to `path`; not fsynced."""
    uid = secrets.token_bytes(16)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.write(TRAILER.pack(MAGIC, uid, start, end))
    return {"name": path.name, "start": start, "end": end, "uid": uid.hex()}


def check_segment(directory: Path, segment: dict[str, Any]) -> Path:
    """The segment's path, after checking that its file exists and its size and trailer match the listing."""
    path = directory / segment["name"]
    start, end = int(segment["start"]), int(segment["end"])
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size != end - start + TRAILER.size:
                reason = f"{size} bytes, expected {end - start + TRAILER.size}: truncated, or another index's file"
            else:
                handle.seek(end - start)
                magic, uid, got_start, got_end = TRAILER.unpack(handle.read(TRAILER.size))
                if magic != MAGIC or uid.hex() != segment["uid"] or (got_start, got_end) != (start, end):
                    reason = "its trailer does not match index_info.json: a file of another save"
                else:
                    return path
    except OSError as error:
        reason = error.strerror or str(error)
    raise VectorIndexError(f"cannot read {path} ({reason}); {REBUILD}")


def check_chain(directory: Path, segments: list[dict[str, Any]], row_bytes: int, align: int) -> list[Path]:
    """Paths of a column's segments after checking each file and that they chain (see the module doc)."""
    paths, end = [], 0
    for number, segment in enumerate(segments):
        start = int(segment["start"])
        if (number == 0 and start != 0) or (number and start != aligned(end, align)) or int(segment["end"]) <= start:
            raise VectorIndexError(
                f"segments of {directory} do not chain at {segment['name']} (start {start} after end {end}); {REBUILD}"
            )
        end = int(segment["end"])
        paths.append(check_segment(directory, segment))
    if end % row_bytes:
        raise VectorIndexError(f"segments of {directory} end at byte {end}, not a whole row of {row_bytes}; {REBUILD}")
    return paths


def _mmap_fixed() -> Any:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        _libc = libc
    return _libc.mmap


def can_map_chains(align: int) -> bool:
    """Whether a chain of alignment `align` can be mapped as one view here (Linux, a page size dividing it)."""
    return sys.platform.startswith("linux") and align % mmap.PAGESIZE == 0


def _map(paths: list[Path], segments: list[dict[str, Any]]) -> np.ndarray:
    """The stream as one read-only uint8 view of the segment files, mapped side by side (module doc)."""
    total = int(segments[-1]["end"])
    if len(paths) == 1:
        with open(paths[0], "rb") as handle:
            view = mmap.mmap(handle.fileno(), total, access=mmap.ACCESS_READ)
        return np.frombuffer(view, np.uint8, total)
    page = mmap.PAGESIZE
    span = max(int(s["start"]) + -(-(int(s["end"]) - int(s["start"])) // page) * page for s in segments)
    reserved = mmap.mmap(-1, span + HUGE)  # anonymous; its munmap at garbage collection unmaps the segments too
    anchor = ctypes.c_char.from_buffer(reserved)
    first = ctypes.addressof(anchor)
    del anchor  # releases the buffer export (the mapping itself is owned by `reserved`)
    skip = -first % HUGE  # the view starts on a 2 MiB boundary
    base = first + skip
    fixed = _mmap_fixed()
    for path, segment in zip(paths, segments):
        start, length = int(segment["start"]), int(segment["end"]) - int(segment["start"])
        fd = os.open(path, os.O_RDONLY)
        try:
            got = fixed(base + start, length, mmap.PROT_READ, mmap.MAP_SHARED | _MAP_FIXED, fd, 0)
        finally:
            os.close(fd)
        if got != base + start:
            errno = ctypes.get_errno()
            raise VectorIndexError(f"cannot map {path} ({os.strerror(errno)}); {REBUILD}")
    view = np.frombuffer(reserved, np.uint8, total, offset=skip)
    view.flags.writeable = False
    return view


def _read(paths: list[Path], segments: list[dict[str, Any]], spare: int = 0) -> np.ndarray:
    total = int(segments[-1]["end"])
    stream = np.empty(total + spare, np.uint8)
    for path, segment in zip(paths, segments):
        start, end = int(segment["start"]), int(segment["end"])
        with open(path, "rb") as handle:
            if handle.readinto(memoryview(stream)[start:end]) != end - start:
                raise VectorIndexError(f"cannot read {path} (short read); {REBUILD}")
    return stream


def load_chain(directory: Path, column: dict[str, Any], mmap_it: bool, spare_rows: int = 0) -> np.ndarray:
    """A column (`{"dtype", "row_shape", "align", "segments"}` of index_info.json's files) as one array: a read-only
    view of the mapped segments when `mmap_it` (and possible here), else read into memory with room for
    `spare_rows` more rows after them (uninitialized: the array has that many rows more than the column)."""
    dtype, row_shape = np.dtype(column["dtype"]), tuple(int(n) for n in column["row_shape"])
    align = int(column.get("align", LEGACY_ALIGN))
    row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
    segments = column["segments"]
    paths = check_chain(directory, segments, row_bytes, align)
    if not segments:
        return np.empty((0 if mmap_it else spare_rows, *row_shape), dtype)
    if mmap_it and can_map_chains(align):
        stream = _map(paths, segments)
    else:
        stream = _read(paths, segments, 0 if mmap_it else spare_rows * row_bytes)
    if mmap_it:
        stream.flags.writeable = False  # a memory-mapped load is read-only, mapped or (fallback) read
    return stream.view(dtype).reshape(-1, *row_shape)
