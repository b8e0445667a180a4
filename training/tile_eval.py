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

from typing import Any

import numpy as np

from sarclip_search.errors import InputError
from sarclip_search.training.evaluate import (
    QUERY_TEMPLATES,
    embed_queries,
    query_precision_rows,
    summarize_queries,
    word_pair_report,
)
from sarclip_search.training.paraphrases import PARAPHRASES, WORD_PAIRS
from sarclip_search.training.tile_relevance import (  # noqa: F401  (held, labels, vehicles: this module's API too)
    SHIP_NAMES,
    VEHICLES,
    TileQuery,
    held,
    labels,
    land_cover,
    sea_context,
    ships,
    vehicles,
)
from sarclip_search.training.tile_relevance import sea_scene as _sea_scene

__all__ = ["QUERIES", "QUERY_TEMPLATES", "TileQuery", "embed_queries", "held", "labels", "ships", "tile_retrieval_report",
           "vehicles"]


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
    TileQuery("land cover", "farmland", lambda t: land_cover(t, "arable")),
    TileQuery("land cover", "forest", lambda t: land_cover(t, "forest")),
    TileQuery("flood", "flooded fields", lambda t: t.get("label") == "flood_water"),
    TileQuery("flood", "water", lambda t: t.get("label") in ("flood_water", "water_body")),
)


def _auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties half (None when either side is empty)."""
    if not len(positive) or not len(negative):
        return None
    diff = positive[:, None] - negative[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def tile_retrieval_report(engine: Any, split: str, queries: tuple[TileQuery, ...] = QUERIES, *,
                          templates: tuple[str, ...] | None = None, paraphrases: tuple[TileQuery, ...] = PARAPHRASES,
                          pairs: tuple = WORD_PAIRS) -> dict[str, Any]:
    """P@10 (with chance) of each tile query over the tiles of `split` in the index of `engine`; with
    `templates`, each query embedded through that prompt ensemble (`embed_queries`). Also the paraphrase
    queries (`paraphrases.PARAPHRASES`) and the word-vs-object pairs (`paraphrases.WORD_PAIRS`) on the same
    tiles (empty tuples leave them out)."""
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
    query_vectors = embed_queries(engine.model, texts, templates)
    scores = query_vectors @ vectors.T
    rows = query_precision_rows(scores, tiles, queries)
    for i, (query, row) in enumerate(zip(queries, rows)):
        if query.text == "ship near harbor":
            relevant = np.array([bool(query.relevant(t)) for t in tiles])
            offshore = np.array([ships(t) >= 1 and _sea_scene(t) and sea_context(t) == "offshore" for t in tiles])
            auc = _auc(scores[i][relevant], scores[i][offshore])
            row["auc_vs_offshore_ships"] = None if auc is None else round(auc, 4)
    summary = summarize_queries(rows)
    report: dict[str, Any] = {
        "split": split, "n_tiles": len(tiles), "queries": rows, "by_kind": summary["by_kind"],
        "templates": list(templates) if templates else None,
        "mean_P@10": summary["mean_P@10"], "mean_chance": summary["mean_chance"],
        "model": {"checkpoint_sha256": (engine.info.get("model") or {}).get("checkpoint_sha256")},
    }
    if paraphrases:
        paraphrase_rows = query_precision_rows(embed_queries(engine.model, [q.text for q in paraphrases], templates)
                                               @ vectors.T, tiles, paraphrases)
        report["paraphrase"] = {"queries": paraphrase_rows, **summarize_queries(paraphrase_rows)}
    if pairs:
        report["word_pairs"] = word_pair_report(engine.model, vectors, tiles, pairs, templates=templates)
    return report
