"""Cross-dataset hard negatives and targets outside their clutter (training/hard_negatives.py, views.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarclip_search.ingest.metadata import load_manifest
from sarclip_search.training import train as train_module
from sarclip_search.training.captions import make_captions, marine_traffic_type
from sarclip_search.training.data import box_samples, synthetic_samples
from sarclip_search.training.hard_negatives import HardNegativeSampler, sample_tag
from sarclip_search.training.train import ContrastiveTask, TrainConfig, train
from sarclip_search.training.views import land_background, paste_targets, stretch

BULK = {"path": "opensarship/a.tif", "dataset": "OpenSARShip", "label": "cargo", "target_kind": "cargo ship",
        "notes": "AIS ship-type code 70; MarineTraffic type 'Bulk Carrier'; AIS length 190 m"}
TANKER = {"path": "opensarship/b.tif", "dataset": "OpenSARShip", "label": "tanker", "notes": "MarineTraffic type 'NA'"}


# --- tags and captions ---------------------------------------------------------------------------------------


def test_shared_word_tags_put_vehicles_and_ships_on_two_sides():
    assert sample_tag("MSTAR-SOC", "ZIL131", {}, None) == "cargo:land"
    assert sample_tag("MSTAR-composite-scenes:box", "T72", {}, None) == "tank:land"
    assert sample_tag("MSTAR-SOC", "BTR70", {}, None) == "carrier:land"
    assert sample_tag("MSTAR-SOC", "D7", {}, None) == ""
    assert sample_tag("OpenSARShip", "cargo", {"notes": "MarineTraffic type 'Container Ship'"}, None) == "cargo:sea"
    assert sample_tag("OpenSARShip", "cargo", BULK, None) == "carrier:sea"  # its word collides with 'carrier'
    assert sample_tag("OpenSARShip", "tanker", TANKER, None) == "tank:sea"
    assert sample_tag("MSTAR-composite-scenes", "multi_vehicle", {}, []) == "empty-land:empty"
    assert sample_tag("MSTAR-composite-scenes", "multi_vehicle", {}, ["T72"]) == "empty-land:object"
    assert sample_tag("HRSID", "ship", {}, []) == "empty-sea:empty"
    assert sample_tag("HRSID", "ship", {}, ["ship", "ship"]) == "empty-sea:object"
    assert sample_tag("HRSID", "ship", {}, None) == ""  # a whole untiled image is no tile of a scene


def test_captions_use_the_shared_words_in_their_own_domain():
    zil = {"path": "mstar/ZIL131/a.png", "dataset": "MSTAR-SOC", "label": "ZIL131", "target_kind": "military cargo truck"}
    assert any("cargo truck" in c for seed in range(10) for c in make_captions(zil, n=12, seed=seed))
    btr = {"path": "mstar/BTR70/a.png", "dataset": "MSTAR-SOC", "label": "BTR70", "target_kind": "armored personnel carrier"}
    assert any("personnel carrier" in c for c in make_captions(btr, n=30, seed=0))
    assert marine_traffic_type(BULK) == "bulk carrier" and marine_traffic_type(TANKER) == ""
    bulk = make_captions(BULK, n=30, seed=0)
    assert any("bulk carrier" in c for c in bulk)
    assert not any("truck" in c or "personnel" in c for c in bulk)


def test_hard_negative_pairs_land_in_the_same_batch():
    tags = ["cargo:land"] * 3 + ["cargo:sea"] * 2 + ["tank:land"] * 4 + ["tank:sea"] + [""] * 30 + ["lonely:land"]
    sampler = HardNegativeSampler(tags, pairs=4)
    assert sampler and set(sampler.families) == {"cargo", "tank"}  # a family with one side cannot pair
    chips = np.random.default_rng(0).random((len(tags), 16, 16)).astype(np.float32)
    task = ContrastiveTask(chips, [t or f"k{i}" for i, t in enumerate(tags)], [(f"c{i}",) for i in range(len(tags))],
                           TrainConfig(hard_negative_pairs=4, speckle_looks=0), ["x"] * len(tags), tags)
    generator = torch.Generator().manual_seed(0)
    random_part = torch.arange(10, 26)  # 16 untagged samples drawn by the loop
    for _ in range(20):
        batch = task.batch(random_part, generator, 16)
        indices = batch["indices"].tolist()
        assert len(indices) == 16 and indices[:8] == list(range(10, 18))  # the loop's draw is kept in front
        pairs = [(tags[a], tags[b]) for a, b in zip(indices[8::2], indices[9::2])]
        for first, second in pairs:  # each pair: both sides of one family, side by side in this batch
            assert first.split(":")[0] == second.split(":")[0] and first != second
        assert batch["captions"][8:] == [f"c{i}" for i in indices[8:]]  # captions follow the chosen chips
    off = ContrastiveTask(chips, [f"k{i}" for i in range(len(tags))], [("c",)] * len(tags),
                          TrainConfig(speckle_looks=0), ["x"] * len(tags), tags)
    assert off.batch(random_part, generator, 16)["indices"].tolist() == random_part.tolist()


# --- targets outside their clutter --------------------------------------------------------------------------


def test_pasted_targets_stay_inside_the_background_and_keep_their_caption():
    size = 48
    targets = torch.full((6, size, size), 0.9)
    backgrounds = torch.rand((6, size, size), generator=torch.Generator().manual_seed(1)) * 0.3
    pasted, boxes = paste_targets(targets, backgrounds, torch.Generator().manual_seed(2), scale=(0.4, 1.0))
    for i, (r0, c0, r1, c1) in enumerate(boxes.tolist()):
        assert 0 <= r0 < r1 <= size and 0 <= c0 < c1 <= size
        outside = torch.ones(size, size, dtype=torch.bool)
        outside[r0:r1, c0:c1] = False
        assert torch.equal(pasted[i][outside], backgrounds[i][outside])  # background untouched around the target
        centre = pasted[i, (r0 + r1) // 2, (c0 + c1) // 2]
        assert float(centre) == pytest.approx(0.9, abs=1e-4)  # the target's centre is the target
    # in a batch: a SOC chip pasted into a field keeps the SOC chip's caption and group
    chips = np.concatenate([np.full((2, size, size), 0.9, np.float32), np.zeros((2, size, size), np.float32)])
    config = TrainConfig(paste_targets=1.0, speckle_looks=0, crop_scale_min=1.0)
    task = ContrastiveTask(chips, ["T72", "T72", "field", "field"], [("a T72 tank",), ("a T72 tank",), ("a field",),
                           ("a field",)], config, ["MSTAR-SOC", "MSTAR-SOC", "BigEarthNet-S1", "BigEarthNet-S1"],
                           backgrounds=[2, 3])
    batch = task.batch(torch.arange(4), torch.Generator().manual_seed(0), size)
    assert batch["captions"][:2] == ["a T72 tank", "a T72 tank"]
    for i in range(2):  # the target chip now has the field's (dark) clutter around the bright target
        image = batch["images"][i]
        assert float(image.min()) < 0.2 and float(image.max()) > 0.7
    assert float(batch["images"][2].max()) < 0.2  # backgrounds themselves are unchanged samples


def test_land_background_tells_textured_land_from_open_sea():
    rng = np.random.default_rng(0)
    sea = torch.as_tensor(0.7 + 0.04 * rng.standard_normal((128, 128)), dtype=torch.float32)
    fields = torch.as_tensor(np.kron(rng.random((8, 8)), np.ones((16, 16))) * 0.6 + 0.2, dtype=torch.float32)
    assert not land_background(sea) and land_background(fields)


def test_stretch_is_monotone_and_keeps_the_range():
    chips = torch.linspace(0, 1, 64).reshape(1, 8, 8).repeat(5, 1, 1)
    out = stretch(chips, torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    flat = out.reshape(5, -1)
    assert bool((flat[:, 1:] >= flat[:, :-1]).all())
    assert not torch.allclose(out, chips)


def test_wider_box_crops_skip_windows_holding_another_vehicle(tmp_path):
    from PIL import Image

    (tmp_path / "manifest.csv").write_text(
        "path,dataset,split,label,target_kind,boxes_xyxy,width,height\n"
        'scenes/s1.png,MSTAR-composite-scenes,train,multi_vehicle,,"T72:10,10,30,30;BMP2:40,10,60,30;'
        'D7:150,150,170,170",256,256\n'
    )
    (tmp_path / "scenes").mkdir()
    Image.fromarray((np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8)).save(tmp_path / "scenes/s1.png")
    samples = box_samples(tmp_path, load_manifest(tmp_path), ("train",), ("MSTAR-composite-scenes",),
                          n_captions=2, seed=0, scales=(1.0, 3.0))
    # T72 and BMP2 are 30 px apart: at 3x (60 px) each window holds the other's centre, the D7 is alone
    assert [(s.label, s.window.width) for s in samples] == [("T72", 20), ("BMP2", 20), ("D7", 20), ("D7", 60)]
    assert all(s.tag == ("tank:land" if s.label == "T72" else "carrier:land" if s.label == "BMP2" else "")
               for s in samples)


# --- configs and a run with every new view ----------------------------------------------------------------


def test_quick_config_loads_and_stays_a_short_stage_two():
    config = TrainConfig.load("quick", ["box_crop_scales=1,2.5", "hard_negative_pairs=8"])
    assert config.stage == "contrastive" and 0 < config.max_steps <= 400
    assert config.eval_split == "val" and config.splits == ("train",)
    assert config.box_crop_scales == (1.0, 2.5) and config.hard_negative_pairs == 8
    assert TrainConfig.load("default").box_crop_scales == (1.0,)  # the default recipe is unchanged


def test_loss_goes_down_with_hard_pairs_pasted_targets_and_stretch(tmp_path, monkeypatch):
    """A smoke run on synthetic chips where every new view is on: ships are the centred-target chips (pasted
    into fields and stretched), river/city are a hard pair, fields the backgrounds."""
    def synthetic_task(config, image_size, progress=None):
        chips, kinds, captions = synthetic_samples(config.synthetic, config.cache_size, config.seed)
        datasets = ["MSTAR-SOC" if k == "ship" else "other" for k in kinds]
        tags = [{"river": "word:land", "city": "word:sea"}.get(k, "") for k in kinds]
        backgrounds = [i for i, k in enumerate(kinds) if k == "field"]
        return ContrastiveTask(chips, kinds, captions, config, datasets, tags, backgrounds)

    monkeypatch.setattr(train_module, "build_task", synthetic_task)
    config = TrainConfig.load("smoke", [f"out={tmp_path / 'views.pt'}", "max_steps=10", "synthetic=48",
                                        "freeze_image_blocks=5", "hard_negative_pairs=2", "paste_targets=0.5",
                                        "stretch=0.5", "clutter_swap=0.3"])
    result = train(config)
    assert all(np.isfinite(result.losses))
    assert np.mean(result.losses[-4:]) < np.mean(result.losses[:4]), result.losses


def test_land_backgrounds_come_from_the_train_split_and_hold_no_ship():
    from pathlib import Path

    from sarclip_search.training.data import Sample
    from sarclip_search.training.train import land_backgrounds

    rng = np.random.default_rng(0)
    textured = (np.kron(rng.random((8, 8)), np.ones((16, 16))) * 0.6 + 0.2).astype(np.float32)
    flat_sea = (0.7 + 0.04 * rng.standard_normal((128, 128))).astype(np.float32)

    def sample(dataset, split, key):
        return Sample(Path("x"), None, key, ("c",), dataset, "", split=split)

    samples = [sample("BigEarthNet-S1", "train", "land"), sample("BigEarthNet-S1", "val", "land"),
               sample("HRSID", "train", "ships:no:sea:"), sample("HRSID", "train", "ships:a_single:sea:"),
               sample("HRSID", "train", "ships:no:offshore:"), sample("MSTAR-SOC", "train", "T72")]
    chips = np.stack([textured, textured, textured, textured, flat_sea, textured])
    assert land_backgrounds(samples, chips, ("BigEarthNet-S1", "HRSID")) == [0, 2]
