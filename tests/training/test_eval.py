"""`sarsearch eval`: each metric against hand-computed values, the paraphrase set, and the CLI on the fixture.

The metric examples are small enough to check by hand; each comment gives the ranking that yields the
expected number. Ties always count against the query (pessimistic ranks).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarclip_search.cli.app import EXIT_OK
from sarclip_search.training.evaluate import (
    average_precision,
    first_relevant_rank,
    hit_rate_at_k,
    image_to_image_scores,
    index_embeddings,
    manifest_embeddings,
    precision_at_k,
    retrieval_metrics,
    zero_shot_metrics,
)
from sarclip_search.training.paraphrases import PARAPHRASES, WORD_PAIRS

from helpers import assert_user_error, run

# --- ranking metrics ------------------------------------------------------------------------------

# query 0: 0.9 irrelevant, then 0.5 relevant tied with 0.5 irrelevant, then 0.1 relevant
# query 1: 0.3 irrelevant, then 0.2 relevant tied with 0.2 irrelevant
SCORES = np.array([[0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.3, 0.1]])
RELEVANT = np.array([[0, 1, 0, 1], [1, 0, 0, 0]], bool)


def test_first_relevant_rank_puts_ties_against_the_query() -> None:
    # q0: best relevant 0.5, irrelevant >= 0.5 are 0.9 and 0.5 -> rank 3; q1: 0.3 and 0.2 -> rank 3
    assert first_relevant_rank(SCORES, RELEVANT).tolist() == [3, 3]
    # without the tie, q1's relevant item is second
    assert first_relevant_rank(np.array([[0.25, 0.2, 0.3, 0.1]]), RELEVANT[1:]).tolist() == [2]
    # a query with no relevant item ranks past the gallery
    assert first_relevant_rank(SCORES[:1], np.zeros((1, 4), bool)).tolist() == [5]


def test_hit_rate_at_k_leaves_out_queries_without_relevant_items() -> None:
    assert hit_rate_at_k(SCORES, RELEVANT, (1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 1.0}
    relevant = RELEVANT.copy()
    relevant[1] = False
    scores = SCORES.copy()
    scores[0, 1] = 0.95  # q0 now ranks its relevant item first; q1 has nothing relevant and is left out
    assert hit_rate_at_k(scores, relevant, (1,)) == {1: 1.0}


def test_precision_and_average_precision_by_hand() -> None:
    # ranked q0: irr, irr(tie), rel, rel -> P@2 0, P@4 0.5, AP = (1/3 + 2/4) / 2
    # ranked q1: irr, irr(tie), rel, irr -> P@2 0, AP = 1/3
    assert precision_at_k(SCORES, RELEVANT, 2).tolist() == [0.0, 0.0]
    assert precision_at_k(SCORES, RELEVANT, 4).tolist() == [0.5, 0.25]
    assert precision_at_k(SCORES, RELEVANT, 10).tolist() == [0.5, 0.25]  # depth capped at the gallery
    np.testing.assert_allclose(average_precision(SCORES, RELEVANT), [(1 / 3 + 2 / 4) / 2, 1 / 3])
    perfect = average_precision(np.array([[0.9, 0.8, 0.1]]), np.array([[1, 1, 0]], bool))
    assert perfect.tolist() == [1.0]


# --- zero-shot ------------------------------------------------------------------------------------


def test_zero_shot_metrics_by_hand() -> None:
    classes = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # a, b, c
    images = np.array([
        [1.0, 0.0],    # a: right
        [0.6, 0.8],    # a: b scores 0.8 > 0.6 -> predicted b
        [0.0, 1.0],    # b: right
        [-0.6, 0.8],   # c: b scores 0.8 > 0.6 -> predicted b
        [-0.8, 0.6],   # c: right (0.8 > 0.6)
        [0.0, 0.0],    # c: all three tie at 0 -> wrong (pessimistic), predicted the first wrong class, a
    ])
    truth = np.array([0, 0, 1, 2, 2, 2])
    report = zero_shot_metrics(images, classes, truth, ["a", "b", "c"])
    assert report["top1"] == round(3 / 6, 4)
    assert report["top5"] is None  # 3 classes: top-5 would be 1 by construction
    assert report["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 1, 1]]
    assert report["per_class"] == {"a": 0.5, "b": 1.0, "c": round(1 / 3, 4)}
    assert report["balanced_accuracy"] == round((0.5 + 1.0 + 1 / 3) / 3, 4)
    assert report["n"] == 6 and report["chance"] == round(1 / 3, 4) and report["classes"] == ["a", "b", "c"]


def test_zero_shot_top5_counts_classes_scoring_at_least_the_true_one() -> None:
    classes = np.eye(6)
    image = np.array([[0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])
    assert zero_shot_metrics(image, classes, np.array([4]), list("abcdef"))["top5"] == 1.0  # 4 classes above it
    assert zero_shot_metrics(image, classes, np.array([5]), list("abcdef"))["top5"] == 0.0  # 5 classes above it
    tied = np.array([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    assert zero_shot_metrics(tied, classes, np.array([0]), list("abcdef"))["top5"] == 0.0


# --- image → image ---------------------------------------------------------------------------------


def test_image_to_image_never_retrieves_the_query_itself() -> None:
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = ["x", "y", "x"]
    scores, relevant = image_to_image_scores(vectors, labels)
    assert scores.shape == (3, 2)
    # image 0: others are 1 (0.8, y) and 2 (0.0, x) -> its nearest other is irrelevant; itself (1.0) is gone
    assert scores[0].tolist() == [0.8, 0.0] and relevant[0].tolist() == [False, True]
    report = retrieval_metrics(vectors, labels, np.eye(2), ["x", "y"])
    # queries with another image of their label: 0 (rank 2) and 2 (nearest other is 1, y, 0.6 > 0.0 -> rank 2)
    assert report["image_to_image"] == {"R@1": 0.0, "P@10": 0.5, "n_queries": 2}


def test_image_to_image_counts_a_duplicate_image_but_not_itself() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = ["x", "x", "y", "y"]
    report = retrieval_metrics(vectors, labels, np.eye(2), ["x", "y"])
    # 0 -> 1 (1.0, x); 1 -> 0; 2 -> 3 (0.8, y); 3 -> 2 (0.8, y) ties with 0 and 1 (0.6)? no: 0.8 > 0.6 -> right
    assert report["image_to_image"]["R@1"] == 1.0
    # P@10 over the 3 others: 0 -> {1 x, 3 y, 2 y} = 1/3
    assert report["image_to_image"]["P@10"] == round(1 / 3, 4)


# --- text ↔ image ----------------------------------------------------------------------------------


def test_text_image_recalls_and_map_by_hand() -> None:
    images = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    labels = ["a", "a", "b", "b"]
    texts = np.array([[1.0, 0.0], [0.0, 1.0]])  # a, b
    report = retrieval_metrics(images, labels, texts, ["a", "b"])
    # text a ranks images 0 (1.0 a), 3 (0.8 b), 1 (0.6 a), 2 -> R@1 1, AP (1 + 2/3) / 2
    # text b ranks 2 (1.0 b), 1 (0.8 a), 3 (0.6 b), 0      -> R@1 1, AP (1 + 2/3) / 2
    assert report["text_to_image"]["R@1"] == 1.0
    assert report["text_to_image"]["mAP"] == round((1 + 2 / 3) / 2, 4)
    # image -> text: 0 a✓, 1 b✗ (0.8 > 0.6), 2 b✓, 3 a✗ -> R@1 0.5, R@5 = R@10 = 1 (two texts)
    assert [report["image_to_text"][f"R@{k}"] for k in (1, 5, 10)] == [0.5, 1.0, 1.0]
    assert report["mR"] == round((1 + 1 + 1 + 0.5 + 1 + 1) / 6, 4)
    assert report["curves"]["image_to_text"][:2] == [0.5, 1.0] and len(report["curves"]["text_to_image"]) == 10


# --- the CLI and the two sources on the fixture ---------------------------------------------------


def test_db_and_data_sources_agree_on_the_fixture(indexed_db, sarclip) -> None:
    from sarclip_search.query.engine import Engine

    db, archive, checkpoint = indexed_db
    from_data = manifest_embeddings(sarclip, archive, "train")
    with Engine.open(db, model_path=checkpoint) as engine:
        from_db = index_embeddings(engine, "train")
    # every train image of the fixture is one whole tile (<= 256 px)
    assert len(from_data.paths) == 7 and from_db.paths == from_data.paths
    assert from_db.labels == from_data.labels and from_db.datasets == from_data.datasets
    # the index stores float16 copies: the same vectors to ~1e-3
    cosine = (from_db.vectors * from_data.vectors).sum(axis=1)
    assert cosine.min() > 0.999, cosine


def test_cli_eval_json_from_db_and_data(indexed_db, fast_model) -> None:
    db, archive, _ = indexed_db
    reports = {}
    for source in (("--db", db), ("--data", archive)):
        result = run("eval", *source, "--split", "train", "--json", "--quiet")
        assert result.exit_code == EXIT_OK, (result.output, result.exception)
        reports[source[0]] = json.loads(result.stdout)
    for report in reports.values():
        assert report["split"] == "train" and report["n_images"] == 7
        assert report["model"]["checkpoint_sha256"] == fast_model.checkpoint_sha256
        zero_shot = report["zero_shot"]["synthetic-S1-GRD"]
        for key in ("top1", "top5", "per_class", "confusion", "balanced_accuracy", "n", "chance"):
            assert key in zero_shot
        assert zero_shot["n"] == 5 and zero_shot["classes"] == ["field", "ship"]
        for mode in ("text_to_image", "image_to_text"):
            assert set(report[mode]) >= {"R@1", "R@5", "R@10"}
        assert 0.0 <= report["mR"] <= 1.0 and 0.0 <= report["text_to_image"]["mAP"] <= 1.0
        assert set(report["image_to_image"]) >= {"R@1", "P@10"}
        assert len(report["paraphrase"]["queries"]) == len(PARAPHRASES) and "mean_P@10" in report["paraphrase"]
        assert all("chance" in q and q["rule"] for q in report["paraphrase"]["queries"])
        assert len(report["word_pairs"]["pairs"]) == len(WORD_PAIRS) and report["word_pairs"]["chance_pairwise"] == 0.5
        assert report["composite_crops"]["n"] == 0  # the fixture archive has no composite scenes
    assert reports["--db"]["source"]["kind"] == "db" and reports["--data"]["source"]["kind"] == "data"
    same = ("n_images", "classes", "images_per_dataset")
    assert {k: reports["--db"][k] for k in same} == {k: reports["--data"][k] for k in same}
    # zero-shot decisions agree unless a margin is within float16 rounding; the counts must match
    assert reports["--db"]["zero_shot"]["synthetic-S1-GRD"]["n"] == reports["--data"]["zero_shot"]["synthetic-S1-GRD"]["n"]


def test_cli_eval_out_writes_markdown_and_decodable_pngs(indexed_db, fast_model, tmp_path: Path) -> None:
    db, _, _ = indexed_db
    out = tmp_path / "report"
    result = run("eval", "--db", db, "--split", "train", "--out", out)
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    assert "zero-shot classification" in result.stdout and "paraphrase" in result.stdout
    assert json.loads((out / "eval.json").read_text())["n_images"] == 7
    markdown = (out / "eval.md").read_text()
    assert "| dataset | classes | images | top-1 |" in markdown and "synthetic-S1-GRD" in markdown
    assert "| a wheeled armoured personnel carrier |" in markdown and "## Word vs object" in markdown
    assert "Not measured: the index's archive" not in markdown  # the archive is readable: measured (0 crops)
    for name in ("recall_at_k.png", "confusion_synthetic-S1-GRD.png", "p10_by_kind.png"):
        with Image.open(out / name) as image:
            image.load()
            assert image.format == "PNG" and image.width > 200 and image.height > 200


def test_cli_eval_bad_input(indexed_db, fast_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db, archive, _ = indexed_db
    assert_user_error(run("eval", "--db", db, "--split", "nope"), "nope", "train")
    assert_user_error(run("eval", "--data", archive, "--split", "nope"), "nope", "test")
    assert_user_error(run("eval", "--db", tmp_path / "missing"), "no index")
    assert_user_error(run("eval", "--data", tmp_path), "manifest.csv")
    assert_user_error(run("eval", "--db", db, "--data", archive), "not both")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SARSEARCH_DB", raising=False)
    assert_user_error(run("eval"), "--db", "--data")

