"""Every route of `sarsearch serve` through FastAPI's TestClient, on the indexed fixture archive: the answers are
the engine's own (same ranking, scores, filters), shaped as STAC items, with no server path in them."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest
from PIL import Image

from sarclip_search.query.export import footprint_polygon
from sarclip_search.server import params
from sarclip_search.server.images import OUTLINE_COLOUR

from helpers import SHIP_PNG
from stac_offline import validate_offline


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [feature["id"] for feature in response.json()["features"]]


def all_rows(engine) -> list[dict]:
    return engine.catalog.fetch_tiles(engine.catalog.tile_ids())


def server_paths(indexed_db) -> list[str]:
    db, archive, checkpoint = indexed_db
    return [str(db.resolve()), str(archive.resolve()), str(checkpoint.resolve())]


def test_healthz_names_the_committed_generation(api, indexed_db):
    response = api.get("/healthz")
    committed = (indexed_db[0] / "CURRENT").read_text().strip()
    assert response.json() == {"ok": True, "generation": committed}
    assert response.headers["x-sarsearch-generation"] == committed


def test_info_is_the_engine_summary_without_server_paths(api, engine, indexed_db):
    response = api.get("/info")
    body = response.json()
    summary = engine.summary()
    assert body["catalog"] == summary["catalog"] and body["index"] == summary["index"]
    assert body["generation"] == engine.generation.path.name
    assert not [path for path in server_paths(indexed_db) if path in response.text]


def test_queryables_are_the_filterable_columns_with_their_values(api, engine):
    response = api.get("/queryables")
    assert response.headers["content-type"].startswith("application/schema+json")
    properties = response.json()["properties"]
    infos = {info.name: info for info in engine.catalog.column_info()}
    assert set(properties) == set(infos) and "abs_path" not in properties
    assert properties["label"]["type"] == "string"
    assert properties["label"]["enum"] == [value for value, _ in infos["label"].values]
    assert properties["label"]["x-counts"] == {str(value): n for value, n in infos["label"].values}
    assert properties["datetime"]["format"] == "date-time"
    assert properties["width"]["type"] == "integer"


def test_text_search_answers_the_engines_ranking_as_stac_items(api, engine, indexed_db, monkeypatch):
    response = api.get("/search", params={"q": "ship at sea", "limit": 5})
    expected = engine.query("ship at sea", k=5)
    body = response.json()
    assert body["type"] == "FeatureCollection" and body["numberReturned"] == 5
    assert body["sarsearch:generation"] == engine.generation.path.name
    assert ids(response) == [str(hit.id) for hit in expected]
    for feature, hit in zip(body["features"], expected):
        properties = feature["properties"]
        assert properties["score"] == pytest.approx(hit.score, abs=1e-6) and properties["score_kind"] == "cosine"
        assert properties["sarsearch:tile_id"] == hit.id and properties["sarsearch:window"] == list(hit.window)
        assert properties["path"] == hit.path and properties["label"] == hit.metadata["label"]
        assert feature["collection"] == hit.metadata["dataset"]
        assert feature["geometry"] == footprint_polygon(hit.bbox)
        links = {link["rel"]: link["href"] for link in feature["links"]}
        assert links["thumbnail"] == feature["assets"]["thumbnail"]["href"] == f"/items/{hit.id}/thumbnail.png"
        assert links["scene"] == f"/scenes/{hit.scene_id}/quicklook.png?outline={hit.id}"
        validate_offline(feature, monkeypatch)
    assert not [path for path in server_paths(indexed_db) if path in response.text]


def test_get_and_post_search_agree(api):
    query = {"q": "field", "limit": 4, "collections": "synthetic-S1-GRD", "fusion": "rrf", "like": "4"}
    posted = {**query, "collections": ["synthetic-S1-GRD"], "like": [4]}
    assert ids(api.get("/search", params=query)) == ids(api.post("/search", json=posted))


def test_limit_is_clamped_and_the_next_links_walk_the_ranking(api, engine, monkeypatch):
    expected = [str(hit.id) for hit in engine.query("ship", k=6)]
    first = api.get("/search", params={"q": "ship", "limit": 3})
    following = next(link for link in first.json()["links"] if link["rel"] == "next")
    assert following["method"] == "GET"
    assert ids(first) + ids(api.get(following["href"])) == expected
    posted = api.post("/search", json={"q": "ship", "limit": 3})
    link = next(link for link in posted.json()["links"] if link["rel"] == "next")
    assert link["method"] == "POST" and ids(api.post(link["href"], json=link["body"])) == expected[3:]
    monkeypatch.setattr(params, "MAX_LIMIT", 2)
    assert len(ids(api.get("/search", params={"q": "ship", "limit": 1000}))) == 2


def test_metadata_only_search_pages_through_every_tile_in_id_order(api, engine):
    seen, response = [], api.get("/search", params={"limit": 4})
    while True:
        body = response.json()
        assert body["numberMatched"] == 10
        assert all(f["properties"]["score"] is None for f in body["features"])
        seen += ids(response)
        following = [link for link in body["links"] if link["rel"] == "next"]
        if not following:
            break
        response = api.get(following[0]["href"])
    assert seen == [str(i) for i in engine.catalog.tile_ids()]


def _in_box(row, box):
    return row["bbox_minlon"] is not None and (row["bbox_minlon"] <= box[2] and row["bbox_maxlon"] >= box[0]
                                               and row["bbox_minlat"] <= box[3] and row["bbox_maxlat"] >= box[1])


def _time(row):
    return datetime.fromisoformat(row["datetime"]) if row["datetime"] else None


S1_BOX = [2.8, 52.1, 3.05, 52.3]  # around the footprints of three Sentinel-1 fixture scenes
FILTERS = {
    "collections": ({"collections": "synthetic-chips"}, lambda r: r["dataset"] == "synthetic-chips"),
    "cql2-text": ({"filter": "label = 'field' AND split <> 'test'"}, lambda r: r["label"] == "field" and r["split"] != "test"),
    "cql2-text IN": ({"filter": "collection IN ('synthetic-K5', 'synthetic-chips') AND NOT label IN ('ship')"},
                     lambda r: r["dataset"] in ("synthetic-K5", "synthetic-chips") and r["label"] != "ship"),
    "cql2-json": ({"filter": json.dumps({"op": "=", "args": [{"property": "label"}, "ship"]}), "filter-lang": "cql2-json"},
                  lambda r: r["label"] == "ship"),
    "cql2 time": ({"filter": "datetime >= TIMESTAMP('2021-02-01T00:00:00Z')"},
                  lambda r: _time(r) is not None and _time(r) >= datetime(2021, 2, 1)),
    "datetime interval": ({"datetime": "2021-01-01T00:00:00Z/2021-01-31T23:59:59Z"},
                          lambda r: _time(r) is not None and datetime(2021, 1, 1) <= _time(r) <= datetime(2021, 1, 31, 23, 59, 59)),
    "datetime open start": ({"datetime": "../2021-01-13"}, lambda r: _time(r) is not None and _time(r) < datetime(2021, 1, 14)),
    "datetime day": ({"datetime": "2021-02-14"}, lambda r: _time(r) is not None and _time(r).date().isoformat() == "2021-02-14"),
    "bbox": ({"bbox": ",".join(map(str, S1_BOX))}, lambda r: _in_box(r, S1_BOX)),
    "intersects": ({"intersects": json.dumps({"type": "Polygon", "coordinates": [[
        [2.8, 52.1], [3.05, 52.1], [3.05, 52.3], [2.8, 52.3], [2.8, 52.1]]]})}, lambda r: _in_box(r, S1_BOX)),
    "ids": ({"ids": "2,5,9"}, lambda r: r["tile_id"] in (2, 5, 9)),
    "shortcuts": ({"label": "ship", "split": "train", "polarization": "vh"},
                  lambda r: r["label"] == "ship" and r["split"] == "train" and "VH" in str(r["sar:polarizations"])),
}


@pytest.mark.parametrize("name", FILTERS)
def test_filters_select_exactly_the_matching_tiles(api, engine, name):
    query, holds = FILTERS[name]
    wanted = [str(row["tile_id"]) for row in all_rows(engine) if holds(row)]
    assert wanted, "the filter should match some fixture tiles"
    assert ids(api.get("/search", params={**query, "limit": 100})) == wanted  # metadata only: id order
    ranked = ids(api.get("/search", params={**query, "q": "ship", "limit": 100}))
    assert sorted(ranked, key=int) == wanted  # similarity: the same tiles, ranked


def test_like_and_feedback_answer_what_the_engine_answers(api, engine):
    assert ids(api.get("/search", params={"like": "7", "limit": 3})) == [str(h.id) for h in engine.query(like=[7], k=3)]
    expected = [str(h.id) for h in engine.feedback([4, 5], [7], k=5)]
    response = api.post("/feedback", json={"positive": [4, 5], "negative": [7], "limit": 5})
    assert ids(response) == expected and not {"4", "5", "7"} & set(expected)
    assert {f["properties"]["score_kind"] for f in response.json()["features"]} == {"probe"}
    assert ids(api.get("/search", params={"positive": "4,5", "negative": "7", "limit": 5})) == expected
    with_text = [str(h.id) for h in engine.feedback([4], [], text="ship", k=4)]
    assert ids(api.post("/feedback", json={"positive": [4], "q": "ship", "limit": 4})) == with_text


def test_an_uploaded_image_searches_as_the_cli_does_and_pages_by_its_id(api, engine, indexed_db):
    path = indexed_db[1] / SHIP_PNG
    expected = [str(hit.id) for hit in engine.query(images=[path], k=4)]
    response = api.post("/search", files={"image": ("ship.png", path.read_bytes(), "image/png")},
                        data={"search": json.dumps({"limit": 2})})
    assert ids(response) == expected[:2]
    body = response.json()
    link = next(link for link in body["links"] if link["rel"] == "next")
    assert link["body"]["image_id"] == body["sarsearch:image_id"]
    assert ids(api.post(link["href"], json=link["body"])) == expected[2:4]


def test_an_item_its_thumbnail_and_its_scene_quicklook(api, engine):
    hit = engine.query(like=[10], k=1)[0]
    item = api.get(f"/items/{hit.id}").json()
    assert item["id"] == str(hit.id) and item["geometry"] == footprint_polygon(hit.bbox)
    assert item["properties"]["score"] is None
    first = api.get(f"/items/{hit.id}/thumbnail.png", params={"size": 64})
    again = api.get(f"/items/{hit.id}/thumbnail.png", params={"size": 64})
    assert first.headers["content-type"] == "image/png" and first.content == again.content
    assert (first.headers["x-sarsearch-cache"], again.headers["x-sarsearch-cache"]) == ("miss", "hit")
    assert max(Image.open(io.BytesIO(first.content)).size) == 64
    scene = api.get(f"/scenes/{hit.scene_id}/quicklook.png", params={"outline": hit.id, "size": 200})
    image = Image.open(io.BytesIO(scene.content)).convert("RGB")
    assert max(image.size) == 200 and OUTLINE_COLOUR in {colour for _, colour in image.getcolors(1 << 16)}
    plain = Image.open(io.BytesIO(api.get(f"/scenes/{hit.scene_id}/quicklook.png", params={"size": 200}).content))
    assert OUTLINE_COLOUR not in {colour for _, colour in plain.convert("RGB").getcolors(1 << 16)}
    other = next(i for i in engine.catalog.tile_ids() if int(i) != hit.id)
    assert api.get(f"/scenes/{hit.scene_id}/quicklook.png", params={"outline": int(other)}).status_code == 400


def test_the_page_its_assets_and_the_openapi_description(api):
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert api.get("/static/index.html").status_code == 200
    openapi = api.get("/openapi.json").json()
    assert {"/search", "/feedback", "/items/{item_id}", "/queryables", "/healthz"} <= set(openapi["paths"])
    assert set(openapi["paths"]["/search"]) == {"get", "post"}
    assert api.get("/docs").status_code == 404  # its assets would come from a CDN
