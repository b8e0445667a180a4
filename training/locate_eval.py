"""`sarsearch eval --locate`: SeLo metrics of `sarsearch locate` on the boxed and masked scenes of a manifest.

For each scene of the split with boxes or a mask, each query type it supports is located (the index's
model, `query.locate` with its default scales) and its heat map scored with `query.selo` (Rsu, Ras, Rda,
Rmi) against the annotation of that type:

- ``ship``: HRSID 800 px scenes and SAR-Ship-Dataset chips, their ship boxes;
- each vehicle class (``T72`` ...) and ``vehicles``: MSTAR composite scenes, the boxes of that class / all;
- ``oil spill``: MKLab scenes with an oil-spill component (boxes of class oil_spill);
- ``water``: scenes with a water mask (Sen1Floods11, KOMPSAT-5): the mask, its large parts as regions.
  The corpus has no water scene in its test split, so these come from the other splits (named in the report)
  and are kept out of the test mean.

Queries are prompt ensembles (the normalized mean of a few phrasings), as the retrieval evaluation's class
texts are; the vehicle classes use `captions.class_prompts`. This module is training code (it reads the
captions); `query.selo` and `query.locate` are core.
"""

from __future__ import annotations

import csv
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sarclip_search.errors import InputError
from sarclip_search.model.vectors import l2_normalize
from sarclip_search.query import locate as localisation
from sarclip_search.query import selo
from sarclip_search.training.captions import class_prompts

log = logging.getLogger(__name__)

# AIR-SLT (optical) SeLo results quoted for scale (mean Rmi): SARVLM / GeoRSCLIP papers.
ANCHORS = {"GeoRSCLIP ViT-H/14 (AIR-SLT, optical)": 0.7494, "CLIP ViT-B/32 (AIR-SLT, optical)": 0.7071}

PROMPTS: dict[str, list[str]] = {
    "ship": ["a SAR image of a ship at sea", "a ship", "ships at sea", "a vessel on the sea surface"],
    "oil spill": ["a SAR image of an oil spill", "an oil slick on the sea", "oil spill"],
    "water": ["a SAR image of water", "a lake", "a river", "flooded fields", "open water"],
}
WATER_SOURCES = {  # dataset -> (mask folder relative to the image's folder, mask name from the image stem)
    "Sen1Floods11": lambda image: image.parent.parent / "labels" / image.name.replace("_S1Hand", "_LabelHand"),
    "KOMPSAT-5-water": lambda image: image.parent.parent / "masks" / f"{image.stem}_label.tif",
}


def parse_boxes(text: str) -> list[tuple[str, tuple[float, float, float, float]]]:
    """'T72:203,487,298,587;BTR60:5,26,93,114' → [(class, (x0, y0, x1, y1)), ...]."""
    boxes = []
    for part in (text or "").split(";"):
        if ":" not in part:
            continue
        name, _, numbers = part.partition(":")
        values = [float(v) for v in numbers.split(",")]
        if len(values) == 4:
            boxes.append((name.strip(), (values[0], values[1], values[2], values[3])))
    return boxes


def _tasks(row: dict[str, str], root: Path) -> list[tuple[str, np.ndarray | None, list[Any]]]:
    """(query type, mask or None (from boxes), boxes) of one manifest row."""
    dataset, boxes = row["dataset"], parse_boxes(row.get("boxes_xyxy", ""))
    if dataset in ("HRSID", "SAR-Ship-Dataset") and boxes:
        return [("ship", None, [b for _, b in boxes])]
    if dataset == "MSTAR-composite-scenes" and boxes:
        tasks = [(name, None, [b for n, b in boxes if n == name]) for name in sorted({n for n, _ in boxes})]
        return tasks + [("vehicles", None, [b for _, b in boxes])]
    if dataset == "MKLab-Oil-Spill":
        spills = [b for name, b in boxes if name == "oil_spill"]
        return [("oil spill", None, spills)] if spills else []
    if dataset in WATER_SOURCES:
        return [("water", None, [])]
    return []


