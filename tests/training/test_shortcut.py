"""MSTAR's clutter shortcut: the target/clutter views (check and training) and vehicles cut from scenes."""

from __future__ import annotations

import numpy as np
import torch

from sarclip_search.ingest.metadata import load_manifest
from sarclip_search.training.data import box_samples, box_window, load_chips
from sarclip_search.training.shortcut import blank_target, swap_clutter, target_mask
from sarclip_search.training.train import ContrastiveTask, TrainConfig


def test_target_mask_covers_the_centre_and_leaves_the_clutter():
    mask = target_mask(128, fraction=0.5)
    assert mask.shape == (128, 128)
    assert mask[64, 64] == 1.0 and mask[40, 88] == 1.0  # inside the central 64 px square, past the taper
    assert mask[0, 0] == 0.0 and mask[64, 20] == 0.0 and mask[110, 64] == 0.0
    assert torch.equal(mask, mask.T) and torch.equal(mask, mask.flip(0))  # centred and symmetric
    assert 0.2 < float(mask.mean()) < 0.3  # about a quarter of the area


def test_swap_clutter_puts_one_chip_target_on_another_chip_clutter():
    targets, backgrounds = torch.full((2, 64, 64), 0.9), torch.full((2, 64, 64), 0.1)
    swapped = swap_clutter(targets, backgrounds)
    assert torch.allclose(swapped[:, 32, 32], torch.tensor(0.9))
    assert torch.allclose(swapped[:, 0, 0], torch.tensor(0.1))
    assert float(swapped.min()) >= 0.1 - 1e-6 and float(swapped.max()) <= 0.9 + 1e-6


def test_blank_target_refills_the_centre_from_the_chip_own_clutter():
    chips = torch.zeros((3, 64, 64))
    chips[:, 24:40, 24:40] = 1.0  # a bright target in the centre, clutter values elsewhere:
    chips[:, :, :20] = torch.arange(3, dtype=torch.float32)[:, None, None] * 0.1 + 0.2
    blanked = blank_target(chips, torch.Generator().manual_seed(0))
    outside = target_mask(64) == 0
    assert torch.equal(blanked[:, outside], chips[:, outside])  # clutter untouched
    assert float(blanked[:, 32, 32].max()) < 1.0  # the target is gone ...
    for i in range(3):  # ... replaced by values of that chip's clutter only
        values = blanked[i, 30:34, 30:34].numpy()
        assert np.all(np.isclose(values, 0.0) | np.isclose(values, 0.2 + 0.1 * i))


def test_contrastive_batch_swaps_clutter_only_for_centred_target_datasets():
    chips = np.stack([np.full((32, 32), v, np.float32) for v in (0.2, 0.4, 0.6, 0.8)])
    keys = ["a", "b", "c", "d"]
    captions = [("x",)] * 4
    datasets = ["MSTAR-SOC", "MSTAR-SOC", "MSTAR-SOC", "OpenSARShip"]
    config = TrainConfig(clutter_swap=1.0, speckle_looks=0, crop_scale_min=1.0)
    task = ContrastiveTask(chips, keys, captions, config, datasets)
    seen_mixed = False
    for seed in range(8):
        images = task.batch(torch.arange(4), torch.Generator().manual_seed(seed), 32)["images"]
        # a flat chip swapped with another flat chip has a centre unlike its corners (gain/offset jitter
        # moves both alike, so compare within a chip)
        for i in range(3):
            centre, corner = float(images[i, 16, 16]), float(images[i, 0, 0])
            seen_mixed |= abs(centre - corner) > 1e-3
        assert abs(float(images[3, 16, 16]) - float(images[3, 0, 0])) < 1e-5  # OpenSARShip chip never swapped
    assert seen_mixed
    unswapped = ContrastiveTask(chips, keys, captions, TrainConfig(speckle_looks=0, crop_scale_min=1.0), datasets)
    images = unswapped.batch(torch.arange(4), torch.Generator().manual_seed(0), 32)["images"]
    assert all(abs(float(images[i, 16, 16]) - float(images[i, 0, 0])) < 1e-5 for i in range(4))


def test_box_window_is_a_square_around_the_box_clipped_to_the_image():
    window = box_window([10, 20, 30, 60], 200, 100)
    assert (window.width, window.height) == (40, 40)
    assert window.col_off == 0 and window.row_off == 20  # centred on (20, 40): col 0 after clipping
    corner = box_window([180, 80, 200, 100], 200, 100)
    assert corner.col_off + corner.width <= 200 and corner.row_off + corner.height <= 100


def test_box_samples_cut_every_labelled_vehicle_and_group_it_with_its_class(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "path,dataset,split,label,target_kind,boxes_xyxy,width,height\n"
        "soc/t72.png,MSTAR-SOC,train,T72,main battle tank,,128,128\n"
        'scenes/s1.png,MSTAR-composite-scenes,train,multi_vehicle,,"T72:10,10,50,50;BMP2:60,20,90,70",128,128\n'
        'scenes/s2.png,MSTAR-composite-scenes,test,multi_vehicle,,"D7:0,0,20,20",128,128\n'
    )
    from PIL import Image

    for name in ("soc/t72.png", "scenes/s1.png", "scenes/s2.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)).save(tmp_path / name)
    manifest = load_manifest(tmp_path)
    samples = box_samples(tmp_path, manifest, ("train",), ("MSTAR-composite-scenes",), n_captions=3, seed=0)
    assert [s.label for s in samples] == ["T72", "BMP2"]  # the test-split scene is not used
    assert samples[0].key == "MSTAR-SOC:T72"  # positives of the SOC T72 chips in the loss
    assert all("T72" in c or "T-72" in c or "tank" in c.lower() for c in samples[0].captions)
    assert samples[1].window.as_list() == [50, 20, 50, 50]
    chips = load_chips(samples, 32)
    assert chips.shape == (2, 32, 32) and np.isfinite(chips).all()
