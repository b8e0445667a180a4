"""Model evaluation on a labelled split: zero-shot classification, cross-modal and image retrieval.

Two sources of image embeddings give the same report (docs/evaluation.md defines every number):

- `evaluate_manifest(sarclip, root, split)`: embed the split's labelled images of a manifest with the model;
- `evaluate_index(engine, split)`: the vectors an index already stores, with the catalog's labels; only
  the class texts are embedded, by the model the index was built with. It evaluates that model, not the
  index: the index's own quality (approximate vs exact search) is `sarclip_search.index.recall_at_k`,
  measured by `index` when it tunes (index/tuning.py). It lives here, not in the core, because the class
  texts are the training captions' prompt ensembles (`captions.class_prompts`) and the paraphrase queries
  are training data (`paraphrases.py`); the core imports no training code.

A *labelled image* is an image of the split that is one whole tile (not cut into tiles: a scene's label
does not describe each of its tiles) and has a label. Retrieval relevance is label-level: an image is
relevant to a query of its label. Ties in scores always count against the query (pessimistic ranks), so
a collapsed model cannot score by luck of ordering.

The metric functions at the top are pure numpy, on (queries, gallery) score matrices.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sarclip_search.errors import InputError
from sarclip_search.ingest.metadata import load_manifest
from sarclip_search.training import data as training_data
from sarclip_search.training.captions import VEHICLE_NAMES, class_prompts
from sarclip_search.training.paraphrases import PARAPHRASES, WORD_PAIRS, WordPair
from sarclip_search.training.tile_relevance import Tile, TileQuery

log = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)
CURVE_KS = tuple(range(1, 11))  # R@K curves of the report's plot
PRECISION_K = 10

# datasets of `zero_shot_accuracy` (the trainer's number), with the labels that form their classes
# (None: every label in the split). The full report uses every label present instead.
ZERO_SHOT_DATASETS: dict[str, tuple[str, ...] | None] = {
    "MSTAR-SOC": None,
    "OpenSARShip": ("cargo", "tanker", "other_type"),
}
# class subsets reported on their own inside a dataset's zero-shot entry
ZERO_SHOT_SUBSETS: dict[str, dict[str, tuple[str, ...]]] = {
    "OpenSARShip": {"cargo_vs_tanker": ("cargo", "tanker")},
}


class TextEncoder(Protocol):
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


# --- metrics: pure numpy ------------------------------------------------------------------------


def _as_bool(relevant: np.ndarray, scores: np.ndarray) -> np.ndarray:
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.shape != scores.shape:
        raise ValueError(f"relevance {relevant.shape} does not match scores {scores.shape}")
    return relevant


def first_relevant_rank(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Rank (1-based) of each query's best relevant item; ties with irrelevant items rank it after them.

    `scores` and `relevant` are (queries, gallery). A query without a relevant item gets gallery + 1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = _as_bool(relevant, scores)
    best = np.where(relevant, scores, -np.inf).max(axis=1, initial=-np.inf)
    rank = 1 + ((scores >= best[:, None]) & ~relevant).sum(axis=1)
    return np.where(relevant.any(axis=1), rank, scores.shape[1] + 1)


def hit_rate_at_k(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[int, float]:
    """Fraction of queries with a relevant item in their top k, for each k (queries with none are left out).

    The R@K of cross-modal retrieval papers (CLIP, SARCLIP, GeoRSCLIP): one hit is enough. Not
    `sarclip_search.index.recall_at_k`, the recall of approximate search (the share of the exact k nearest
    neighbours it returns).
    """
    relevant = _as_bool(relevant, np.asarray(scores))
    has_relevant = relevant.any(axis=1)
    if not has_relevant.any():
        return {k: float("nan") for k in ks}
    ranks = first_relevant_rank(scores, relevant)[has_relevant]
    return {k: float((ranks <= k).mean()) for k in ks}


def ranked_relevance(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(queries, gallery) bool: relevance of each query's items in ranked order (pessimistic ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    relevant = _as_bool(relevant, scores)
    # per row, by the last key first: score descending, then irrelevant (False) before relevant
    order = np.lexsort((relevant, -scores), axis=-1)
    return np.take_along_axis(relevant, order, axis=1)


def precision_at_k(scores: np.ndarray, relevant: np.ndarray, k: int = PRECISION_K) -> np.ndarray:
    """Per query: relevant items among its top min(k, gallery) (pessimistic ties)."""
    ranked = ranked_relevance(scores, relevant)
    depth = min(k, ranked.shape[1])
    if depth == 0:
        return np.full(ranked.shape[0], np.nan)
    return ranked[:, :depth].mean(axis=1)


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per query: mean of precision@rank over the ranks of its relevant items (NaN without any)."""
    ranked = ranked_relevance(scores, relevant).astype(np.float64)
    hits = ranked.sum(axis=1)
    precision = np.cumsum(ranked, axis=1) / np.arange(1, ranked.shape[1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(hits > 0, (precision * ranked).sum(axis=1) / hits, np.nan)


def zero_shot_metrics(image_vectors: np.ndarray, class_vectors: np.ndarray, truth: np.ndarray,
                      class_names: Sequence[str]) -> dict[str, Any]:
    """Zero-shot classification of (N, D) images by (C, D) class vectors; truth holds class indices.

    An image is correct at top-k when fewer than k other classes score at least as high as its true
    class (a tie is an error). The prediction of a wrong image is its best-scoring wrong class.
    top5 is None with 5 classes or fewer (it would be 1 by construction).
    """
    truth = np.asarray(truth, dtype=np.int64)
    n_classes = len(class_names)
    scores = np.asarray(image_vectors, np.float64) @ np.asarray(class_vectors, np.float64).T
    rows = np.arange(len(truth))
    rank = (scores >= scores[rows, truth][:, None]).sum(axis=1)  # 1 + classes scoring >= the true one
    wrong = scores.copy()
    wrong[rows, truth] = -np.inf
    predicted = np.where(rank == 1, truth, wrong.argmax(axis=1)) if n_classes > 1 else truth
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    support = confusion.sum(axis=1)
    per_class = {name: (round(float(confusion[i, i] / support[i]), 4) if support[i] else None)
                 for i, name in enumerate(class_names)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "top1": round(float((rank <= 1).mean()), 4) if len(truth) else None,
        "top5": round(float((rank <= 5).mean()), 4) if len(truth) and n_classes > 5 else None,
        "balanced_accuracy": round(float(np.mean(present)), 4) if present else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),  # rows: true class, columns: predicted, in `classes` order
        "classes": list(class_names),
        "support": {name: int(support[i]) for i, name in enumerate(class_names)},
        "n": len(truth),
        "chance": round(1.0 / n_classes, 4),
    }


def balanced_accuracy_limit(support: dict[str, int], at: float = 0.70, enough: int = 30) -> str | None:
    """A one-sentence data limit of a balanced accuracy measured on few images per class (None with `enough`
    of each): how far one image moves it, and the 95% interval half-width of a true value `at`."""
    counts = {name: n for name, n in support.items() if n}
    if not counts or min(counts.values()) >= enough:
        return None
    smallest = min(counts, key=counts.get)
    step = 1.0 / (len(counts) * counts[smallest])
    half_width = 1.96 * math.sqrt(sum(at * (1 - at) / n for n in counts.values())) / len(counts)
    return (f"{' and '.join(f'{n} {name}' for name, n in counts.items())} images: one {smallest} image moves "
            f"balanced accuracy by {step:.3f}, and a true {at:.2f} would read anywhere in {at - half_width:.2f}-"
            f"{min(1.0, at + half_width):.2f} (95%): differences under {half_width:.2f} are noise on this split")


def image_to_image_scores(vectors: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, N-1) scores and relevance of each image against every *other* image (itself is removed)."""
    vectors = np.asarray(vectors, np.float64)
    n = len(vectors)
    labels_array = np.asarray(labels)
    others = ~np.eye(n, dtype=bool)
    scores = (vectors @ vectors.T)[others].reshape(n, n - 1)
    relevant = (labels_array[:, None] == labels_array[None, :])[others].reshape(n, n - 1)
    return scores, relevant


def retrieval_metrics(image_vectors: np.ndarray, labels: Sequence[str], class_vectors: np.ndarray,
                      class_labels: Sequence[str]) -> dict[str, Any]:
    """Text↔image and image→image retrieval with label-level relevance.

    text→image: one query per class (its text vector) over the images; R@K, mAP.
    image→text: each image against the gallery of class texts; R@K = its label among the top K texts.
    image→image: each image against the other images; R@1, P@10 (queries whose label has no other image
    are left out). mR: mean of the six cross-modal recalls. `curves`: R@1..10 of each mode.
    """
    labels_array = np.asarray(labels)
    class_array = np.asarray(class_labels)
    text_scores = np.asarray(class_vectors, np.float64) @ np.asarray(image_vectors, np.float64).T  # (C, N)
    text_relevant = class_array[:, None] == labels_array[None, :]
    t2i = hit_rate_at_k(text_scores, text_relevant, CURVE_KS)
    i2t = hit_rate_at_k(text_scores.T, text_relevant.T, CURVE_KS)
    report: dict[str, Any] = {
        "text_to_image": {**{f"R@{k}": round(t2i[k], 4) for k in RECALL_KS},
                          "mAP": round(float(np.nanmean(average_precision(text_scores, text_relevant))), 4),
                          "n_queries": int(text_relevant.any(axis=1).sum())},
        "image_to_text": {**{f"R@{k}": round(i2t[k], 4) for k in RECALL_KS},
                          "n_queries": int(text_relevant.any(axis=0).sum())},
    }
    report["mR"] = round(float(np.mean([t2i[k] for k in RECALL_KS] + [i2t[k] for k in RECALL_KS])), 4)
    curves = {"text_to_image": [round(t2i[k], 4) for k in CURVE_KS],
              "image_to_text": [round(i2t[k], 4) for k in CURVE_KS]}
    if len(labels_array) > 1:
        scores, relevant = image_to_image_scores(image_vectors, labels)
        answerable = relevant.any(axis=1)
        i2i = hit_rate_at_k(scores, relevant, CURVE_KS)
        precision = precision_at_k(scores[answerable], relevant[answerable], PRECISION_K)
        report["image_to_image"] = {"R@1": round(i2i[1], 4),
                                    "P@10": round(float(precision.mean()), 4) if answerable.any() else None,
                                    "n_queries": int(answerable.sum())}
        curves["image_to_image"] = [round(i2i[k], 4) for k in CURVE_KS]
    else:
        report["image_to_image"] = {"R@1": None, "P@10": None, "n_queries": 0}
    report["curves"] = curves
    return report


def _nan_to_none(value: Any) -> Any:
    """NaN (a metric without queries) as JSON null, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


# --- embeddings of a split's labelled images ------------------------------------------------------


@dataclass(frozen=True)
class LabelledEmbeddings:
    """The labelled images of one split with their embeddings, from a manifest or from an index."""

    vectors: np.ndarray  # (N, D) float32, L2-normalized by the model
    labels: tuple[str, ...]
    datasets: tuple[str, ...]
    paths: tuple[str, ...]  # relative to the archive root, sorted
    source: dict[str, Any] = field(default_factory=dict)  # kind (data/db), path, split


def _check_split(split: str, available: set[str], where: str) -> None:
    if split not in available:
        raise InputError(f"split {split!r} has no images in {where}; available splits: "
                         f"{', '.join(sorted(available)) or 'none'}")


def manifest_embeddings(sarclip: Any, root: str | Path, split: str,
                        progress: Callable[[str, int, int], None] | None = None) -> LabelledEmbeddings:
    """Embed the labelled images of a manifest split with `sarclip` (the view the indexer embeds)."""
    root = Path(root)
    if not (root / "manifest.csv").is_file():
        raise InputError(f"{root}: no manifest.csv with labels; pass --data PATH to a labelled archive")
    _check_split(split, {str(row.get("split")) for row in load_manifest(root).values()}, f"{root}/manifest.csv")
    samples = [s for s in training_data.manifest_samples(root, (split,)) if s.window is None and s.label]
    samples.sort(key=lambda s: s.path.relative_to(root).as_posix())
    decoded = itertools.count(1)  # load_chips reports one chip per call
    step = None if progress is None else (lambda _: progress("images", next(decoded), len(samples)))
    chips = training_data.load_chips(samples, sarclip.image_size, step)
    return LabelledEmbeddings(
        vectors=sarclip.encode_images(chips),
        labels=tuple(s.label for s in samples),
        datasets=tuple(s.dataset for s in samples),
        paths=tuple(s.path.relative_to(root).as_posix() for s in samples),
        source={"kind": "data", "path": str(root), "split": split},
    )


def index_embeddings(engine: Any, split: str) -> LabelledEmbeddings:
    """The stored vectors of an index's labelled images of `split` (scenes indexed as one whole tile)."""
    columns = set(engine.catalog.columns())
    missing = {"split", "label", "dataset"} - columns
    if missing:
        raise InputError(f"the index at {engine.generation.path.parent} has no {', '.join(sorted(missing))} "
                         "column; index an archive whose manifest.csv gives dataset, label and split")
    summary = engine.catalog.summary()
    _check_split(split, {k for k in summary.get("split", {}) if k != "null"}, f"the index {engine.generation.path.parent}")
    rows = engine.catalog.fetch_tiles(engine.catalog.tile_ids("split = ?", [split]))
    tiles_of_scene: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        tiles_of_scene[int(row["scene_id"])].append(row)
    kept = []
    for tiles in tiles_of_scene.values():
        tile = tiles[0]
        whole = (len(tiles) == 1 and tile["col_off"] == 0 and tile["row_off"] == 0
                 and tile["width"] == tile["scene_width"] and tile["height"] == tile["scene_height"])
        if whole and tile.get("label"):
            kept.append(tile)
    kept.sort(key=lambda row: str(row["path"]))
    ids = np.array([int(row["tile_id"]) for row in kept], np.int64)
    model = engine.info.get("model") or {}
    return LabelledEmbeddings(
        vectors=engine.vectors.vectors(ids) if len(ids) else np.zeros((0, engine.vectors.dim), np.float32),
        labels=tuple(str(row["label"]) for row in kept),
        datasets=tuple(str(row.get("dataset") or "") for row in kept),
        paths=tuple(str(row["path"]) for row in kept),
        source={"kind": "db", "path": str(engine.generation.path.parent), "split": split,
                "generation": engine.info.get("generation"), "checkpoint_sha256": model.get("checkpoint_sha256")},
    )


# --- the report -----------------------------------------------------------------------------------


def class_text_embeddings(sarclip: TextEncoder, dataset: str, labels: list[str]) -> np.ndarray:
    """One classifier vector per class: the normalized mean of its prompt ensemble's embeddings."""
    return _ensemble_vectors(sarclip, [class_prompts(dataset, label) for label in labels])


def _ensemble_vectors(sarclip: TextEncoder, prompt_sets: Sequence[Sequence[str]]) -> np.ndarray:
    vectors = []
    for prompts in prompt_sets:
        embedded = sarclip.encode_texts(list(prompts)).mean(axis=0)
        vectors.append(embedded / np.linalg.norm(embedded))
    return np.stack(vectors).astype(np.float32)


def zero_shot_report(sarclip: TextEncoder, embeddings: LabelledEmbeddings) -> dict[str, Any]:
    """Per dataset with at least two labels in the split: zero-shot metrics over the labels present,
    plus the subsets of ZERO_SHOT_SUBSETS (e.g. OpenSARShip cargo vs tanker) on their own."""
    labels = np.asarray(embeddings.labels)
    datasets = np.asarray(embeddings.datasets)
    report: dict[str, Any] = {}
    for dataset in sorted(set(embeddings.datasets)):
        mask = datasets == dataset
        classes = sorted(set(labels[mask]))
        if len(classes) < 2:
            continue
        class_vectors = class_text_embeddings(sarclip, dataset, classes)
        truth = np.array([classes.index(label) for label in labels[mask]])
        report[dataset] = zero_shot_metrics(embeddings.vectors[mask], class_vectors, truth, classes)
        for name, subset in ZERO_SHOT_SUBSETS.get(dataset, {}).items():
            if not set(subset) <= set(classes):
                continue
            keep = np.isin(labels[mask], subset)
            sub_truth = np.array([subset.index(label) for label in labels[mask][keep]])
            picked = [classes.index(label) for label in subset]
            report[dataset][name] = zero_shot_metrics(embeddings.vectors[mask][keep], class_vectors[picked],
                                                      sub_truth, list(subset))
            report[dataset][name]["data_limit"] = balanced_accuracy_limit(report[dataset][name]["support"])
    return report


def retrieval_class_texts(embeddings: LabelledEmbeddings) -> tuple[list[str], list[list[str]]]:
    """The class gallery of cross-modal retrieval: each label with its prompts (of every dataset that has it)."""
    prompts: dict[str, list[str]] = defaultdict(list)
    for dataset, label in sorted(set(zip(embeddings.datasets, embeddings.labels))):
        prompts[label] += [p for p in class_prompts(dataset, label) if p not in prompts[label]]
    names = sorted(prompts)
    return names, [prompts[name] for name in names]


# A small ensemble of SAR prompt templates a query can be embedded through (the mean of its embeddings),
# as zero-shot classification does with its class prompts; measured against the raw text (docs/evaluation.md).
QUERY_TEMPLATES = ("{}", "a SAR image of {}", "a radar image of {}", "a synthetic aperture radar image of {}",
                   "SAR chip showing {}")


def embed_queries(model: TextEncoder, texts: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
    """(len(texts), D) query vectors: each text as it is, or the normalized mean over `templates`."""
    if not templates:
        return np.asarray(model.encode_texts(list(texts)), np.float64)
    vectors = []
    for text in texts:
        mean = np.asarray(model.encode_texts([t.format(text) for t in templates]), np.float64).mean(axis=0)
        vectors.append(mean / np.linalg.norm(mean))
    return np.stack(vectors)


def query_precision_rows(scores: np.ndarray, items: Sequence[Tile], queries: Sequence[TileQuery]) -> list[dict[str, Any]]:
    """Per query (a row of `scores` over `items`): its relevant items by its rule, chance (their share) and P@10
    (None without a relevant item)."""
    rows = []
    for i, query in enumerate(queries):
        relevant = np.array([bool(query.relevant(item)) for item in items], bool)
        n = int(relevant.sum())
        p10 = float(precision_at_k(scores[i: i + 1], relevant[None], PRECISION_K)[0]) if n else None
        rows.append({"kind": query.kind, "text": query.text, "rule": query.rule, "n_relevant": n,
                     "chance": round(n / len(items), 4) if len(items) else None,
                     "P@10": None if p10 is None else round(p10, 4)})
    return rows


def summarize_queries(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean P@10 and mean chance over the scored queries, overall and per kind."""
    scored = [r for r in rows if r["P@10"] is not None]
    by_kind = {}
    for kind in dict.fromkeys(r["kind"] for r in scored):
        group = [r for r in scored if r["kind"] == kind]
        by_kind[kind] = {"mean_P@10": round(float(np.mean([r["P@10"] for r in group])), 4),
                         "mean_chance": round(float(np.mean([r["chance"] for r in group])), 4), "queries": len(group)}
    return {"mean_P@10": round(float(np.mean([r["P@10"] for r in scored])), 4) if scored else None,
            "mean_chance": round(float(np.mean([r["chance"] for r in scored])), 4) if scored else None,
            "n_scored": len(scored), "n_queries": len(rows), "by_kind": by_kind}


def labelled_items(embeddings: LabelledEmbeddings) -> list[dict[str, Any]]:
    """The labelled images as items of the tile relevance rules: each holds its label."""
    return [{"dataset": d, "label": label} for d, label in zip(embeddings.datasets, embeddings.labels)]


def paraphrase_report(sarclip: TextEncoder, embeddings: LabelledEmbeddings,
                      paraphrases: Sequence[TileQuery] = PARAPHRASES, *,
                      templates: Sequence[str] | None = None) -> dict[str, Any]:
    """Text→image P@10 with chance of each paraphrase query over the labelled images; the means are over the
    queries with a relevant image (a count or context query has none among whole chips)."""
    scores = embed_queries(sarclip, [q.text for q in paraphrases], templates) @ embeddings.vectors.astype(np.float64).T
    rows = query_precision_rows(scores, labelled_items(embeddings), paraphrases)
    return {"queries": rows, **summarize_queries(rows)}


def word_pair_report(sarclip: TextEncoder, vectors: np.ndarray, items: Sequence[Tile],
                     pairs: Sequence[WordPair] = WORD_PAIRS, *, templates: Sequence[str] | None = None) -> dict[str, Any]:
    """Cross-domain word pairs ("cargo truck" vs "cargo ship"): over the items of either side, each text's P@10
    (chance: its side's share) and the pairwise accuracy of each side (its items score higher with their own
    text than with the other; ties wrong), balanced over the two sides (chance 0.5)."""
    texts = [q.text for pair in pairs for q in (pair.first, pair.second)]
    text_vectors = embed_queries(sarclip, texts, templates)
    vectors = np.asarray(vectors, np.float64)
    rows = []
    for p, pair in enumerate(pairs):
        sides = (pair.first, pair.second)
        member = np.array([[bool(q.relevant(item)) for item in items] for q in sides], bool).reshape(2, len(items))
        only = member & ~member[::-1]  # an item of both sides judges neither
        gallery = only.any(axis=0)
        scores = text_vectors[2 * p: 2 * p + 2] @ vectors[gallery].T if gallery.any() else np.zeros((2, 0))
        entry: dict[str, Any] = {"n": int(gallery.sum())}
        accuracies = []
        for s, query in enumerate(sides):
            mine = only[s][gallery]
            n = int(mine.sum())
            p10 = float(precision_at_k(scores[s: s + 1], mine[None], PRECISION_K)[0]) if n else None
            wins = float((scores[s][mine] > scores[1 - s][mine]).mean()) if n else None
            if wins is not None:
                accuracies.append(wins)
            entry["first" if s == 0 else "second"] = {
                "text": query.text, "domain": query.kind, "rule": query.rule, "n_relevant": n,
                "chance": round(n / int(gallery.sum()), 4) if gallery.any() else None,
                "P@10": None if p10 is None else round(p10, 4), "own_text_wins": None if wins is None else round(wins, 4)}
        entry["pairwise_balanced"] = round(float(np.mean(accuracies)), 4) if len(accuracies) == 2 else None
        rows.append(entry)
    judged = [r["pairwise_balanced"] for r in rows if r["pairwise_balanced"] is not None]
    p10s = [side["P@10"] for r in rows for side in (r["first"], r["second"]) if side["P@10"] is not None]
    chances = [side["chance"] for r in rows for side in (r["first"], r["second"]) if side["P@10"] is not None]
    return {"pairs": rows, "chance_pairwise": 0.5,
            "mean_pairwise_balanced": round(float(np.mean(judged)), 4) if judged else None,
            "mean_P@10": round(float(np.mean(p10s)), 4) if p10s else None,
            "mean_chance": round(float(np.mean(chances)), 4) if chances else None}


# --- vehicles cut from the MSTAR composite scenes -------------------------------------------------

COMPOSITE_DATASET = "MSTAR-composite-scenes"
MSTAR_CLASSES = tuple(sorted(VEHICLE_NAMES))


def composite_crops(root: str | Path, split: str, size: int,
                    classes: Sequence[str] = MSTAR_CLASSES) -> tuple[np.ndarray, list[str]]:
    """Every labelled vehicle of the split's MSTAR composite scenes, cut out by its box as the trainer's box
    samples are (`data.box_samples`), decoded to (N, size, size) chips; with their class names."""
    root = Path(root)
    samples = [s for s in training_data.box_samples(root, load_manifest(root), (split,), (COMPOSITE_DATASET,),
                                                    n_captions=1, seed=0) if s.label in classes]
    return training_data.load_chips(samples, size), [s.label for s in samples]


def composite_crop_report(sarclip: Any, root: str | Path, split: str) -> dict[str, Any]:
    """Zero-shot top-1 over the ten MSTAR classes (their class prompt ensembles) of the vehicles cut from the
    split's composite scenes: the MSTAR targets on other clutter, at another scale and processing chain."""
    chips, names = composite_crops(root, split, sarclip.image_size)
    if not names:
        return {"n": 0, "top1": None, "note": f"no boxed {COMPOSITE_DATASET} vehicle in split {split!r}"}
    classes = list(MSTAR_CLASSES)
    metrics = zero_shot_metrics(sarclip.encode_images(chips), class_text_embeddings(sarclip, "MSTAR-SOC", classes),
                                np.array([classes.index(n) for n in names]), classes)
    return metrics


def evaluation_report(sarclip: Any, embeddings: LabelledEmbeddings, root: str | Path | None = None) -> dict[str, Any]:
    """The full report on one split's labelled images (see docs/evaluation.md); with the archive `root`, also
    the composite-scene crops of the split."""
    if not len(embeddings.labels):
        raise InputError(f"split {embeddings.source.get('split')!r} of {embeddings.source.get('path')} has no "
                         "labelled whole images to evaluate (tiled scenes are left out)")
    started = time.perf_counter()
    class_labels, prompt_sets = retrieval_class_texts(embeddings)
    class_vectors = _ensemble_vectors(sarclip, prompt_sets)
    report: dict[str, Any] = {
        "split": embeddings.source.get("split"),
        "source": embeddings.source,
        "model": {"name": sarclip.name, "checkpoint_sha256": sarclip.checkpoint_sha256,
                  "commit": (sarclip.meta or {}).get("commit")},
        "n_images": len(embeddings.labels),
        "images_per_dataset": {d: embeddings.datasets.count(d) for d in sorted(set(embeddings.datasets))},
        "classes": class_labels,
        "zero_shot": zero_shot_report(sarclip, embeddings),
        **retrieval_metrics(embeddings.vectors, embeddings.labels, class_vectors, class_labels),
        "paraphrase": paraphrase_report(sarclip, embeddings),
        "word_pairs": word_pair_report(sarclip, embeddings.vectors, labelled_items(embeddings)),
    }
    split = str(embeddings.source.get("split"))
    if root is not None and (Path(root) / "manifest.csv").is_file():
        report["composite_crops"] = composite_crop_report(sarclip, root, split)
    else:
        report["composite_crops"] = {"n": 0, "top1": None,
                                     "note": "the index's archive (info.json archive_root) is not readable here"}
    report["metric_seconds"] = round(time.perf_counter() - started, 2)
    return _nan_to_none(report)


def evaluate_manifest(sarclip: Any, root: str | Path, split: str,
                      progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """The report for a manifest split, embedding its labelled images with `sarclip`."""
    return evaluation_report(sarclip, manifest_embeddings(sarclip, root, split, progress), root)


def evaluate_index(engine: Any, split: str) -> dict[str, Any]:
    """The report for an index's stored vectors of `split`; texts embedded by the index's own model."""
    return evaluation_report(engine.model, index_embeddings(engine, split), engine.info.get("archive_root"))


def zero_shot_accuracy(sarclip: Any, root: Path, split: str) -> dict[str, Any]:
    """The trainer's number: top-1 zero-shot accuracy per dataset of ZERO_SHOT_DATASETS, with chance.

    Classes are those of ZERO_SHOT_DATASETS (so runs stay comparable with the shipped checkpoint's
    metrics); `evaluate_manifest` reports every dataset and label present instead.
    """
    samples = [s for s in training_data.manifest_samples(root, (split,)) if s.window is None]
    by_dataset: dict[str, list] = defaultdict(list)
    for sample in samples:
        allowed = ZERO_SHOT_DATASETS.get(sample.dataset, ())
        if sample.dataset in ZERO_SHOT_DATASETS and (allowed is None or sample.label in allowed):
            by_dataset[sample.dataset].append(sample)
    report: dict[str, Any] = {}
    for dataset, items in sorted(by_dataset.items()):
        labels = sorted({s.label for s in items})
        chips = training_data.load_chips(items, sarclip.image_size)  # the view the indexer embeds
        truth = np.array([labels.index(s.label) for s in items])
        metrics = zero_shot_metrics(sarclip.encode_images(chips), class_text_embeddings(sarclip, dataset, labels),
                                    truth, labels)
        report[dataset] = {"top1": metrics["top1"], "n": len(items), "classes": len(labels), "chance": metrics["chance"]}
        log.info("zero-shot %s on %s: top-1 %.3f (%d images)", dataset, split, report[dataset]["top1"], len(items))
    return report