def _water_mask(row: dict[str, str], root: Path, shape: tuple[int, int]) -> np.ndarray | None:
    from sarclip_search.ingest import raster

    file = WATER_SOURCES[row["dataset"]](root / row["path"])
    if not file.is_file():
        return None
    values = raster.read_window(file, bands=[1])[0]
    mask = np.nan_to_num(values, nan=0) > 0
    if row["dataset"] == "Sen1Floods11":
        mask = np.nan_to_num(values, nan=0) == 1  # 1 water, 0 land, -1 no data
    return mask if mask.shape == shape and mask.any() else None


MSTAR_CLASSES = ("2S1", "BMP2", "BRDM2", "BTR60", "BTR70", "D7", "T62", "T72", "ZIL131", "ZSU234")


def prompts_of(query: str) -> list[str]:
    """The phrasings of a query type: `PROMPTS`, a vehicle class's `class_prompts`, or for ``vehicles`` the
    prompts of every MSTAR class (the model learnt vehicles by their class names)."""
    if query in PROMPTS:
        return PROMPTS[query]
    if query == "vehicles":
        return [prompt for label in MSTAR_CLASSES for prompt in class_prompts("MSTAR-SOC", label)]
    return class_prompts("MSTAR-SOC", query)


def query_vector(encoder: Any, query: str) -> np.ndarray:
    prompts = prompts_of(query)
    return l2_normalize(encoder.encode_texts(prompts).mean(axis=0, keepdims=True))[0]


def evaluate_locate(engine: Any, root: str | Path, split: str = "test", *, cache_root: Path | None = None,
                    overlays: Path | None = None, progress: Callable[[str, int, int], None] | None = None,
                    limit: int | None = None) -> dict[str, Any]:
    """SeLo metrics per query type on `split` of the manifest at `root` (water from any split, see above)."""
    root = Path(root)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{root}: no manifest.csv with boxes; pass --data PATH to a labelled archive")
    with open(manifest, newline="") as stream:
        rows = [row for row in csv.DictReader(stream)
                if (row["split"] == split or row["dataset"] in WATER_SOURCES) and _tasks(row, root)]
    if limit is not None:
        rows = rows[:limit]
    encoder = engine.encoder
    vectors: dict[str, np.ndarray] = {}
    results: list[dict[str, Any]] = []
    examples: dict[str, Path] = {}
    started = time.perf_counter()
    for done, row in enumerate(rows):
        path = root / row["path"]
        for query, _, boxes in _tasks(row, root):
            if query not in vectors:
                vectors[query] = query_vector(encoder, query)
            result = localisation.locate(encoder, path, vectors[query], cache_root=cache_root)
            shape = result.heat.shape
            if query == "water":
                mask = _water_mask(row, root, shape)
                if mask is None:
                    continue
                regions = selo.mask_regions(mask)
            else:
                mask = selo.boxes_mask(boxes, *shape)
                regions = [selo.box_polygon(b) for b in boxes]
            scores = selo.selo_scores(result.heat, mask, regions)
            results.append({"path": row["path"], "dataset": row["dataset"], "split": row["split"], "query": query,
                            **{key: round(value, 4) for key, value in scores.as_dict().items()},
                            "windows": result.windows, "seconds": round(result.seconds["total"], 2)})
            group = _group(query)
            if overlays is not None and group not in examples:
                overlays.mkdir(parents=True, exist_ok=True)
                target = overlays / f"locate-{group.replace(' ', '-')}.png"
                localisation.overlay(result, 768).save(target)
                examples[group] = target
        if progress is not None:
            progress("scenes", done + 1, len(rows))
    return {"split": split, "rows": results, "summary": summarize(results, split), "anchors": ANCHORS,
            "overlays": {k: str(v) for k, v in examples.items()}, "seconds": round(time.perf_counter() - started, 1)}


def _group(query: str) -> str:
    return query if query in PROMPTS or query == "vehicles" else "vehicle class"


