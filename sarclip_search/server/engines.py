"""The server's engines: one committed generation at a time, followed as `sarsearch index` commits new ones.

A request leases the current `Snapshot` for its whole life (`Generations.lease`), so everything it
answers comes from one generation, and borrows one of the snapshot's engines while it calls it
(`Snapshot.engine`). An `Engine` is used by one thread at a time (its DuckDB connection is not
thread-safe), so a snapshot holds `ENGINES_PER_GENERATION` of them, all of the same generation, and
requests beyond that wait for a free one.

CURRENT is re-read at most once per `CHECK_INTERVAL` seconds, by the first request after the interval.
A newer generation is opened (and its text encoder warmed up) in a background thread while requests
keep being answered from the old one; then it becomes current, and the old snapshot's engines are closed
as soon as no request holds it any more. Its files stay readable meanwhile even after the writer has
deleted them (POSIX unlink; the vectors are memory-mapped).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sarclip_search.errors import SarclipError
from sarclip_search.index.errors import VectorIndexError
from sarclip_search.query.engine import Engine
from sarclip_search.query.multi import (
    IndexSource,
    LocalSearcher,
    MultiEngine,
    check_recorded_models,
    index_sources,
    several,
)
from sarclip_search.store.layout import IndexStore

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # s between two reads of CURRENT
# Engines per generation: requests calling the engine at the same time (the machine this was tuned on has
# 2 cores; onnxruntime and FAISS release the GIL, so two overlap; more only queue on the cores).
ENGINES_PER_GENERATION = 2
OPEN_ATTEMPTS = 5  # a writer may commit while a snapshot's engines are being opened: they must agree
WARM_UP_TEXT = "warm up"


class Snapshot:
    """The engines of one committed generation, with the requests that hold it."""

    def __init__(self, name: str, engines: list[Engine]) -> None:
        self.name = name  # "gen-000003"
        self.root = engines[0].generation.path.parent  # the index directory
        self._engines: queue.Queue[Engine] = queue.Queue()
        for engine in engines:
            self._engines.put(engine)
        self._all = list(engines)
        self.refs = 0
        self.retired = False
        self.closed = False
        self.cache: dict[str, Any] = {}  # per-generation answers (queryables, info), filled by the routes
        self.cache_lock = threading.Lock()

    @contextmanager
    def engine(self) -> Iterator[Engine]:
        """One engine of this generation, for this thread alone until the block ends."""
        if self.closed:
            raise RuntimeError(f"snapshot {self.name} is closed")  # a bug: leases keep it open
        engine = self._engines.get()
        try:
            yield engine
        finally:
            self._engines.put(engine)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """`make()` once per generation (e.g. the queryables), then the same answer.

        `make` runs outside the lock (two first requests may both make it): it may wait for an engine, and a
        request holding an engine may be waiting here for another key.
        """
        with self.cache_lock:
            if key in self.cache:
                return self.cache[key]
        value = make()
        with self.cache_lock:
            return self.cache.setdefault(key, value)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for engine in self._all:
                engine.close()
            log.info("closed the engines of %s", self.name)


def open_snapshot(db: str | Path, count: int = ENGINES_PER_GENERATION) -> Snapshot:
    """`count` engines of the committed generation of `db`, opened and warmed up (text encoder loaded).

    Raises what `Engine.open` raises (no index, mismatched artifacts ...).
    """
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        engines: list[Engine] = []
        try:
            for _ in range(count):
                engines.append(Engine.open(db))
        except BaseException:
            for engine in engines:
                engine.close()
            raise
        names = {engine.generation.path.name for engine in engines}
        if len(names) == 1:
            break
        for engine in engines:  # a commit fell between two opens: open them all again
            engine.close()
        if attempt == OPEN_ATTEMPTS:
            raise SarclipError(f"{db}: the index changed {OPEN_ATTEMPTS} times while it was being opened; try again")
    for engine in engines:
        engine.embed_text(WARM_UP_TEXT)  # loads the text encoder now rather than in the first request
    return Snapshot(engines[0].generation.path.name, engines)


class Generations:
    """The current snapshot of an index directory, following new commits (see the module docstring)."""

    def __init__(self, db: str | Path, *, engines_per_generation: int = ENGINES_PER_GENERATION,
                 check_interval: float = CHECK_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = IndexStore(db)
        self.db = self.store.root
        self.engines_per_generation = engines_per_generation
        self.check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._active = open_snapshot(self.db, engines_per_generation)
        self._checked = clock()
        self._opening: threading.Thread | None = None
        self._closed = False
        log.info("serving %s of %s", self._active.name, self.db)

    @property
    def current_name(self) -> str:
        return self._active.name

    @property
    def roots(self) -> list[Path]:
        """The index directories served (one here; several for `MultiGenerations`)."""
        return [self.db]

    @contextmanager
    def lease(self) -> Iterator[Snapshot]:
        """The current snapshot, held (never closed) until the block ends: one generation per request."""
        self._maybe_check()
        with self._lock:
            if self._closed:
                raise RuntimeError("the server's engines are closed")
            snapshot = self._active
            snapshot.refs += 1
        try:
            yield snapshot
        finally:
            with self._lock:
                snapshot.refs -= 1
                done = snapshot.retired and snapshot.refs == 0
            if done:
                snapshot.close()

    def _maybe_check(self) -> None:
        now = self._clock()
        if now - self._checked < self.check_interval:
            return
        with self._lock:
            if now - self._checked < self.check_interval or self._closed:
                return
            self._checked = now
            if self._opening is not None and self._opening.is_alive():
                return
            try:
                committed = self.store.current()
            except SarclipError as exc:  # CURRENT names a missing generation: keep serving what we have
                log.warning("%s", exc)
                return
            if committed is None or committed.path.name == self._active.name:
                return
            log.info("%s committed; opening it", committed.path.name)
            self._opening = threading.Thread(target=self._switch, name="sarsearch-open-generation", daemon=True)
            self._opening.start()

    def _switch(self) -> None:
        """Open the committed generation and make it current (background thread)."""
        try:
            snapshot = open_snapshot(self.db, self.engines_per_generation)
        except (SarclipError, VectorIndexError, OSError) as exc:
            log.warning("could not open the new generation of %s (%s); still serving %s", self.db, exc,
                        self._active.name)
            return
        with self._lock:
            if self._closed or snapshot.name == self._active.name:
                old, snapshot.retired = snapshot, True
            else:
                old, self._active = self._active, snapshot
                old.retired = True
            done = old.refs == 0
        if done:
            old.close()
        log.info("now serving %s", self._active.name)

    def refresh(self, timeout: float = 60.0) -> str:
        """Check CURRENT now and wait until a newer generation, if any, is current; its name."""
        with self._lock:
            self._checked = -float("inf")
        self._maybe_check()
        opening = self._opening
        if opening is not None:
            opening.join(timeout)
        return self._active.name

    def close(self) -> None:
        """Close every engine (the server is stopping); a request still running keeps its snapshot until it ends."""
        opening = self._opening
        if opening is not None:
            opening.join(60)
        with self._lock:
            self._closed = True
            snapshot = self._active
            snapshot.retired = True
            done = snapshot.refs == 0
        if done:
            snapshot.close()


class MultiSnapshot:
    """The current snapshots of several indexes, leased together: a request answers from one generation of each.

    `engine()` borrows one engine of each and hands them out as one `MultiEngine` (ids NAME:ID). Every request
    takes them in the same order (the indexes' order), so two requests never wait on each other in a cycle.
    """

    def __init__(self, names: Sequence[str], parts: Sequence[Snapshot]) -> None:
        self.names = list(names)
        self.parts = list(parts)
        self.name = ",".join(f"{name}:{part.name}" for name, part in zip(self.names, self.parts))
        self.cache: dict[str, Any] = {}
        self.cache_lock = threading.Lock()

    @contextmanager
    def engine(self) -> Iterator[MultiEngine]:
        with ExitStack() as stack:
            engines = [stack.enter_context(part.engine()) for part in self.parts]
            yield MultiEngine([LocalSearcher(name, engine) for name, engine in zip(self.names, engines)])

    cached = Snapshot.cached


class MultiGenerations:
    """`Generations` of several index directories served as one (`sarsearch serve --db A --db B`): each index is
    followed on its own as `index` commits to it; a lease holds the current snapshot of each."""

    def __init__(self, sources: Sequence[IndexSource], **options: Any) -> None:
        self.sources = list(sources)
        self.parts: list[Generations] = []
        self._lock = threading.Lock()
        self._current: MultiSnapshot | None = None
        check_recorded_models(self.sources)  # a model mismatch is refused before any index is opened
        try:
            for source in self.sources:
                self.parts.append(Generations(source.db, **options))
            with self.lease() as snapshot, snapshot.engine():
                pass  # MultiEngine refuses indexes of different checkpoints, before the server starts
        except BaseException:
            self.close()
            raise
        self.db = self.parts[0].db

    @property
    def roots(self) -> list[Path]:
        return [part.db for part in self.parts]

    @property
    def current_name(self) -> str:
        return ",".join(f"{s.name}:{part.current_name}" for s, part in zip(self.sources, self.parts))

    @contextmanager
    def lease(self) -> Iterator[MultiSnapshot]:
        with ExitStack() as stack:
            parts = [stack.enter_context(part.lease()) for part in self.parts]
            with self._lock:
                current = self._current
                if current is None or any(a is not b for a, b in zip(current.parts, parts)):
                    current = self._current = MultiSnapshot([s.name for s in self.sources], parts)
            yield current

    def refresh(self, timeout: float = 60.0) -> str:
        for part in self.parts:
            part.refresh(timeout)
        return self.current_name

    def close(self) -> None:
        for part in self.parts:
            part.close()


def open_generations(db: str | Path | Sequence[str | Path] | None, **options: Any) -> Generations | MultiGenerations:
    """What `serve` follows: one index directory (a path, or a list of one) as before, several (or a manifest)
    as `MultiGenerations`."""
    if isinstance(db, (list, tuple)):
        if several(db):
            return MultiGenerations(index_sources(db), **options)
        db = db[0] if db else None
    return Generations(db, **options)  # type: ignore[arg-type]
