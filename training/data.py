"""Training data: samples from an archive's manifest, SAR-aware augmentation, and a synthetic SAR set.

A sample is one image or one tile of a large scene, with its caption group key and captions.
Chips are decoded once into memory (a few thousand 144 px float32 chips is ~250 MB at most) and
augmented per batch with torch ops.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sarclip_search.ingest import raster
from sarclip_search.ingest.metadata import load_manifest
from sarclip_search.ingest.tiling import Window, tile_windows
from sarclip_search.training.captions import SHIP_SCENE_DATASETS, caption_key, count_objects, make_captions
from sarclip_search.training.hard_negatives import sample_tag

log = logging.getLogger(__name__)

# Normalized input spans ~40 dB of backscatter over [0, 1] (radiometry.normalize_db stretches p1..p99.5),
# so 1 dB of speckle is ~1/40 of the unit range.
DB_PER_UNIT = 40.0


@dataclass(frozen=True)
class Sample:
    path: Path
    window: Window | None  # None: the whole image
    key: str  # caption group: samples with one key are positives for each other
    captions: tuple[str, ...]
    dataset: str
    label: str
    tag: str = ""  # hard-negative family:side (training/hard_negatives.py), '' when in no pair
    split: str = ""  # the manifest split it comes from


def manifest_samples(
    root: str | Path, splits: Sequence[str], *, tile_size: int = 256, n_captions: int = 6, seed: int = 0,
    box_crops: Sequence[str] = (), box_crop_scales: Sequence[float] = (1.0,),
) -> list[Sample]:
    """One sample per image of the given manifest splits; images larger than `tile_size` become tiles.

    Tiles of images with boxes (`boxes_xyxy`) are captioned with the objects whose box centre they hold.
    For datasets in `box_crops`, every box also becomes a sample of its own (`box_samples`).
    """
    root = Path(root)
    manifest = load_manifest(root)
    samples = []
    if box_crops:
        samples += box_samples(root, manifest, splits, box_crops, n_captions=n_captions, seed=seed,
                               scales=box_crop_scales)
    for rel_path, row in sorted(manifest.items()):
        if str(row.get("split")) not in splits:
            continue
        path = root / rel_path
        width, height = int(row.get("width") or 0), int(row.get("height") or 0)
        if not width or not height:
            info = raster.read_info(path)
            width, height = info.width, info.height
        windows = tile_windows(width, height, tile_size)
        tiled = len(windows) > 1
        for window in windows:
            objects = count_objects(row.get("boxes_xyxy"), window.as_list()) if tiled and row.get("boxes_xyxy") else None
            if tiled and row.get("dataset") in ("MSTAR-composite-scenes", *SHIP_SCENE_DATASETS) and objects is None:
                objects = []
            full = {"path": rel_path, **row}
            dataset, label = str(row.get("dataset") or ""), str(row.get("label") or "")
            samples.append(
                Sample(
                    path=path,
                    window=window if tiled else None,
                    key=caption_key(full, objects),
                    captions=tuple(make_captions(full, objects, n=n_captions, seed=seed)),
                    dataset=dataset,
                    label=label,
                    tag=sample_tag(dataset, label, row, objects),
                    split=str(row.get("split")),
                )
            )
    return samples


def box_window(box: Sequence[float], width: int, height: int, scale: float = 1.0) -> Window:
    """The square window centred on a box, `scale` times its longer side, clipped to the image."""
    x0, y0, x1, y1 = box
    side = max(1, round(scale * max(x1 - x0, y1 - y0)))
    col = min(max(0, round((x0 + x1) / 2 - side / 2)), max(0, width - side))
    row = min(max(0, round((y0 + y1) / 2 - side / 2)), max(0, height - side))
    return Window(col, row, min(side, width - col), min(side, height - row))


def box_samples(
    root: Path, manifest: dict, splits: Sequence[str], datasets: Sequence[str], *, n_captions: int, seed: int,
    scales: Sequence[float] = (1.0,),
) -> list[Sample]:
    """One sample per labelled box of the `datasets` scenes and window scale: the vehicle cut out of its scene.

    MSTAR composite scenes hold MSTAR vehicles on other clutter, processed and scaled differently from
    the SOC chips; cut out, each is captioned and grouped like a SOC chip of its class, so that a class
    means the vehicle, not one patch of ground (see training/shortcut.py). A scale above 1 cuts a wider
    window (the vehicle smaller, more of its scene around it); a wider window that would hold the centre
    of another box is skipped, so the caption stays true.
    """
    kinds = {str(r.get("label")): str(r.get("target_kind") or "") for r in manifest.values()
             if r.get("dataset") == "MSTAR-SOC"}
    samples = []
    for rel_path, row in sorted(manifest.items()):
        if str(row.get("split")) not in splits or row.get("dataset") not in datasets:
            continue
        width, height = int(row.get("width") or 0), int(row.get("height") or 0)
        if not width or not height:
            info = raster.read_info(root / rel_path)
            width, height = info.width, info.height
        for i, item in enumerate(filter(None, str(row.get("boxes_xyxy") or "").split(";"))):
            label, _, coords = item.partition(":")
            box = [float(v) for v in coords.split(",")]
            as_chip = {**row, "path": f"{rel_path}#box{i}", "dataset": "MSTAR-SOC", "label": label,
                       "target_kind": kinds.get(label, "vehicle"), "objects": label}
            for scale in scales:
                window = box_window(box, width, height, scale)
                if scale > 1 and len(count_objects(row.get("boxes_xyxy"), window.as_list())) > 1:
                    continue
                dataset = f"{row.get('dataset')}:box"
                samples.append(Sample(
                    path=root / rel_path,
                    window=window,
                    key=caption_key(as_chip),
                    captions=tuple(make_captions(as_chip, None, n=n_captions, seed=seed)),
                    dataset=dataset,
                    label=label,
                    tag=sample_tag(dataset, label, row, None),
                    split=str(row.get("split")),
                ))
    return samples


def load_chips(
    samples: Sequence[Sample], size: int, progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """Decode every sample to a (size, size) float32 chip in [0, 1] via the one radiometry path."""
    chips = np.zeros((len(samples), size, size), np.float32)
    for i, sample in enumerate(samples):
        chips[i] = raster.read_chip(sample.path, sample.window, size=size)
        if progress is not None:
            progress(1)
    return chips


def speckle_db(shape: Sequence[int], looks: float, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative speckle of an L-look intensity image, in dB: 10 log10(G / L), G ~ Gamma(L, 1).

    Applying it to normalized dB input re-simulates speckle on top of the existing one.
    """
    gamma = torch.distributions.Gamma(torch.tensor(float(looks)), torch.tensor(1.0))
    # torch's Gamma has no generator argument: derive a seed from ours for reproducibility.
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    sample = gamma.sample(tuple(shape))
    torch.random.set_rng_state(state)
    return 10.0 * torch.log10(sample.clamp_min(1e-6) / looks)


