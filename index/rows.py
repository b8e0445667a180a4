"""The rows of a VectorIndex: the exact copy of every vector, its id and (PQ indexes) its 4-bit subset code,
row-aligned, and the map from an id to its row.

Rows are in the order vectors were added (a loaded index: id order, as `save` writes them). FAISS never
sees row numbers: its ids are the caller's catalog ids.
"""

from __future__ import annotations

import numpy as np

DENSE_ID_RANGE = 2  # ids spanning <= 2x their count map to rows through a table (<= 8 B per vector)


def increasing(values: np.ndarray) -> bool:
    """True when `values` is strictly increasing (sorted, no repeats): O(n), cheaper than sorting again."""
    return len(values) < 2 or bool((values[1:] > values[:-1]).all())


class Rows:
    """Row-aligned arrays: `store` (n, dim) float16 or float32, `ids` (n,) int64, `codes` (n, bytes) uint8 or
    None; each array may hold spare capacity past row n, so adds grow them geometrically.

    `ids_sorted`: the ids are known ascending (as saved), so a memory-mapped id array is not read to check.
    `origin`: the `files` listing of the saved index these rows were loaded from (storage.py); with it,
    `unchanged` counts the leading rows still as saved there, so a save into that directory appends
    (storage.write_index keeps the segments of those rows). Appends keep it; a removal lowers it to the
    first removed row.
    """

    def __init__(
        self, store: np.ndarray, ids: np.ndarray, codes: np.ndarray | None = None, *, ids_sorted: bool = False,
        origin: dict | None = None, size: int | None = None,
    ) -> None:
        self.size = len(ids) if size is None else size  # `size`: the arrays hold spare rows after the live ones
        self.origin = origin
        self.unchanged = self.size if origin is not None else 0
        self._store = store  # (capacity, dim); rows [0, size) are live
        self._ids = ids  # (capacity,) int64, row i holds the id of _store[i]
        self._codes = codes  # (capacity, code bytes) uint8, rows as _store; None: no subset codes
        self._sorted_ids: np.ndarray | None = None  # lazily built lookup id -> row
        self._sorted_rows: np.ndarray | None = None  # None with _sorted_ids set: rows already in id order
        self._id_mode: tuple[str, np.ndarray | None] | None = None  # lazily chosen id -> row map (id_map)
        if ids_sorted:  # a memory-mapped id array stays on disk until a lookup needs it
            self._sorted_ids, self._sorted_rows = ids[: self.size], None

    @property
    def dim(self) -> int:
        return int(self._store.shape[1])

    @property
    def dtype(self) -> str:
        """dtype of the exact copy: "float16" or "float32"."""
        return self._store.dtype.name

    @property
    def store(self) -> np.ndarray:
        """The exact copy of the live rows (a view)."""
        return self._store[: self.size]

    @property
    def ids(self) -> np.ndarray:
        """The id of each live row (a view, in row order)."""
        return self._ids[: self.size]

    @property
    def codes(self) -> np.ndarray | None:
        """The 4-bit subset codes of the live rows (a view), or None when the index keeps none."""
        return None if self._codes is None else self._codes[: self.size]

    # ---- id -> row

    def lookup(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(ids ascending, their rows); rows is None when the rows are in id order (as saved).

        In id order the id array itself is the lookup (no 8 B/vector argsort array on the heap; a
        memory-mapped load keeps it on disk).
        """
        if self._sorted_ids is None:
            live = self.ids
            if increasing(live):
                self._sorted_ids, self._sorted_rows = live, None
            else:
                self._sorted_rows = np.argsort(live, kind="stable")
                self._sorted_ids = live[self._sorted_rows]
        return self._sorted_ids, self._sorted_rows

    def id_map(self) -> tuple[str, np.ndarray | None]:
        """How `rows_of` maps ids to rows: ("offset", None), ("table", int32 table) or ("search", None).

        Binary search of 80 re-rank candidates per query in 1M sorted ids costs ~16 us per query, as much
        as scoring them. Ids without gaps in row order (a fresh build) map by offset (row = id - first
        id); ids spanning at most DENSE_ID_RANGE x their count (after some removals) through a table of
        int32 rows, 4 B per id in range, built on first use; sparser ids by binary search.
        """
        if self._id_mode is None:
            sorted_ids, sorted_rows = self.lookup()
            span = int(sorted_ids[-1]) - int(sorted_ids[0]) + 1 if len(sorted_ids) else 0
            if not len(sorted_ids) or len(sorted_ids) >= 2**31:
                self._id_mode = ("search", None)
            elif span == len(sorted_ids) and sorted_rows is None:
                self._id_mode = ("offset", None)
            elif span <= DENSE_ID_RANGE * len(sorted_ids):
                table = np.full(span, -1, np.int32)
                rows = np.arange(len(sorted_ids)) if sorted_rows is None else sorted_rows
                table[sorted_ids - sorted_ids[0]] = rows
                self._id_mode = ("table", table)
            else:
                self._id_mode = ("search", None)
        return self._id_mode

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, rows of the found ids) for validated int64 ids."""
        sorted_ids, sorted_rows = self.lookup()
        if not len(sorted_ids):
            return np.zeros(len(ids), bool), np.empty(0, np.int64)
        mode, table = self.id_map()
        if mode != "search":
            offset = ids - sorted_ids[0]
            inside = (offset >= 0) & (offset <= sorted_ids[-1] - sorted_ids[0])
            if mode == "offset":
                return inside, offset[inside]
            rows = np.full(len(ids), -1, np.int64)
            rows[inside] = table[offset[inside]]
            found = rows >= 0
            return found, rows[found]
        position = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        found = sorted_ids[position] == ids
        return found, (position[found] if sorted_rows is None else sorted_rows[position[found]])

    def ids_at(self, rows: np.ndarray) -> np.ndarray:
        """Ids of rows; by offset for ids without gaps (the id array is not read: it stays on disk)."""
        if self.id_map()[0] == "offset":
            return rows + self.lookup()[0][0]
        return self._ids[rows]

    def in_id_order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(store, ids, codes) of the live rows sorted by id, as `save` writes them (views if in id order)."""
        sorted_ids, sorted_rows = self.lookup()
        if sorted_rows is None:
            return self.store, sorted_ids, self.codes
        return self._store[sorted_rows], sorted_ids, None if self._codes is None else self._codes[sorted_rows]

    def unchanged_rows(self) -> int:
        """Leading rows that a save in id order puts where the origin has them, with the same bytes."""
        sorted_rows = self.lookup()[1]
        if sorted_rows is None or not self.unchanged:
            return self.unchanged
        moved = np.flatnonzero(sorted_rows[: self.unchanged] != np.arange(self.unchanged))
        return int(moved[0]) if len(moved) else self.unchanged

    # ---- changes

    def _changed(self) -> None:
        self._sorted_ids = self._sorted_rows = self._id_mode = None

    def append(self, ids: np.ndarray, xb: np.ndarray, codes: np.ndarray | None) -> None:
        """Append rows: validated ids not present yet, float32 vectors, their codes (None without codes)."""
        needed = self.size + len(ids)
        if needed > len(self._ids) or not self._store.flags.writeable:
            capacity = max(needed, 2 * self.size, 1024)  # doubling keeps many small adds linear
            store = np.empty((capacity, self.dim), self._store.dtype)
            all_ids = np.empty(capacity, np.int64)
            store[: self.size], all_ids[: self.size] = self.store, self.ids
            self._store, self._ids = store, all_ids
            if self._codes is not None:
                grown = np.empty((capacity, self._codes.shape[1]), np.uint8)
                grown[: self.size] = self._codes[: self.size]
                self._codes = grown
        self._store[self.size : needed] = xb
        self._ids[self.size : needed] = ids
        if self._codes is not None:
            self._codes[self.size : needed] = codes
        self.size = needed
        self._changed()

    def remove(self, rows: np.ndarray) -> None:
        """Drop the given rows (the others keep their order)."""
        keep = np.ones(self.size, bool)
        keep[rows] = False
        if len(rows):
            self.unchanged = min(self.unchanged, int(np.min(rows)))
        self._store = np.ascontiguousarray(self.store[keep])
        self._ids = np.ascontiguousarray(self.ids[keep])
        if self._codes is not None:
            self._codes = np.ascontiguousarray(self._codes[: self.size][keep])
        self.size = len(self._ids)
        self._changed()
