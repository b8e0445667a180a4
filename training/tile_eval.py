"""Tile-level retrieval with box relevance: does a text query find the TILES that hold what it names?

`sarsearch eval --tiles` scores text queries against every tile of one split of an index, with relevance
read from what each tile holds (the catalog's `tile_objects` / `tile_n_objects`, from the manifest's boxes;
a tile of an unboxed image holds its label) and from its scene's context (`scene_type`: offshore, inshore,
coastal). Query types: class ("ship", "T72 tank"), counting ("two ships", "several ships"), context ("ship
near harbor", "open sea without ships"), land cover and flood. Each query's P@10 comes with its chance (the
fraction of relevant tiles), and "ship near harbor" also with the AUC of inshore/coastal ship tiles against
open-sea ship tiles (0.5: no preference; issue 16 asks harbour tiles first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sarclip_search.errors import InputError
from sarclip_search.ingest.objects import NO_OBJECT, parse_boxes
from sarclip_search.training.captions import SHIP_LABELS, SHIP_SCENE_DATASETS, VEHICLE_NAMES, sea_context
from sarclip_search.training.evaluate import PRECISION_K, precision_at_k

SHIP_NAMES = frozenset({"ship", *SHIP_LABELS})
VEHICLES = frozenset(VEHICLE_NAMES)


@dataclass(frozen=True)
class TileQuery:
    kind: str  # class, counting, context, land cover, flood
    text: str
    relevant: Callable[[Mapping[str, Any]], bool]


def held(tile: Mapping[str, Any]) -> list[str]:
    """What a tile holds: its boxed objects, none for a boxed scene's empty tile, else its (scene's) label."""
    if tile.get("tile_objects"):
        return [box.name for box in parse_boxes(tile["tile_objects"])]
    if tile.get("tile_n_objects") == 0:
        return []
    label = tile.get("tile_label") or tile.get("label")
    return [str(label)] if label else []


def labels(tile: Mapping[str, Any]) -> set[str]:
    """The class names a tile answers to: what it holds and its own label (`cargo` for a chip whose box is a
    `ship`)."""
    names = set(held(tile))
    label = tile.get("tile_label") or tile.get("label")
    if names and label and label != NO_OBJECT:
        names.add(str(label))
    return names


def ships(tile: Mapping[str, Any]) -> int:
    return sum(name in SHIP_NAMES for name in held(tile))


def vehicles(tile: Mapping[str, Any]) -> int:
    return sum(name in VEHICLES for name in held(tile))


def _sea_scene(tile: Mapping[str, Any]) -> bool:
    return tile.get("dataset") in SHIP_SCENE_DATASETS


def _land_cover(word: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda t: t.get("dataset") == "BigEarthNet-S1" and word in str(t.get("objects") or "").lower()


QUERIES: tuple[TileQuery, ...] = (
    TileQuery("class", "ship", lambda t: ships(t) >= 1),
    TileQuery("class", "T72 tank", lambda t: "T72" in labels(t)),
    TileQuery("class", "BMP2 infantry fighting vehicle", lambda t: "BMP2" in labels(t)),
    TileQuery("class", "military vehicle", lambda t: vehicles(t) >= 1),
    TileQuery("class", "oil spill", lambda t: "oil_spill" in labels(t)),
    TileQuery("class", "cargo ship", lambda t: "cargo" in labels(t)),
    TileQuery("class", "tanker", lambda t: "tanker" in labels(t)),
    TileQuery("counting", "a single ship", lambda t: ships(t) == 1),
    TileQuery("counting", "two ships", lambda t: ships(t) == 2),
    TileQuery("counting", "several ships close together", lambda t: ships(t) >= 3),
    TileQuery("counting", "two military vehicles", lambda t: vehicles(t) == 2),
    TileQuery("context", "ship near harbor",
              lambda t: ships(t) >= 1 and _sea_scene(t) and sea_context(t) in ("inshore", "coastal")),
    TileQuery("context", "a ship alone on the open sea",
              lambda t: ships(t) == 1 and _sea_scene(t) and sea_context(t) == "offshore"),
    TileQuery("context", "open sea without ships",
              lambda t: _sea_scene(t) and ships(t) == 0 and sea_context(t) == "offshore"),
    TileQuery("context", "an empty field without vehicles",
              lambda t: t.get("dataset") == "MSTAR-composite-scenes" and vehicles(t) == 0),
    TileQuery("land cover", "farmland", _land_cover("arable")),
    TileQuery("land cover", "forest", _land_cover("forest")),
    TileQuery("flood", "flooded fields", lambda t: t.get("label") == "flood_water"),
    TileQuery("flood", "water", lambda t: t.get("label") in ("flood_water", "water_body")),
)


def _auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties half (None when either side is empty)."""
    if not len(positive) or not len(negative):
        return None
    diff = positive[:, None] - negative[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


# A small ensemble of SAR prompt templates a query can be embedded through (the mean of its embeddings),
# as zero-shot classification does with its class prompts; measured against the raw text (docs/evaluation.md).
QUERY_TEMPLATES = ("{}", "a SAR image of {}", "a radar image of {}", "a synthetic aperture radar image of {}",
                   "SAR chip showing {}")


def embed_queries(model: Any, texts: list[str], templates: tuple[str, ...] | None = None) -> np.ndarray:
    """(len(texts), D) query vectors: each text as it is, or the normalized mean over `templates`."""
    if not templates:
        return np.asarray(model.encode_texts(texts), np.float64)
    vectors = []
    for text in texts:
        mean = np.asarray(model.encode_texts([t.format(text) for t in templates]), np.float64).mean(axis=0)
        vectors.append(mean / np.linalg.norm(mean))
    return np.stack(vectors)


def tile_retrieval_report(engine: Any, split: str, queries: tuple[TileQuery, ...] = QUERIES, *,
                          templates: tuple[str, ...] | None = None) -> dict[str, Any]:
    """P@10 (with chance) of each tile query over the tiles of `split` in the index of `engine`; with
    `templates`, each query embedded through that prompt ensemble (`embed_queries`)."""
    columns = set(engine.catalog.columns())
    if "tile_objects" not in columns:
        raise InputError(f"the index at {engine.generation.path.parent} has no per-tile objects (catalog schema "
                         "older than v3); re-run `sarsearch index` on its archive to fill them")
    if "split" not in columns:
        raise InputError(f"the index at {engine.generation.path.parent} has no split column; index an archive "
                         "whose manifest.csv gives it")
    ids = engine.catalog.tile_ids("split = ?", [split])
    if not len(ids):
        raise InputError(f"split {split!r} has no tiles in the index at {engine.generation.path.parent}")
    tiles = engine.catalog.fetch_tiles(ids.tolist())
    order = np.array([int(t["tile_id"]) for t in tiles], np.int64)
    vectors = engine.vectors.vectors(order).astype(np.float64)
    texts = [q.text for q in queries]
    scores = embed_queries(engine.model, texts, templates) @ vectors.T
    rows = []
    for i, query in enumerate(queries):
        relevant = np.array([bool(query.relevant(t)) for t in tiles])
        n = int(relevant.sum())
        row: dict[str, Any] = {"kind": query.kind, "text": query.text, "n_relevant": n,
                               "chance": round(n / len(tiles), 4)}
        row["P@10"] = round(float(precision_at_k(scores[i: i + 1], relevant[None], PRECISION_K)[0]), 4) if n else None
        if query.text == "ship near harbor":
            offshore = np.array([ships(t) >= 1 and _sea_scene(t) and sea_context(t) == "offshore" for t in tiles])
            auc = _auc(scores[i][relevant], scores[i][offshore])
            row["auc_vs_offshore_ships"] = None if auc is None else round(auc, 4)
        rows.append(row)
    scored = [r for r in rows if r["P@10"] is not None]
    by_kind = {}
    for kind in dict.fromkeys(r["kind"] for r in scored):
        group = [r for r in scored if r["kind"] == kind]
        by_kind[kind] = {"mean_P@10": round(float(np.mean([r["P@10"] for r in group])), 4),
                         "mean_chance": round(float(np.mean([r["chance"] for r in group])), 4), "queries": len(group)}
    return {
        "split": split, "n_tiles": len(tiles), "queries": rows, "by_kind": by_kind,
        "templates": list(templates) if templates else None,
        "mean_P@10": round(float(np.mean([r["P@10"] for r in scored])), 4) if scored else None,
        "mean_chance": round(float(np.mean([r["chance"] for r in scored])), 4) if scored else None,
        "model": {"checkpoint_sha256": (engine.info.get("model") or {}).get("checkpoint_sha256")},
    }
