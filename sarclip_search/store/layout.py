"""The index directory: catalog + vectors + info, replaced atomically one generation at a time.

Layout of an index directory (default ``./.sarsearch``, or ``--db`` / ``SARSEARCH_DB``)::

    .sarsearch/
      CURRENT              name of the committed generation, e.g. "gen-000003" (replaced atomically)
      gen-000003/
        catalog.duckdb     DuckDB catalog: scenes, tiles (tile_id = FAISS id)
        vectors/           FAISS index + exact vectors (float32 for PQ) + ids (sarclip_search.index.VectorIndex),
                           the arrays as chains of append-only segment files (index/segments.py)
        info.json          what made it: model, checkpoint hash, dims, metric, index type, counts, versions
        filter_columns/    the shortcut filters' columns as arrays, built at commit (store/column_arrays.py)
      lock                 held (flock) by the one process writing

A writer stages a fresh generation from the committed one, changes it, writes everything, and only
then points CURRENT at it. Staging copies the catalog (DuckDB writes it in place) and hard-links the
files of vectors/ (none is ever written in place: a save adds new segment files and replaces the others
by rename), so a commit that adds vectors writes only them. A reader follows CURRENT once and opens that
generation. So a failed or interrupted `index` leaves the previous generation intact and queryable, and a
query never sees half a write. Older generations are removed after the switch; a file still linked from
the committed generation stays (removing a generation unlinks its names only).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sarclip_search import __version__
from sarclip_search._fs import fsync_dir, publish_dir, write_atomic
from sarclip_search.errors import REBUILD, IndexNotFoundError, LockedError
from sarclip_search.store.artifacts import INFO_FORMAT, INFO_FORMAT_VERSION, check_info_format

log = logging.getLogger(__name__)

DEFAULT_DB = ".sarsearch"
DB_ENV = "SARSEARCH_DB"
CATALOG_FILE = "catalog.duckdb"
VECTORS_DIR = "vectors"
INFO_FILE = "info.json"
CURRENT_FILE = "CURRENT"
LOCK_FILE = "lock"
GEN_PREFIX = "gen-"


def resolve_db(db: str | Path | None) -> Path:
    """The index directory: an explicit path, else $SARSEARCH_DB, else ./.sarsearch."""
    if db:
        return Path(db)
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON (info.json, sorted keys) all or nothing over `path` (`_fs.atomic_file`)."""
    write_atomic(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode(), unique=False)


@dataclass(frozen=True)
class Generation:
    """One committed (or in-progress) state of the index directory."""

    path: Path

    @property
    def number(self) -> int:
        return int(self.path.name.removeprefix(GEN_PREFIX).split(".")[0])

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_FILE

    @property
    def vectors_path(self) -> Path:
        return self.path / VECTORS_DIR

    @property
    def info_path(self) -> Path:
        return self.path / INFO_FILE

    def read_info(self) -> dict[str, Any]:
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, ValueError) as exc:
            raise IndexNotFoundError(f"{self.info_path}: unreadable ({exc}); {REBUILD}") from exc
        check_info_format(info, self.info_path)
        return info


def link_tree(source: Path, target: Path) -> None:
    """`target` as a folder of hard links to the files of `source` (a copy where the file system refuses a
    link). Only for files never written in place (the vector index's: `index/storage.py` writes new files
    and renames them over old names). The files are made read-only (their one inode is the committed
    generation's too), so a writer that tried to write one in place fails instead of changing it (unless
    it runs as root)."""
    target.mkdir()
    for path in source.iterdir():
        if path.is_dir():
            link_tree(path, target / path.name)
            continue
        try:
            os.link(path, target / path.name)
        except OSError as error:
            log.info("cannot hard-link %s (%s); copying it", path, error.strerror)
            shutil.copy2(path, target / path.name)
        mode = (target / path.name).stat().st_mode
        if mode & 0o222:
            os.chmod(target / path.name, mode & 0o7555)


