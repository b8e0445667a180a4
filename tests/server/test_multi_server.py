"""`sarsearch serve --db A --db B`: two halves of the fixture archive served as one, ids NAME:ID in every
answer, and the item, thumbnail and scene routes resolving them."""

from __future__ import annotations

import json

import pytest

from helpers import assert_user_error, index_halves, run


@pytest.fixture(scope="module")
def halves(tmp_path_factory, indexed_db, sarclip):
    """[a, b]: the halves of the fixture archive, each indexed on its own as `indexed_db` is (the whole)."""
    whole_db, archive, checkpoint = indexed_db
    return index_halves(archive, tmp_path_factory.mktemp("served-halves"), whole_db, sarclip, checkpoint)


@pytest.fixture(scope="module")
def multi_api(halves):
    from fastapi.testclient import TestClient

    from sarclip_search.server.app import create_app

    with TestClient(create_app(halves)) as client:
        yield client


def test_search_answers_as_the_whole_index_with_namespaced_ids(multi_api, engine):
    answer = multi_api.get("/search", params={"q": "a ship at sea", "limit": 10})
    assert answer.status_code == 200, answer.text
    features = answer.json()["features"]
    expected = engine.query("a ship at sea", k=10)
    assert [f["properties"]["path"] for f in features] == [hit.path for hit in expected]
    assert [f["properties"]["score"] for f in features] == pytest.approx([hit.score for hit in expected], abs=1e-5)
    names = {f["id"].split(":")[0] for f in features}
    assert names == {"a", "b"}
    assert all(f["properties"]["index"] == f["id"].split(":")[0] for f in features)
    generation = answer.headers["x-sarsearch-generation"]
    assert generation.startswith("a:gen-") and ",b:gen-" in generation
    assert answer.json()["sarsearch:generation"] == generation


def test_item_routes_resolve_namespaced_ids(multi_api):
    features = multi_api.get("/search", params={"q": "ship", "limit": 10}).json()["features"]
    for feature in (features[0], next(f for f in features if not f["id"].startswith(features[0]["id"][:2]))):
        links = {link["rel"]: link["href"] for link in feature["links"]}
        assert links["self"] == f"/items/{feature['id']}"
        item = multi_api.get(links["self"])
        assert item.status_code == 200 and item.json()["id"] == feature["id"]
        assert item.json()["properties"]["path"] == feature["properties"]["path"]
        for rel in ("thumbnail", "scene"):
            png = multi_api.get(links[rel])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png", (rel, png.text)
            assert png.content.startswith(b"\x89PNG")


def test_like_and_feedback_take_namespaced_ids(multi_api):
    first = multi_api.get("/search", params={"q": "ship", "limit": 3}).json()["features"][0]["id"]
    like = multi_api.get("/search", params={"like": first, "limit": 3})
    assert like.status_code == 200 and like.json()["features"][0]["id"] == first
    marked = multi_api.post("/feedback", json={"positive": [first], "q": "ship", "limit": 5})
    assert marked.status_code == 200, marked.text
    ids = [f["id"] for f in marked.json()["features"]]
    assert ids and first not in ids and all(":" in i for i in ids)
    bare = multi_api.get("/search", params={"like": first.split(":")[1]})
    assert bare.status_code == 400 and "several indexes" in bare.json()["error"] and "NAME:ID" in bare.json()["fix"]


def test_metadata_search_and_unknown_ids(multi_api, engine, halves):
    listing = multi_api.get("/search", params={"limit": 100}).json()
    assert listing["numberMatched"] == engine.catalog.counts()["tiles"] == len(listing["features"])
    assert [f["id"].split(":")[0] for f in listing["features"]] == sorted(f["id"].split(":")[0] for f in listing["features"])
    for path in ("/items/1", "/items/c:1", "/items/a:99999", "/items/a:99999/thumbnail.png"):
        assert multi_api.get(path).status_code == 404, path
    info = multi_api.get("/info")
    assert info.status_code == 200 and set(info.json()["indexes"]) == {"a", "b"}
    assert all(str(db) not in info.text for db in halves)
    queryables = multi_api.get("/queryables").json()["properties"]
    assert sum(queryables["label"]["x-counts"].values()) == queryables["label"]["x-tiles"]
    assert multi_api.get("/search", params={"ids": "a:1"}).status_code == 400


def test_a_checkpoint_mismatch_is_refused(halves, tmp_path):
    from sarclip_search.errors import InputError
    from sarclip_search.server.app import create_app

    from helpers import copy_index

    a, b = halves
    other = copy_index(b, tmp_path / "other")
    info_path = next(other.glob("gen-*/info.json"))
    info = json.loads(info_path.read_text())
    info["model"]["checkpoint_sha256"] = "0" * 64
    info_path.write_text(json.dumps(info))
    with pytest.raises(InputError, match="same checkpoint"):
        create_app([a, other])
    # `sarsearch serve` says it in one line before it binds a port
    assert_user_error(run("serve", "--db", a, "--db", other, "--port", "0"), str(other), "same checkpoint")


def test_one_db_in_a_list_is_served_as_before(halves, api):
    """`serve --db A` (a list of one) is the single-index server: plain integer ids, as `api` (one path) serves."""
    from fastapi.testclient import TestClient

    from sarclip_search.server.app import create_app

    a, _ = halves
    with TestClient(create_app([a])) as client:
        answer = client.get("/search", params={"q": "ship"})
        assert answer.status_code == 200
        assert all(f["id"].isdigit() for f in answer.json()["features"])
        assert answer.headers["x-sarsearch-generation"].startswith("gen-")
        assert client.get("/search", params={"like": "a:1"}).status_code == 400
