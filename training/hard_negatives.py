"""Cross-dataset hard negatives: a word shared across domains must not decide the match.

A ZIL-131 is a *cargo* truck and a freighter a *cargo* ship; a T-72 is a *tank* and a tanker a ship; a
BTR-70 is an armoured personnel *carrier* and a bulk *carrier* a ship. Captions use these words in their own
domain, so a text tower that matches on the word alone would put a truck next to a ship. Two pieces make the
object win over the word:

- every training sample gets a *tag* `family:side` (`sample_tag`) when it belongs to one side of such a pair
  (`cargo:land` for ZIL131 chips and vehicles cut from scenes, `cargo:sea` for OpenSARShip cargo ships, ...),
  plus the object/empty pairs of one background (`empty-land:object` for composite-scene tiles with vehicles
  vs `empty-land:empty` for tiles of the same scenes without any; `empty-sea:...` the same for ship scenes);
- `HardNegativeSampler` puts `pairs` such pairs into every contrastive batch (one sample of each side), so the
  grouped CLIP loss, for which the two sides are different caption groups, has to separate them in every step
  rather than in the few batches that happen to hold both.

`sarsearch eval` measures the result (its `word_pairs` table: does "a cargo truck" beat "a cargo ship" on the
trucks, and the other way round on the ships).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch

from sarclip_search.training.captions import marine_traffic_type

log = logging.getLogger(__name__)

# family -> (land side: MSTAR classes, sea side: OpenSARShip label or MarineTraffic-type pattern)
SHARED_WORDS: dict[str, tuple[frozenset[str], str]] = {
    "cargo": (frozenset({"ZIL131"}), "label:cargo"),
    "tank": (frozenset({"T62", "T72"}), "label:tanker"),
    "carrier": (frozenset({"BTR60", "BTR70", "BMP2"}), "type:carrier"),
}
VEHICLE_DATASETS = ("MSTAR-SOC", "MSTAR-composite-scenes:box")
SHIP_SCENE_TAGS = ("HRSID", "SAR-Ship-Dataset")  # ship scenes whose tiles with and without ships pair up


def sample_tag(dataset: str, label: str, row: Mapping[str, object], objects: Sequence[str] | None) -> str:
    """`family:side` of a training sample for the hard-negative sampler, or '' when it is in no pair.

    `dataset` is the sample's dataset (`MSTAR-composite-scenes:box` for a vehicle cut from a scene), `objects`
    the tile's objects (None: the whole image).
    """
    if dataset in VEHICLE_DATASETS:
        for family, (land, _sea) in SHARED_WORDS.items():
            if label in land:
                return f"{family}:land"
        return ""
    if dataset == "OpenSARShip":
        for family, (_land, sea) in SHARED_WORDS.items():
            what, _, value = sea.partition(":")
            if what == "label" and label == value:
                # a bulk carrier of the `cargo` label is a 'carrier' first: that is where its word collides
                if family == "cargo" and "carrier" in marine_traffic_type(row).lower():
                    return "carrier:sea"
                return f"{family}:sea"
        if "carrier" in marine_traffic_type(row).lower():
            return "carrier:sea"
        return ""
    if objects is not None and dataset == "MSTAR-composite-scenes":
        return "empty-land:object" if objects else "empty-land:empty"
    if objects is not None and dataset in SHIP_SCENE_TAGS:
        return "empty-sea:object" if "ship" in objects else "empty-sea:empty"
    return ""


class HardNegativeSampler:
    """Puts `pairs` cross-domain pairs (one sample of each side of a family) into every batch.

    Families with both sides present are drawn in turn at random; the pairs replace the last 2 x `pairs`
    indices of the batch the loop drew (the rest of the batch stays the loop's random order).
    """

    def __init__(self, tags: Sequence[str], pairs: int) -> None:
        sides: dict[str, dict[str, list[int]]] = {}
        for i, tag in enumerate(tags):
            if tag:
                family, _, side = tag.partition(":")
                sides.setdefault(family, {}).setdefault(side, []).append(i)
        self.families = {family: tuple(torch.tensor(v) for v in by_side.values())
                         for family, by_side in sorted(sides.items()) if len(by_side) == 2}
        self.names = list(self.families)
        self.pairs = pairs
        if pairs and not self.families:
            log.warning("hard_negative_pairs=%d but no family has samples on both sides: batches unchanged", pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs and self.families)

    def mix(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`indices` with its last 2 x pairs entries replaced by hard pairs (side a, side b, side a, ...)."""
        if not self:
            return indices
        pairs = min(self.pairs, len(indices) // 2)
        chosen = []
        for _ in range(pairs):
            family = self.names[int(torch.randint(0, len(self.names), (1,), generator=generator))]
            for side in self.families[family]:
                chosen.append(int(side[int(torch.randint(0, len(side), (1,), generator=generator))]))
        out = indices.clone()
        out[len(out) - len(chosen):] = torch.tensor(chosen, dtype=out.dtype)
        return out
