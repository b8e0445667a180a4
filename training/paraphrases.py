"""Paraphrase queries for the robustness check of `sarsearch eval`.

Each query is a text no caption template or class prompt produces verbatim (tests/training/test_eval.py
enumerates `captions.make_captions` and `captions.class_prompts` to check it), paired with the labels
an image must carry to count as a correct hit. The score is text→image precision@10 over the
labelled images of the evaluated split; a query whose labels have no image in the split is skipped.
"""

from __future__ import annotations

# every OpenSARShip AIS type, plus the plain `ship` of HRSID-like datasets
SHIP_LABELS = frozenset({"cargo", "tanker", "other_type", "passenger", "tug", "law_enforcement",
                         "search_and_rescue_vessel", "ship"})

# query text -> labels of the relevant images
PARAPHRASES: dict[str, frozenset[str]] = {
    "a wheeled armoured personnel carrier": frozenset({"BTR60", "BTR70"}),
    "a tracked infantry carrier": frozenset({"BMP2"}),
    "an amphibious reconnaissance car": frozenset({"BRDM2"}),
    "a self-propelled howitzer": frozenset({"2S1"}),
    "an anti-aircraft gun vehicle": frozenset({"ZSU234"}),
    "a main battle tank in the desert": frozenset({"T62", "T72"}),
    "a military truck": frozenset({"ZIL131"}),
    "a bulldozer": frozenset({"D7"}),
    "a ship sailing on the open ocean": SHIP_LABELS,
    "a merchant freighter": frozenset({"cargo"}),
    "an oil tanker ship": frozenset({"tanker"}),
    "a lake": frozenset({"water_body"}),
    "flooded farmland": frozenset({"flood_water"}),
}
