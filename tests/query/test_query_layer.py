"""Query layer: fusion math, RRF, more-like-this, relevance feedback, dedup, and the query CLI flags.

Pure functions are checked against hand-computed values; engine behaviour on the indexed fixture archive
(`indexed_db`: one tile per image; `small_tiles`: 64 px tiles at stride 32, so one scene has 8 overlapping
tiles). Exports (GeoJSON, STAC, thumbnails) are in test_exports.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from sarclip_search.cli.app import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from sarclip_search.errors import InputError
from sarclip_search.model.vectors import l2_normalize
from sarclip_search.query import engine as engine_module
from sarclip_search.query import feedback as feedback_module
from sarclip_search.query.engine import DEFAULT_ALPHA, Engine, Hit, dedup_hits, windows_overlap
from sarclip_search.query.feedback import fit_probe, text_prior
from sarclip_search.query.fusion import blend, part_weights, push_away, reciprocal_rank_fusion
from sarclip_search.store.filters import Filters

from helpers import BIG_SCENE, assert_user_error, run


@pytest.fixture(scope="module")
def rows(engine) -> dict[int, dict]:
    return {int(r["tile_id"]): r for r in engine.catalog.fetch_tiles(engine.vectors.ids())}


def ids_by_label(rows: dict[int, dict], label: str) -> list[int]:
    return sorted(i for i, r in rows.items() if r["label"] == label)


def assert_one_line_error(result, code: int, *needles: str) -> None:
    """Exit `code`, no traceback; for exit 1 also one `error:` line on stderr holding every needle."""
    if code == EXIT_ERROR:
        assert_user_error(result, *needles)
        return
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output


# --- fusion math ------------------------------------------------------------------------------------------


def test_blend_weights_unit_parts():
    text, image, other = np.eye(3, dtype=np.float32)
    fused = blend(text, [image], alpha=0.75)
    np.testing.assert_allclose(fused, np.array([0.75, 0.25, 0.0]) / np.hypot(0.75, 0.25), atol=1e-6)
    np.testing.assert_allclose(blend(None, [image, other], alpha=0.9), [0, 2 ** -0.5, 2 ** -0.5], atol=1e-6)
    with pytest.raises(ValueError):
        blend(text, [image], alpha=1.5)


def test_negatives_move_the_query_away():
    rng = np.random.default_rng(0)
    query, negative = l2_normalize(rng.normal(size=64)), l2_normalize(rng.normal(size=64))
    pushed = push_away(query, [negative])
    assert np.linalg.norm(pushed) == pytest.approx(1.0, abs=1e-6)
    assert pushed @ negative < query @ negative - 0.2  # clearly further from the negative
    assert pushed @ query > 0.8  # and still about the query
    np.testing.assert_allclose(blend(query, [], 0.5, negatives=[negative]), pushed, atol=1e-6)


def test_rrf_matches_a_hand_computed_example():
    rankings = [[1, 2, 3], [3, 1]]
    fused = reciprocal_rank_fusion(rankings)  # k = 60
    assert [i for i, _ in fused] == [1, 3, 2]
    assert dict(fused)[1] == pytest.approx(1 / 61 + 1 / 62)
    assert dict(fused)[3] == pytest.approx(1 / 63 + 1 / 61)
    assert dict(fused)[2] == pytest.approx(1 / 62)
    weighted = reciprocal_rank_fusion(rankings, weights=[0.25, 0.75])  # the second ranking now leads
    assert [i for i, _ in weighted] == [3, 1, 2]
    assert dict(weighted)[3] == pytest.approx(0.25 / 63 + 0.75 / 61)
    assert part_weights(True, 2, 0.75) == [0.75, 0.125, 0.125]
    assert part_weights(False, 4, 0.75) == [0.25] * 4


# --- engine: more like this, fusion, negatives ----------------------------------------------------------------


def test_like_returns_the_tile_itself_first(engine):
    for tile_id in engine.vectors.ids():
        hits = engine.query(like=[int(tile_id)], k=3)
        assert hits[0].id == tile_id and hits[0].score == pytest.approx(1.0, abs=2e-3)
        assert hits[0].score_kind == "cosine"


def test_like_and_exclude(engine, rows):
    ships = ids_by_label(rows, "ship")
    hits = engine.query(like=ships[:1], k=len(rows), exclude=ships[:1])
    assert ships[0] not in [h.id for h in hits] and len(hits) == len(rows) - 1


def test_rrf_fuses_the_parts_rankings(engine, rows):
    first, second = sorted(rows)[:2]
    hits = engine.query(like=[first, second], fusion="rrf", alpha=DEFAULT_ALPHA, k=4)
    assert {h.id for h in hits[:2]} == {first, second}  # each is first in its own ranking
    assert all(h.score_kind == "rrf" for h in hits)
    assert hits[0].score == pytest.approx(0.5 / 61 + 0.5 / 62, rel=1e-6)  # 1st in one ranking, 2nd in the other
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_text_query_with_negative_text_changes_the_query(engine, monkeypatch):
    texts = {"ship": l2_normalize(np.r_[1.0, 1.0, np.zeros(engine.vectors.dim - 2)]),
             "field": l2_normalize(np.r_[0.0, 1.0, np.zeros(engine.vectors.dim - 2)])}
    searched = []
    monkeypatch.setattr(engine, "embed_text", lambda text: texts[text])
    monkeypatch.setattr(engine.vectors, "search", lambda queries, k, **kw: searched.append(queries) or (
        np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1)))
    engine.query("ship", negative_texts=["field"], k=1)
    assert np.array_equal(searched[0][0], push_away(texts["ship"], [texts["field"]]))
    assert searched[0][0] @ texts["field"] < texts["ship"] @ texts["field"]


def test_negative_image_pushes_results_away(engine, rows, indexed_db):
    _, archive, _ = indexed_db
    anchor = min(rows)
    plain = engine.query(like=[anchor], k=len(rows))
    away_from = plain[1]  # the anchor's nearest neighbour, as a negative example image
    pushed = engine.query(like=[anchor], negative_images=[archive / away_from.path], k=len(rows))
    rank = {h.id: r for r, h in enumerate(pushed)}
    assert pushed[0].id == anchor
    assert rank[away_from.id] > 1  # pushed down from 2nd place
    assert next(h.score for h in pushed if h.id == away_from.id) < away_from.score


@pytest.mark.parametrize("bad, message", [
    ({"like": [987654]}, "--like 987654"),
    ({"like": [1], "fusion": "borda"}, "--fusion"),
    ({"like": [1], "alpha": 2.0}, "--alpha"),
    ({}, "give a text query"),
    ({"like": [1], "nprobe": 0}, "--nprobe"),
])
def test_query_input_errors(engine, bad, message):
    with pytest.raises(InputError, match=message):
        engine.query(k=3, **bad)


# --- relevance feedback -----------------------------------------------------------------------------------


def test_probe_separates_synthetic_classes():
    rng = np.random.default_rng(1)
    centre = l2_normalize(rng.normal(size=32))
    positives = l2_normalize(centre + 0.3 * rng.normal(size=(5, 32)))
    negatives = l2_normalize(-centre + 0.3 * rng.normal(size=(5, 32)))
    probe = fit_probe(positives, negatives)
    assert (probe.decision(positives) > 0).all() and (probe.decision(negatives) < 0).all()
    held_out = l2_normalize(centre + 0.3 * rng.normal(size=(20, 32)))
    assert (probe.decision(held_out) > probe.decision(l2_normalize(-centre + 0.3 * rng.normal(size=(20, 32))))).mean() > 0.9
    with pytest.raises(ValueError):
        fit_probe(positives, np.empty((0, 32)))


@pytest.mark.parametrize("wanted, other", [("ship", "field"), ("field", "ship")])
def test_feedback_pulls_the_marked_class_up(engine, rows, wanted, other):
    positive, negative = ids_by_label(rows, wanted)[:2], ids_by_label(rows, other)[:1]
    hits = engine.feedback(positive, negative, k=len(rows))
    assert not {h.id for h in hits} & {*positive, *negative}  # marked tiles are left out
    assert len(hits) == len(rows) - 3
    labels = [h.metadata["label"] for h in hits]
    remaining = labels.count(wanted)
    assert labels[:remaining].count(wanted) >= remaining - 1, labels  # the class fills the top
    assert all(h.score_kind == "probe" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_feedback_with_a_text_ranks_by_the_text_too(engine, rows, monkeypatch):
    """The text only used to add candidates, so feedback with a text ranked exactly as without it."""
    ships, fields = ids_by_label(rows, "ship"), ids_by_label(rows, "field")
    plain = engine.feedback(ships[:1], fields[:1], k=len(rows))
    target = plain[-1].id  # the tile the marks like least
    monkeypatch.setattr(engine, "embed_text", lambda text: l2_normalize(engine.vectors.vectors([target])[0]))
    steered = engine.feedback(ships[:1], fields[:1], text="that tile", k=len(rows))

    def rank(hits: list[Hit]) -> int:
        return [h.id for h in hits].index(target)

    assert {h.id for h in steered} == {h.id for h in plain}
    # the text moves the tile the marks rank last up (before the fix the two rankings were identical)
    assert rank(steered) < rank(plain), ([h.id for h in plain], [h.id for h in steered])
    assert [h.score for h in steered] == sorted((h.score for h in steered), reverse=True)
    marked = engine.feedback(ships[:1], fields[:1], text="that tile", k=len(rows), include_marked=True)
    score = {h.id: h.score for h in marked}
    assert score[ships[0]] > score[fields[0]]  # the marks still count


@pytest.mark.parametrize("text", [None, "a ship"])
def test_feedback_head_does_not_depend_on_how_deep_it_looks(engine, rows, monkeypatch, text):
    """The k best by the probe, however few candidates are taken around the centroid and the text."""
    ships, fields = ids_by_label(rows, "ship"), ids_by_label(rows, "field")
    monkeypatch.setattr(engine, "embed_text", lambda words: l2_normalize(engine.vectors.vectors([fields[-1]])[0]))
    everything = engine.feedback(ships[:2], fields[:1], text=text, k=len(rows))
    monkeypatch.setattr(engine_module, "CANDIDATES_PER_PART", 1)
    for k in (1, 2, 3):
        assert [h.id for h in engine.feedback(ships[:2], fields[:1], text=text, k=k)] == [h.id for h in everything[:k]]


def test_probe_prior(monkeypatch):
    rng = np.random.default_rng(3)
    positives, negatives = l2_normalize(rng.normal(size=(3, 16))), l2_normalize(rng.normal(size=(20, 16)))
    plain = fit_probe(positives, negatives)
    np.testing.assert_allclose(fit_probe(positives, negatives, prior=np.zeros(16)).weights, plain.weights)
    direction = l2_normalize(rng.normal(size=16))
    held = fit_probe(positives, negatives, l2=1e4, prior=5.0 * direction)  # a strong pull keeps w at the prior
    np.testing.assert_allclose(held.weights, 5.0 * direction, atol=1e-3)
    prior = text_prior(3.0 * direction, plain, negatives)  # the text's norm does not matter
    np.testing.assert_allclose(l2_normalize(prior), direction, atol=1e-6)
    assert np.std(negatives @ prior) == pytest.approx(np.std(negatives @ plain.weights))
    monkeypatch.setattr(feedback_module, "TEXT_PRIOR_WEIGHT", 0.5)
    assert np.std(negatives @ text_prior(direction, plain, negatives)) == pytest.approx(np.std(negatives @ prior) / 2)
    assert np.linalg.norm(text_prior(direction, plain, negatives[:1])) == pytest.approx(
        0.5 * np.linalg.norm(plain.weights))  # no spread to measure on one tile: |w|


def test_feedback_errors_name_the_id(engine, rows):
    some = min(rows)
    with pytest.raises(InputError, match="--positive 424242"):
        engine.feedback([424242])
    with pytest.raises(InputError, match="--negative 31337"):
        engine.feedback([some], [31337])
    with pytest.raises(InputError, match="both"):
        engine.feedback([some], [some])
    with pytest.raises(InputError, match="--nprobe"):
        engine.feedback([some], nprobe=-1)


def test_feedback_respects_filters(engine, rows):
    positive = ids_by_label(rows, "ship")[:1]
    hits = engine.feedback(positive, k=10, filters=Filters(split="test"))
    assert hits and all(h.metadata["split"] == "test" for h in hits)


# --- blank texts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_text_is_no_text(engine, rows, blank):
    with pytest.raises(InputError, match="^give a text query"):
        engine.query(blank, k=3)
    anchor = min(rows)
    assert engine.query(blank, like=[anchor], k=3) == engine.query(like=[anchor], k=3)
    assert engine.feedback([anchor], text=blank, k=3) == engine.feedback([anchor], k=3)
    with pytest.raises(InputError, match=r"^--not .*blank text.*leave --not out"):
        engine.query(like=[anchor], negative_texts=["harbor", blank], k=3)


def test_cli_blank_text_is_the_empty_text_error(indexed_db, rows):
    db, _, checkpoint = indexed_db
    empty = run("query", "", "--db", db, "--model", checkpoint)
    blank = run("query", "   ", "--db", db, "--model", checkpoint)
    assert_one_line_error(empty, EXIT_ERROR, "give a text query")
    assert_one_line_error(blank, EXIT_ERROR, "give a text query")
    assert blank.stderr == empty.stderr
    assert_one_line_error(run("query", "--like", min(rows), "--not", "  ", "--db", db, "--model", checkpoint),
                          EXIT_ERROR, "--not", "blank text")


# --- dedup ------------------------------------------------------------------------------------------------


def hit(tile_id: int, scene_id: int, window: tuple[int, int, int, int], score: float) -> Hit:
    return Hit(id=tile_id, score=score, path="x.tif", scene_id=scene_id, window=window, bbox=None)


def test_dedup_keeps_the_best_of_overlapping_tiles():
    hits = [hit(1, 7, (0, 0, 64, 64), 0.9), hit(2, 7, (32, 0, 64, 64), 0.8), hit(3, 7, (64, 0, 64, 64), 0.7),
            hit(4, 8, (0, 0, 64, 64), 0.6)]
    assert [h.id for h in dedup_hits(hits)] == [1, 3, 4]  # 2 overlaps 1; 3 only touches 1's edge; 4 is another scene
    assert windows_overlap(hits[0], hits[1]) and not windows_overlap(hits[0], hits[2])
    assert not windows_overlap(hits[0], hits[3])


def test_dedup_on_overlapping_tiles_still_returns_k(small_tiles):
    overlapping, _, _ = small_tiles
    big = [r for r in overlapping.catalog.fetch_tiles(overlapping.vectors.ids()) if r["path"] == BIG_SCENE]
    assert len(big) == 8  # 160 x 96 at 64 px, stride 32: columns 0, 32, 64, 96 x rows 0, 32
    anchor = int(big[0]["tile_id"])
    plain = overlapping.query(like=[anchor], k=8)
    assert any(windows_overlap(a, b) for i, a in enumerate(plain) for b in plain[:i])  # the problem exists
    deduped = overlapping.query(like=[anchor], k=8, dedup=True)
    assert len(deduped) == 8 and deduped[0].id == anchor
    assert not any(windows_overlap(a, b) for i, a in enumerate(deduped) for b in deduped[:i])
    assert [h.score for h in deduped] == sorted((h.score for h in deduped), reverse=True)


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_like_rrf_json(indexed_db, rows):
    db, _, checkpoint = indexed_db
    first, second = sorted(rows)[:2]
    result = run("query", "--like", first, "--like", second, "--fusion", "rrf", "-k", 3, "--json", "--db", db,
                 "--model", checkpoint)
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    hits = json.loads(result.stdout)
    assert {h["id"] for h in hits[:2]} == {first, second} and all(h["score_kind"] == "rrf" for h in hits)


def test_cli_feedback_table(indexed_db, rows):
    db, _, checkpoint = indexed_db
    ships, fields = ids_by_label(rows, "ship"), ids_by_label(rows, "field")
    result = run("query", "--positive", ships[0], "--positive", ships[1], "--negative", fields[0], "-k", 2,
                 "--db", db, "--model", checkpoint)
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    assert "probe" in result.stdout and f"+{ships[0]}" in result.stdout


def test_cli_text_with_negative_and_dedup(indexed_db, monkeypatch, rows):
    db, _, checkpoint = indexed_db
    monkeypatch.setattr(Engine, "embed_text", lambda self, text: l2_normalize(self.vectors.vectors([sorted(rows)[len(text) % 3]])[0]))
    result = run("query", "a ship", "--not", "harbor", "--dedup", "-k", 3, "--json", "--db", db, "--model", checkpoint)
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    assert len(json.loads(result.stdout)) == 3


@pytest.mark.parametrize("args, code, needles", [
    (["--like", 999999], EXIT_ERROR, ["--like 999999", "earlier result"]),
    (["--positive", 1, "--negative", 888888], EXIT_ERROR, ["--negative 888888"]),
    (["--negative", 1], EXIT_ERROR, ["--positive"]),
    (["--positive", 1, "--like", 2], EXIT_ERROR, ["--positive"]),
    (["--like", 1, "--fusion", "borda"], EXIT_ERROR, ["--fusion"]),
    (["--like", 1, "--alpha", "1.5"], EXIT_ERROR, ["--alpha"]),
    (["--like", 1, "--not-image", "missing.png"], EXIT_ERROR, ["--not-image missing.png"]),
    (["--like", "abc"], EXIT_USAGE, []),
])
def test_cli_bad_query_inputs(indexed_db, args, code, needles):
    db, _, checkpoint = indexed_db
    assert_one_line_error(run("query", *args, "--db", db, "--model", checkpoint), code, *needles)


def test_hit_json_has_score_kind(engine, rows):
    (first,) = engine.query(like=[min(rows)], k=1)
    assert first.to_dict()["score_kind"] == "cosine"
    assert replace(first, score_kind="rrf").to_dict()["score_kind"] == "rrf"
