"""Queries as analysts type them, for the robustness checks of `sarsearch eval`; and word-vs-object pairs.

`PARAPHRASES`: texts no caption template or class prompt produces verbatim (tests/training/test_paraphrases.py
renders `captions.make_captions` and `captions.class_prompts` over every kind of row, with and without their
image words and sensor suffixes, to check it), each with the rule that makes a tile relevant (what it holds:
boxed objects and their count, its scene's sea context from `scene_type`, land cover; see `tile_relevance`).
The score is text→tile precision@10 with chance (the share of relevant items): over the labelled whole
images of a split in `sarsearch eval` (where a chip holds its label), over every tile of a split in
`sarsearch eval --tiles`. A query without a relevant item in the split is not scored.

`WORD_PAIRS`: two texts that share a word but name objects of different domains ("cargo truck" / "cargo
ship", "tank" / "tanker"): over the items of both domains, does each text find its own, and does each item
score higher with its own text than with the other (the object wins over the word)?
"""

from __future__ import annotations

from dataclasses import dataclass

from sarclip_search.training.tile_relevance import (
    TileQuery,
    context,
    has,
    held,
    land_cover,
    near_land,
    sea_scene,
    ships,
    vehicles,
)

TANKS = ("T62", "T72")
APCS = ("BTR60", "BTR70")
OIL = ("oil_spill",)
LOOK_ALIKES = ("look_alike", "oil_spill_look_alike")


def _open_water(tile) -> bool:  # a ship scene away from land, or a ship chip whose context is unknown
    return not near_land(tile)


def _empty_sea(tile) -> bool:
    """A ship-scene tile that holds nothing: no ship, no slick (sea surface only)."""
    return sea_scene(tile) and not any(name != "sea_surface" for name in held(tile))


