"""Captions built from labels and metadata (there are no human captions for SAR).

Each image gets several captions from templates with synonyms, so the text tower learns that
"T-72 tank", "main battle tank" and "T72" describe the same chips. A caption group key (`caption_key`)
says which images share a meaning; the contrastive loss treats images of one key as positives.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

from sarclip_search.errors import MetadataError
from sarclip_search.ingest.objects import boxes_in_window, count_words, parse_boxes

# MSTAR class -> (spoken names). The first is the canonical display name.
VEHICLE_NAMES: dict[str, tuple[str, ...]] = {
    "2S1": ("2S1", "2S1 Gvozdika"),
    "BMP2": ("BMP2", "BMP-2"),
    "BRDM2": ("BRDM2", "BRDM-2"),
    "BTR60": ("BTR60", "BTR-60"),
    "BTR70": ("BTR70", "BTR-70"),
    "D7": ("D7", "Caterpillar D7"),
    "T62": ("T62", "T-62"),
    "T72": ("T72", "T-72"),
    "ZIL131": ("ZIL131", "ZIL-131"),
    "ZSU234": ("ZSU234", "ZSU-23-4", "Shilka"),
}

# target kind (manifest `target_kind`) -> synonyms, first is canonical.
KIND_SYNONYMS: dict[str, tuple[str, ...]] = {
    # the words a vehicle shares with a ship ("tank"/"tanker", "carrier", "cargo") are used here on purpose:
    # the hard-negative batches (training/hard_negatives.py) teach the model the object behind the word
    "main battle tank": ("main battle tank", "tank", "battle tank", "armored tank"),
    "armored personnel carrier": ("armored personnel carrier", "APC", "wheeled armored vehicle",
                                  "armoured personnel carrier"),
    "infantry fighting vehicle": ("infantry fighting vehicle", "IFV", "tracked armored vehicle",
                                  "tracked armoured personnel carrier"),
    "armored reconnaissance vehicle": ("armored reconnaissance vehicle", "scout car", "armored car"),
    "self-propelled howitzer": ("self-propelled howitzer", "self-propelled artillery", "artillery vehicle"),
    "self-propelled anti-aircraft gun": ("self-propelled anti-aircraft gun", "air defense vehicle", "anti-aircraft vehicle"),
    "bulldozer": ("bulldozer", "dozer", "construction vehicle"),
    "military cargo truck": ("military cargo truck", "army truck", "military truck", "cargo truck"),
    "cargo ship": ("cargo ship", "freighter", "cargo vessel"),
    "tanker": ("tanker", "tanker ship", "oil tanker"),
    "ship (other AIS type)": ("ship", "vessel", "boat"),
    "ship": ("ship", "vessel", "boat"),
}

SHIP_LABELS: dict[str, str] = {
    "cargo": "cargo ship",
    "tanker": "tanker",
    "other_type": "ship (other AIS type)",
    "passenger": "ship",
    "tug": "ship",
    "law_enforcement": "ship",
    "search_and_rescue_vessel": "ship",
}

IMAGE_WORDS = ("a SAR image of", "a radar image of", "a synthetic aperture radar image of", "SAR chip showing", "")
WATER_WORDS = ("surface water", "a lake", "a river", "water bodies", "lakes and rivers")
FLOOD_WORDS = ("flood water", "flooded fields", "a flooded area", "inundated land")
DRY_LAND_WORDS = ("dry land with no flood water", "fields without flooding", "land, not flooded")
# Ship scenes captioned per tile, from the ships whose box centre the tile holds, with their sea context.
SHIP_SCENE_DATASETS = ("HRSID", "SAR-Ship-Dataset", "MKLab-Oil-Spill")
# scene context (from `scene_type`) -> how a caption places ships, and how it names the sea without them
SEA_CONTEXT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "offshore": (("on the open sea", "offshore", "far from the coast"),
                 ("open sea without ships", "empty open water, no vessels", "sea surface far from land, no ships")),
    "inshore": (("near a harbor", "in a port", "close to the coast"),
                ("harbor water without ships", "a coastline with no vessels", "quay and coastal water, no ships")),
    "coastal": (("near the coast", "close to land", "in coastal waters"),
                ("coastal water without ships", "sea and land, no vessels", "a coastline with no ships")),
    "": (("at sea", "on the water"), ("sea surface with no ships", "water without vessels")),
}
# CORINE land-cover labels (BigEarthNet's `objects`) -> plain words
LAND_COVER_WORDS: dict[str, str] = {
    "arable": "farmland", "pasture": "pastures", "agricultur": "farmland with natural vegetation",
    "cultivation": "mixed small fields", "forest": "forest", "woodland": "woodland and shrub",
    "peat": "peat bog", "water": "water bodies", "urban": "built-up area",
}


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _sensor_words(row: Mapping[str, object]) -> list[str]:
    words = []
    band = str(row.get("band") or row.get("sar:frequency_band") or "")
    if band in ("X", "C", "L"):
        words.append(f"{band}-band")
    sensor = str(row.get("sensor") or "")
    if sensor.startswith("Sentinel-1"):
        words.append("Sentinel-1")
    elif sensor.startswith("KOMPSAT-5"):
        words.append("KOMPSAT-5")
    return words


def _polarization(row: Mapping[str, object]) -> str | None:
    pol = str(row.get("polarization") or row.get("sar:polarizations") or "")
    match = re.match(r"^(HH|HV|VH|VV)$", pol)
    return match.group(1) if match else None


def _water_fraction(row: Mapping[str, object]) -> float | None:
    match = re.search(r"water fraction ([0-9.]+)", str(row.get("scene_type") or ""))
    return float(match.group(1)) if match else None


def marine_traffic_type(row: Mapping[str, object]) -> str:
    """An OpenSARShip row's MarineTraffic type from its `notes` ('bulk carrier', 'LPG tanker'); '' if unknown."""
    match = re.search(r"MarineTraffic type '([^']*)'", str(row.get("notes") or ""))
    kind = match.group(1).strip().lower() if match else ""
    if kind in ("", "na", "unspecified"):
        return ""
    return kind.replace("lpg", "LPG").replace("ro-ro", "Ro-Ro")


