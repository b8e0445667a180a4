"""Target and clutter of centred target chips (MSTAR): the views that test and break the clutter shortcut.

MSTAR's class can be read from the background clutter alone (each class was imaged over its own patch of
ground), so a model can score well on MSTAR without looking at the vehicle. The same region definition
serves two purposes:

- the *check* (`benchmarks/bench_shortcut.py`): blank the target and see whether the class is still
  predicted (it should fall to chance), and paste one chip's target onto another class's clutter and see
  which class wins (it should be the target's);
- the *training view* (`TrainConfig.clutter_swap`): with some probability a chip's target is shown on the
  clutter of another random chip, so that clutter stops predicting the caption.

The target region is the central square of side `TARGET_FRACTION` of the chip: on the 128 px MSTAR chips the
brightest 0.5% of pixels fall in rows 53-78 and columns 49-76 (2nd-98th percentile), and the shadow extends
above them to about row 30, so the central 64 px hold target and shadow. A cosine taper of
`FEATHER_FRACTION` of the side hides the seam.
"""

from __future__ import annotations

import math

import torch

TARGET_FRACTION = 0.5
FEATHER_FRACTION = 0.06


def target_mask(size: int, fraction: float = TARGET_FRACTION, feather: float = FEATHER_FRACTION) -> torch.Tensor:
    """(size, size) weights: 1 on the central target square, 0 on the clutter, a cosine taper between."""
    centre = (size - 1) / 2
    half = fraction * size / 2
    ramp = max(1.0, feather * size)
    distance = (torch.arange(size, dtype=torch.float32) - centre).abs()
    # 1 inside half - ramp/2, 0 beyond half + ramp/2, raised cosine between
    t = ((distance - (half - ramp / 2)) / ramp).clamp(0.0, 1.0)
    line = 0.5 * (1.0 + torch.cos(math.pi * t))
    return line[:, None] * line[None, :]


def swap_clutter(targets: torch.Tensor, backgrounds: torch.Tensor, fraction: float = TARGET_FRACTION) -> torch.Tensor:
    """(N, S, S) chips showing the target of `targets[i]` on the clutter of `backgrounds[i]`."""
    mask = target_mask(targets.shape[-1], fraction).to(targets.dtype)
    return mask * targets + (1.0 - mask) * backgrounds


def blank_target(chips: torch.Tensor, generator: torch.Generator, fraction: float = TARGET_FRACTION) -> torch.Tensor:
    """(N, S, S) chips with the target region filled by clutter of the same chip.

    The fill is the chip's own clutter pixels (outside the target square) drawn at random, so the
    blanked chip keeps its clutter statistics and texture elsewhere but holds no target.
    """
    n, size = chips.shape[0], chips.shape[-1]
    mask = target_mask(size, fraction).to(chips.dtype)
    clutter = chips.reshape(n, -1)[:, (mask.reshape(-1) == 0)]
    picks = torch.randint(0, clutter.shape[1], (n, size * size), generator=generator)
    fill = torch.gather(clutter, 1, picks).reshape(n, size, size)
    return mask * fill + (1.0 - mask) * chips
