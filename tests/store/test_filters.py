"""User filters -> one safe predicate, run against a small catalog."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from sarclip_search.errors import FilterError
from sarclip_search.store.catalog import Catalog
from sarclip_search.store.filters import (
    BBox,
    Filters,
    Predicate,
    build_predicate,
    check_predicate,
    close_matches,
    filterable_columns,
    is_internal_column,
    parse_bbox,
    parse_date,
    unknown_column_message,
    unmatched_filters,
)

SCENES = [
    # path, label, dataset, split, sensor, polarization, datetime, tile bbox
    ("a.tif", "T72", "MSTAR-SOC", "train", "Sandia X-band", "HH", "2020-01-10T00:00:00Z", (0.0, 0.0, 1.0, 1.0)),
    ("b.tif", "BMP2", "MSTAR-SOC", "test", "Sandia X-band", "HH", "2020-06-01T00:00:00Z", (10.0, 10.0, 11.0, 11.0)),
    ("c.tif", "ship", "OpenSARShip", "test", "Sentinel-1A", "VV+VH (2 bands)", "2021-03-05T12:00:00Z", None),
]


@pytest.fixture(scope="module")
def built_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("filters") / "catalog.duckdb"
    with Catalog(path) as catalog:
        for rel_path, label, dataset, split, sensor, pol, when, bbox in SCENES:
            scene_id = catalog.add_scene({"path": rel_path, "label": label, "dataset": dataset, "split": split,
                                          "sensor": sensor, "sar:polarizations": pol, "datetime": when})
            catalog.add_tiles(scene_id, [{"col_off": 0, "row_off": 0, "width": 8, "height": 8, "bbox": bbox}])
    return path


@pytest.fixture
def catalog_path(built_catalog: Path, tmp_path: Path) -> Path:
    """A fresh copy of the small catalog, so a test that damaged it could not hide it from others."""
    path = tmp_path / "catalog.duckdb"
    shutil.copyfile(built_catalog, path)
    return path


def search(path: Path, filters: Filters) -> list[str]:
    with Catalog(path, read_only=True) as catalog:
        predicate = build_predicate(filters, catalog.columns())
        ids = catalog.tile_ids(predicate)  # as Engine.filter_ids runs it: the checked Predicate as it is
        assert ids.tolist() == catalog.tile_ids(*predicate).tolist()  # its text, checked by the catalog
        return [r["path"] for r in catalog.fetch_tiles(ids)]


def snapshot(path: Path) -> tuple:
    with Catalog(path, read_only=True) as catalog:
        tables = catalog._con.execute(
            "SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()
        return (catalog.counts(), tables, catalog.fetch_tiles(catalog.tile_ids()))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(), ["a.tif", "b.tif", "c.tif"]),
        (Filters(label="T72"), ["a.tif"]),
        (Filters(dataset="MSTAR-SOC"), ["a.tif", "b.tif"]),
        (Filters(split="test"), ["b.tif", "c.tif"]),
        (Filters(sensor="sentinel"), ["c.tif"]),
        (Filters(sensor="100%"), []),
        (Filters(polarization="vh"), ["c.tif"]),
        (Filters(bbox=(0.5, 0.5, 2.0, 2.0)), ["a.tif"]),
        (Filters(bbox=(1.0, 1.0, 10.0, 10.0)), ["a.tif", "b.tif"]),  # touching edges intersect
        (Filters(bbox=(-5.0, -5.0, -1.0, -1.0)), []),
        (Filters(after="2020-06-01"), ["b.tif", "c.tif"]),
        (Filters(before="2020-06-01"), ["a.tif"]),
        (Filters(after="2020-02-01", before="2021-12-31T00:00:00+00:00"), ["b.tif", "c.tif"]),
        (Filters(after=parse_date("2020-06-01"), bbox=parse_bbox("9,9,12,12")), ["b.tif"]),  # as the CLI parses them
        (Filters(after=datetime(2020, 6, 1, 2, tzinfo=timezone(timedelta(hours=2)))), ["b.tif", "c.tif"]),
        (Filters(where="label IN ('T72', 'ship')"), ["a.tif", "c.tif"]),
        (Filters(where="label = 'T72' OR label = 'ship'", split="test"), ["c.tif"]),
        (Filters(dataset="MSTAR-SOC", split="test", sensor="sandia", polarization="hh",
                 bbox=(9.0, 9.0, 12.0, 12.0), after="2020-01-01", where="width = 8"), ["b.tif"]),
    ],
)
def test_filters(catalog_path: Path, filters: Filters, expected: list[str]) -> None:
    assert search(catalog_path, filters) == expected


def test_values_are_parameters_not_sql() -> None:
    where, params = build_predicate(Filters(label="x' OR '1'='1"), ["label"])
    assert where == '"label" = ?' and params == ["x' OR '1'='1"]


def test_unknown_shortcut_column_lists_filterable_columns() -> None:
    with pytest.raises(FilterError, match=r"available columns: path, split \(sarsearch columns\)"):
        build_predicate(Filters(label="T72"), ["tile_id", "path", "content_hash", "split"])


@pytest.mark.parametrize(
    "where",
    [
        "1=1; DROP TABLE tiles",
        "1=1) ; DELETE FROM tiles; --",
        "COPY tiles TO 'x.csv'",
        "label = 'x' UNION SELECT tile_id FROM tiles",
        "label = 'x') UNION SELECT tile_id FROM tiles WHERE (1=1",
        "ATTACH 'other.db' AS other",
        "ATTACH 'x.db'",
        "1=1) OR (1=1",
        "label IN (SELECT label FROM scenes)",
        "EXISTS (SELECT 1 FROM read_csv('/etc/passwd'))",
        "1=1) ORDER BY (1",
        "label = ?",
        "DROP TABLE tiles",
    ],
)
def test_where_injection_rejected(catalog_path: Path, where: str) -> None:
    before = snapshot(catalog_path)
    with Catalog(catalog_path) as catalog:  # writable on purpose: the checks must not rely on read-only
        with pytest.raises(FilterError, match="--where must be a SQL predicate"):
            build_predicate(Filters(where=where), catalog.columns())
        with pytest.raises(FilterError):
            catalog.tile_ids(where)
    assert snapshot(catalog_path) == before
    assert not (Path.cwd() / "x.csv").exists()


def test_blank_where_is_no_filter_but_check_rejects_it() -> None:
    assert build_predicate(Filters(where="  "), []) == (None, [])
    with pytest.raises(FilterError, match="--where must be a SQL predicate"):
        check_predicate("")


def test_where_literal_with_semicolon_is_fine(catalog_path: Path) -> None:
    assert search(catalog_path, Filters(where="label <> 'a;b' AND \"sar:polarizations\" = 'HH'")) == ["a.tif", "b.tif"]


def test_where_unknown_column(catalog_path: Path) -> None:
    with pytest.raises(FilterError, match="sar:polarizations"):
        search(catalog_path, Filters(where="colour = 'red'"))


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "10,0,5,1", "0,10,1,5", "-200,0,1,1", "0,-91,1,1", "nan,0,1,1"])
def test_parse_bbox_rejects(text: str) -> None:
    with pytest.raises(FilterError, match="5.9,45.8,10.5,47.8"):
        parse_bbox(text)


def test_parse_bbox_and_date() -> None:
    assert parse_bbox(" 5.9, 45.8,10.5,47.8") == (5.9, 45.8, 10.5, 47.8)
    assert isinstance(parse_bbox("1,2,3,4"), BBox)
    assert parse_date("2021-06-30") == datetime(2021, 6, 30)
    assert parse_date("2021-06-30T12:00:00+02:00") == datetime(2021, 6, 30, 10, 0)
    for bad in ["30/06/2021", "", "2021-13-01"]:
        with pytest.raises(FilterError, match="YYYY-MM-DD"):
            parse_date(bad)
    with pytest.raises(FilterError, match="--after"):
        build_predicate(Filters(after="2021-01-01", before="2020-01-01"), ["datetime"])


def test_a_bbox_is_checked_once_when_made() -> None:
    box = parse_bbox("5.9,45.8,10.5,47.8")
    assert BBox.of(box) is box and (box.__class__, tuple(box)) == (BBox, (5.9, 45.8, 10.5, 47.8))
    assert BBox.of([1, 2, 3, 4]) == (1.0, 2.0, 3.0, 4.0)
    where, params = build_predicate(Filters(bbox=box), ["bbox_minlon", "bbox_minlat", "bbox_maxlon", "bbox_maxlat"])
    assert params == [10.5, 5.9, 47.8, 45.8] and where.count("?") == 4
    for values in [(10.0, 50.0, 5.0, 60.0), (0, 95, 1, 96), (1.0, 2.0, 3.0), (float("nan"), 2.0, 3.0, 4.0)]:
        with pytest.raises(FilterError) as from_values:
            BBox(values)
        with pytest.raises(FilterError) as from_text:
            parse_bbox(",".join(str(v) for v in values))
        assert str(from_values.value) == str(from_text.value)  # a tuple is refused as its --bbox text would be
        with pytest.raises(FilterError, match="5.9,45.8,10.5,47.8"):
            build_predicate(Filters(bbox=values), ["bbox_minlon", "bbox_minlat", "bbox_maxlon", "bbox_maxlat"])


def test_parsed_dates_are_used_as_they_are() -> None:
    after = parse_date("2021-06-30")
    assert build_predicate(Filters(after=after), ["datetime"]) == Predicate('"datetime" >= ?', [after])
    aware = datetime(2021, 6, 30, 14, tzinfo=timezone(timedelta(hours=2)))
    assert build_predicate(Filters(before=aware), ["datetime"]).params == [datetime(2021, 6, 30, 12)]
    assert build_predicate(Filters(before=aware.astimezone(UTC)), ["datetime"]).params == [datetime(2021, 6, 30, 12)]
    with pytest.raises(FilterError, match=r"got after '2021-06-30' and before '2021-06-01T06:00:00'$"):
        build_predicate(Filters(after=after, before=datetime(2021, 6, 1, 6)), ["datetime"])


# --- which columns are offered, "did you mean", hints for values no tile has --------------------------------


def test_internal_columns_are_not_offered() -> None:
    internal = ["tile_id", "scene_id", "col_off", "abs_path", "mtime", "content_hash", "metadata_hash",
                "bbox_minlon", "scene_bbox_maxlat", "OVR_RESAMPLING_ALG", "AREA_OR_POINT", "EXIF_Orientation"]
    offered = ["label", "dataset", "split", "sensor", "sar:polarizations", "datetime", "width", "scene_width",
               "path", "n_objects", "Label2", "crs"]
    assert [c for c in internal + offered if is_internal_column(c)] == internal
    assert filterable_columns(internal + offered) == offered


@pytest.mark.parametrize(("word", "candidates", "expected"), [
    ("T-72", ["T62", "T72", "BMP2", "ZSU234"], ["T72"]),
    ("t72", ["BMP2", "T72"], ["T72"]),
    ("polarization", ["platform", "sar:polarizations", "split"], ["sar:polarizations"]),
    ("labl", ["scale", "label", "path"], ["label"]),
    ("lable", ["scale", "label"], ["label"]),  # not scale: below the cutoff
    ("mstar", ["HRSID", "MSTAR-SOC", "MSTAR-composite-scenes"], ["MSTAR-SOC", "MSTAR-composite-scenes"]),
    ("XX", ["HH", "VV", "VH"], []),
])
def test_close_matches(word: str, candidates: list[str], expected: list[str]) -> None:
    assert close_matches(word, candidates) == expected


def test_unknown_column_message_suggests_only_offered_columns() -> None:
    columns = ["tile_id", "path", "abs_path", "label", "sar:polarizations", "content_hash"]
    message = unknown_column_message("polarization", columns)
    assert 'did you mean "sar:polarizations"?' in message and "sarsearch columns" in message
    nothing_close = unknown_column_message("colour", columns)
    assert 'path, label, "sar:polarizations"' in nothing_close
    assert "content_hash" not in nothing_close and "tile_id" not in nothing_close


def test_unmatched_filters_name_the_closest_values(catalog_path: Path) -> None:
    with Catalog(catalog_path, read_only=True) as catalog:
        def values_of(column: str) -> list[str]:
            return [value for value, _ in catalog.values(column)]

        def hints(**given: str) -> dict[str, str]:
            return {hint.option: hint.message for hint in unmatched_filters(Filters(**given), values_of, catalog.columns())}

        assert hints(label="T72", dataset="MSTAR-SOC", split="test", sensor="sandia", polarization="vh") == {}
        assert hints(label="T-72") == {"--label": "no tile has label 'T-72'; did you mean 'T72'? (sarsearch columns)"}
        assert hints(dataset="mstar")["--dataset"].startswith("no tile has dataset 'mstar'; did you mean 'MSTAR-SOC'?")
        assert "did you mean 'Sentinel-1A'" in hints(sensor="sentinal")["--sensor"]
        polarization = hints(polarization="XX")["--polarization"]
        assert polarization.startswith("no tile has a polarization containing 'XX'; sar:polarizations holds ")
        assert "'HH'" in polarization and "'VV+VH (2 bands)'" in polarization
        assert set(hints(label="T-72", split="tset")) == {"--label", "--split"}
        # a value some tile has gets no hint even when the combination matches nothing
        assert hints(label="T72", split="test") == {} and search(catalog_path, Filters(label="T72", split="test")) == []
