"""Targets outside their usual clutter: pasted into other backgrounds, and other radiometric stretches.

Complements the views of `training/shortcut.py` (a target on another chip's clutter) and the vehicles cut
from composite scenes (`data.box_samples`, now also at wider windows, `box_crop_scales`):

- `paste_targets`: the target region of a centred-target chip (the feathered central square of
  `shortcut.target_mask`) shrunk to a random scale and pasted at a random place of a background of another
  domain: land tiles of HRSID scenes and BigEarthNet-S1 fields of the *train* split (`land_backgrounds`).
  The caption still names the target: the vehicle is what the text describes, wherever it stands.
- `stretch`: a random gamma on the [0, 1] model input (0.6-1.6), so that the 8-bit processing of one
  archive (MSTAR's JPEGs, the composite scenes' other contrast) is not what identifies its targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarclip_search.training.shortcut import target_mask

# A tile of a ship scene counts as land when its texture (std of the normalized chip pooled to 64 px) is
# at least this: open-sea tiles of the HRSID train scenes measure 0.035-0.056, textured coast/land tiles
# 0.06-0.14 (measured on ../shared/data, see docs/training.md).
LAND_TEXTURE_STD = 0.06


def land_background(chip: torch.Tensor) -> bool:
    """Whether a (S, S) chip is textured enough to be land rather than open sea (see LAND_TEXTURE_STD)."""
    pooled = F.adaptive_avg_pool2d(chip[None, None].float(), 64)  # speckle partly averaged out
    return float(pooled.std()) >= LAND_TEXTURE_STD


def paste_targets(
    targets: torch.Tensor, backgrounds: torch.Tensor, generator: torch.Generator, *,
    scale: tuple[float, float] = (0.5, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, S, S) chips with each target chip's central region pasted into a background; and the boxes.

    The target chip is resized to a random fraction `scale` of the side and blended at a random place with
    the feathered target mask, so the pasted region (the mask's support) always lies inside the background.
    Returns the chips and (N, 4) boxes `[row0, col0, row1, col1)` of the resized target chip.
    """
    n, size = targets.shape[0], targets.shape[-1]
    out = backgrounds.clone()
    boxes = torch.zeros((n, 4), dtype=torch.long)
    for i in range(n):
        fraction = float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
        side = max(8, min(size, round(size * fraction)))
        small = F.interpolate(targets[i][None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
        mask = target_mask(side).to(small.dtype)
        row = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        col = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        region = out[i, row : row + side, col : col + side]
        out[i, row : row + side, col : col + side] = mask * small + (1.0 - mask) * region
        boxes[i] = torch.tensor([row, col, row + side, col + side])
    return out, boxes


def stretch(chips: torch.Tensor, generator: torch.Generator, gamma: tuple[float, float] = (0.6, 1.6)) -> torch.Tensor:
    """(N, S, S) chips in [0, 1] under a random gamma each (log-uniform in `gamma`)."""
    low, high = torch.log(torch.tensor(gamma[0])), torch.log(torch.tensor(gamma[1]))
    g = torch.exp(torch.empty((chips.shape[0], 1, 1)).uniform_(float(low), float(high), generator=generator))
    return chips.clamp(0.0, 1.0) ** g
