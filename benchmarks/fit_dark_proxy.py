"""Fit and validate the dark-water proxy (`ingest/masks.py`: tile_dark_fraction) against the masks that exist.

Thresholds per radiometric regime are fitted on the TRAIN split only: 8-px blocks whose mask says water
(> half) or land, the (mean dB, std dB) bounds with the best balanced accuracy per regime:
  calibrated_co / calibrated_cross  C2S-MS-Floods train chips (VV, VH rows), their water labels
  amplitude                         KOMPSAT-5 train tiles, their water masks
  display8                          weak labels: HRSID offshore train crops (sea but the ship mask),
                                    MSTAR composite train scenes and every 12th SOC chip (land)
Then every tile (the indexer's 256-px grid) of the train and val images with a mask is scored: Pearson r of
the mask's water fraction vs the proxy, and the accuracy of water > 0.5 vs proxy > 0.5, per regime and split;
the MKLab oil-spill scenes (test split, never fitted on) are reported as a transfer check with --with-test.

    .venv/bin/python benchmarks/fit_dark_proxy.py [--data ../shared/data] [--out runs/masks]

Writes OUT/dark_fit.json (thresholds, per-tile rows, figures) and OUT/dark_proxy.png (scatter per regime).
`--db DB` instead scores what an index stored (tile_water_fraction vs tile_dark_fraction per split and dataset).
The thresholds are copied by hand into masks.DARK_THRESHOLDS.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sarclip_search.ingest import radiometry, raster
from sarclip_search.ingest.masks import (
    DARK_BLOCK,
    DARK_THRESHOLDS,
    DarkThreshold,
    block_stats,
    dark_fraction,
    dark_regime,
    find_mask,
)
from sarclip_search.ingest.tiling import tile_windows

from defaults import DATA, RUNS, require_archive

TILE = 256
WEAK_DATASETS = ("HRSID", "MSTAR-composite-scenes", "MSTAR-SOC")  # labelled water / land by what they show
MSTAR_SCENES = 40  # land scenes for the display8 weak labels (of 264 train; the first by path)
MSTAR_CHIP_STEP = 12  # every 12th MSTAR SOC chip (vehicles on grass; all classes): land too, ~200 of train+val


def water_map(row: dict, data: Path, kind: str) -> np.ndarray | None:
    """Per pixel: 1 water, 0 land, NaN unlabelled, for an image of the corpus."""
    rel = row["path"]
    found = find_mask(rel)
    if found is not None:
        rule, mask_rel = found
        values = raster.read_window(data / mask_rel)
        if rule.kind == "mklab_rgb":
            green = (np.abs(values[0]) < 60) & (np.abs(values[1] - 153) < 60) & (values[2] < 60)
            return np.where(green, 0.0, 1.0)
        band = values[0]
        return np.where(np.isin(band, rule.water), 1.0, np.where(np.isin(band, rule.land), 0.0, np.nan))
    if kind == "hrsid_offshore":  # sea, but the ship mask
        ships = raster.read_window(data / (rel.replace("/images/", "/masks/").rsplit(".", 1)[0] + ".png"))[0]
        return np.where(ships > 127, np.nan, 1.0)
    if kind == "land":
        return np.zeros((int(row["height"]), int(row["width"])))
    return None


def sources(data: Path) -> list[tuple[dict, str]]:
    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked = []
    mstar = soc = 0
    for row in rows:
        if find_mask(row["path"]) is not None:
            picked.append((row, "mask"))
        elif row["dataset"] == "HRSID" and row["scene_type"] == "offshore":
            picked.append((row, "hrsid_offshore"))
        elif row["dataset"] == "MSTAR-composite-scenes" and row["split"] != "test" and mstar < MSTAR_SCENES * 1.3:
            mstar += 1
            picked.append((row, "land"))
        elif row["dataset"] == "MSTAR-SOC" and row["split"] != "test":
            soc += 1  # a vehicle on grass: land (its few vehicle pixels too)
            if soc % MSTAR_CHIP_STEP == 0:
                picked.append((row, "land"))
    return picked


def load(data: Path, row: dict, kind: str) -> tuple[str, np.ndarray, np.ndarray, str]:
    path = data / row["path"]
    info = raster.read_info(path)
    values = raster.read_window(path, bands=[1])
    regime = dark_regime(info.scale, row.get("polarization"))
    return regime, values, water_map(row, data, kind), info.scale


def fit(blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[DarkThreshold, float]:
    """The bounds with the best balanced accuracy on (mean, std, water) blocks (water: 1 / 0)."""
    mean = np.concatenate([b[0] for b in blocks])
    std = np.concatenate([b[1] for b in blocks])
    water = np.concatenate([b[2] for b in blocks]) > 0.5
    if water.all() or not water.any():
        raise SystemExit("a regime without both water and land blocks cannot be fitted")
    best = (DarkThreshold(0, 0), -1.0)
    for t in np.unique(np.round(np.percentile(mean, np.arange(1, 100)), 1)):
        for s in [np.inf, *np.round(np.percentile(std, [50, 70, 80, 90, 95, 98]), 2)]:
            dark = (mean < t) & (std < s)
            score = (dark[water].mean() + (~dark[~water]).mean()) / 2
            if score > best[1]:
                best = (DarkThreshold(float(t), float(s)), float(score))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(RUNS / "masks"))
    parser.add_argument("--with-test", action="store_true", help="also score the MKLab test scenes (transfer)")
    parser.add_argument("--block", type=int, default=DARK_BLOCK, help="block side in pixels (masks.DARK_BLOCK)")
    parser.add_argument("--db", help="instead: score the tiles of this index's catalog (what `index` stored)")
    parser.add_argument("--current", action="store_true", help="validate masks.DARK_THRESHOLDS instead of fitting")
    args = parser.parse_args()
    if args.db:
        score_catalog(Path(args.db))
        return
    data = require_archive(args.data, "--data", manifest=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")

    loaded = []
    for row, kind in sources(data):
        if row["split"] == "test" and not args.with_test:
            continue
        regime, values, water, scale = load(data, row, kind)
        loaded.append((row, regime, values, water, scale))

    thresholds = dict(DARK_THRESHOLDS)
    fitted: dict[str, dict] = {}
    if not args.current:
        by_regime: dict[str, list] = {}
        for row, regime, values, water, scale in loaded:
            if row["split"] != "train":
                continue
            mean, std, valid = block_stats(radiometry.to_db(values[0], scale), args.block)
            w, _, labelled = block_stats(water, args.block)
            keep = valid & labelled & ((w > 0.9) | (w < 0.1))
            by_regime.setdefault(regime, []).append((mean[keep], std[keep], w[keep]))
        for regime, blocks in sorted(by_regime.items()):
            threshold, score = fit(blocks)
            thresholds[regime] = threshold
            fitted[regime] = {"mean_db": threshold.mean_db, "std_db": threshold.std_db,
                              "train_block_balanced_accuracy": round(score, 4),
                              "train_images": len(blocks)}
            print(f"fit {regime:17s} mean < {threshold.mean_db:7.2f} dB, std < {threshold.std_db:6.2f} dB "
                  f"(train block balanced accuracy {score:.3f}, {len(blocks)} images)")

    tiles = []
    for row, regime, values, water, scale in loaded:
        height, width = values.shape[1:]
        for window in tile_windows(width, height, TILE, TILE):
            c, r, w, h = window.as_list()
            mask = water[r:r + h, c:c + w]
            labelled = np.isfinite(mask)
            if not labelled.any():
                continue
            proxy = dark_fraction(values[:, r:r + h, c:c + w], scale, row.get("polarization"), thresholds, args.block)
            if proxy is None:
                continue
            tiles.append({"path": row["path"], "window": [c, r, w, h], "split": row["split"], "regime": regime,
                          "dataset": row["dataset"], "water": float(mask[labelled].mean()), "dark": proxy})

    def score(group: list[dict]) -> dict:
        water = np.array([t["water"] for t in group])
        dark = np.array([t["dark"] for t in group])
        r = float(np.corrcoef(water, dark)[0, 1]) if len(group) > 2 and water.std() > 0 and dark.std() > 0 else None
        return {"tiles": len(group), "pearson_r": None if r is None else round(r, 3),
                "accuracy_at_0.5": round(float(((water > 0.5) == (dark > 0.5)).mean()), 3),
                "mean_abs_error": round(float(np.abs(water - dark).mean()), 3),
                "water_tiles": int((water > 0.5).sum())}

    results: dict[str, dict] = {}
    for split in ("train", "val", "test"):
        in_split = [t for t in tiles if t["split"] == split]
        if not in_split:
            continue
        results[split] = {"all": score(in_split)}
        for group, weak in (("real_masks", False), ("weak_labels", True)):  # weak: HRSID offshore, MSTAR
            chosen = [t for t in in_split if (t["dataset"] in WEAK_DATASETS) == weak]
            if chosen:
                results[split][group] = score(chosen)
        for dataset in sorted({t["dataset"] for t in in_split}):
            results[split][dataset] = score([t for t in in_split if t["dataset"] == dataset])
        for regime in sorted({t["regime"] for t in in_split}):
            results[split][regime] = score([t for t in in_split if t["regime"] == regime])
    for split, groups in results.items():
        for group, figures in groups.items():
            print(f"{split:5s} {group:17s} {figures}")

    record = {"thresholds": {k: {"mean_db": v.mean_db, "std_db": v.std_db} for k, v in thresholds.items()},
               "fitted": fitted, "block": args.block, "tile": TILE, "validation": results, "tiles": tiles}
    (out / "dark_fit.json").write_text(json.dumps(record, indent=1, default=str))
    plot(tiles, out / "dark_proxy.png")
    print(f"wrote {out / 'dark_fit.json'} and {out / 'dark_proxy.png'}")


def score_catalog(db: Path) -> None:
    """Mask water fraction vs dark proxy of every masked tile an index holds, per split and dataset."""
    from sarclip_search.store.catalog import Catalog
    from sarclip_search.store.layout import IndexStore

    with Catalog(IndexStore(db).require_current().catalog_path, read_only=True) as catalog:
        rows = catalog._con.execute(
            "SELECT split, dataset, tile_water_fraction, tile_dark_fraction FROM tile_view "
            "WHERE tile_water_fraction IS NOT NULL AND tile_dark_fraction IS NOT NULL").fetchall()
        counts = catalog._con.execute(
            "SELECT count(*), count(tile_water_fraction), count(tile_dark_fraction), count(tile_oil_fraction) "
            "FROM tiles").fetchone()
    print(f"tiles {counts[0]}: with a mask water fraction {counts[1]}, dark proxy {counts[2]}, oil {counts[3]}")
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for split, dataset, water, dark in rows:
        for key in ((split, "all"), (split, dataset)):
            groups.setdefault(key, []).append((water, dark))
    for (split, dataset), pairs in sorted(groups.items()):
        water, dark = np.array(pairs).T
        r = np.corrcoef(water, dark)[0, 1] if len(pairs) > 2 and water.std() > 0 and dark.std() > 0 else float("nan")
        print(f"{split:5s} {dataset:17s} tiles {len(pairs):4d}  pearson r {r:6.3f}  "
              f"accuracy(water>0.5 vs dark>0.5) {((water > 0.5) == (dark > 0.5)).mean():.3f}  "
              f"water tiles {(water > 0.5).sum()}")


def plot(tiles: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = sorted({t["regime"] for t in tiles})
    fig, axes = plt.subplots(1, len(regimes), figsize=(4 * len(regimes), 4), squeeze=False)
    colours = {"train": "tab:blue", "val": "tab:orange", "test": "tab:red"}
    for ax, regime in zip(axes[0], regimes):
        for split, colour in colours.items():
            group = [t for t in tiles if t["regime"] == regime and t["split"] == split]
            ax.scatter([t["water"] for t in group], [t["dark"] for t in group], s=10, c=colour, label=split, alpha=0.6)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(title=regime, xlabel="mask water fraction", ylabel="dark fraction (proxy)", xlim=(-0.03, 1.03),
               ylim=(-0.03, 1.03))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