class IndexStore:
    """An index directory: find the committed generation, or write a new one under a lock."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = resolve_db(root)

    def current(self) -> Generation | None:
        """The committed generation, or None when nothing was ever committed here."""
        pointer = self.root / CURRENT_FILE
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        while not (self.root / name).is_dir():
            # A writer may have committed and removed `name` since we read the pointer: follow it again.
            newer = pointer.read_text().strip()
            if newer == name:
                raise IndexNotFoundError(f"{pointer} names {name}, which is missing; {REBUILD}")
            name = newer
        return Generation(self.root / name)

    def require_current(self) -> Generation:
        """The committed generation; IndexNotFoundError telling the user how to make one."""
        generation = self.current()
        if generation is None:
            raise IndexNotFoundError(
                f"no index at {self.root}; build one with `sarsearch index ARCHIVE` "
                f"(or point --db / ${DB_ENV} at an existing index directory)"
            )
        return generation

    @contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the writer lock; LockedError if another process holds it beyond `wait` seconds."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK_FILE, "a+")  # noqa: SIM115 - held open while the lock is held, closed below
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockedError(
                            f"{self.root} is being written by another `sarsearch index`; wait for it to finish"
                        ) from None
                    time.sleep(0.2)
            yield
        finally:
            handle.close()  # releases the flock

    @contextmanager
    def new_generation(self, *, copy_current: bool = True, filter_columns: bool = True) -> Iterator[Generation]:
        """Stage a new generation (from the committed one unless `copy_current` is False: its catalog
        copied, its vectors/ files hard-linked, `link_tree`).

        On normal exit the caller has written catalog, vectors and info into it (the catalog closed); the
        filter columns are built from the catalog (`column_arrays.build_at_commit`; not with `filter_columns`
        False: a run's intermediate commits, whose first filtered query builds them) and it is then
        committed by pointing CURRENT at it. On an exception it is deleted and CURRENT is untouched.
        Call inside `lock()`.
        """
        self._remove_stale()
        current = self.current()
        number = max([current.number if current else 0, *self._generation_numbers()]) + 1
        staging = Generation(self.root / f"{GEN_PREFIX}{number:06d}.tmp")
        staging.path.mkdir(parents=True)
        try:
            if copy_current and current is not None:
                if current.catalog_path.is_file():
                    shutil.copy2(current.catalog_path, staging.catalog_path)
                if current.vectors_path.is_dir():
                    link_tree(current.vectors_path, staging.vectors_path)
            yield staging
            # the filter columns beside the catalog, so no query builds them (never fails the commit)
            from sarclip_search.store.column_arrays import build_at_commit

            if filter_columns:
                build_at_commit(staging.path, staging.catalog_path)
            final = Generation(self.root / f"{GEN_PREFIX}{number:06d}")
            publish_dir(staging.path, final.path)
            write_atomic(self.root / CURRENT_FILE, (final.path.name + "\n").encode(), unique=False)
            fsync_dir(self.root)
            log.info("committed %s", final.path)
        except BaseException:
            shutil.rmtree(staging.path, ignore_errors=True)
            raise
        self._remove_old(keep=final.path.name)

    def tidy(self) -> None:
        """Remove what a writer killed after its last commit left: staged and superseded generations.

        For a run that commits nothing (`new_generation` does this itself). Call inside `lock()`.
        """
        self._remove_stale()
        current = self.current()
        if current is not None:
            self._remove_old(keep=current.path.name)

    def _generation_numbers(self) -> list[int]:
        numbers = []
        for path in self.root.glob(f"{GEN_PREFIX}*"):
            try:
                numbers.append(Generation(path).number)
            except ValueError:
                continue
        return numbers

    def _remove_stale(self) -> None:
        """Delete staging generations left by an interrupted writer (we hold the lock)."""
        for path in self.root.glob(f"{GEN_PREFIX}*.tmp"):
            log.info("removing unfinished generation %s", path)
            shutil.rmtree(path, ignore_errors=True)

    def _remove_old(self, keep: str) -> None:
        # A reader that opened an old generation keeps working: on POSIX, open files outlive unlinking.
        for path in self.root.glob(f"{GEN_PREFIX}*"):
            if path.name != keep and not path.name.endswith(".tmp"):
                shutil.rmtree(path, ignore_errors=True)

    def size_bytes(self) -> int:
        """Bytes on disk of the committed generation."""
        generation = self.current()
        if generation is None:
            return 0
        return sum(p.stat().st_size for p in generation.path.rglob("*") if p.is_file())


def make_info(
    *,
    model_identity: dict[str, Any],
    model_path: str | None,
    vector_info: dict[str, Any],
    counts: dict[str, int],
    archive_root: str,
    tile_size: int,
    tile_stride: int,
    schema_version: int,
    generation: int,
) -> dict[str, Any]:
    """The info JSON of a generation: everything needed to refuse a mismatched reader or writer."""
    import duckdb
    import faiss

    return {
        "format": INFO_FORMAT,
        "format_version": INFO_FORMAT_VERSION,
        "generation": generation,
        "model": {**model_identity, "checkpoint_path": model_path},
        "embedding": {"dim": vector_info["dim"], "metric": vector_info["metric"], "normalized": "l2", "dtype": "float32"},
        "index": {k: vector_info[k] for k in ("factory", "ntotal", "nprobe")},
        "counts": counts,
        "archive_root": archive_root,
        "tiling": {"size": tile_size, "stride": tile_stride},
        "catalog_schema_version": schema_version,
        "versions": {
            "sarclip_search": __version__,
            "faiss": faiss.__version__,
            "duckdb": duckdb.__version__,
            "torch": importlib.metadata.version("torch"),  # no import: an unchanged re-index loads no model
        },
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
