"""The shortcut filters as a numpy mask (store/column_arrays.py) give the DuckDB predicate's ids, tile for tile."""

from __future__ import annotations

import json
import os
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.errors import FilterError
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.column_arrays import FOLDER, ColumnArrays, IdSetCache, filter_key
from sarclip_search.store.filters import BBox, Filters, build_predicate, parse_date

LABELS = ["T72", "BMP2", "ship", "Ship", "cargo ship", "oil_spill", None]
DATASETS = ["MSTAR-SOC", "OpenSARShip", "HRSID", None]
SPLITS = ["train", "test", "val", None]
SENSORS = ["Sentinel-1A", "SENTINEL-1B", "Sandia X-band", "TerraSAR-X", "sentinel", None]
POLARIZATIONS = ["VV+VH", "HH", "hh+hv", "VV", None]
FIRST_DAY = datetime(2015, 1, 1)


def write_catalog(path: Path, seed: int = 0, scenes: int = 70) -> Catalog:
    """A catalog of seeded random scenes and tiles: NULLs in every filter column, mixed case, tiles without a
    bbox, times on whole days (boundaries) and not, object counts or none; one scene removed (an id gap)."""
    rng = random.Random(seed)
    catalog = Catalog(path)
    with catalog:
        for number in range(scenes):
            scene = {"path": f"s{number:03d}.tif", "label": rng.choice(LABELS), "dataset": rng.choice(DATASETS),
                     "split": rng.choice(SPLITS), "sensor": rng.choice(SENSORS),
                     "sar:polarizations": rng.choice(POLARIZATIONS)}
            if rng.random() < 0.8:
                day = FIRST_DAY + timedelta(days=rng.randrange(400))
                scene["datetime"] = (day if rng.random() < 0.5 else day + timedelta(seconds=rng.randrange(86400))).isoformat()
            scene_id = catalog.add_scene({k: v for k, v in scene.items() if v is not None})
            tiles = []
            for _ in range(rng.randrange(1, 6)):
                lon, lat = rng.uniform(-20, 20), rng.uniform(-20, 20)
                tiles.append({"col_off": 0, "row_off": 0, "width": 8, "height": 8,
                              "bbox": None if rng.random() < 0.15 else (lon, lat, lon + rng.choice([0.5, 1.0]), lat + 1.0),
                              "tile_n_objects": None if rng.random() < 0.3 else rng.randrange(5),
                              "tile_label": rng.choice(["ship", "no_object", None])})
            catalog.add_tiles(scene_id, tiles)
        catalog.remove_scene("s005.tif")
    return catalog


@pytest.fixture(scope="module")
def random_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("column_arrays") / "gen-000001" / "catalog.duckdb"
    path.parent.mkdir()
    write_catalog(path)
    return path


def duckdb_ids(catalog: Catalog, filters: Filters) -> list[int]:
    return catalog.tile_ids(build_predicate(filters, catalog.columns())).tolist()


def random_filters(rng: random.Random) -> Filters:
    """One to four shortcut filters with values the catalog holds, does not hold, or holds in another case."""
    fields: dict[str, object] = {}
    for _ in range(rng.randrange(1, 5)):
        choice = rng.randrange(8)
        if choice == 0:
            fields["label"] = rng.choice([*[v for v in LABELS if v], "t72", "nothing"])
        elif choice == 1:
            fields["dataset"] = rng.choice([*[v for v in DATASETS if v], "mstar-soc"])
        elif choice == 2:
            fields["split"] = rng.choice(["train", "test", "val", "TEST"])
        elif choice == 3:
            fields["sensor"] = rng.choice(["sentinel", "SENTINEL-1", "x-band", "1b", "", "nothing"])
        elif choice == 4:
            fields["polarization"] = rng.choice(["vv", "VH", "hh", "+", "HV"])
        elif choice == 5:
            lon, lat = rng.uniform(-25, 20), rng.uniform(-25, 20)
            fields["bbox"] = rng.choice([(lon, lat, lon + rng.uniform(0, 15), lat + rng.uniform(0, 15)),
                                         BBox((lon, lat, lon, lat))])
        elif choice == 6:
            day = FIRST_DAY + timedelta(days=rng.randrange(-10, 410))
            moment = rng.choice([day.date().isoformat(), day + timedelta(microseconds=rng.randrange(86_400_000_000))])
            fields[rng.choice(["after", "before"])] = moment
        else:
            fields["min_objects"] = rng.randrange(0, 6)
    if "after" in fields and "before" in fields:
        fields.pop("before")
    return Filters(**fields)


