"""Acquisition times end to end: manifest `datetime` column -> catalog -> --after/--before -> STAC, and the
re-labelling of an index built under older metadata rules.

The archive: a GeoTIFF whose only time inside is TIFFTAG_DATETIME (2021-01-01, when the file was written)
and whose manifest row says 2015-06-03T17:14:36Z (like the corpus' KOMPSAT-5 scenes), the same file with
an empty manifest cell (acquisition unknown), and a PNG chip dated 2019-09-17 alone (like Sen1Floods11).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest

from sarclip_search.ingest import metadata
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.query.engine import Engine
from sarclip_search.query.export import write_stac
from sarclip_search.store.filters import Filters
from sarclip_search.store.layout import IndexStore

from helpers import link_encoders, reindex
from stac_offline import validate_offline

S1_TIF = "S1A_IW_GRDH_1SDV_20210113T054511_20210113T054536_036126_043681_1B3C_tiny.tif"  # no sidecar
KOMPSAT_LIKE, UNDATED, FLOOD = "k5/water.tif", "k5/undated.tif", "flood/chip.png"
MANIFEST = (
    "path,label,datetime\n"
    f"{KOMPSAT_LIKE},water,2015-06-03T17:14:36Z\n"
    f"{UNDATED},water,\n"
    f"{FLOOD},flood,2019-09-17\n"
)
TAG_TIME = "2021-01-13T05:45:11"  # the fixture GeoTIFF's TIFFTAG_DATETIME


def build(tmp_path: Path, fixture_archive: Path, indexed_db, sarclip, checkpoint) -> tuple[Path, Path]:
    archive = tmp_path / "archive"
    for rel, source in ((KOMPSAT_LIKE, f"sentinel1/{S1_TIF}"), (UNDATED, f"sentinel1/{S1_TIF}"),
                        (FLOOD, "chips/chip_field_0001.png")):
        (archive / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fixture_archive / source, archive / rel)
    (archive / "manifest.csv").write_text(MANIFEST)
    db = tmp_path / "db"
    link_encoders(indexed_db[0], db)  # no ONNX export in this test
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
    assert (report.indexed, report.failed) == (3, [])
    return archive, db


@pytest.fixture
def dated_db(tmp_path, fixture_archive, indexed_db, sarclip, checkpoint) -> tuple[Path, Path]:
    return build(tmp_path, fixture_archive, indexed_db, sarclip, checkpoint)


def paths_between(engine: Engine, after: str | None, before: str | None) -> list[str]:
    first = int(engine.vectors.ids()[0])
    hits = engine.query(like=[first], filters=Filters(after=after, before=before), k=10)
    return sorted(hit.path for hit in hits)


def test_catalog_filters_and_stac_agree_with_the_manifest(dated_db, tmp_path, monkeypatch):
    _, db = dated_db
    with Engine.open(db) as engine:
        rows = {row["path"]: row for row in engine.catalog.fetch_tiles(engine.vectors.ids().tolist())}
        assert rows[KOMPSAT_LIKE]["datetime"] in ("2015-06-03T17:14:36", datetime(2015, 6, 3, 17, 14, 36))
        assert rows[UNDATED]["datetime"] is None  # TIFFTAG_DATETIME is not an acquisition time
        assert rows[UNDATED]["processing:datetime"] == rows[KOMPSAT_LIKE]["processing:datetime"] == TAG_TIME
        assert rows[FLOOD]["start_datetime"] == "2019-09-17T00:00:00"

        assert paths_between(engine, "2015-06-01", "2015-06-05") == [KOMPSAT_LIKE]
        assert paths_between(engine, "2019-09-17", "2019-09-18") == [FLOOD]  # a date alone is inside its day
        assert paths_between(engine, "2019-09-16", "2019-09-17") == []
        assert paths_between(engine, "2020-01-01", None) == []  # nothing claims the files' 2021 write time
        assert paths_between(engine, None, "2100-01-01") == [FLOOD, KOMPSAT_LIKE]  # unknown is never inside
        hits = engine.query(like=[int(engine.vectors.ids()[0])], k=10)

    written = json.loads(write_stac(hits, tmp_path / "hits.json").read_text())
    items = {item["assets"]["data"]["href"].rsplit("/archive/", 1)[1]: item for item in written["features"]}
    for item in items.values():
        validate_offline(item, monkeypatch)
    assert items[KOMPSAT_LIKE]["properties"]["datetime"] == "2015-06-03T17:14:36Z"
    assert "sarsearch:datetime_unknown" not in items[KOMPSAT_LIKE]["properties"]
    assert items[KOMPSAT_LIKE]["properties"]["processing:datetime"] == TAG_TIME + "Z"
    flood = items[FLOOD]["properties"]
    assert (flood["datetime"], flood["start_datetime"], flood["end_datetime"]) == (
        "2019-09-17T00:00:00Z", "2019-09-17T00:00:00Z", "2019-09-17T23:59:59.999999Z")
    undated = items[UNDATED]["properties"]
    assert undated["datetime"] is None and undated["sarsearch:datetime_unknown"] is True


def test_index_of_older_rules_is_relabelled_without_re_embedding(tmp_path, fixture_archive, indexed_db, sarclip,
                                                                 checkpoint, monkeypatch):
    """An index built before the rules changed (TIFFTAG_DATETIME taken as the acquisition time) gets the
    right times from the next `index` run, which re-labels every scene and embeds nothing."""
    with monkeypatch.context() as patch:
        patch.setattr(metadata, "METADATA_RULES_VERSION", metadata.METADATA_RULES_VERSION - 1)
        archive, db = build(tmp_path, fixture_archive, indexed_db, sarclip, checkpoint)
    generation = IndexStore(db).require_current()
    con = duckdb.connect(str(generation.catalog_path))  # what the old rules wrote for the undated file
    con.execute("UPDATE scenes SET datetime = ? WHERE path = ?", [datetime.fromisoformat(TAG_TIME), UNDATED])
    con.close()
    with Engine.open(db) as engine:
        ids_before = np.sort(engine.vectors.ids())
        vectors_before = engine.vectors.vectors(ids_before)
        assert paths_between(engine, "2021-01-01", "2021-02-01") == [UNDATED]

    report = reindex(archive, db, checkpoint)
    assert (report.relabelled, report.indexed, report.tiles_added, report.failed) == (3, 0, 0, [])
    with Engine.open(db) as engine:
        ids = np.sort(engine.vectors.ids())
        assert np.array_equal(ids, ids_before) and np.array_equal(engine.vectors.vectors(ids), vectors_before)
        assert paths_between(engine, "2021-01-01", "2021-02-01") == []
        assert paths_between(engine, "2015-06-01", "2015-06-05") == [KOMPSAT_LIKE]
    assert reindex(archive, db, checkpoint).unchanged == 3
