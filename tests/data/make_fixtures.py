"""Write the tiny, seeded SAR test archive under tests/data/archive/ (or OUTDIR).

    python tests/data/make_fixtures.py [OUTDIR]

Contents (all deterministic; the output is committed next to this script):

- `sentinel1/`: 7 Sentinel-1-style GRD GeoTIFFs, float32 linear power, bands VV and VH, UTM CRS,
  nodata 0 with a nodata strip along one edge. "ship" scenes (dark sea, gamma speckle, 1-3 bright compact
  targets) in EPSG:32631 off the Dutch coast; "field" scenes (brighter parcels of farmland) in EPSG:32632
  in Lower Saxony. Six are 64 x 64, one ship scene is 160 x 96 so that 64-pixel tiling cuts it.
  One has a STAC Item sidecar `<file>.tif.json`.
- `chips/`: two 8-bit PNG chips (a ship, a field).
- `kompsat5/`: one uint16 amplitude GeoTIFF without CRS or transform.
- `manifest.csv`: path,dataset,split,label,sensor,band,polarization for every image.

Float values keep 10 mantissa bits (about 3 significant digits) so DEFLATE shrinks them; the whole
archive stays well under 300 KB.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy
from rasterio.warp import transform_bounds

SEED = 20210101  # base seed; scene k uses SEED + k, so scenes do not depend on each other's order
PIXEL_SIZE_M = 10.0  # Sentinel-1 IW GRDH pixel spacing
LOOKS = 4.0  # equivalent number of looks of the gamma speckle (GRDH is ~4.4)
NODATA = 0.0  # Sentinel-1 GRD convention: 0 outside the swath
GTIFF_OPTIONS = {"compress": "deflate", "predictor": 3, "zlevel": 9, "interleave": "pixel"}

DEFAULT_OUTDIR = Path(__file__).resolve().parent / "archive"


@dataclass(frozen=True)
class Scene:
    """One synthetic Sentinel-1 scene and where it lies."""

    kind: str  # "ship" or "field": the content and the manifest label
    split: str  # "train" or "test"
    start: datetime  # acquisition start (UTC)
    epsg: int  # UTM zone of the footprint
    origin: tuple[float, float]  # upper-left corner (easting, northing), metres
    width: int = 64
    height: int = 64
    nodata_edge: str = "left"  # which edge carries the nodata strip
    absolute_orbit: int = 35951


SCENES: tuple[Scene, ...] = (
    Scene(
        "ship", "train", datetime(2021, 1, 1, 5, 45, 12), 32631, (495_000.0, 5_790_000.0), nodata_edge="left"
    ),
    Scene(
        "ship",
        "train",
        datetime(2021, 1, 13, 5, 45, 11),
        32631,
        (501_000.0, 5_786_000.0),
        nodata_edge="right",
        absolute_orbit=36126,
    ),
    Scene(
        "ship",
        "test",
        datetime(2021, 1, 25, 5, 45, 11),
        32631,
        (507_000.0, 5_792_000.0),
        nodata_edge="top",
        absolute_orbit=36301,
    ),
    Scene(
        "field",
        "train",
        datetime(2021, 2, 2, 5, 34, 40),
        32632,
        (500_000.0, 5_762_000.0),
        nodata_edge="left",
        absolute_orbit=36418,
    ),
    Scene(
        "field",
        "train",
        datetime(2021, 2, 14, 5, 34, 40),
        32632,
        (506_000.0, 5_758_000.0),
        nodata_edge="bottom",
        absolute_orbit=36593,
    ),
    Scene(
        "field",
        "test",
        datetime(2021, 2, 26, 5, 34, 39),
        32632,
        (512_000.0, 5_765_000.0),
        nodata_edge="right",
        absolute_orbit=36768,
    ),
    Scene(
        "ship",
        "train",
        datetime(2021, 3, 10, 5, 45, 10),
        32631,
        (489_000.0, 5_780_000.0),
        width=160,
        height=96,
        nodata_edge="bottom",
        absolute_orbit=36943,
    ),
)
STAC_SCENE = 0  # index of the scene that gets a STAC Item sidecar


def product_name(scene: Scene, index: int) -> str:
    """A Sentinel-1 product-style file name: MMM_BB_TTTR_LFPP_start_stop_orbit_datatake_uid_tiny.tif."""
    stop = scene.start + timedelta(seconds=25)
    datatake = 0x043656 + 0x2B * index
    uid = 0x1A2B + 0x111 * index
    return (
        f"S1A_IW_GRDH_1SDV_{scene.start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_"
        f"{scene.absolute_orbit:06d}_{datatake:06X}_{uid:04X}_tiny.tif"
    )


def speckle(rng: np.random.Generator, mean: np.ndarray) -> np.ndarray:
    """Multiplicative gamma speckle of `LOOKS` looks (unit mean) applied to a mean power image."""
    return mean * rng.gamma(LOOKS, 1.0 / LOOKS, size=mean.shape)


def ship_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark sea (about -22 dB VV) with 1-2 (3 for large scenes) bright compact ships: (VV, VH) power."""
    cols = np.linspace(0.0, 1.0, width, dtype=np.float64)[None, :]
    sea_vv = np.broadcast_to(10 ** ((-21.0 - 3.0 * cols) / 10.0), (height, width)).copy()  # incidence ramp
    targets_vv = np.zeros((height, width))
    n_ships = int(rng.integers(1, 3)) + (1 if width * height > 64 * 64 else 0)
    for _ in range(n_ships):
        length, beam = int(rng.integers(5, 9)), int(rng.integers(2, 4))
        if rng.random() < 0.5:
            length, beam = beam, length
        row = int(rng.integers(4, height - 4 - length))
        col = int(rng.integers(8, width - 8 - beam))
        targets_vv[row : row + length, col : col + beam] = 10 ** (rng.uniform(3.0, 10.0) / 10.0)
    vv_mean = sea_vv + targets_vv
    vh_mean = sea_vv * 10 ** (-7.0 / 10.0) + targets_vv * 10 ** (-6.0 / 10.0)
    return speckle(rng, vv_mean), speckle(rng, vh_mean)