def test_random_filters_match_duckdb(random_catalog: Path) -> None:
    rng = random.Random(7)
    with Catalog(random_catalog, read_only=True) as catalog:
        arrays = ColumnArrays.for_generation(random_catalog.parent, catalog)
        nonempty = 0
        for _ in range(400):
            filters = random_filters(rng)
            expected = duckdb_ids(catalog, filters)
            found = arrays.match(filters)
            assert found is not None, filters
            assert found.tolist() == expected, filters
            nonempty += bool(expected)
        assert nonempty > 100  # the combinations are not all empty


def test_semantics_nulls_case_and_boundaries(random_catalog: Path) -> None:
    with Catalog(random_catalog, read_only=True) as catalog:
        arrays = ColumnArrays.for_generation(random_catalog.parent, catalog)
        rows = {r["tile_id"]: r for r in catalog.fetch_tiles(catalog.tile_ids())}
        # exact match is case-sensitive; contains is not; NULL never matches
        ship = arrays.match(Filters(label="ship")).tolist()
        assert ship and all(rows[i]["label"] == "ship" for i in ship)
        sentinel = arrays.match(Filters(sensor="SENTINEL")).tolist()
        assert {rows[i]["sensor"] for i in sentinel} == {"Sentinel-1A", "SENTINEL-1B", "sentinel"}
        everything = arrays.match(Filters(sensor="")).tolist()  # contains '': every tile with a sensor
        assert everything == sorted(i for i, r in rows.items() if r["sensor"] is not None)
        # a tile whose scene has no time is in neither side of a date
        day = parse_date("2015-06-01")
        after, before = set(arrays.match(Filters(after=day)).tolist()), set(arrays.match(Filters(before=day)).tolist())
        assert not after & before
        assert after | before == {i for i, r in rows.items() if r["datetime"] is not None}
        # min-objects: NULL counts never match, even a threshold of 0 (negative ones are refused: build_predicate)
        assert arrays.match(Filters(min_objects=0)).tolist() == duckdb_ids(catalog, Filters(min_objects=0))
        assert len(arrays.match(Filters(min_objects=0))) < len(rows)


def test_where_and_unanswerable_values_go_to_duckdb(random_catalog: Path) -> None:
    with Catalog(random_catalog, read_only=True) as catalog:
        arrays = ColumnArrays.for_generation(random_catalog.parent, catalog)
        assert arrays.match(Filters(where="label = 'T72'", split="test")) is None
        assert arrays.match(Filters(sensor="séntinel")) is None  # non-ASCII: DuckDB lowers it
        assert arrays.match(Filters(label=5)) is None  # type: ignore[arg-type]  # DuckDB casts: its call
        assert arrays.match(Filters(min_objects=2**70)) is None


