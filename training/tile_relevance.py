"""What a tile (or a whole labelled image) holds, for relevance rules of text queries in evaluation.

A *tile* here is a mapping with the catalog's columns: `tile_objects` / `tile_n_objects` / `tile_label`
(the manifest's boxes assigned to tiles by box centre, `ingest/objects.py`), `label`, `dataset`,
`scene_type`, `objects`. A labelled image without tile columns (a row of `evaluate.LabelledEmbeddings`)
holds its label. The rules of `tile_eval.QUERIES`, `paraphrases.PARAPHRASES` and `paraphrases.WORD_PAIRS`
are written with these helpers, so one rule scores tiles (`eval --tiles`) and whole images (`eval`) alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sarclip_search.ingest.objects import NO_OBJECT, parse_boxes
from sarclip_search.training.captions import SHIP_LABELS, SHIP_SCENE_DATASETS, VEHICLE_NAMES, sea_context

SHIP_NAMES = frozenset({"ship", *SHIP_LABELS})
VEHICLES = frozenset(VEHICLE_NAMES)
Tile = Mapping[str, Any]


@dataclass(frozen=True)
class TileQuery:
    """A text query and the rule that makes a tile relevant to it (`rule`: the rule in words, for tables)."""

    kind: str  # class, counting, context, empty, oil, land cover, flood
    text: str
    relevant: Callable[[Tile], bool]
    rule: str = ""


def held(tile: Tile) -> list[str]:
    """What a tile holds: its boxed objects, none for a boxed scene's empty tile, else its (scene's) label."""
    if tile.get("tile_objects"):
        return [box.name for box in parse_boxes(tile["tile_objects"])]
    if tile.get("tile_n_objects") == 0:
        return []
    label = tile.get("tile_label") or tile.get("label")
    return [str(label)] if label else []


def labels(tile: Tile) -> set[str]:
    """The class names a tile answers to: what it holds and its own label (`cargo` for a chip whose box is a
    `ship`)."""
    names = set(held(tile))
    label = tile.get("tile_label") or tile.get("label")
    if names and label and label != NO_OBJECT:
        names.add(str(label))
    return names


def ships(tile: Tile) -> int:
    return sum(name in SHIP_NAMES for name in held(tile))


def vehicles(tile: Tile) -> int:
    return sum(name in VEHICLES for name in held(tile))


def has(tile: Tile, *names: str) -> bool:
    """The tile answers to one of `names` (a class it holds or its own label)."""
    return bool(labels(tile) & set(names))


def sea_scene(tile: Tile) -> bool:
    """A tile of a ship scene (HRSID, SAR-Ship-Dataset, MKLab oil-spill), where empty sea can be judged."""
    return tile.get("dataset") in SHIP_SCENE_DATASETS


def context(tile: Tile) -> str:
    """offshore, inshore, coastal or '' (unknown) from the tile's `scene_type`."""
    return sea_context(tile)


def near_land(tile: Tile) -> bool:
    return context(tile) in ("inshore", "coastal")


def land_cover(tile: Tile, *words: str) -> bool:
    """A BigEarthNet patch whose CORINE labels (`objects`) contain one of `words`."""
    text = str(tile.get("objects") or "").lower()
    return tile.get("dataset") == "BigEarthNet-S1" and any(word in text for word in words)
