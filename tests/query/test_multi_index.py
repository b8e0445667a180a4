"""Several indexes searched as one (query/multi.py): two halves of the fixture archive, each indexed on its own,
answer as the index of the whole archive does (same tiles, same scores), ids namespaced NAME:ID."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import BIG_SCENE, assert_user_error, copy_index, index_halves, run

TILING = {"tile_size": 64, "stride": 32}  # as `small_tiles`: scenes of several overlapping tiles


@pytest.fixture(scope="module")
def halves(tmp_path_factory, small_tiles, checkpoint, sarclip):
    """(whole engine, [half a db, half b db]): the fixture archive indexed whole (`small_tiles`) and as two halves."""
    whole, archive, whole_db = small_tiles
    dbs = index_halves(archive, tmp_path_factory.mktemp("halves"), whole_db, sarclip, checkpoint, **TILING)
    return whole, dbs



def assert_same(whole_hits, multi_hits) -> None:
    assert [(h.path, h.window) for h in multi_hits] == [(h.path, h.window) for h in whole_hits]
    np.testing.assert_allclose([h.score for h in multi_hits], [h.score for h in whole_hits], atol=1e-5)


def ref_of(whole_hit, multi) -> str:
    """The NAME:ID in `multi` of the tile a hit of the whole index names."""
    for name in multi.names:
        for hit in multi.hits_by_id([f"{name}:{i}" for i in multi.by_name[name].tile_ids(None).tolist()]):
            if (hit.path, hit.window) == (whole_hit.path, whole_hit.window):
                return str(hit.id)
    raise AssertionError(f"{whole_hit.path} {whole_hit.window} is in no half")


QUERIES = [
    {"text": "a ship at sea"},
    {"text": "a field", "k": 20},
    {"text": "ship", "dedup": True, "k": 6},
    {"text": "ship", "negative_texts": ["land"], "fusion": "rrf", "k": 8},
    {"text": "ship", "filters": {"label": "ship"}},
    {"text": "radar", "filters": {"after": "2021-01-20", "before": "2021-03-01"}},
    {"text": "radar", "filters": {"where": "split = 'train'"}, "exclude_first": True},
]


@pytest.mark.parametrize("spec", QUERIES, ids=lambda spec: json.dumps(spec, sort_keys=True)[:60])
def test_two_halves_answer_as_the_whole(halves, spec):
    from sarclip_search.query.multi import MultiEngine
    from sarclip_search.store.filters import Filters, parse_date

    whole, dbs = halves
    spec = dict(spec)
    exclude_first = spec.pop("exclude_first", False)
    filters = spec.pop("filters", None)
    if filters is not None:
        filters = Filters(**{key: parse_date(value) if key in ("after", "before") else value
                             for key, value in filters.items()})
    with MultiEngine.open(dbs) as multi:
        expected = whole.query(**spec, filters=filters)
        exclude_whole = [expected[0].id] if exclude_first else []
        exclude_multi = [ref_of(expected[0], multi)] if exclude_first else []
        if exclude_first:
            expected = whole.query(**spec, filters=filters, exclude=exclude_whole)
        found = multi.query(**spec, filters=filters, exclude=exclude_multi)
    assert expected, "the query must find something to compare"
    assert_same(expected, found)
    assert all(str(hit.id).split(":")[0] in ("a", "b") and hit.metadata["index"] == str(hit.id).split(":")[0]
               for hit in found)
    assert {hit.metadata["index"] for hit in found} == {"a", "b"} or len(found) < 3


def test_like_and_image_queries_across_halves(halves, small_tiles):
    from sarclip_search.query.multi import MultiEngine

    whole, dbs = halves
    _, archive, _ = small_tiles
    image = archive / BIG_SCENE  # 8 tiles of 64 px: each searched, a hit scoring its best match
    with MultiEngine.open(dbs) as multi:
        seed = whole.query("ship", k=1)[0]
        like = ref_of(seed, multi)
        assert_same(whole.query(like=[seed.id], k=10), multi.query(like=[like], k=10))
        assert_same(whole.query("ship", [image], k=10), multi.query("ship", [image], k=10))
        assert multi.query(like=[like], k=1)[0].id == like  # a tile finds itself first
        # ids come back as they went out: hits_by_id and a scene's tiles
        hit = multi.hits_by_id([like])[0]
        assert (hit.path, hit.window, hit.id) == (seed.path, seed.window, like)
        assert like in multi.scene_tile_ids(hit.scene_id)
        # feedback takes NAME:ID marks and leaves them out of the results
        ranked = multi.feedback([like], text="ship", k=5)
        assert ranked and like not in [h.id for h in ranked] and all(h.score_kind == "probe" for h in ranked)


def test_ids_must_name_their_index(halves):
    from sarclip_search.errors import InputError
    from sarclip_search.query.multi import MultiEngine

    _, dbs = halves
    with MultiEngine.open(dbs) as multi:
        with pytest.raises(InputError, match=r"--like 3: several indexes are searched; give the id as NAME:ID \(e.g. a:3"):
            multi.query(like=[3])
        with pytest.raises(InputError, match="--like c:3: no index named 'c'; the indexes are a, b"):
            multi.query(like=["c:3"])
        with pytest.raises(InputError, match=r"--positive a:999999: no tile with that id in index a"):
            multi.feedback(["a:999999"])


def test_a_filter_on_a_column_one_index_lacks_matches_nothing_there(halves):
    """A column only one half's catalog has (a STAC sidecar's field): the other half matches no tile."""
    from sarclip_search.query.multi import MultiEngine
    from sarclip_search.store.filters import Filters

    _, dbs = halves
    with MultiEngine.open(dbs) as multi:
        lowered = {name: {c.lower() for c in multi.by_name[name].columns()} for name in ("a", "b")}
        only = [c for c in multi.by_name["a"].columns() if c.lower() not in lowered["b"]]  # DuckDB: any case
        lacking = [c for c in multi.by_name["b"].columns() if c.lower() not in lowered["a"]]
        column, owner = (only[0], "a") if only else (lacking[0], "b") if lacking else (None, None)
        if column is None:
            pytest.skip("both halves have the same columns")
        hits = multi.query("radar", filters=Filters(where=f'"{column}" IS NOT NULL'), k=50)
        assert hits and {h.metadata["index"] for h in hits} == {owner}
        with pytest.raises(Exception, match="no column"):
            multi.query("radar", filters=Filters(where="no_such_column = 1"))


def test_a_checkpoint_mismatch_is_refused(halves, tmp_path):
    from sarclip_search.errors import InputError
    from sarclip_search.query.multi import MultiEngine

    _, (a, b) = halves
    other = copy_index(b, tmp_path / "other")
    info_path = next(other.glob("gen-*/info.json"))
    info = json.loads(info_path.read_text())
    info["model"]["checkpoint_sha256"] = "f" * 64
    info_path.write_text(json.dumps(info))
    with pytest.raises(InputError) as caught:
        MultiEngine.open([a, other])
    message = str(caught.value)
    assert "\n" not in message and str(a) in message and str(other) in message and "same checkpoint" in message
    result = run("query", "ship", "--db", a, "--db", other)
    assert_user_error(result, str(other), "same checkpoint")


def test_manifest_names_the_indexes(halves, tmp_path):
    from sarclip_search.query.multi import MultiEngine

    _, (a, b) = halves
    manifest = tmp_path / "indexes.json"
    manifest.write_text(json.dumps({"indexes": [{"name": "east", "db": str(a)}, {"name": "west", "db": str(b)}]}))
    with MultiEngine.open([manifest]) as multi:
        assert multi.names == ["east", "west"]
        assert {str(h.id).split(":")[0] for h in multi.query("ship", k=20)} == {"east", "west"}
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"indexes": [{"name": "x", "db": str(a)}, {"name": "x", "db": str(b)}]}))
    assert_user_error(run("query", "ship", "--db", clash), "both named 'x'")
    assert_user_error(run("query", "ship", "--db", a, "--db", a), "the same index")


def test_cli_several_dbs(halves, tmp_path):
    whole, (a, b) = halves
    result = run("query", "a ship at sea", "--db", a, "--db", b, "--json")
    assert result.exit_code == 0, result.stderr
    hits = json.loads(result.stdout)
    expected = whole.query("a ship at sea", k=10)
    assert [(h["path"], tuple(h["window"])) for h in hits] == [(h.path, h.window) for h in expected]
    assert all(h["id"] == f"{h['index']}:{h['tile_id']}" for h in hits)
    # an id of a result goes back in as it came out; exports and thumbnails take namespaced ids
    first = hits[0]["id"]
    out = tmp_path / "thumbs"
    result = run("query", "--like", first, "--db", a, "--db", b, "--json", "-k", "3",
                 "--geojson", tmp_path / "hits.geojson", "--stac", tmp_path / "hits.json", "--thumbnails", out)
    assert result.exit_code == 0, result.stderr
    again = json.loads(result.stdout)
    assert again[0]["id"] == first
    features = json.loads((tmp_path / "hits.geojson").read_text())["features"]
    assert [f["properties"]["id"] for f in features] == [h["id"] for h in again]
    assert len(list(out.glob("*_tile*.png"))) == 3 and (out / "contact_sheet.png").is_file()
    result = run("query", "--positive", first, "--db", a, "--db", b, "-k", "3")
    assert result.exit_code == 0 and first.split(":")[0] in result.stdout
    assert_user_error(run("query", "--like", "5", "--db", a, "--db", b), "--like 5: several indexes are searched")


def test_one_db_is_unchanged(halves):
    """One --db: plain integer ids, the same output as before; a NAME:ID is a one-line error there."""
    _, (a, _) = halves
    result = run("query", "ship", "--db", a, "--json")
    assert result.exit_code == 0, result.stderr
    hits = json.loads(result.stdout)
    assert all(isinstance(h["id"], int) and "index" not in h for h in hits)
    result = run("query", "--like", str(hits[0]["id"]), "--db", a, "--json", "-k", "1")
    assert json.loads(result.stdout)[0]["id"] == hits[0]["id"]
    assert_user_error(run("query", "--like", f"a:{hits[0]['id']}", "--db", a),
                      f"--like a:{hits[0]['id']}: not a tile id of this index")
    result = run("query", "--like", "x", "--db", a)
    assert result.exit_code == 2 and "Input should be a valid integer" in result.stderr  # as for any int option