def test_saved_memory_mapped_and_refused_when_stale(random_catalog: Path, tmp_path: Path) -> None:
    generation = tmp_path / "gen-000002"
    generation.mkdir()
    path = generation / "catalog.duckdb"
    shutil.copyfile(random_catalog, path)
    filters = Filters(dataset="MSTAR-SOC", polarization="hh", after="2015-03-01", bbox=(-30, -30, 10, 10), min_objects=1)
    with Catalog(path, read_only=True) as catalog:
        first = ColumnArrays.for_generation(generation, catalog).match(filters)
        expected = duckdb_ids(catalog, filters)
    assert first.tolist() == expected
    saved = sorted(p.name for p in (generation / FOLDER).iterdir())
    assert {"ids.npy", "ids.json", "text_dataset.npy", "text_sar_polarizations.npy", "datetime.npy", "bbox.npy",
            "tile_n_objects.npy"} <= set(saved)
    assert not [name for name in saved if name.endswith(".tmp")]
    with Catalog(path, read_only=True) as catalog:
        again = ColumnArrays.for_generation(generation, catalog)
        assert again.match(filters).tolist() == expected
        assert isinstance(again._arrays["ids"], np.memmap)  # read back, not built
        assert isinstance(again._arrays["bbox"], np.memmap) and again._arrays["bbox"].shape == (4, len(again._arrays["ids"]))
    # the catalog changes under the same folder (another catalog file: size and mtime differ): refused, rebuilt
    with Catalog(path) as catalog:
        scene = catalog.add_scene({"path": "new.tif", "dataset": "MSTAR-SOC", "sar:polarizations": "HH",
                                   "datetime": "2016-01-01"})
        catalog.add_tiles(scene, [{"col_off": 0, "row_off": 0, "width": 8, "height": 8, "bbox": (0, 0, 1, 1),
                                   "tile_n_objects": 3}])
    with Catalog(path, read_only=True) as catalog:
        rebuilt = ColumnArrays.for_generation(generation, catalog).match(filters)
        assert rebuilt.tolist() == duckdb_ids(catalog, filters)
        assert len(rebuilt) == len(expected) + 1
    # a record of another generation is refused too
    record = json.loads((generation / FOLDER / "ids.json").read_text())
    assert record["stamp"]["generation"] == "gen-000002" and record["stamp"]["schema_version"] == "4"
    record["stamp"]["generation"] = "gen-000001"
    (generation / FOLDER / "ids.json").write_text(json.dumps(record))
    np.save(generation / FOLDER / "ids.npy", np.arange(3, dtype=np.int64))
    with Catalog(path, read_only=True) as catalog:
        assert ColumnArrays.for_generation(generation, catalog).match(filters).tolist() == duckdb_ids(catalog, filters)


