"""What a query runs, once each: the searched vectors are the parts as they were made (the
encoder's unit vector is not normalized again), the --where is checked once and a shortcut-only predicate not
at all, and --bbox / --after / --before reach the predicate as the values the CLI parsed."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from sarclip_search.cli.app import EXIT_OK, app
from sarclip_search.model.vectors import l2_normalize
from sarclip_search.query import engine as engine_module
from sarclip_search.query.fusion import NEGATIVE_WEIGHT, blend, mean_direction, push_away
from sarclip_search.store import catalog as catalog_module
from sarclip_search.store import filters as filters_module
from sarclip_search.store.filters import BBox, Filters


def unit_not_fixed(dim: int, seed: int = 0) -> np.ndarray:
    """A seeded unit vector that `l2_normalize` would change again (in its last bits): searched as it is,
    it is bit for bit this vector; normalized once more on the way, it is not."""
    rng = np.random.default_rng(seed)
    while True:
        vector = l2_normalize(rng.normal(size=dim))
        if not np.array_equal(l2_normalize(vector), vector):
            return vector


def test_a_part_alone_is_not_normalized_again():
    part = unit_not_fixed(64)
    assert np.array_equal(blend(part, [], alpha=0.1), part)  # one part: alpha unused, the vector as it came
    assert np.array_equal(blend(None, [part], alpha=0.9), part)
    other = unit_not_fixed(64, seed=1)
    assert np.array_equal(blend(other, [part], alpha=0.0), part) and np.array_equal(blend(other, [part], 1.0), other)
    assert np.array_equal(blend(other, [], alpha=0.0), other)  # alpha 0 without examples: still the text
    assert np.array_equal(mean_direction([part]), part) and np.array_equal(push_away(part, []), part)
    pushed = push_away(part, [np.eye(64, dtype=np.float32)[0]])
    assert np.array_equal(pushed, l2_normalize(part - 0.5 * np.eye(64, dtype=np.float32)[0]))  # normalized once


@pytest.fixture
def searched(engine, monkeypatch) -> list[np.ndarray]:
    """The query matrices `VectorIndex.search` receives (the search itself still runs)."""
    received: list[np.ndarray] = []
    real = engine.vectors.search

    def spy(queries, k, **kwargs):
        received.append(np.array(queries, copy=True))
        return real(queries, k, **kwargs)

    monkeypatch.setattr(engine.vectors, "search", spy)
    return received


def test_a_text_is_searched_as_the_encoder_made_it(engine, monkeypatch, searched):
    text = unit_not_fixed(engine.vectors.dim)
    monkeypatch.setattr(engine, "embed_text", lambda words: text)
    hits = engine.query("a ship", k=3)
    assert len(searched) == 1 and searched[0].shape == (1, engine.vectors.dim)
    assert np.array_equal(searched[0][0], text)  # not normalized again on the way to FAISS
    assert [h.id for h in hits] == [h.id for h in engine.search_vector(text, k=3)]


def test_each_combination_is_normalized_once(engine, monkeypatch, searched):
    text, negative = unit_not_fixed(engine.vectors.dim, 0), unit_not_fixed(engine.vectors.dim, 1)
    monkeypatch.setattr(engine, "embed_text", lambda words: negative if words == "harbor" else text)
    tile = int(engine.vectors.ids()[0])
    stored = engine.vectors.vectors([tile])[0]  # the float16 copy: not a unit vector
    assert abs(float(np.linalg.norm(stored)) - 1) > 1e-7

    engine.query(like=[tile], k=2)
    engine.query("ship", negative_texts=["harbor"], k=2)
    engine.query("ship", like=[tile], alpha=0.75, k=2)
    liked = l2_normalize(stored)
    expected = [liked, l2_normalize(text - NEGATIVE_WEIGHT * negative), l2_normalize(0.75 * text + 0.25 * liked)]
    assert len(searched) == 3
    for received, vector in zip(searched, expected):
        assert np.array_equal(received, vector[None])


def test_search_vector_takes_any_vector(engine):
    tile = int(engine.vectors.ids()[0])
    stored = engine.vectors.vectors([tile])[0]
    plain, scaled = engine.search_vector(stored, k=3), engine.search_vector(5 * stored, k=3)
    assert [h.id for h in scaled] == [h.id for h in plain]  # normalized first: the norm changes nothing
    assert [h.score for h in scaled] == pytest.approx([h.score for h in plain], abs=1e-6)
    assert plain[0].id == tile and plain[0].score == pytest.approx(1.0, abs=1e-6)


def test_the_where_is_checked_once_and_shortcuts_not_at_all(engine, monkeypatch):
    checked: list[str] = []
    real = filters_module.check_predicate

    def counting(where, **kwargs):
        checked.append(where)
        return real(where, **kwargs)

    monkeypatch.setattr(filters_module, "check_predicate", counting)
    monkeypatch.setattr(catalog_module, "check_predicate", counting)
    where = "width > 0 AND height > 1"  # a text no earlier test gave this catalog
    ids = engine.filter_ids(Filters(where=where, label="ship"))
    assert checked == [where]
    assert ids.tolist() == engine.catalog.tile_ids(f"({where}) AND label = 'ship'").tolist()
    checked.clear()
    assert engine.filter_ids(Filters(label="ship", bbox=(-180, -90, 180, 90), after="2000-01-01")) is not None
    assert checked == []


def test_cli_parses_bbox_and_dates_once_into_their_types(indexed_db, monkeypatch):
    db, _, checkpoint = indexed_db
    seen: list[Filters] = []
    real = engine_module.build_predicate
    monkeypatch.setattr(engine_module, "build_predicate", lambda filters, columns: seen.append(filters) or real(filters, columns))
    result = CliRunner().invoke(app, ["query", "ship", "--bbox", " 2, 50,4.5,53", "--after", "2021-03-01",
                                      "--before", "2021-03-10T12:00:00Z", "--json", "--db", str(db), "--model", str(checkpoint)])
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    [filters] = seen
    assert isinstance(filters.bbox, BBox) and filters.bbox == (2.0, 50.0, 4.5, 53.0)
    assert filters.after == datetime(2021, 3, 1) and filters.before == datetime(2021, 3, 10, 12)
