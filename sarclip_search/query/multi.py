"""Several index directories searched as one: `sarsearch query/serve --db A --db B ...` or a manifest.

    with MultiEngine.open(["runs/idx-2016", "runs/idx-2017"]) as engine:   # or ["indexes.json"]
        hits = engine.query("cargo ship", filters=Filters(split="test"), k=10)
        hits[0].id            # "idx-2016:4779": NAME:ID, what like/positive/negative take back
        engine.query(like=[hits[0].id], k=10)

An archive split by year, region, campaign or machine is indexed as several index directories; a query is
embedded once, fanned out to every index (`Searcher.search`: each one's best k for the same unit vectors and
the same filters) and the lists merged by score. Each index's top k holds every tile of the merged top k
that it owns, so the merge is what one index holding all the tiles would return (scores are cosines to the
same vectors). Every index must have been built with the same model checkpoint (`checkpoint_sha256`),
else its scores mean something else: refused. Hits carry ids namespaced by index, ``NAME:ID`` (and
``NAME:SCENE_ID``), and ``metadata["index"]``; ids given back (`--like`, `--positive`, `--negative`, the
server's item routes) must name their index. Names are the directories' base names, or those a manifest
gives (JSON, passed as --db):

    {"indexes": [{"name": "y2016", "db": "idx-2016"}, {"name": "y2017", "db": "../shared-indexes/idx-2017"}]}

(relative `db` paths are relative to the manifest's folder).

`MultiEngine` talks to each index only through the `Searcher` protocol (`LocalSearcher`: an `Engine` in
this process), so that a remote shard (a Ray Serve deployment per index, docs/scale.md) can stand behind
the same calls: search(query vectors, k, filters) -> scored hits, fetch(ids) -> rows, vectors(ids),
count/sample/tile_ids(filters), and the catalog facts (columns, values). Filters travel as `Filters`, not as
id sets: each index evaluates them on its own catalog (and `LocalSearcher` keeps the last few id sets, so a
query that searches several times evaluates them once). A filter naming a column that some indexes lack
matches nothing there (it is an error only when no index has the column).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from sarclip_search.errors import FilterError, InputError
from sarclip_search.model.vectors import l2_normalize
from sarclip_search.query.engine import BACKGROUND_NEGATIVES, BACKGROUND_SEED, Engine, RankedQueries
from sarclip_search.query.hit import Hit
from sarclip_search.store.columns import LOW_CARDINALITY, ColumnInfo
from sarclip_search.store.filters import Filters
from sarclip_search.store.layout import IndexStore

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")  # an index name: no ':' (it separates NAME:ID)
REF_PATTERN = re.compile(r"([A-Za-z0-9_.-]+):([0-9]{1,18})")
FILTER_CACHE = 8  # id sets a LocalSearcher keeps (a query evaluates its filters once, then searches with them)
# Threads that call the indexes of a query at the same time (FAISS and DuckDB release the GIL): one process-wide pool
FAN_OUT_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def fan_out(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """The results of `calls`, run at the same time (one thread each, from a shared pool) when there are several;
    the first exception is raised once all have ended."""
    global _pool
    if len(calls) <= 1:
        return [call() for call in calls]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(FAN_OUT_THREADS, thread_name_prefix="sarsearch-fan-out")
    futures = [_pool.submit(call) for call in calls]
    return [future.result() for future in futures]


def is_manifest(path: str | Path) -> bool:
    """True when a --db value names a multi-index manifest (a .json file) rather than an index directory."""
    return Path(path).suffix.lower() == ".json" and not Path(path).is_dir()


@dataclass(frozen=True)
class IndexSource:
    """One index of several: its name (the NAME of NAME:ID) and its directory."""

    name: str
    db: Path


def read_manifest(path: str | Path) -> list[IndexSource]:
    """The indexes a manifest lists ({"indexes": [{"name": ..., "db": ...}, ...]}); InputError naming the file."""
    path = Path(path)
    example = '{"indexes": [{"name": "a", "db": "index-a"}, {"name": "b", "db": "index-b"}]}'
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"--db {path}: no such manifest; give an index directory or a JSON manifest such as {example}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--db {path}: not a readable JSON manifest ({exc}); write it as {example}") from None
    entries = document.get("indexes") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"--db {path}: a manifest lists its indexes as {example}")
    sources = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("db"), str):
            raise InputError(f"--db {path}: index {number} has no \"db\" (its directory); write each as "
                             '{"name": "a", "db": "index-a"}')
        db = Path(entry["db"])
        db = db if db.is_absolute() else path.parent / db
        name = entry.get("name", db.name)
        sources.append(IndexSource(str(name), db))
    return sources


def index_sources(dbs: Sequence[str | Path]) -> list[IndexSource]:
    """The indexes several --db values name (directories, named by their base name, or manifests), checked:
    valid, distinct names and distinct directories; InputError naming the clash and the fix."""
    sources: list[IndexSource] = []
    for db in dbs:
        sources += read_manifest(db) if is_manifest(db) else [IndexSource(Path(db).resolve().name, Path(db))]
    names: dict[str, IndexSource] = {}
    places: dict[Path, IndexSource] = {}
    for source in sources:
        if not NAME_PATTERN.fullmatch(source.name):
            raise InputError(f"--db {source.db}: index name {source.name!r} may hold only letters, digits, '_', '.' "
                             "and '-'; name it in a manifest ({\"indexes\": [{\"name\": \"a\", \"db\": ...}]})")
        place = source.db.resolve()
        if place in places:
            raise InputError(f"--db {source.db}: the same index as --db {places[place].db}; give each index once")
        if source.name in names:
            raise InputError(f"--db {names[source.name].db} and --db {source.db} are both named {source.name!r}; "
                             'give them names in a manifest ({"indexes": [{"name": "a", "db": ...}, ...]})')
        names[source.name], places[place] = source, source
    return sources


def parse_ref(value: Any, names: Sequence[str], option: str) -> tuple[str, int]:
    """(index name, tile id) of a NAME:ID; InputError naming `option` for a bare id or an unknown index."""
    text = str(value).strip()
    match = REF_PATTERN.fullmatch(text)
    if match is None:
        example = f"{names[0]}:{text}" if text.isdigit() else f"{names[0]}:41"
        raise InputError(f"{option} {text}: several indexes are searched; give the id as NAME:ID "
                         f"(e.g. {example}, as results show it)")
    name, tile_id = match.group(1), int(match.group(2))
    if name not in names:
        raise InputError(f"{option} {text}: no index named {name!r}; the indexes are {', '.join(names)}")
    return name, tile_id


class Searcher(Protocol):
    """One index as a multi-index query sees it. `LocalSearcher` is an `Engine` in this process; a remote
    shard (a Ray Serve deployment holding an `Engine`) would answer the same calls over the network.

    Ids are the index's own tile ids; `MultiEngine` namespaces them. `filters` are evaluated by the index.
    """

    name: str

    @property
    def location(self) -> str: ...  # where the index is, for messages

    @property
    def info(self) -> dict[str, Any]: ...  # the generation's info.json (model, embedding, tiling)

    def count(self, filters: Filters | None) -> int: ...  # tiles the filters match (all when None)

    def search(self, queries: np.ndarray, k: int, filters: Filters | None, nprobe: int | None) -> list[Hit]: ...

    def fetch(self, ids: Sequence[int]) -> list[Hit]: ...  # hits (score 0) of ids, in order, unknown left out

    def contains(self, ids: Sequence[int]) -> np.ndarray: ...

    def vectors(self, ids: Sequence[int]) -> np.ndarray: ...  # stored embeddings (n, d)

    def sample(self, filters: Filters | None, n: int, seed: int, exclude: Sequence[int]) -> np.ndarray: ...

    def tile_ids(self, filters: Filters | None) -> np.ndarray: ...  # matching ids in id order

    def embed_text(self, text: str) -> np.ndarray: ...

    def embed_image_tiles(self, path: str | Path, option: str = "--image") -> np.ndarray: ...

    def columns(self) -> list[str]: ...

    def values(self, column: str) -> list[tuple[object, int]]: ...

    def column_info(self, include_internal: bool = False) -> list[ColumnInfo]: ...

    def summary(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalSearcher:
    """A `Searcher` over an `Engine` of this process."""

    def __init__(self, name: str, engine: Engine) -> None:
        self.name = name
        self.engine = engine
        self._subsets: OrderedDict[Filters, np.ndarray | None] = OrderedDict()

    @property
    def location(self) -> str:
        return str(self.engine.generation.path.parent)

    @property
    def info(self) -> dict[str, Any]:
        return self.engine.info

    def _subset(self, filters: Filters | None) -> np.ndarray | None:
        if filters is None:
            return None
        if filters not in self._subsets:
            self._subsets[filters] = self.engine.filter_ids(filters)
            while len(self._subsets) > FILTER_CACHE:
                self._subsets.popitem(last=False)
        return self._subsets[filters]

    def count(self, filters: Filters | None) -> int:
        subset = self._subset(filters)
        return self.engine.vectors.ntotal if subset is None else len(subset)

    def search(self, queries: np.ndarray, k: int, filters: Filters | None, nprobe: int | None) -> list[Hit]:
        return self.engine._search(queries, k, self._subset(filters), nprobe)

    def fetch(self, ids: Sequence[int]) -> list[Hit]:
        return self.engine.hits_by_id(ids)

    def contains(self, ids: Sequence[int]) -> np.ndarray:
        return self.engine.vectors.contains(np.asarray(ids, dtype=np.int64))

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        return self.engine.vectors.vectors(np.asarray(ids, dtype=np.int64))

    def sample(self, filters: Filters | None, n: int, seed: int, exclude: Sequence[int]) -> np.ndarray:
        ids = np.setdiff1d(self.tile_ids(filters), np.asarray(list(exclude), dtype=np.int64))
        chosen = np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False)
        return np.sort(chosen)

    def tile_ids(self, filters: Filters | None) -> np.ndarray:
        subset = self._subset(filters)
        return self.engine.vectors.ids() if subset is None else subset

    def embed_text(self, text: str) -> np.ndarray:
        return self.engine.embed_text(text)

    def embed_image_tiles(self, path: str | Path, option: str = "--image") -> np.ndarray:
        return self.engine.embed_image_tiles(path, option)

    def columns(self) -> list[str]:
        return self.engine.catalog.columns()

    def values(self, column: str) -> list[tuple[object, int]]:
        return self.engine.catalog.values(column)

    def column_info(self, include_internal: bool = False) -> list[ColumnInfo]:
        return self.engine.catalog.column_info(include_internal)

    def summary(self) -> dict[str, Any]:
        return self.engine.summary()

    def close(self) -> None:
        self.engine.close()


def open_engine(dbs: Sequence[str | Path] | None, *, model_path: str | Path | None = None) -> Engine | MultiEngine:
    """What `sarsearch query/serve --db ...` search: one index directory (none given: the default) as an `Engine`,
    exactly as before; several, or a manifest, as one `MultiEngine` (ids NAME:ID)."""
    if not dbs or (len(dbs) == 1 and not is_manifest(dbs[0])):
        return Engine.open(dbs[0] if dbs else None, model_path=model_path)
    return MultiEngine.open(dbs, model_path=model_path)


def several(dbs: Sequence[str | Path] | None) -> bool:
    """True when --db values name several indexes (more than one, or a manifest)."""
    return bool(dbs) and (len(dbs) > 1 or is_manifest(dbs[0]))  # type: ignore[index]


@dataclass(frozen=True)
class _Recorded:
    location: str
    info: dict[str, Any]


def check_recorded_models(sources: Sequence[IndexSource]) -> None:
    """`check_same_model` on the committed info of each index directory, before anything is opened (the server
    warms each index's encoder up when it opens it)."""
    check_same_model([_Recorded(str(s.db), IndexStore(s.db).require_current().read_info()) for s in sources])


def check_same_model(searchers: Sequence[Searcher | _Recorded]) -> None:
    """InputError naming both indexes when one was built with another checkpoint than the first."""
    first = searchers[0]
    expected = str(first.info["model"].get("checkpoint_sha256"))
    for other in searchers[1:]:
        found = str(other.info["model"].get("checkpoint_sha256"))
        if found != expected:
            raise InputError(
                f"--db {other.location} was indexed with model checkpoint {found[:12]}, --db {first.location} with "
                f"{expected[:12]}; indexes searched together need the same checkpoint (re-index one with the "
                "other's --model)")


@dataclass(frozen=True)
class MultiSubset:
    """A query's filters and the tiles they match in each index (indexes matching none are skipped)."""

    filters: Filters
    counts: dict[str, int]


class MultiCatalog:
    """The catalog facts of several indexes as one (what `sarsearch query`'s checks and the server's
    /queryables read): columns (the union, in first-seen order), values with summed tile counts."""

    def __init__(self, searchers: Sequence[Searcher]) -> None:
        self._searchers = list(searchers)

    def columns(self) -> list[str]:
        return list(dict.fromkeys(c for s in self._searchers for c in s.columns()))

    def values(self, column: str, limit: int | None = None) -> list[tuple[object, int]]:
        totals: dict[object, int] = {}
        for searcher in self._searchers:
            if column in searcher.columns():
                for value, tiles in searcher.values(column):
                    totals[value] = totals.get(value, 0) + tiles
        merged = sorted(totals.items(), key=lambda pair: (-pair[1], str(pair[0])))
        return merged if limit is None else merged[:limit]

    def column_info(self, include_internal: bool = False) -> list[ColumnInfo]:
        merged: dict[str, ColumnInfo] = {}
        for searcher in self._searchers:
            for info in searcher.column_info(include_internal):
                seen = merged.get(info.name)
                if seen is None:
                    merged[info.name] = replace(info, values=None if info.values is None else list(info.values))
                    continue
                seen.tiles += info.tiles
                seen.distinct = max(seen.distinct, info.distinct)  # at least this many
                if seen.values is not None and info.values is not None:
                    seen.values = self._summed(seen.values + info.values)
                    seen.distinct = len(seen.values)
                    if seen.distinct > LOW_CARDINALITY:
                        seen.values = None
                else:
                    seen.values = None
                for bound, pick in (("minimum", min), ("maximum", max)):
                    known = [v for v in (getattr(seen, bound), getattr(info, bound)) if v is not None]
                    try:
                        setattr(seen, bound, pick(known) if known else None)
                    except TypeError:  # values of different types in two catalogs: keep the first
                        pass
        return list(merged.values())

    @staticmethod
    def _summed(pairs: Sequence[tuple[object, int]]) -> list[tuple[object, int]]:
        totals: dict[object, int] = {}
        for value, tiles in pairs:
            totals[value] = totals.get(value, 0) + tiles
        return sorted(totals.items(), key=lambda pair: (-pair[1], str(pair[0])))

    def counts(self) -> dict[str, int]:
        totals = {"scenes": 0, "tiles": 0}
        for searcher in self._searchers:
            for key, value in searcher.summary()["catalog"].items():
                if key in totals:
                    totals[key] += int(value)
        return totals

    def tile_ids(self) -> np.ndarray:
        """Every tile as NAME:ID, index by index in id order."""
        return np.asarray([f"{s.name}:{i}" for s in self._searchers for i in s.tile_ids(None).tolist()], dtype=object)


class MultiEngine(RankedQueries):
    """`query` and `feedback` over several indexes at once (see the module docstring); ids are NAME:ID."""

    def __init__(self, searchers: Sequence[Searcher]) -> None:
        if not searchers:
            raise InputError("give at least one --db index directory")
        check_same_model(searchers)
        self.searchers = list(searchers)
        self.by_name = {s.name: s for s in self.searchers}
        self.names = [s.name for s in self.searchers]
        self.catalog = MultiCatalog(self.searchers)
        self.info = self.searchers[0].info  # the model, embedding and tiling of the first (the model is shared)

    @classmethod
    def open(cls, dbs: Sequence[str | Path], *, model_path: str | Path | None = None) -> MultiEngine:
        """Every index that `dbs` names (directories and manifests, `index_sources`), each opened as
        `Engine.open` opens one; closed again if any fails or the checkpoints differ."""
        searchers: list[Searcher] = []
        try:
            for source in index_sources(dbs):
                searchers.append(LocalSearcher(source.name, Engine.open(source.db, model_path=model_path)))
            return cls(searchers)
        except BaseException:
            for searcher in searchers:
                searcher.close()
            raise

    def close(self) -> None:
        for searcher in self.searchers:
            searcher.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ids ----------------------------------------------------------------------------------------

    def _ref(self, tile_id: Any, option: str = "id") -> str:
        name, local = parse_ref(tile_id, self.names, option)
        return f"{name}:{local}"

    def _namespaced(self, name: str, hit: Hit) -> Hit:
        return replace(hit, id=f"{name}:{hit.id}", scene_id=f"{name}:{hit.scene_id}",  # type: ignore[arg-type]
                       metadata={**hit.metadata, "index": name})

    def _grouped(self, refs: Sequence[Any], option: str) -> list[tuple[str, int]]:
        return [parse_ref(ref, self.names, option) for ref in refs]

    # --- hooks of RankedQueries ----------------------------------------------------------------------

    def embed_text(self, text: str) -> np.ndarray:
        return self.searchers[0].embed_text(text)

    def embed_image_tiles(self, path: str | Path, option: str = "--image") -> np.ndarray:
        """A query image cut with the first index's tiling (indexes of other tilings are searched with those tiles)."""
        return self.searchers[0].embed_image_tiles(path, option)

    def stored_vectors(self, ids: Sequence[Any], option: str = "--like") -> np.ndarray:
        """The stored embeddings of NAME:ID tiles, in the given order; InputError naming an unknown one."""
        pairs = self._grouped(ids, option)
        if not pairs:
            return np.empty((0, int(self.info["embedding"]["dim"])), np.float32)
        out: list[np.ndarray | None] = [None] * len(pairs)
        for name in dict.fromkeys(name for name, _ in pairs):
            positions = [p for p, (n, _) in enumerate(pairs) if n == name]
            local = [pairs[p][1] for p in positions]
            searcher = self.by_name[name]
            found = searcher.contains(local)
            if not found.all():
                missing = local[int(np.flatnonzero(~found)[0])]
                raise InputError(f"{option} {name}:{missing}: no tile with that id in index {name} ({searcher.location}); "
                                 "use an `id` from an earlier result (sarsearch query ... --json)")
            for p, vector in zip(positions, searcher.vectors(local)):
                out[p] = vector
        return np.stack(out)  # type: ignore[arg-type]

    def _subset(self, filters: Filters | None) -> MultiSubset | None:
        if filters is None:
            return None
        def count(searcher: Searcher) -> int | FilterError:
            try:
                return searcher.count(filters)
            except FilterError as exc:  # e.g. a column this index's catalog lacks: nothing matches there
                log.info("index %s: no tile matches (%s)", searcher.name, exc)
                return exc

        found = fan_out([lambda s=s: count(s) for s in self.searchers])
        errors = [result for result in found if isinstance(result, FilterError)]
        if len(errors) == len(self.searchers):
            raise errors[0]
        return MultiSubset(filters, {s.name: 0 if isinstance(n, FilterError) else n for s, n in zip(self.searchers, found)})

    def _pool(self, subset: MultiSubset | None) -> int:
        if subset is None:
            return sum(s.count(None) for s in self.searchers)
        return sum(subset.counts.values())

    def _search(self, queries: np.ndarray, k: int, subset: MultiSubset | None, nprobe: int | None) -> list[Hit]:
        """Each index's best k for the same unit vectors and filters, merged by score: the exact top k of all."""
        filters = subset.filters if subset is not None else None
        asked = [s for s in self.searchers if subset is None or subset.counts[s.name]]
        answers = fan_out([lambda s=s: s.search(queries, k, filters, nprobe) for s in asked])  # at the same time
        found = [(searcher.name, hit) for searcher, hits in zip(asked, answers) for hit in hits]
        found.sort(key=lambda pair: -pair[1].score)  # stable: ties keep index order, then each index's own order
        return [self._namespaced(name, hit) for name, hit in found[:k]]  # only the k kept are namespaced

    def _hit_vectors(self, ids: Sequence[Any]) -> np.ndarray:
        return self.stored_vectors(ids, "id")

    def _background(self, subset: MultiSubset | None, exclude: Sequence[Any]) -> np.ndarray:
        """Up to BACKGROUND_NEGATIVES random tiles (seeded) of all indexes, each giving its share of the matches."""
        counts = {s.name: (s.count(None) if subset is None else subset.counts[s.name]) for s in self.searchers}
        excluded = self._grouped(exclude, "id")
        total = sum(counts.values()) - len(excluded)
        if total <= 0:
            raise InputError("relevance feedback needs tiles besides the marked ones to contrast them with; widen the filters")
        rng = np.random.default_rng(BACKGROUND_SEED)
        shares = rng.multinomial(min(BACKGROUND_NEGATIVES, total), [counts[n] / sum(counts.values()) for n in self.names])
        vectors = []
        for searcher, share in zip(self.searchers, shares):
            if share:
                local_excluded = [i for n, i in excluded if n == searcher.name]
                filters = subset.filters if subset is not None else None
                ids = searcher.sample(filters, int(share), BACKGROUND_SEED, local_excluded)
                if len(ids):
                    vectors.append(searcher.vectors(ids))
        return np.vstack(vectors) if vectors else np.empty((0, int(self.info["embedding"]["dim"])), np.float32)

    # --- what the server and the CLI read ------------------------------------------------------------

    def filter_ids(self, filters: Filters | None) -> np.ndarray | None:
        """NAME:ID of the tiles matching the filters, index by index in id order; None without filters."""
        subset = self._subset(filters)
        if subset is None:
            return None
        return np.asarray([f"{s.name}:{i}" for s in self.searchers if subset.counts[s.name]
                           for i in s.tile_ids(filters).tolist()], dtype=object)

    def hits_by_id(self, ids: Sequence[Any]) -> list[Hit]:
        """Hits (score 0, kind "none") of NAME:ID tiles in the given order; unknown ids (or indexes) left out."""
        pairs: list[tuple[str, int]] = []
        for ref in ids:
            match = REF_PATTERN.fullmatch(str(ref).strip())
            if match is not None and match.group(1) in self.by_name:
                pairs.append((match.group(1), int(match.group(2))))
        found: dict[tuple[str, int], Hit] = {}
        for name in dict.fromkeys(name for name, _ in pairs):
            local = [i for n, i in pairs if n == name]
            for hit in self.by_name[name].fetch(local):
                found[(name, int(hit.id))] = self._namespaced(name, hit)
        return [found[pair] for pair in pairs if pair in found]

    def scene_tile_ids(self, scene_id: Any) -> list[str]:
        """The NAME:ID tiles of a NAME:SCENE_ID scene, in id order (empty for an unknown one)."""
        match = REF_PATTERN.fullmatch(str(scene_id).strip())
        if match is None or match.group(1) not in self.by_name:
            return []
        name = match.group(1)
        ids = self.by_name[name].tile_ids(Filters(where=f"scene_id = {int(match.group(2))}"))
        return [f"{name}:{i}" for i in ids.tolist()]

    def summary(self) -> dict[str, Any]:
        """Each index's `Engine.summary` under its name, with the totals."""
        kept = ("generation", "catalog", "index", "tiling")  # no server paths (db, archive root)
        indexes = {s.name: {key: value for key, value in s.summary().items() if key in kept} for s in self.searchers}
        return {"indexes": indexes, "catalog": self.catalog.counts(), "model": self.info.get("model"),
                "embedding": self.info.get("embedding")}

    def search_vectors(self, vectors: np.ndarray, *, k: int = 10, filters: Filters | None = None,
                       nprobe: int | None = None) -> list[Hit]:
        """Best-k tiles of all indexes for any query embeddings (m, d), normalized here (as `Engine.search_vectors`)."""
        return self._search(l2_normalize(np.atleast_2d(vectors)), k, self._subset(filters), nprobe)
