"""`sarsearch locate` timing: an 800 x 800 scene and a 5,000 x 5,000 GeoTIFF, cold and with the cache warm.

    .venv/bin/python benchmarks/bench_locate.py --db runs/corpus-db [--data ../shared/data] [--full-scales]

The 5,000 x 5,000 scene is generated at run time in a temporary folder (never committed): a float32 GeoTIFF
(EPSG:32632, 10 m) tiled from the KOMPSAT-5 water tiles of --data when they are there (5 x 5 tiles of 1024 px,
cropped), else seeded speckle with bright targets. The 800 x 800 scene is an HRSID test crop of --data, else
seeded speckle. Each scene is located twice with a fresh cache folder: "cold" embeds every window and writes
the cache, "warm" locates a second phrase from it. Times are `locate()` in this process (the engine and its
ONNX sessions opened before; a CLI run adds ~2 s of start-up), plus writing the GeoTIFF, the overlay and the
peaks as `sarsearch locate` does. `--full-scales` also times the 5k scene at 64,128,256 (its default is
128,256,512).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def speckle_scene(side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.exponential(0.02, (side, side)).astype(np.float32)
    for _ in range(max(1, side // 200)):
        col, row = rng.integers(20, side - 20, 2)
        values[row - 8: row + 8, col - 3: col + 3] = 4.0
    return values


def write_geotiff(path: Path, values: np.ndarray) -> Path:
    import rasterio
    from rasterio.crs import CRS

    profile = {"driver": "GTiff", "width": values.shape[1], "height": values.shape[0], "count": 1,
               "dtype": "float32", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "crs": CRS.from_epsg(32632), "transform": rasterio.Affine(10.0, 0, 500000.0, 0, -10.0, 6650000.0)}
    with rasterio.open(path, "w", **profile) as out:
        out.write(values, 1)
    return path


def big_scene(folder: Path, data: Path | None, side: int = 5000) -> tuple[Path, str]:
    tiles = sorted((data / "kompsat5_water" / "images").glob("*.tif")) if data is not None else []
    if tiles:
        from sarclip_search.ingest import raster

        mosaic = np.zeros((5 * 1024, 5 * 1024), dtype=np.float32)
        for index in range(25):
            row, col = divmod(index, 5)
            values = raster.read_window(tiles[index % len(tiles)], bands=[1])[0]
            mosaic[row * 1024: (row + 1) * 1024, col * 1024: (col + 1) * 1024] = values[:1024, :1024]
        source = f"5 x 5 KOMPSAT-5 water tiles of {data} (amplitude as float32), cropped"
        values = mosaic[:side, :side]
    else:
        values, source = speckle_scene(side, 1), "seeded speckle with bright targets"
    return write_geotiff(folder / "scene5k.tif", np.ascontiguousarray(values)), source


def small_scene(folder: Path, data: Path | None) -> tuple[Path, str]:
    if data is not None and (data / "manifest.csv").is_file():
        import csv

        with open(data / "manifest.csv", newline="") as stream:
            for row in csv.DictReader(stream):
                if row["dataset"] == "HRSID" and row["split"] == "test":
                    return data / row["path"], f"HRSID test crop {row['path']}"
    return write_geotiff(folder / "scene800.tif", speckle_scene(800, 2)), "seeded speckle, 800 x 800"


def timed(engine, scene: Path, phrase: str, cache: Path, out: Path, scales=None) -> dict:
    from sarclip_search.query import locate as localisation

    started = time.perf_counter()
    result = localisation.locate(engine.encoder, scene, engine.embed_text(phrase), scales=scales, cache_root=cache)
    located = time.perf_counter() - started
    localisation.write_heat_geotiff(result, out / "heat.tif")
    localisation.overlay(result).save(out / "overlay.png")
    (out / "peaks.geojson").write_text(json.dumps(localisation.peaks_geojson(result, phrase)))
    return {"windows": result.windows, "cached": result.cached, "scales": list(result.scales),
            "locate_s": round(located, 2), "with_outputs_s": round(time.perf_counter() - started, 2),
            "embed_s": round(result.seconds.get("embed", 0.0), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("runs/corpus-db"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--full-scales", action="store_true")
    args = parser.parse_args()
    data = args.data if args.data.is_dir() else None

    from sarclip_search.query.engine import Engine

    report = {"load_1min_before": os.getloadavg()[0], "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-locate-") as tmp, Engine.open(args.db) as engine:
        folder = Path(tmp)
        engine.embed_text("warm up")
        small, small_source = small_scene(folder, data)
        big, big_source = big_scene(folder, data)
        report["scenes"] = {"800": small_source, "5000": big_source}
        plans = [("800", small, None), ("5000", big, None)]
        if args.full_scales:
            plans.append(("5000 @ 64,128,256", big, (64, 128, 256)))
        for name, scene, scales in plans:
            cache = folder / f"cache-{len(report['runs'])}"
            out = folder / "out"
            out.mkdir(exist_ok=True)
            cold = timed(engine, scene, "ship", cache, out, scales)
            warm = timed(engine, scene, "water", cache, out, scales)
            report["runs"].append({"scene": name, "cold": cold, "warm": warm, "load_1min": os.getloadavg()[0]})
            print(json.dumps(report["runs"][-1]), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
