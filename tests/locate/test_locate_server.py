"""`GET /scenes/{id}/locate.png` / `.json`: the overlay and the peaks of a phrase in an indexed scene; 4xx JSON."""

from __future__ import annotations

import io

import pytest

from helpers import BIG_SCENE, copy_index


@pytest.fixture(scope="module")
def api(indexed_db, tmp_path_factory):
    """A TestClient over a copy of `indexed_db` (the routes write their window cache into the index folder)."""
    from fastapi.testclient import TestClient

    from sarclip_search.server.app import create_app

    db, _, _ = indexed_db
    copy = copy_index(db, tmp_path_factory.mktemp("locate-server") / "db")
    with TestClient(create_app(copy)) as client:
        yield client


@pytest.fixture(scope="module")
def big_scene_id(engine) -> int:
    ids = engine.catalog.tile_ids("path = ?", [BIG_SCENE])
    return int(engine.catalog.fetch_tiles([int(ids[0])])[0]["scene_id"])


def test_locate_png_is_the_overlay_of_the_scene(api, big_scene_id):
    from PIL import Image

    response = api.get(f"/scenes/{big_scene_id}/locate.png", params={"q": "a ship", "size": 320})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.mode == "RGB" and max(image.size) == 320
        width, height = image.size
    assert abs(width / height - 160 / 96) < 0.05  # BIG_SCENE is 160 x 96
    again = api.get(f"/scenes/{big_scene_id}/locate.png", params={"q": "a ship", "size": 320})
    assert again.headers["x-sarsearch-cache"] == "hit" and again.content == response.content


def test_locate_json_gives_peaks_without_server_paths(api, big_scene_id, indexed_db):
    response = api.get(f"/scenes/{big_scene_id}/locate.json", params={"q": "a ship"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "FeatureCollection" and body["sarsearch:scene_id"] == big_scene_id
    assert body["features"] and body["features"][0]["properties"]["rank"] == 1
    _, archive, _ = indexed_db
    assert str(archive) not in response.text and "locate-server" not in response.text


@pytest.mark.parametrize("path, params, status, needle", [
    ("/scenes/{scene}/locate.png", {}, 400, "q:"),
    ("/scenes/{scene}/locate.png", {"q": "   "}, 400, "q:"),
    ("/scenes/{scene}/locate.json", {"q": "x" * 501}, 400, "q:"),
    ("/scenes/999999/locate.png", {"q": "ship"}, 404, "no scene"),
    ("/scenes/abc/locate.json", {"q": "ship"}, 400, "scene id"),
])
def test_bad_requests_are_one_line_of_json(api, big_scene_id, path, params, status, needle):
    response = api.get(path.format(scene=big_scene_id), params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert needle in body["error"] and body["fix"]