def summarize(results: Sequence[dict[str, Any]], split: str) -> dict[str, Any]:
    """Mean Rsu/Ras/Rda/Rmi per query type, per group, and the mean over the test-split query types."""
    by_query: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        by_query[result["query"]].append(result)

    def mean(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"n": len(items), **{m: round(float(np.mean([i[m] for i in items])), 4)
                                    for m in ("rsu", "ras", "rda", "rmi")}}

    per_query = {query: {**mean(items), "splits": sorted({i["split"] for i in items})}
                 for query, items in sorted(by_query.items())}
    on_split = [q for q, v in per_query.items() if v["splits"] == [split]]
    types = {q: v for q, v in per_query.items() if q in on_split}
    mean_types = {m: round(float(np.mean([v[m] for v in types.values()])), 4) for m in ("rsu", "ras", "rda", "rmi")} \
        if types else {}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for query, values in types.items():
        groups[_group(query)].append(values)
    per_group = {group: {m: round(float(np.mean([v[m] for v in values])), 4) for m in ("rsu", "ras", "rda", "rmi")}
                 for group, values in sorted(groups.items())}
    mean_groups = {m: round(float(np.mean([v[m] for v in per_group.values()])), 4)
                   for m in ("rsu", "ras", "rda", "rmi")} if per_group else {}
    pairs = [r for r in results if r["split"] == split]
    return {"per_query": per_query, "mean_of_query_types": mean_types, "per_group": per_group,
            "mean_of_groups": mean_groups,
            "mean_of_pairs": mean(pairs) if pairs else {}}


def write_markdown(report: dict[str, Any], out: Path, command: str) -> Path:
    """eval.md: the SeLo table, the anchors and the example overlays."""
    summary = report["summary"]
    lines = [f"# SeLo (semantic localisation) on the {report['split']} split", "", f"    {command}", "",
             ("Metrics as defined by the SeLo benchmark (Yuan et al.; AIRCAS `SemanticLocalizationMetrics`, "
             "see docs/locate.md): Rsu ↑, Ras ↓, Rda ↑, Rmi = 0.4·Rsu + 0.35·(1 − Ras) + 0.25·Rda ↑."), "",
             "| query | scenes | Rsu ↑ | Ras ↓ | Rda ↑ | Rmi ↑ | splits |", "|---|---|---|---|---|---|---|"]
    for query, values in summary["per_query"].items():
        lines.append(f"| {query} | {values['n']} | {values['rsu']:.4f} | {values['ras']:.4f} | {values['rda']:.4f} | "
                     f"{values['rmi']:.4f} | {', '.join(values['splits'])} |")
    mean = summary["mean_of_query_types"]
    if mean:
        lines.append(f"| **mean of {report['split']} query types** | | {mean['rsu']:.4f} | {mean['ras']:.4f} | "
                     f"{mean['rda']:.4f} | **{mean['rmi']:.4f}** | |")
    groups = summary.get("mean_of_groups")
    if groups:
        names = ", ".join(summary["per_group"])
        lines.append(f"| mean of the {len(summary['per_group'])} query groups ({names}; the vehicle classes "
                     f"as one) | | {groups['rsu']:.4f} | {groups['ras']:.4f} | {groups['rda']:.4f} | "
                     f"{groups['rmi']:.4f} | |")
    pairs = summary["mean_of_pairs"]
    if pairs:
        lines.append(f"| mean of all {pairs['n']} {report['split']} scene-query pairs | | {pairs['rsu']:.4f} | "
                     f"{pairs['ras']:.4f} | {pairs['rda']:.4f} | {pairs['rmi']:.4f} | |")
    lines += ["", "For scale, optical AIR-SLT results (another benchmark, other images):", ""]
    lines += [f"- {name}: Rmi {value:.4f}" for name, value in report["anchors"].items()]
    lines += ["", f"{len(report['rows'])} scene-query pairs in {report['seconds']} s.", ""]
    for group, file in report["overlays"].items():
        lines += [f"![{group}]({Path(file).name})", ""]
    target = out / "eval.md"
    out.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines))
    return target