def _vehicle_phrase(label: str, rng: random.Random) -> str:
    names = VEHICLE_NAMES.get(label, (label,))
    return rng.choice(names)


def count_objects(boxes_xyxy: str | None, window: Sequence[int] | None) -> list[str]:
    """Class names of boxes whose centre lies in `window` ([col_off, row_off, width, height]; None = whole image).

    `boxes_xyxy` is the manifest form ``class:xmin,ymin,xmax,ymax;...`` in pixels (`ingest.objects`, which
    the catalog's tiles use too); an item that cannot be read is skipped here (training never stops on one).
    """
    boxes = []
    for item in str(boxes_xyxy or "").split(";"):
        try:
            boxes += parse_boxes(item)
        except MetadataError:
            continue
    inside = boxes if window is None else boxes_in_window(boxes, window)
    return [box.name for box in inside]


def sea_context(row: Mapping[str, object]) -> str:
    """offshore, inshore, coastal or '' (unknown) from a ship scene's `scene_type`."""
    text = str(row.get("scene_type") or "").lower()
    for context in ("offshore", "inshore"):
        if text.startswith(context):
            return context
    if text.startswith("open sea"):
        return "offshore"
    if text.startswith("coastal"):
        return "coastal"
    return ""


def _ship_scene_caption(row: Mapping[str, object], objects: Sequence[str] | None, rng: random.Random) -> str:
    """One caption of a ship scene (or one tile of it): how many ships, where; the sea without ships; oil."""
    names = list(objects) if objects is not None else [n for n in str(row.get("objects") or "").split(";") if n]
    ships = sum(1 for n in names if n == "ship")
    spills = sum(1 for n in names if n == "oil_spill")
    look_alikes = sum(1 for n in names if n == "look_alike" or n == "oil_spill_look_alike")
    place, empty = SEA_CONTEXT[sea_context(row)]
    parts = []
    if spills:
        parts.append(rng.choice(("an oil spill", "an oil slick", "spilled oil on the sea surface")))
    elif look_alikes:
        parts.append(rng.choice(("an oil spill look-alike", "a dark look-alike patch, not oil", "natural slick, not an oil spill")))
    if ships:
        noun = rng.choice(("ship", "vessel", "boat")) + ("s" if ships > 1 else "")
        amount = count_words(ships) if rng.random() < 0.7 or ships > 20 else str(ships)
        parts.append(f"{amount} {noun} {rng.choice(place)}")
    if not parts:
        return rng.choice(empty)
    return " and ".join(parts)


def _land_cover_caption(row: Mapping[str, object], rng: random.Random) -> str:
    """Land cover of a BigEarthNet patch in plain words, from its CORINE labels."""
    words = []
    for name in str(row.get("objects") or "").split(";"):
        lowered = name.lower()
        for key, plain in LAND_COVER_WORDS.items():
            if key in lowered and plain not in words:
                words.append(plain)
                break
    if not words:
        return "land cover"
    return rng.choice(("", "land cover: ", "Sentinel-1 patch of ")) + " and ".join(words[:2])


def caption_key(row: Mapping[str, object], objects: Sequence[str] | None = None) -> str:
    """Which images share a meaning (used as positives in the contrastive loss)."""
    dataset = str(row.get("dataset") or "")
    label = str(row.get("label") or "")
    if objects is not None and dataset in ("MSTAR-composite-scenes", *SHIP_SCENE_DATASETS):
        names = sorted(set(objects))
        # ship tiles group by count in words and sea context: "two ships offshore" is not "ships in a port"
        if dataset in SHIP_SCENE_DATASETS:
            amount = count_words(sum(1 for n in objects if n == "ship")).replace(" ", "_")
            return f"ships:{amount}:{sea_context(row) or 'sea'}:{'+'.join(n for n in names if n != 'ship')}"
        return f"{dataset}:{'+'.join(names) if names else 'empty'}"
    if dataset == "OpenSARShip":
        return f"ship:{SHIP_LABELS.get(label, 'ship')}"
    return f"{dataset}:{label}"