def field_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Farmland: rectangular parcels of -15..-7 dB VV with a darker cross-pol: (VV, VH) power."""
    row_edges = np.unique(np.r_[0, np.sort(rng.integers(6, height - 6, size=3)), height])
    col_edges = np.unique(np.r_[0, np.sort(rng.integers(6, width - 6, size=3)), width])
    vv_db = np.zeros((height, width))
    for top, bottom in itertools.pairwise(row_edges):
        for left, right in itertools.pairwise(col_edges):
            vv_db[top:bottom, left:right] = rng.uniform(-15.0, -7.0)
    vv_db += rng.normal(0.0, 0.8, size=(height, width))  # within-parcel texture
    vv_mean = 10 ** (vv_db / 10.0)
    vh_mean = vv_mean * 10 ** (rng.uniform(-8.0, -5.0) / 10.0)
    return speckle(rng, vv_mean), speckle(rng, vh_mean)


def quantize(values: np.ndarray) -> np.ndarray:
    """float32 with the 13 low mantissa bits cleared (10 kept), so DEFLATE compresses speckle well."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFFE000)
    return bits.view(np.float32)


def nodata_strip(shape: tuple[int, int], edge: str, width: int = 6) -> np.ndarray:
    """Boolean mask of a `width`-pixel strip along `edge` of an image of `shape`."""
    mask = np.zeros(shape, dtype=bool)
    strips = {
        "left": np.s_[:, :width],
        "right": np.s_[:, -width:],
        "top": np.s_[:width, :],
        "bottom": np.s_[-width:, :],
    }
    mask[strips[edge]] = True
    return mask


def scene_array(scene: Scene, index: int) -> np.ndarray:
    """(2, H, W) float32 linear power, VV then VH, with the nodata strip set to `NODATA`."""
    rng = np.random.default_rng(SEED + index)
    make = ship_scene if scene.kind == "ship" else field_scene
    vv, vh = make(rng, scene.height, scene.width)
    stack = quantize(np.stack([vv, vh]))
    stack[:, nodata_strip((scene.height, scene.width), scene.nodata_edge)] = NODATA
    return stack


def write_sentinel1(path: Path, scene: Scene, data: np.ndarray) -> None:
    """Write one scene as a 2-band float32 GeoTIFF with VV/VH descriptions, UTM CRS and nodata."""
    profile = {
        "driver": "GTiff",
        "width": scene.width,
        "height": scene.height,
        "count": 2,
        "dtype": "float32",
        "crs": f"EPSG:{scene.epsg}",
        "transform": Affine(
            PIXEL_SIZE_M, 0.0, scene.origin[0], 0.0, -PIXEL_SIZE_M, scene.origin[1]
        ),  # north-up
        "nodata": NODATA,
        **GTIFF_OPTIONS,
    }
    # Written in memory, then copied: GDAL's CreateCopy puts the TIFF directory before the pixel data,
    # as most producers do, so a truncated copy still opens and the reader must notice missing blocks.
    # GDAL splits metadata keys at ":", so GeoTIFF tags use "SAR_SCALE" rather than STAC's "sar:scale".
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(data)
            dataset.descriptions = ("VV", "VH")
            dataset.update_tags(
                TIFFTAG_DATETIME=f"{scene.start:%Y:%m:%d %H:%M:%S}",
                SAR_SCALE="linear_power",
                SAR_POLARIZATIONS="VV,VH",
                PLATFORM="sentinel-1a",
            )
        with memory.open() as dataset:
            rio_copy(dataset, path, driver="GTiff", **GTIFF_OPTIONS)


