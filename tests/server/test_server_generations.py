"""The server follows `sarsearch index`: a generation committed while it serves is picked up (CURRENT read at
most once a second), a request keeps the generation it started with, and old engines close once unused."""

from __future__ import annotations

import json
import time

from sarclip_search.server.engines import Generations
from sarclip_search.store.layout import IndexStore, write_json_atomic

from helpers import copy_index


def commit_new_generation(db) -> str:
    """Commit a copy of the current generation as a new one, as `index` does (lock, stage, switch CURRENT,
    delete the old one); its name."""
    store = IndexStore(db)
    with store.lock():
        info = json.loads(store.require_current().info_path.read_text())
        with store.new_generation() as staging:
            write_json_atomic(staging.info_path, {**info, "generation": staging.number})
    return store.require_current().path.name


def test_a_generation_committed_while_serving_is_picked_up(indexed_db, tmp_path):
    from fastapi.testclient import TestClient

    from sarclip_search.server.app import create_app

    db = copy_index(indexed_db[0], tmp_path / "db")
    with TestClient(create_app(db)) as client:
        before = client.get("/healthz").json()["generation"]
        expected = client.get("/search", params={"q": "ship", "limit": 3}).json()["features"]
        committed = commit_new_generation(db)
        assert committed != before and not (db / before).exists()  # the writer deleted the old one
        deadline, seen = time.monotonic() + 30, before
        while seen != committed and time.monotonic() < deadline:
            response = client.get("/search", params={"q": "ship", "limit": 3})
            assert response.status_code == 200  # still answered (from the old files) while switching
            seen = response.json()["sarsearch:generation"]
            assert response.headers["x-sarsearch-generation"] == seen
            time.sleep(0.1)
        assert seen == committed
        assert [f["id"] for f in response.json()["features"]] == [f["id"] for f in expected]
        assert client.get("/healthz").json()["generation"] == committed


def test_a_request_keeps_its_generation_and_old_engines_close_when_it_ends(indexed_db, tmp_path):
    db = copy_index(indexed_db[0], tmp_path / "db")
    generations = Generations(db, engines_per_generation=1)
    try:
        with generations.lease() as old:
            committed = commit_new_generation(db)
            assert generations.refresh() == committed != old.name
            with old.engine() as engine:  # the request's engine still answers from its (deleted) generation
                assert engine.generation.path.name == old.name and len(engine.query("ship", k=3)) == 3
            assert not old.closed
            with generations.lease() as new:
                assert new.name == committed
        assert old.closed
    finally:
        generations.close()


def test_current_is_read_at_most_once_a_second(indexed_db, tmp_path):
    db = copy_index(indexed_db[0], tmp_path / "db")
    now = [0.0]
    generations = Generations(db, engines_per_generation=1, clock=lambda: now[0])
    try:
        first = generations.current_name
        committed = commit_new_generation(db)
        now[0] = 0.99
        with generations.lease() as snapshot:
            assert snapshot.name == first  # not checked yet: less than a second since the last check
        now[0] = 1.0
        with generations.lease():  # this request triggers the check; the new generation opens in the background
            pass
        deadline = time.monotonic() + 30
        while generations.current_name != committed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert generations.current_name == committed
    finally:
        generations.close()


def test_concurrent_filtered_searches_all_succeed(api):
    """Requests run on several threads at once; filters are checked by DuckDB's parser, one thread at a time."""
    from concurrent.futures import ThreadPoolExecutor

    queries = [{"q": "ship", "filter": f"label <> 'x{i}' AND split IN ('train', 'test')", "limit": 3} for i in range(48)]
    queries += [{"filter": f"width > {i}", "collections": "synthetic-S1-GRD", "limit": 2} for i in range(48)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda query: api.get("/search", params=query).status_code, queries))
    assert statuses == [200] * len(queries)


def test_first_answers_made_while_every_engine_is_busy_do_not_deadlock(indexed_db, tmp_path):
    """/queryables (made once per generation, with an engine) and searches by collection (which read the
    generation's datasets while holding an engine) arriving together on a fresh generation."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from sarclip_search.server.app import create_app

    db = copy_index(indexed_db[0], tmp_path / "db")
    with TestClient(create_app(db, engines_per_generation=1)) as client:
        paths = ["/queryables", "/info", "/search?collections=synthetic-chips&q=ship"] * 6
        pool = ThreadPoolExecutor(6)
        futures = [pool.submit(lambda path=path: client.get(path).status_code) for path in paths]
        statuses = [future.result(timeout=60) for future in futures]  # a deadlock fails here instead of hanging
        pool.shutdown()
    assert statuses == [200] * len(paths)