def augment(
    chips: torch.Tensor, out_size: int, generator: torch.Generator, *, speckle_looks: float = 4.0,
    crop_scale_min: float = 0.6,
) -> torch.Tensor:
    """SAR-appropriate random views of (N, S, S) chips in [0, 1] → (N, out_size, out_size).

    Random crop (`crop_scale_min`-1 of the area, resized back), flips and 90° rotations, dB-domain gain and
    contrast jitter, and multiplicative speckle re-simulated with `speckle_looks` looks.
    """
    n, s = chips.shape[0], chips.shape[-1]
    out = torch.empty((n, out_size, out_size))
    for i in range(n):
        side = int(s * math.sqrt(float(torch.empty(1).uniform_(crop_scale_min, 1.0, generator=generator))))
        side = max(8, min(s, side))
        y0 = int(torch.randint(0, s - side + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, s - side + 1, (1,), generator=generator))
        crop = chips[i, y0 : y0 + side, x0 : x0 + side][None, None]
        crop = torch.nn.functional.interpolate(crop, size=(out_size, out_size), mode="bilinear", align_corners=False)[0, 0]
        if torch.rand(1, generator=generator) < 0.5:
            crop = crop.flip(-1)
        if torch.rand(1, generator=generator) < 0.5:
            crop = crop.flip(-2)
        crop = torch.rot90(crop, int(torch.randint(0, 4, (1,), generator=generator)), dims=(0, 1))
        out[i] = crop
    gain = torch.empty((n, 1, 1)).uniform_(0.85, 1.15, generator=generator)
    offset = torch.empty((n, 1, 1)).uniform_(-0.08, 0.08, generator=generator)
    out = (out - 0.5) * gain + 0.5 + offset
    if speckle_looks > 0:
        out = out + speckle_db(out.shape, speckle_looks, generator) / DB_PER_UNIT
    return out.clamp(0.0, 1.0)