def make_captions(
    row: Mapping[str, object], objects: Sequence[str] | None = None, *, n: int = 6, seed: int = 0
) -> list[str]:
    """`n` captions for one image or tile from its manifest row.

    `objects`: the class names inside this tile (from `count_objects`) when the row has boxes and the
    image is tiled; None means the whole image.
    """
    rng = random.Random(f"{seed}:{row.get('path')}:{objects}")
    dataset = str(row.get("dataset") or "")
    label = str(row.get("label") or "")
    kind = str(row.get("target_kind") or "")
    sensor_words = _sensor_words(row)
    pol = _polarization(row)
    captions: list[str] = []

    def add(subject: str) -> None:
        prefix = rng.choice(IMAGE_WORDS)
        extras = []
        if sensor_words and rng.random() < 0.4:
            extras.append(f"{' '.join(sensor_words)} SAR")
        if pol and rng.random() < 0.3:
            extras.append(f"{pol} polarization")
        text = f"{prefix} {subject}".strip()
        if extras:
            text += ", " + ", ".join(extras)
        captions.append(text)

    for _ in range(n):
        if dataset == "MSTAR-SOC":
            kinds = KIND_SYNONYMS.get(kind, (kind,))
            name = _vehicle_phrase(label, rng)
            form = rng.randrange(4)
            if form == 0:
                add(f"{_article(name)} {name} {rng.choice(kinds)}")
            elif form == 1:
                chosen = rng.choice(kinds)
                add(f"{_article(chosen)} {chosen}, {name}")
            elif form == 2:
                add(f"{_article(name)} {name} on grass, 17 degree depression angle")
            else:
                add(f"{_article(name)} {name}")
        elif dataset == "MSTAR-composite-scenes":
            names = list(objects) if objects is not None else str(row.get("objects") or "").split(";")
            names = [n for n in names if n]
            if not names:
                add(rng.choice(("an empty field with trees and buildings, no vehicles", "ground clutter without targets",
                                "open terrain and tree lines without vehicles")))
            else:
                spoken = ", ".join(_vehicle_phrase(n, rng) for n in sorted(names))
                count = len(names)
                noun = "vehicle" if count == 1 else "vehicles"
                amount = count_words(count)
                add(rng.choice((f"{amount} military {noun} in a field: {spoken}",
                                f"{spoken} in a clutter scene with trees and buildings",
                                f"{amount} military {noun} parked in open terrain",
                                f"{count} military {noun} in a field")))
        elif dataset in SHIP_SCENE_DATASETS:
            add(_ship_scene_caption(row, objects, rng))
        elif dataset == "OpenSARShip":
            chosen = rng.choice(KIND_SYNONYMS[SHIP_LABELS.get(label, "ship")])
            marine = marine_traffic_type(row)
            if marine and rng.random() < 0.4:  # e.g. "bulk carrier": the ship's own word for the carrier pairs
                chosen = marine
            add(rng.choice((f"{_article(chosen)} {chosen} at sea", f"{_article(chosen)} {chosen}",
                            f"a Sentinel-1 chip of {_article(chosen)} {chosen}")))
        elif dataset == "Sen1Floods11" or label == "flood_water":
            add(rng.choice(FLOOD_WORDS))
        elif label == "no_flood_water":
            add(rng.choice(DRY_LAND_WORDS))
        elif dataset == "BigEarthNet-S1":
            add(_land_cover_caption(row, rng))
        elif label == "water_body" or "water" in kind:
            fraction = _water_fraction(row)
            extra = f", {round(fraction * 100)} percent water" if fraction is not None and rng.random() < 0.5 else ""
            add(f"land with {rng.choice(WATER_WORDS)}{extra}")
        else:
            subject = KIND_SYNONYMS.get(kind, (kind or label.replace("_", " ") or "terrain",))
            add(rng.choice(subject))
    return captions


# Prompts for zero-shot classification: class name -> a template ensemble.
def class_prompts(dataset: str, label: str) -> list[str]:
    """Text prompts for one class of one dataset (averaged into one classifier vector)."""
    if dataset == "MSTAR-SOC":
        kind = {
            "2S1": "self-propelled howitzer", "BMP2": "infantry fighting vehicle", "BRDM2": "armored reconnaissance vehicle",
            "BTR60": "armored personnel carrier", "BTR70": "armored personnel carrier", "D7": "bulldozer",
            "T62": "main battle tank", "T72": "main battle tank", "ZIL131": "military cargo truck",
            "ZSU234": "self-propelled anti-aircraft gun",
        }.get(label, "vehicle")
        names = VEHICLE_NAMES.get(label, (label,))
        return [f"a SAR image of {_article(n)} {n} {kind}" for n in names] + [f"{_article(n)} {n}" for n in names]
    if dataset == "OpenSARShip":
        kinds = KIND_SYNONYMS[SHIP_LABELS.get(label, "ship")]
        return [f"a SAR image of {_article(k)} {k} at sea" for k in kinds]
    return [f"a SAR image of {label.replace('_', ' ')}"]
