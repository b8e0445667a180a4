"""SeLo metrics: how well a heat map localises annotated regions (Rsu, Ras, Rda, Rmi).

The definitions and constants are those of the semantic-localisation benchmark of Yuan et al., "Learning to
Evaluate Performance of Multi-modal Semantic Localization" (AIRCAS; the reference code is
`evaluations/SLM.py` of github.com/xiaoyuan1996/SemanticLocalizationMetrics), ported from OpenCV/scikit-image
to numpy/scipy with the same arithmetic:

- the map is quantized as the benchmark's grey PNG is (``uint8(255 p) / 255``);
- **Rsu** (salient-area proportion, higher is better):
  ``1 - exp(-0.707 * (S_in / (S_out + 1e-7)) * ((H W - A) / A))``, with ``S_in``/``S_out`` the heat inside /
  outside the annotation mask and ``A`` the mask's area;
- attention centres: the grey map box-filtered five times with a 50 x 50 kernel (OpenCV `boxFilter`, reflect-101
  border, rounded to uint8), the pixels equal to the maximum of their 1000 x 1000 neighbourhood (and > 0), the
  centroids of their 8-connected groups, sorted by heat, kept when their heat is >= 0.5;
- each annotated region (a polygon) has a centre (mean of its vertices, truncated) and a radius (1.5 x the mean
  vertex distance, truncated);
- **Ras** (attention shift, lower is better): per region, the mean distance of the centres inside its radius
  (the radius when none is), divided by the radius; averaged over regions, then ``(e^{3x} - 1) / (e^3 - 1)``.
  Without any centre it is 1 (the reference code then takes the first region only);
- **Rda** (attention dispersion, higher is better): per region, 0 or 1 for zero or one centre inside its
  radius, else ``0.5 (1 - d / r) + exp(-0.5 (n + 2))`` with ``d`` the mean distance of its n centres to their
  mean; averaged over regions;
- **Rmi** = 0.4 Rsu + 0.35 (1 - Ras) + 0.25 Rda.

The constants are the benchmark's, tuned on its AIR-SLT scenes of thousands of pixels a side; they are kept as
they are (docs/locate.md says what that means on smaller SAR scenes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

RSU_BETA = 0.707
RSU_EPS = 1e-7
RAS_EXPAND = 1.5
RAS_FILTER_TIMES = 5
RAS_BOX = 50
RAS_PEAK_WINDOW = 1000
RAS_SCALE_BETA = 3.0
RDA_ETA = 0.5
CENTRE_MIN = 0.5
W_SU, W_AS, W_DA = 0.4, 0.35, 0.25

Polygon = Sequence[tuple[float, float]]  # (x = column, y = row) vertices


@dataclass(frozen=True)
class SeloScores:
    rsu: float
    ras: float
    rda: float
    rmi: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def quantize(prob: np.ndarray) -> np.ndarray:
    """A [0, 1] map as the benchmark reads its grey PNG: ``uint8(255 p) / 255``."""
    return np.asarray(np.clip(prob, 0.0, 1.0) * 255.0, dtype=np.uint8) / 255.0


def box_polygon(box: Sequence[float]) -> list[tuple[float, float]]:
    """(x0, y0, x1, y1) → its four corners, as the benchmark's annotations list them."""
    x0, y0, x1, y1 = box
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def boxes_mask(boxes: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of filled boxes (x0, y0, x1, y1), corners included, coordinates truncated to int32 (as
    the reference's `cv2.fillPoly(mask, np.array(points, np.int32), 1)` fills them)."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        left, top = max(0, int(x0)), max(0, int(y0))
        mask[top: max(top, int(y1) + 1), left: max(left, int(x1) + 1)] = True
    return mask


def rsu(prob: np.ndarray, mask: np.ndarray) -> float:
    inside = float(np.sum(prob * mask))
    total = float(np.sum(prob))
    area = float(np.sum(mask))
    if area == 0:
        raise ValueError("the annotation mask is empty")
    height, width = mask.shape
    left = inside / (total - inside + RSU_EPS)
    right = (height * width - area) / area
    return float(1.0 - math.exp(-RSU_BETA * left * right))


def region_centre_radius(polygon: Polygon) -> tuple[int, int, int]:
    points = np.asarray(polygon, dtype=np.float64)
    mid_x, mid_y = int(points[:, 0].sum() / len(points)), int(points[:, 1].sum() / len(points))
    radius = int(np.mean(np.linalg.norm(points - np.array([mid_x, mid_y]), axis=1)) * RAS_EXPAND)
    return mid_x, mid_y, max(1, radius)  # a one-pixel region would divide by zero in the reference code


def _box_filter_u8(gray: np.ndarray, size: int) -> np.ndarray:
    from scipy import ndimage

    smoothed = ndimage.uniform_filter(gray.astype(np.float64), size=size, mode="mirror")
    return np.clip(np.round(smoothed), 0, 255).astype(np.uint8)


def attention_centres(prob: np.ndarray) -> list[tuple[int, int]]:
    """(x, y) attention centres of a quantized map, best first (see the module's description)."""
    from scipy import ndimage

    gray = np.asarray(prob * 255.0, dtype=np.uint8)
    for _ in range(RAS_FILTER_TIMES):
        gray = _box_filter_u8(gray, RAS_BOX)
    peak = ndimage.maximum_filter(gray, size=RAS_PEAK_WINDOW)
    binary = (gray == peak) & (gray > 0)
    labels, count = ndimage.label(binary, structure=np.ones((3, 3), dtype=int))
    if count == 0:
        return []
    centroids = ndimage.center_of_mass(binary, labels, range(1, count + 1))
    centres = [(int(col), int(row)) for row, col in centroids]
    centres.sort(key=lambda c: prob[c[1], c[0]], reverse=True)
    return [c for c in centres if prob[c[1], c[0]] >= CENTRE_MIN]


def ras(regions: Sequence[Polygon], centres: Sequence[tuple[int, int]]) -> float:
    circles = [region_centre_radius(region) for region in regions]
    if not centres:
        ratios = [1.0]  # the reference: [radius of the first region] / radius
    else:
        ratios = []
        for x, y, r in circles:
            distances = [d for d in (math.dist((x, y), c) for c in centres) if d <= r]
            ratios.append((float(np.mean(distances)) if distances else r) / r)
    shift = float(np.mean(ratios))
    return float((math.exp(RAS_SCALE_BETA * shift) - 1.0) / (math.exp(RAS_SCALE_BETA) - 1.0))


def rda(regions: Sequence[Polygon], centres: Sequence[tuple[int, int]]) -> float:
    values = []
    for x, y, r in (region_centre_radius(region) for region in regions):
        inside = [c for c in centres if math.dist((x, y), c) <= r]
        if len(inside) <= 1:
            values.append(float(len(inside)))
            continue
        mean = np.mean(np.asarray(inside, dtype=np.float64), axis=0)
        spread = float(np.mean([np.linalg.norm(mean - np.asarray(c)) for c in inside])) / r
        values.append(0.5 * (1.0 - spread) + math.exp(-RDA_ETA * (len(inside) + 2)))
    return float(np.mean(values))


def rmi(rsu_value: float, ras_value: float, rda_value: float) -> float:
    return W_SU * rsu_value + W_AS * (1.0 - ras_value) + W_DA * rda_value


def selo_scores(prob: np.ndarray, mask: np.ndarray, regions: Sequence[Polygon]) -> SeloScores:
    """Rsu, Ras, Rda and Rmi of a [0, 1] map against an annotation: its mask (H, W) and its regions (polygons
    of (x, y) vertices; boxes via `box_polygon`)."""
    if prob.shape != mask.shape:
        raise ValueError(f"map {prob.shape} and mask {mask.shape} differ in shape")
    if not regions:
        raise ValueError("at least one annotated region is needed")
    grey = quantize(prob)
    centres = attention_centres(grey)
    su, shift, dispersion = rsu(grey, mask.astype(bool)), ras(regions, centres), rda(regions, centres)
    return SeloScores(su, shift, dispersion, rmi(su, shift, dispersion))


def mask_regions(mask: np.ndarray, min_share: float = 0.01) -> list[list[tuple[float, float]]]:
    """Box polygons of the 8-connected parts of a mask covering at least `min_share` of the image (the
    largest part when none does): the regions of a mask-only annotation (water)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    if count == 0:
        return []
    sizes = ndimage.sum_labels(mask, labels, range(1, count + 1))
    keep = [i + 1 for i, size in enumerate(sizes) if size >= min_share * mask.size] or [int(np.argmax(sizes)) + 1]
    slices = ndimage.find_objects(labels)
    regions = []
    for label in keep:
        rows, cols = slices[label - 1]
        regions.append(box_polygon((cols.start, rows.start, cols.stop - 1, rows.stop - 1)))
    return regions