def center_crop(chips: np.ndarray, out_size: int) -> np.ndarray:
    """The deterministic view used for evaluation: central crop of cached chips, resized to out_size."""
    x = torch.as_tensor(chips)[:, None]
    s = x.shape[-1]
    side = round(s * 0.9)
    off = (s - side) // 2
    x = x[..., off : off + side, off : off + side]
    x = torch.nn.functional.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False)
    return x[:, 0].numpy()


# --- synthetic SAR: seeded speckled scenes of four kinds, for smoke tests in seconds ---------------

SYNTHETIC_CLASSES = ("ship", "field", "river", "city")


def synthetic_chip(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A speckled (1-look intensity) scene of one kind, returned as model input in [0, 1]."""
    from sarclip_search.ingest.radiometry import to_model_input

    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == "ship":  # dark sea, one bright compact target
        sigma0 = np.full((size, size), 0.01)
        cy, cx = rng.uniform(0.25, 0.75, 2)
        sigma0[(np.abs(yy - cy) < 0.04) & (np.abs(xx - cx) < 0.12)] = 5.0
    elif kind == "field":  # bright land with a field texture
        sigma0 = 0.2 + 0.15 * (np.sin(xx * rng.uniform(10, 20)) > 0)
    elif kind == "river":  # land crossed by a dark band
        sigma0 = np.full((size, size), 0.15)
        offset, slope = rng.uniform(0.3, 0.7), rng.uniform(-0.5, 0.5)
        sigma0[np.abs(yy - (offset + slope * (xx - 0.5))) < 0.08] = 0.005
    else:  # city: bright grid of double-bounce lines
        sigma0 = np.full((size, size), 0.1)
        period = int(rng.integers(6, 12))
        sigma0[(np.arange(size) % period == 0)[:, None] | (np.arange(size) % period == 0)[None, :]] = 3.0
    intensity = sigma0 * rng.gamma(1.0, 1.0, size=(size, size))
    return to_model_input(intensity.astype(np.float32), "linear_power")


def synthetic_samples(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, list[str], list[tuple[str, ...]]]:
    """`n` synthetic chips with their class keys and captions (balanced over SYNTHETIC_CLASSES)."""
    rng = np.random.default_rng(seed)
    words = {
        "ship": ("a ship at sea", "a vessel on dark water", "a boat"),
        "field": ("agricultural fields", "farmland", "crop fields"),
        "river": ("a river crossing land", "a stream through fields", "a river"),
        "city": ("an urban area", "buildings in a city", "a town"),
    }
    kinds = [SYNTHETIC_CLASSES[i % len(SYNTHETIC_CLASSES)] for i in range(n)]
    chips = np.stack([synthetic_chip(kind, size, rng) for kind in kinds]).astype(np.float32)
    captions = [tuple(f"a SAR image of {w}" for w in words[kind]) for kind in kinds]
    return chips, kinds, captions