def test_unwritable_folder_keeps_arrays_in_memory(random_catalog: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the generation folder would be")
    with Catalog(random_catalog, read_only=True) as catalog:
        arrays = ColumnArrays(catalog, blocker / FOLDER, {"format": 1})
        assert arrays.match(Filters(split="test")).tolist() == duckdb_ids(catalog, Filters(split="test"))


def test_columns_the_arrays_cannot_hold(tmp_path: Path) -> None:
    """A numeric label, a NaN bbox and a missing column: DuckDB answers (or refuses) as before."""
    path = tmp_path / "gen-000001" / "catalog.duckdb"
    path.parent.mkdir()
    with Catalog(path) as catalog:
        for number, label in enumerate([1, 2, 2]):
            scene = catalog.add_scene({"path": f"{number}.tif", "label": label, "split": "test"})
            bbox = (float("nan"), 0.0, 1.0, 1.0) if number == 0 else (0.0, 0.0, 1.0, 1.0)
            catalog.add_tiles(scene, [{"col_off": 0, "row_off": 0, "width": 8, "height": 8, "bbox": bbox}])
    with Catalog(path, read_only=True) as catalog:
        arrays = ColumnArrays.for_generation(path.parent, catalog)
        assert arrays.match(Filters(label="2")) is None  # BIGINT column
        assert arrays.match(Filters(bbox=(0.5, 0.5, 2, 2))) is None  # NaN: DuckDB orders it above every number
        assert arrays.match(Filters(sensor="x")) is None  # no such column
        assert arrays.match(Filters(split="test")).tolist() == duckdb_ids(catalog, Filters(split="test"))
        with pytest.raises(FilterError, match="--sensor filters on column 'sensor'"):
            build_predicate(Filters(sensor="x"), catalog.columns())  # the engine's error, before any array
    with Catalog(path, read_only=True) as catalog:  # the refusal is saved: not rebuilt by the next engine
        again = ColumnArrays.for_generation(path.parent, catalog)
        assert again.match(Filters(bbox=(0.5, 0.5, 2, 2))) is None
        assert json.loads((path.parent / FOLDER / "bbox.json").read_text())["unanswerable"] == "1 NaN bbox values"


def test_filter_key_and_cache() -> None:
    assert filter_key(Filters(bbox=(1, 2, 3, 4), after="2020-01-01")) == filter_key(
        Filters(bbox=BBox((1.0, 2.0, 3.0, 4.0)), after=datetime(2020, 1, 1)))
    assert filter_key(Filters(label="a")) != filter_key(Filters(dataset="a"))
    assert filter_key(Filters(label=1)) != filter_key(Filters(label=True))  # type: ignore[arg-type]
    assert filter_key(Filters(bbox=(1, 2))) is None  # malformed: left to build_predicate's error
    cache = IdSetCache(entries=2, max_bytes=800)
    a, b, c = (np.arange(n, dtype=np.int64) for n in (10, 20, 30))
    kept = cache.put(("a",), a)
    assert not kept.flags.writeable and a.flags.writeable  # a read-only view; the caller's array untouched
    cache.put(("b",), b)
    assert cache.get(("a",)) is kept
    cache.put(("c",), c)  # 3 entries > 2: the least recently used ("b") goes
    assert cache.get(("b",)) is None and cache.get(("c",)) is not None
    cache.put(("big",), np.arange(200, dtype=np.int64))  # larger than the byte budget: not kept
    assert cache.get(("big",)) is None


def test_engine_filter_ids_on_the_fixture_index(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine.filter_ids (arrays + cache) equals the DuckDB path for random filters of the fixture index's values."""
    from sarclip_search.query.engine import Engine

    rows = engine.catalog.fetch_tiles(engine.catalog.tile_ids())
    values = {name: sorted({str(r[name]) for r in rows if r.get(name) is not None}) for name in
              ("label", "dataset", "split", "sensor", "sar:polarizations")}
    boxes = [tuple(r[f"bbox_{n}"] for n in ("minlon", "minlat", "maxlon", "maxlat")) for r in rows
             if r.get("bbox_minlon") is not None]
    rng = random.Random(3)
    sizes: list[int] = []
    for _ in range(150):
        fields: dict[str, object] = {}
        for name in rng.sample(list(values), rng.randrange(1, 3)):
            if not values[name]:
                continue
            value = rng.choice(values[name])
            if name in ("sensor", "sar:polarizations"):
                start = rng.randrange(len(value))
                fields["polarization" if name == "sar:polarizations" else name] = value[start:start + 3].swapcase()
            else:
                fields[name] = value
        if rng.random() < 0.3 and boxes:  # around a tile's footprint: some tiles in, some out
            minlon, minlat, maxlon, maxlat = rng.choice(boxes)
            grow = rng.uniform(-0.01, 0.5)
            fields["bbox"] = (max(-180, minlon - grow), max(-90, minlat - grow), min(180, max(minlon - grow, maxlon + grow)),
                              min(90, max(minlat - grow, maxlat + grow)))
        if rng.random() < 0.2:
            fields[rng.choice(["after", "before"])] = f"{rng.randrange(2014, 2023)}-0{rng.randrange(1, 10)}-01"
        filters = Filters(**fields)
        found = engine.filter_ids(filters)
        assert found.tolist() == duckdb_ids(engine.catalog, filters), filters
        sizes.append(len(found))
        assert not found.flags.writeable
        assert engine.filter_ids(filters) is found  # the second time from the id-set cache
    assert engine.id_sets.hits >= 150
    assert 0 in sizes and any(0 < size < len(rows) for size in sizes)  # empty and partial results among them
    with pytest.raises(FilterError, match="expected --after earlier than --before"):
        engine.filter_ids(Filters(after="2020-01-02", before="2020-01-01"))  # errors as before, never cached
    monkeypatch.setenv("SARSEARCH_FILTER_COLUMNS", "0")
    with Engine.open(engine.generation.path.parent) as plain:
        assert plain.filter_columns is None and plain.id_sets.entries == 0
        assert plain.filter_ids(Filters(split="test")).tolist() == engine.filter_ids(Filters(split="test")).tolist()
    assert os.environ["SARSEARCH_FILTER_COLUMNS"] == "0"
