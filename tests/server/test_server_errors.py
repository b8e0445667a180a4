"""Bad requests: each kind gets a 4xx with a JSON body of one message (`error` + `fix`, one line each, no
traceback, no path of the server), and the server keeps answering."""

from __future__ import annotations

import json

import pytest

from sarclip_search.server.app import MAX_UPLOAD_BYTES

from helpers import SERVER_TOKEN as TOKEN

PNG_HEAD = b"\x89PNG\r\n\x1a\n"
READ_FILE_JSON = {"op": "=", "args": [{"property": "label"}, {"op": "read_text", "args": ["/etc/passwd"]}]}
COPY_JSON = {"op": "copy", "args": [{"property": "label"}, "/tmp/stolen.csv"]}


def upload(data: bytes, search: dict | None = None) -> dict:
    return {"files": {"image": ("query.png", data, "image/png")}, "data": {"search": json.dumps(search or {"limit": 3})}}


# name -> (method, url, keyword arguments of the request, status, a word the error names)
BAD_REQUESTS = {
    "bbox of 3 numbers": ("GET", "/search?bbox=1,2,3", {}, 400, "bbox"),
    "bbox out of range": ("GET", "/search?bbox=0,0,200,1", {}, 400, "bbox"),
    "bbox not numbers": ("POST", "/search", {"json": {"bbox": ["a", 1, 2, 3]}}, 400, "bbox"),
    "bbox and intersects": ("POST", "/search", {"json": {"bbox": [0, 0, 1, 1], "intersects": {
        "type": "Point", "coordinates": [0.5, 0.5]}}}, 400, "intersects"),
    "intersects not a geometry": ("POST", "/search", {"json": {"intersects": {"type": "Circle", "coordinates": [1]}}},
                                  400, "intersects"),
    "datetime not a time": ("GET", "/search?datetime=yesterday", {}, 400, "datetime"),
    "datetime reversed": ("GET", "/search?datetime=2021-02-01/2021-01-01", {}, 400, "datetime"),
    "datetime open both ends": ("GET", "/search?datetime=../..", {}, 400, "datetime"),
    "unknown collection": ("GET", "/search?collections=synthetic-chip", {}, 400, "synthetic-chips"),
    "CQL2 reading a file (text)": ("GET", "/search", {"params": {"filter": "read_csv('/etc/passwd') = 1"}}, 400, "read_csv"),
    "CQL2 reading a file (JSON)": ("POST", "/search", {"json": {"filter": READ_FILE_JSON}}, 400, "read_text"),
    "CQL2 writing (statement)": ("GET", "/search", {"params": {"filter": "label = 'x'; DROP TABLE tiles"}}, 400, "cql2-text"),
    "CQL2 writing (copy)": ("POST", "/search", {"json": {"filter": COPY_JSON, "filter-lang": "cql2-json"}}, 400, "copy"),
    "CQL2 escaping its parentheses": ("GET", "/search", {"params": {"filter": "label = 'x') OR (1 = 1"}}, 400, "filter"),
    "CQL2 on a server path column": ("GET", "/search", {"params": {"filter": "abs_path LIKE '/%'"}}, 400, "abs_path"),
    "CQL2 unknown property": ("GET", "/search", {"params": {"filter": "lable = 'ship'"}}, 400, "label"),
    "CQL2 spatial operator": ("GET", "/search", {"params": {"filter": "S_INTERSECTS(geometry, BBOX(0,0,1,1))"}}, 400, "bbox"),
    "CQL2 type mismatch": ("GET", "/search", {"params": {"filter": "label > 5"}}, 400, "filter"),
    "unknown filter-lang": ("GET", "/search", {"params": {"filter": "label = 'x'", "filter-lang": "sql"}}, 400, "filter-lang"),
    "non-numeric limit": ("GET", "/search?limit=ten", {}, 400, "limit"),
    "zero limit": ("GET", "/search?limit=0", {}, 400, "limit"),
    "alpha out of range": ("GET", "/search?q=ship&alpha=3", {}, 400, "alpha"),
    "unknown fusion": ("GET", "/search?q=ship&fusion=max", {}, 400, "fusion"),
    "unknown parameter": ("POST", "/search", {"json": {"colections": ["x"]}}, 400, "collections"),
    "parameter twice": ("GET", "/search?q=a&q=b", {}, 400, "q"),
    "malformed JSON": ("POST", "/search", {"content": b'{"q": "ship",', "headers": {"content-type": "application/json"}},
                       400, "JSON"),
    "JSON not an object": ("POST", "/search", {"json": ["ship"]}, 400, "object"),
    "bad paging token": ("GET", "/search?q=ship&token=bm90IGEgdG9rZW4", {}, 400, "token"),
    "non-image upload": ("POST", "/search", upload(b"GIF89a not what we read"), 400, "image"),
    "truncated image upload": ("POST", "/search", upload(PNG_HEAD + b"\x00" * 64), 400, "image"),
    "oversized upload": ("POST", "/search", upload(PNG_HEAD + b"\x00" * (MAX_UPLOAD_BYTES + 1024)), 413, "MB"),
    "multipart without image": ("POST", "/search", {"data": {"search": "{}"}, "files": {"other": ("a", b"x")}}, 400, "image"),
    "unknown uploaded image id": ("POST", "/search", {"json": {"image_id": "0" * 32}}, 400, "image_id"),
    "unknown like id": ("GET", "/search?like=99999", {}, 400, "99999"),
    "like not an id": ("GET", "/search?like=../../etc/passwd", {}, 400, "like"),
    "like id past int64": ("GET", "/search?like=99999999999999999999", {}, 400, "like"),
    "positive id past int64": ("POST", "/feedback", {"json": {"positive": [2**70]}}, 400, "positive"),
    "unknown item id": ("GET", "/items/99999", {}, 404, "99999"),
    "path-like item id": ("GET", "/items/..%2F..%2Fetc%2Fpasswd", {}, 404, "route"),
    "dot-dot item id": ("GET", "/items/%2E%2E", {}, 400, "id"),
    "path-like thumbnail id": ("GET", "/items/..%5C..%5Cwin.ini/thumbnail.png", {}, 400, "id"),
    "path-like scene id": ("GET", "/scenes/%2Fetc%2Fpasswd/quicklook.png", {}, 404, "route"),
    "absolute scene id": ("GET", "/scenes/~root/quicklook.png", {}, 400, "scene id"),
    "unknown scene": ("GET", "/scenes/99999/quicklook.png", {}, 404, "99999"),
    "static outside its folder": ("GET", "/static/..%2F..%2F..%2Fpyproject.toml", {}, 404, "route"),
    "thumbnail size too large": ("GET", "/items/1/thumbnail.png?size=100000", {}, 400, "size"),
    "negative without positive": ("POST", "/feedback", {"json": {"negative": [1]}}, 400, "positive"),
    "marked both ways": ("POST", "/feedback", {"json": {"positive": [1], "negative": [1]}}, 400, "1"),
    "feedback with an image": ("POST", "/search", {"json": {"positive": [1], "like": [2]}}, 400, "like"),
    "not without a query": ("GET", "/search?not=ship", {}, 400, "not"),
    "unknown route": ("GET", "/collections", {}, 404, "route"),
    "wrong method": ("DELETE", "/search", {}, 405, "DELETE"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_a_bad_request_is_one_message_and_the_server_keeps_answering(api, indexed_db, name):
    method, url, kwargs, status, needle = BAD_REQUESTS[name]
    response = api.request(method, url, **kwargs)
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "fix"}, body
    assert needle in body["error"] + " " + body["fix"], body
    for text in body.values():
        assert text and "\n" not in text and "Traceback" not in text and len(text) < 600
    db, archive, checkpoint = indexed_db
    for path in (db.resolve(), archive.resolve(), checkpoint.resolve(), "sarsearch-upload", "--where", "--like"):
        assert str(path) not in response.text
    assert api.get("/healthz").status_code == 200
    assert api.get("/search", params={"q": "ship", "limit": 2}).status_code == 200


def test_there_are_at_least_twelve_kinds_of_bad_requests():
    kinds = {"bbox", "intersects", "datetime", "collection", "CQL2 reading", "CQL2 writing", "limit", "non-image",
             "oversized", "unknown item", "path-like", "malformed JSON"}
    assert all(any(kind in name for name in BAD_REQUESTS) for kind in kinds)


def test_the_token_guards_every_route_and_a_first_visit_sets_a_cookie(guarded):
    for path in ("/", "/healthz", "/search?q=ship", "/items/1/thumbnail.png", "/static/index.html", "/openapi.json"):
        response = guarded.get(path)
        assert response.status_code == 401, path
        assert set(response.json()) == {"error", "fix"} and "token" in response.json()["error"]
    assert guarded.get("/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.get("/?token=wrong", follow_redirects=False).status_code == 401
    visit = guarded.get(f"/?token={TOKEN}&q=ship", follow_redirects=False)
    assert visit.status_code == 303 and visit.headers["location"] == "/?q=ship"  # the token leaves the URL
    assert "httponly" in visit.headers["set-cookie"].lower()
    assert guarded.cookies["sarsearch_token"] == TOKEN  # the client keeps it, as a browser does
    for path in ("/", "/search?q=ship", "/static/index.html"):
        assert guarded.get(path).status_code == 200, path
    guarded.cookies.clear()
    guarded.cookies.set("sarsearch_token", "wrong")
    assert guarded.get("/healthz").status_code == 401
    guarded.cookies.clear()
