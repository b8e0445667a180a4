"""SeLo metrics (`query.selo`) on hand-made maps whose values follow from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sarclip_search.query import selo

H = W = 400
BOX = (100, 140, 179, 219)  # x0, y0, x1, y1: an 80 x 80 box centred at (139.5, 179.5)


def _mask() -> np.ndarray:
    return selo.boxes_mask([BOX], H, W)


def test_a_perfect_map_scores_one():
    mask = _mask()
    scores = selo.selo_scores(mask.astype(float), mask, [selo.box_polygon(BOX)])
    assert scores.rsu == pytest.approx(1.0)
    assert scores.ras == pytest.approx(0.0, abs=0.01)  # the attention centre is the box's centre
    assert scores.rda == 1.0  # exactly one centre inside the region
    assert scores.rmi == pytest.approx(1.0, abs=0.01)


def test_a_uniform_map_scores_what_the_formulas_give():
    mask = _mask()
    half = selo.selo_scores(np.full((H, W), 0.5), mask, [selo.box_polygon(BOX)])
    # Rsu: S_in / S_out = A / (HW - A), times (HW - A) / A = 1 -> 1 - exp(-0.707)
    assert half.rsu == pytest.approx(1 - math.exp(-0.707), abs=1e-4)
    # 0.5 quantizes to 127/255 < 0.5: no attention centre -> Ras 1, Rda 0
    assert (half.ras, half.rda) == (1.0, 0.0)
    assert half.rmi == pytest.approx(0.4 * (1 - math.exp(-0.707)), abs=1e-4)


def test_an_attention_centre_off_the_region_centre_shifts_ras_as_defined():
    mask = _mask()
    x, y, r = selo.region_centre_radius(selo.box_polygon(BOX))
    assert (x, y) == (139, 179) and r == int(math.hypot(39.5, 39.5) * 1.5)
    peak = (x + 30, y)  # inside the radius
    rows, cols = np.mgrid[0:H, 0:W]
    blob = np.exp(-((cols - peak[0]) ** 2 + (rows - peak[1]) ** 2) / (2 * 30.0 ** 2))
    centres = selo.attention_centres(selo.quantize(blob))
    # even 50 px boxes (as OpenCV anchors them) move the maximum half a pixel down-right per pass: 2.5 px
    assert centres and math.dist(centres[0], (peak[0] + 2.5, peak[1] + 2.5)) <= 1.0
    shift = math.dist((x, y), centres[0]) / r
    expected = (math.exp(3 * shift) - 1) / (math.exp(3) - 1)
    scores = selo.selo_scores(blob, mask, [selo.box_polygon(BOX)])
    assert scores.ras == pytest.approx(expected, abs=1e-9)
    assert scores.rda == 1.0
    assert 0 < scores.rsu < 1
    assert scores.rmi == pytest.approx(0.4 * scores.rsu + 0.35 * (1 - expected) + 0.25, abs=1e-9)


def test_a_map_hot_elsewhere_scores_worse_than_a_map_hot_on_the_target():
    mask = _mask()
    rows, cols = np.mgrid[0:H, 0:W]

    def blob(cx: int, cy: int) -> np.ndarray:
        return np.exp(-((cols - cx) ** 2 + (rows - cy) ** 2) / (2 * 40.0 ** 2))

    on = selo.selo_scores(blob(139, 179), mask, [selo.box_polygon(BOX)])
    off = selo.selo_scores(blob(330, 330), mask, [selo.box_polygon(BOX)])
    assert on.rmi > 0.8 and off.rmi < 0.3
    assert on.rsu > off.rsu and on.ras < off.ras and on.rda > off.rda


def test_mask_regions_keeps_the_large_parts():
    mask = np.zeros((100, 100), dtype=bool)
    mask[10:40, 20:60] = True  # 1200 px
    mask[90, 90] = True  # one pixel: below 1 % of the image
    assert selo.mask_regions(mask) == [selo.box_polygon((20, 10, 59, 39))]
    with pytest.raises(ValueError, match="empty"):
        selo.rsu(np.ones((10, 10)), np.zeros((10, 10), dtype=bool))
