"""The paraphrase set and the word-vs-object pairs of `sarsearch eval` (training/paraphrases.py).

No paraphrase may be a caption the training templates render (it would measure memorised text, not
paraphrase robustness): the captions of every kind of row the templates know are rendered over many seeds,
with and without their image words and sensor suffixes, and compared. The relevance rules are checked on
hand-made tiles, and the scoring (P@10 with chance, pairwise accuracy) on rankings whose answer is known.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from sarclip_search.training import captions
from sarclip_search.training.evaluate import query_precision_rows, summarize_queries, word_pair_report
from sarclip_search.training.paraphrases import PARAPHRASES, WORD_PAIRS
from sarclip_search.training.tile_relevance import TileQuery

MARINE_TRAFFIC = ("Bulk Carrier", "Cargo", "Container Ship", "General Cargo", "Vehicles Carrier", "Crude Oil Tanker",
                  "Oil Products Tanker", "Oil/Chemical Tanker", "LPG Tanker", "Tanker", "Tug", "Fishing", "NA")


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).strip(" .,")


def _rows() -> list[tuple[dict[str, object], list[list[str]] | None]]:
    """Every kind of row the caption templates know, each with the object lists its tiles can hold."""
    rows: list[tuple[dict[str, object], list[list[str]] | None]] = []
    for label in captions.VEHICLE_NAMES:
        for kind in captions.KIND_SYNONYMS:
            rows.append(({"dataset": "MSTAR-SOC", "label": label, "target_kind": kind}, None))
    vehicles = sorted(captions.VEHICLE_NAMES)
    groups = [[], *([v] for v in vehicles), vehicles[:2], vehicles[2:5], vehicles[:6]]
    rows.append(({"dataset": "MSTAR-composite-scenes", "label": "multi_vehicle", "objects": "T72;BMP2"}, [None, *groups]))
    ship_groups = [[], *(["ship"] * k for k in range(1, 8)), ["oil_spill"], ["look_alike"], ["oil_spill", "ship"],
                   ["look_alike", "ship", "ship"], ["sea_surface"]]
    for dataset in captions.SHIP_SCENE_DATASETS:
        for scene_type in ("offshore", "inshore", "coastal (land in scene)", "open sea; mask fractions", ""):
            rows.append(({"dataset": dataset, "label": "ship", "scene_type": scene_type, "objects": "ship"},
                         [None, *ship_groups]))
    for label in captions.SHIP_LABELS:
        for marine in MARINE_TRAFFIC:
            rows.append(({"dataset": "OpenSARShip", "label": label, "sensor": "Sentinel-1A", "band": "C",
                          "polarization": "VV", "notes": f"MarineTraffic type '{marine}'"}, None))
    rows += [({"dataset": "KOMPSAT-5-water", "label": "water_body", "target_kind": "water",
               "scene_type": "water fraction 0.3", "sensor": "KOMPSAT-5", "band": "X", "polarization": "HH"}, None),
             ({"dataset": "Sen1Floods11", "label": "flood_water"}, None),
             ({"dataset": "C2S-MS-Floods", "label": "no_flood_water"}, None)]
    corine = ("Non-irrigated arable land", "Pastures", "Coniferous forest", "Water bodies", "Peatbogs",
              "Transitional woodland/shrub", "Complex cultivation patterns", "Agriculture with natural vegetation")
    for i, first in enumerate(corine):
        rows.append(({"dataset": "BigEarthNet-S1", "label": "land_cover", "objects": f"{first};{corine[i - 1]}"}, None))
    for kind in captions.KIND_SYNONYMS:
        rows.append(({"dataset": "other", "label": "x", "target_kind": kind}, None))
    return rows


def rendered_captions() -> set[str]:
    """Normalized captions and class prompts the templates render, also without image words or suffixes."""
    found: set[str] = set()
    for i, (row, groups) in enumerate(_rows()):
        for objects in groups or [None]:
            for seed in range(12):
                found.update(captions.make_captions({**row, "path": f"row{i}.tif"}, objects, n=12, seed=seed))
        found.update(captions.class_prompts(str(row["dataset"]), str(row["label"])))
    forms = set()
    prefixes = sorted((w for w in captions.IMAGE_WORDS if w), key=len, reverse=True)
    for text in map(_normalized, found):
        forms.add(text)
        bare = text.split(",")[0].strip()  # without ", C-band SAR, VV polarization"
        forms.add(bare)
        for prefix in prefixes:
            for form in (text, bare):
                if form.startswith(prefix.lower() + " "):
                    forms.add(form[len(prefix) + 1:])
    return forms


def test_the_paraphrase_set_is_large_and_none_is_a_rendered_caption() -> None:
    generated = rendered_captions()
    assert len(generated) > 3000  # the enumeration really ran over the templates
    # ... and would catch a verbatim caption of each family
    for caught in ("a freighter", "a vessel at sea", "two ships on the open sea", "open sea without ships",
                   "an empty field with trees and buildings, no vehicles", "a single ship near a harbor"):
        assert _normalized(caught) in generated, caught
    texts = [q.text for q in PARAPHRASES]
    assert len(texts) >= 25 and len(set(texts)) == len(texts)
    verbatim = [text for text in texts if _normalized(text) in generated]
    assert not verbatim, verbatim
    assert all(q.rule for q in PARAPHRASES), "every paraphrase states its relevance rule"
    kinds = {q.kind for q in PARAPHRASES}
    assert {"class", "counting", "context", "empty"} <= kinds
    assert sum(q.kind in ("counting", "context", "empty") for q in PARAPHRASES) >= 10


def _query(text: str) -> TileQuery:
    return next(q for q in PARAPHRASES if q.text == text)


def test_paraphrase_rules_read_what_a_tile_holds() -> None:
    two_ships = {"dataset": "HRSID", "label": "ship", "tile_label": "ship", "tile_n_objects": 2,
                 "tile_objects": "ship:1,1,5,5;ship:9,9,14,14", "scene_type": "offshore"}
    empty_offshore = {"dataset": "HRSID", "label": "ship", "tile_label": "no_object", "tile_n_objects": 0,
                      "tile_objects": None, "scene_type": "offshore"}
    one_in_port = {**two_ships, "tile_n_objects": 1, "tile_objects": "ship:1,1,5,5", "scene_type": "inshore"}
    empty_field = {"dataset": "MSTAR-composite-scenes", "label": "T72", "tile_label": "no_object",
                   "tile_n_objects": 0, "tile_objects": None}
    two_vehicles = {**empty_field, "tile_label": "multi_vehicle", "tile_n_objects": 2,
                    "tile_objects": "T72:1,1,5,5;BMP2:9,9,14,14"}
    cargo_chip = {"dataset": "OpenSARShip", "label": "cargo"}  # a labelled whole image: holds its label
    assert _query("two ships side by side").relevant(two_ships)
    assert not _query("two ships side by side").relevant(one_in_port)
    assert _query("ships moored in a harbour").relevant(one_in_port)
    assert not _query("ships moored in a harbour").relevant(two_ships)
    assert _query("a lone vessel in open water").relevant(cargo_chip)
    assert not _query("a lone vessel in open water").relevant(one_in_port)
    # the empty tile of a ship scene is empty sea, not a ship (its scene's label does not count)
    assert _query("an empty patch of sea").relevant(empty_offshore)
    assert not _query("an empty patch of sea").relevant(two_ships)
    assert not _query("a ship sailing on the open ocean").relevant(empty_offshore)
    assert _query("grassland with nothing parked on it").relevant(empty_field)
    assert not _query("just one tank on its own").relevant(empty_field)  # the scene's label was T72
    assert _query("a pair of military vehicles close together").relevant(two_vehicles)
    assert _query("a tracked infantry carrier").relevant(two_vehicles)  # it holds a BMP2
    assert _query("a merchant freighter").relevant(cargo_chip)


# --- scoring ----------------------------------------------------------------------------------------


def test_precision_with_chance_perfect_random_and_reversed() -> None:
    items = [{"label": "a"}] * 15 + [{"label": "b"}] * 45
    query = TileQuery("class", "a", lambda t: t["label"] == "a", "a")
    relevant = np.array([t["label"] == "a" for t in items])
    perfect = query_precision_rows(relevant[None].astype(float), items, [query])[0]
    assert perfect["P@10"] == 1.0 and perfect["chance"] == 0.25 and perfect["n_relevant"] == 15
    assert query_precision_rows(-relevant[None].astype(float), items, [query])[0]["P@10"] == 0.0
    rng = np.random.default_rng(0)
    random = [query_precision_rows(rng.random((1, 60)), items, [query])[0]["P@10"] for _ in range(400)]
    assert np.mean(random) == pytest.approx(0.25, abs=0.03)  # a random ranking scores chance
    flat = query_precision_rows(np.zeros((1, 60)), items, [query])[0]
    assert flat["P@10"] == 0.0  # ties count against the query
    none = query_precision_rows(np.zeros((1, 60)), items, [TileQuery("x", "c", lambda t: False, "")])[0]
    assert none["P@10"] is None and none["n_relevant"] == 0
    summary = summarize_queries([perfect, none, {**perfect, "kind": "counting", "P@10": 0.5, "chance": 0.05}])
    assert summary["n_scored"] == 2 and summary["mean_P@10"] == 0.75 and summary["mean_chance"] == 0.15
    assert summary["by_kind"]["class"] == {"mean_P@10": 1.0, "mean_chance": 0.25, "queries": 1}


class _Texts:
    """Text vectors by keyword: texts naming a truck/tank point to x, ship words to y."""

    def __init__(self, swap: bool = False) -> None:
        self.swap = swap

    def encode_texts(self, texts):
        x, y = np.eye(2)
        vehicle = [any(w in t for w in ("truck", "tank", "armoured")) and "tanker" not in t for t in texts]
        return np.stack([(y if self.swap else x) if v else (x if self.swap else y) for v in vehicle])


def test_word_pairs_score_the_object_over_the_word() -> None:
    items = ([{"dataset": "MSTAR-SOC", "label": "ZIL131"}] * 12 + [{"dataset": "OpenSARShip", "label": "cargo"}] * 30
             + [{"dataset": "MSTAR-SOC", "label": "T72"}] * 5 + [{"dataset": "OpenSARShip", "label": "tanker"}] * 20)
    x, y = np.eye(2)
    vectors = np.stack([x if t["dataset"] == "MSTAR-SOC" else y for t in items])
    right = word_pair_report(_Texts(), vectors, items, WORD_PAIRS[:2])
    truck, tank = right["pairs"]
    assert truck["first"]["text"] == "cargo truck" and truck["n"] == 42
    assert truck["first"]["chance"] == round(12 / 42, 4) and truck["first"]["P@10"] == 1.0
    assert truck["second"]["P@10"] == 1.0 and truck["pairwise_balanced"] == 1.0
    assert tank["first"]["n_relevant"] == 5 and tank["first"]["P@10"] == 0.5  # 5 tanks over a top 10
    assert right["chance_pairwise"] == 0.5 and right["mean_pairwise_balanced"] == 1.0
    wrong = word_pair_report(_Texts(swap=True), vectors, items, WORD_PAIRS[:2])  # the word decides: ships for "tank"
    assert wrong["mean_pairwise_balanced"] == 0.0 and wrong["pairs"][0]["first"]["P@10"] == 0.0
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(len(items), 2))
    random = word_pair_report(_Texts(), noise / np.linalg.norm(noise, axis=1, keepdims=True), items, WORD_PAIRS[:2])
    assert 0.25 < random["mean_pairwise_balanced"] < 0.75
    one_sided = word_pair_report(_Texts(), vectors[:12], items[:12], WORD_PAIRS[:1])  # trucks only
    assert one_sided["pairs"][0]["pairwise_balanced"] is None and one_sided["pairs"][0]["second"]["P@10"] is None


def test_word_pairs_share_a_word_across_domains() -> None:
    for pair in WORD_PAIRS:
        first, second = pair.first.text.split(), pair.second.text.split()
        assert {pair.first.kind, pair.second.kind} == {"vehicle", "ship"}
        assert set(first) & set(second) or any(a in b or b in a for a in first for b in second), pair


def test_a_baseline_goes_beside_the_numbers_it_matches() -> None:
    from sarclip_search.training.report import attach_baseline, tile_markdown

    def run(p10: list[float | None]) -> dict:
        rows = [{"kind": k, "text": t, "rule": "", "n_relevant": 3, "chance": 0.1, "P@10": v}
                for k, t, v in zip(("class", "class", "counting"), ("ship", "tank", "two ships"), p10)]
        return {"split": "test", "n_tiles": 30, "queries": rows, "mean_P@10": None, "mean_chance": 0.1,
                "by_kind": {"class": {"mean_P@10": 0.5, "mean_chance": 0.1, "queries": 2},
                            "counting": {"mean_P@10": 0.1, "mean_chance": 0.1, "queries": 1}},
                "model": {"checkpoint_sha256": "new"}}

    before = run([0.2, 0.4, None])
    before["model"] = {"checkpoint_sha256": "old"}
    before["queries"].pop(1)  # "tank" was not asked before
    report = attach_baseline(run([0.6, 0.8, 0.1]), before, "before.json")
    assert [r["before_P@10"] for r in report["queries"]] == [0.2, None, None]
    assert report["before_mean_P@10"] == 0.2 and report["before_n_scored"] == 1  # only the queries scored in both
    assert report["by_kind"]["class"]["before_mean_P@10"] == 0.2
    assert report["by_kind"]["counting"]["before_mean_P@10"] is None
    assert report["baseline"]["checkpoint_sha256"] == "old"
    markdown = tile_markdown(report)
    assert "P@10 before" in markdown and "`before.json`" in markdown


def test_composite_crops_are_cut_at_their_boxes_and_classified(tmp_path) -> None:
    from PIL import Image

    from sarclip_search.training.evaluate import MSTAR_CLASSES, composite_crop_report

    image = np.full((160, 200), 10, np.uint8)  # flat clutter: a chip of it stretches to 0
    image[30:50, 30:50] = 240  # the T72 box (20-60): a bright quarter in its centre
    image[100:140, 120:160] = 240
    image[110:130, 130:150] = 10  # the BMP2 box (120-160 x 100-140): bright but for a dark quarter
    Image.fromarray(image).save(tmp_path / "scene.png")
    (tmp_path / "manifest.csv").write_text(
        "path,dataset,split,label,width,height,boxes_xyxy\n"
        'scene.png,MSTAR-composite-scenes,test,multi_vehicle,200,160,"T72:20,20,60,60;BMP2:120,100,160,140"\n')
    axes = np.eye(3)

    class Reader:  # reads a (stretched) chip's brightness: mostly bright -> axis 1, a bright quarter -> 0, flat -> 2
        image_size = 32

        def __init__(self, swap: bool = False) -> None:
            self.swap = swap

        def encode_images(self, chips):
            means = chips.reshape(len(chips), -1).mean(axis=1)
            picks = [(0 if self.swap else 1) if m > 0.5 else (1 if self.swap else 0) if m > 0.1 else 2 for m in means]
            return axes[picks].astype(np.float32)

        def encode_texts(self, texts):
            return np.stack([axes[0] if "T72" in t or "T-72" in t else axes[1] if "BMP" in t else axes[2]
                             for t in texts]).astype(np.float32)

    report = composite_crop_report(Reader(), tmp_path, "test")
    assert report["n"] == 2 and report["classes"] == list(MSTAR_CLASSES) and report["chance"] == 0.1
    assert report["top1"] == 1.0 and report["support"]["T72"] == 1 and report["support"]["BMP2"] == 1
    assert composite_crop_report(Reader(swap=True), tmp_path, "test")["top1"] == 0.0
    assert composite_crop_report(Reader(), tmp_path, "val")["top1"] is None  # no scene in val: not measured


def test_a_data_limit_is_stated_for_small_classes() -> None:
    from sarclip_search.training.evaluate import balanced_accuracy_limit

    sentence = balanced_accuracy_limit({"cargo": 30, "tanker": 18})
    assert sentence and "30 cargo and 18 tanker" in sentence and "0.028" in sentence  # 1 / (2 * 18)
    assert balanced_accuracy_limit({"cargo": 300, "tanker": 180}) is None