def stac_item(path: Path, scene: Scene) -> dict:
    """A STAC 1.0.0 Item describing a scene, with the sar and sat extensions."""
    bounds = transform_bounds(
        f"EPSG:{scene.epsg}",
        "EPSG:4326",
        scene.origin[0],
        scene.origin[1] - scene.height * PIXEL_SIZE_M,
        scene.origin[0] + scene.width * PIXEL_SIZE_M,
        scene.origin[1],
    )
    west, south, east, north = (round(value, 6) for value in bounds)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
        ],
        "id": path.stem,
        "bbox": [west, south, east, north],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        },
        "properties": {
            "datetime": f"{scene.start:%Y-%m-%dT%H:%M:%S}Z",
            "platform": "sentinel-1a",
            "constellation": "sentinel-1",
            "sar:instrument_mode": "IW",
            "sar:frequency_band": "C",
            "sar:polarizations": ["VV", "VH"],
            "sar:product_type": "GRD",
            "sat:orbit_state": "descending",
            "sat:absolute_orbit": scene.absolute_orbit,
        },
        "assets": {
            "data": {"href": f"./{path.name}", "type": "image/tiff; application=geotiff", "roles": ["data"]}
        },
        "links": [],
    }


def to_display8(power: np.ndarray, low_db: float = -25.0, high_db: float = 5.0) -> np.ndarray:
    """8-bit display image of linear power: dB mapped linearly from [low_db, high_db] to [0, 255]."""
    db = 10 * np.log10(np.maximum(power, 1e-6))
    return np.clip(np.round(255 * (db - low_db) / (high_db - low_db)), 0, 255).astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an 8-bit grey PNG without any timestamp chunk."""
    Image.fromarray(image).save(path, format="PNG", optimize=False, compress_level=9)


def write_uint16_nocrs(path: Path, amplitude: np.ndarray) -> None:
    """Write a single-band uint16 amplitude GeoTIFF with neither CRS nor transform."""
    profile = {
        "driver": "GTiff",
        "width": amplitude.shape[1],
        "height": amplitude.shape[0],
        "count": 1,
        "dtype": "uint16",
        "compress": "deflate",
        "predictor": 2,
        "zlevel": 9,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dataset:
            dataset.write(amplitude[None])
            dataset.descriptions = ("HH",)


# The masked archive (`write_masked_archive`): written on demand by the mask tests, not part of the committed one.
MASK_EDGE_COL = 320  # water left of this column in the KOMPSAT-style scene (512 x 256): tile 2 of 256 px is 1/4 water
MKLAB_COLOURS = {"sea": (0, 0, 0), "oil": (0, 255, 255), "lookalike": (255, 0, 0), "ship": (153, 76, 0),
                 "land": (0, 153, 0)}


def write_masked_archive(outdir: Path) -> list[dict[str, str]]:
    """A small archive laid out as the corpus's masked datasets (`ingest/masks.py` finds masks by this naming):

    - `kompsat5_water/images/WTR_tiny.tif` (512 x 256 uint16 amplitude, speckled): calm water (about 18 dB of
      DN) left of `MASK_EDGE_COL`, land (about 36 dB) right of it; `kompsat5_water/masks/WTR_tiny_label.tif`:
      255 water, 0 land.
    - `oil_spill_mklab/images/img_tiny.jpg` (256 x 128 grey) and its RGB class mask `masks/img_tiny.png`:
      land in columns 0-63, oil in rows 0-31 of columns 64-255, a look-alike in rows 96-127 of columns
      192-255, a 4 x 4 ship at (128, 64), sea elsewhere, and three off-palette pixels near green at (0..2, 100).
    - `plain/field_tiny.tif`: a scene with no mask (a copy of the KOMPSAT-style pixels).
    Returns the manifest rows (also written to manifest.csv).
    """
    rng = np.random.default_rng(SEED + 300)
    for folder in ("kompsat5_water/images", "kompsat5_water/masks", "oil_spill_mklab/images",
                   "oil_spill_mklab/masks", "plain"):
        (outdir / folder).mkdir(parents=True, exist_ok=True)
    height, width = 256, 512
    water = np.zeros((height, width), dtype=bool)
    water[:, :MASK_EDGE_COL] = True
    mean_db = np.where(water, 18.0, 36.0)
    amplitude = np.sqrt(speckle(rng, 10 ** (mean_db / 10.0)))
    values = np.clip(np.round(amplitude), 1, 65535).astype(np.uint16)
    write_uint16_nocrs(outdir / "kompsat5_water/images/WTR_tiny.tif", values)
    write_uint16_nocrs(outdir / "plain/field_tiny.tif", values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(outdir / "kompsat5_water/masks/WTR_tiny_label.tif", "w", driver="GTiff", width=width,
                           height=height, count=1, dtype="uint8", compress="deflate") as mask:
            mask.write(np.where(water, 255, 0).astype(np.uint8)[None])

    classes = np.full((128, 256), "sea", dtype=object)
    classes[:, :64] = "land"
    classes[:32, 64:] = "oil"
    classes[96:, 192:] = "lookalike"
    classes[64:68, 128:132] = "ship"
    rgb = np.zeros((128, 256, 3), dtype=np.uint8)
    for name, colour in MKLAB_COLOURS.items():
        rgb[classes == name] = colour
    rgb[100, 0:3] = (10, 140, 5)  # resampling artefacts near the land colour
    Image.fromarray(rgb).save(outdir / "oil_spill_mklab/masks/img_tiny.png", format="PNG")
    grey = np.where(classes == "land", 200, np.where(classes == "sea", 60, 30)).astype(np.uint8)
    Image.fromarray(grey).save(outdir / "oil_spill_mklab/images/img_tiny.jpg", format="JPEG", quality=95)

    rows = [
        {"path": "kompsat5_water/images/WTR_tiny.tif", "dataset": "KOMPSAT-5-water", "split": "train",
         "label": "water_body", "polarization": "HH"},
        {"path": "oil_spill_mklab/images/img_tiny.jpg", "dataset": "MKLab-Oil-Spill", "split": "test",
         "label": "oil_spill", "polarization": "VV"},
        {"path": "plain/field_tiny.tif", "dataset": "synthetic-K5", "split": "train", "label": "field",
         "polarization": "HH"},
    ]
    with open(outdir / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def write_archive(outdir: Path) -> list[dict[str, str]]:
    """Write every fixture under `outdir` and return the manifest rows (also written to manifest.csv)."""
    rows: list[dict[str, str]] = []
    (outdir / "sentinel1").mkdir(parents=True, exist_ok=True)
    (outdir / "chips").mkdir(parents=True, exist_ok=True)
    (outdir / "kompsat5").mkdir(parents=True, exist_ok=True)

    for index, scene in enumerate(SCENES):
        path = outdir / "sentinel1" / product_name(scene, index)
        write_sentinel1(path, scene, scene_array(scene, index))
        if index == STAC_SCENE:
            text = json.dumps(stac_item(path, scene), indent=2) + "\n"
            path.with_name(path.name + ".json").write_text(text, encoding="utf-8")
        rows.append(
            {
                "path": f"sentinel1/{path.name}",
                "dataset": "synthetic-S1-GRD",
                "split": scene.split,
                "label": scene.kind,
                "sensor": "Sentinel-1A",
                "band": "C",
                "polarization": "VV+VH",
            }
        )

    chip_rng = np.random.default_rng(SEED + 100)
    for name, kind, split in (
        ("chip_ship_0001.png", "ship", "train"),
        ("chip_field_0001.png", "field", "test"),
    ):
        make = ship_scene if kind == "ship" else field_scene
        vv, _ = make(chip_rng, 48, 48)
        write_png(outdir / "chips" / name, to_display8(vv))
        rows.append(
            {
                "path": f"chips/{name}",
                "dataset": "synthetic-chips",
                "split": split,
                "label": kind,
                "sensor": "Sentinel-1A",
                "band": "C",
                "polarization": "VV",
            }
        )

    k5_rng = np.random.default_rng(SEED + 200)
    power, _ = field_scene(k5_rng, 64, 64)
    amplitude = np.clip(np.round(np.sqrt(power) * 4000.0), 1, 65535).astype(np.uint16)
    k5_name = "K5_ES_GTC_HH_20150603T171436_nocrs_tiny.tif"
    write_uint16_nocrs(outdir / "kompsat5" / k5_name, amplitude)
    rows.append(
        {
            "path": f"kompsat5/{k5_name}",
            "dataset": "synthetic-K5",
            "split": "train",
            "label": "field",
            "sensor": "KOMPSAT-5",
            "band": "X",
            "polarization": "HH",
        }
    )

    with open(outdir / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Write the archive to OUTDIR (default tests/data/archive) and print a one-line summary."""
    args = sys.argv[1:] if argv is None else argv
    outdir = Path(args[0]) if args else DEFAULT_OUTDIR
    rows = write_archive(outdir)
    total = sum(path.stat().st_size for path in outdir.rglob("*") if path.is_file())
    print(f"wrote {len(rows)} images to {outdir} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