PARAPHRASES: tuple[TileQuery, ...] = (
    # vehicles by what they are, in words the templates do not use
    TileQuery("class", "a wheeled armoured personnel carrier", lambda t: has(t, *APCS), "BTR60 or BTR70"),
    TileQuery("class", "a tracked infantry carrier", lambda t: has(t, "BMP2"), "BMP2"),
    TileQuery("class", "an amphibious reconnaissance car", lambda t: has(t, "BRDM2"), "BRDM2"),
    TileQuery("class", "an armoured scout car on patrol", lambda t: has(t, "BRDM2"), "BRDM2"),
    TileQuery("class", "a mobile artillery piece on tracks", lambda t: has(t, "2S1"), "2S1"),
    TileQuery("class", "an anti-aircraft gun vehicle", lambda t: has(t, "ZSU234"), "ZSU234"),
    TileQuery("class", "a radar-guided flak tank", lambda t: has(t, "ZSU234"), "ZSU234"),
    TileQuery("class", "a main battle tank in the desert", lambda t: has(t, *TANKS), "T62 or T72"),
    TileQuery("class", "a tank with a turret and a long gun", lambda t: has(t, *TANKS), "T62 or T72"),
    TileQuery("class", "an army lorry", lambda t: has(t, "ZIL131"), "ZIL131"),
    TileQuery("class", "a tracked dozer with a front blade", lambda t: has(t, "D7"), "D7"),
    TileQuery("class", "earth-moving machinery", lambda t: has(t, "D7"), "D7"),
    # ships by type
    TileQuery("class", "a merchant freighter", lambda t: has(t, "cargo"), "cargo"),
    TileQuery("class", "a container vessel stacked with boxes", lambda t: has(t, "cargo"), "cargo"),
    TileQuery("class", "an oil tanker ship", lambda t: has(t, "tanker"), "tanker"),
    TileQuery("class", "a tanker carrying crude oil", lambda t: has(t, "tanker"), "tanker"),
    # counts
    TileQuery("counting", "two ships side by side", lambda t: ships(t) == 2, "2 ships"),
    TileQuery("counting", "a crowded anchorage with many ships", lambda t: ships(t) >= 3, ">= 3 ships"),
    TileQuery("counting", "several armoured vehicles parked together", lambda t: vehicles(t) >= 3, ">= 3 vehicles"),
    TileQuery("counting", "a pair of military vehicles close together", lambda t: vehicles(t) == 2, "2 vehicles"),
    TileQuery("counting", "a group of vehicles in a field", lambda t: vehicles(t) >= 2, ">= 2 vehicles"),
    TileQuery("counting", "just one tank on its own", lambda t: vehicles(t) == 1 and has(t, *TANKS),
              "1 vehicle, a T62 or T72"),
    # context
    TileQuery("context", "a ship sailing on the open ocean", lambda t: ships(t) >= 1 and _open_water(t),
              ">= 1 ship, not inshore/coastal"),
    TileQuery("context", "a lone vessel in open water", lambda t: ships(t) == 1 and _open_water(t),
              "1 ship, not inshore/coastal"),
    TileQuery("context", "ships moored in a harbour", lambda t: ships(t) >= 1 and sea_scene(t) and near_land(t),
              ">= 1 ship, ship scene inshore/coastal"),
    TileQuery("context", "vehicles hidden among trees and buildings",
              lambda t: t.get("dataset") == "MSTAR-composite-scenes" and vehicles(t) >= 1,
              "composite-scene tile with >= 1 vehicle"),
    TileQuery("context", "a ship next to an oil slick", lambda t: ships(t) >= 1 and has(t, *OIL),
              ">= 1 ship and an oil spill"),
    # empty tiles
    TileQuery("empty", "an empty patch of sea", lambda t: _empty_sea(t) and context(t) != "inshore",
              "ship-scene tile holding nothing, not inshore"),
    TileQuery("empty", "calm water with no boats at all", lambda t: _empty_sea(t) and context(t) == "offshore",
              "offshore ship-scene tile holding nothing"),
    TileQuery("empty", "a stretch of coast with no vessels", lambda t: _empty_sea(t) and near_land(t),
              "inshore/coastal ship-scene tile holding nothing"),
    TileQuery("empty", "grassland with nothing parked on it",
              lambda t: t.get("dataset") == "MSTAR-composite-scenes" and vehicles(t) == 0,
              "composite-scene tile without vehicles"),
    # oil
    TileQuery("oil", "an oil slick on the water", lambda t: has(t, *OIL), "an oil spill"),
    TileQuery("oil", "a dark patch that looks like oil but is not",
              lambda t: has(t, *LOOK_ALIKES) and not has(t, *OIL), "a look-alike, no oil spill"),
    # land and water
    TileQuery("land cover", "fields and meadows", lambda t: land_cover(t, "arable", "pasture"),
              "BigEarthNet arable land or pastures"),
    TileQuery("land cover", "a lake", lambda t: t.get("label") == "water_body" or land_cover(t, "water bodies"),
              "water_body, or BigEarthNet water bodies"),
    TileQuery("flood", "flooded farmland", lambda t: t.get("label") == "flood_water", "flood_water"),
    TileQuery("flood", "land under flood water", lambda t: t.get("label") == "flood_water", "flood_water"),
)


@dataclass(frozen=True)
class WordPair:
    """Two texts sharing a word across domains, each with the rule of its own objects."""

    first: TileQuery
    second: TileQuery


WORD_PAIRS: tuple[WordPair, ...] = (
    WordPair(TileQuery("vehicle", "cargo truck", lambda t: has(t, "ZIL131"), "ZIL131"),
             TileQuery("ship", "cargo ship", lambda t: has(t, "cargo"), "cargo")),
    WordPair(TileQuery("vehicle", "tank", lambda t: has(t, *TANKS), "T62 or T72"),
             TileQuery("ship", "tanker", lambda t: has(t, "tanker"), "tanker")),
    WordPair(TileQuery("vehicle", "armoured personnel carrier", lambda t: has(t, *APCS), "BTR60 or BTR70"),
             TileQuery("ship", "bulk carrier", lambda t: has(t, "cargo"), "cargo")),
    WordPair(TileQuery("vehicle", "armoured car", lambda t: has(t, "BRDM2"), "BRDM2"),
             TileQuery("ship", "car carrier", lambda t: has(t, "cargo"), "cargo")),
)
