"""Files of an evaluation report: eval.json, eval.md (markdown tables) and PNG plots.

Plots use matplotlib's Agg canvas directly (no pyplot, no display, no global state):
`recall_at_k.png` (R@K for K = 1..10 of each retrieval mode) and `confusion_<dataset>.png` per
zero-shot dataset.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def _number(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def zero_shot_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per zero-shot dataset (and per reported class subset)."""
    rows = []
    for dataset, scores in report["zero_shot"].items():
        entries = [(dataset, scores)] + [(f"{dataset} {k}", v) for k, v in scores.items()
                                         if isinstance(v, dict) and "top1" in v]
        for name, entry in entries:
            rows.append([name, str(len(entry["classes"])), str(entry["n"]), _number(entry["top1"]),
                         _number(entry["top5"]), _number(entry["balanced_accuracy"]), _number(entry["chance"])])
    return rows


def to_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: source, zero-shot, retrieval, paraphrase and per-class tables."""
    source, model = report["source"], report["model"]
    lines = [
        f"# Evaluation on split `{report['split']}`",
        "",
        (f"- source: {source['kind']} `{source['path']}`; {report['n_images']} labelled images "
        f"({', '.join(f'{d} {n}' for d, n in report['images_per_dataset'].items())})"),
        f"- model: {model['name']}, checkpoint sha256 `{str(model['checkpoint_sha256'])[:12]}`",
        "",
        "## Zero-shot classification",
        "",
        *_table(["dataset", "classes", "images", "top-1", "top-5", "balanced acc.", "chance"], zero_shot_rows(report)),
        "",
        "## Retrieval (label-level relevance)",
        "",
    ]
    t2i, i2t, i2i = report["text_to_image"], report["image_to_text"], report["image_to_image"]
    lines += _table(
        ["t→i R@1", "t→i R@5", "t→i R@10", "i→t R@1", "i→t R@5", "i→t R@10", "mR", "t→i mAP", "i→i R@1", "i→i P@10"],
        [[_number(t2i["R@1"]), _number(t2i["R@5"]), _number(t2i["R@10"]), _number(i2t["R@1"]), _number(i2t["R@5"]),
          _number(i2t["R@10"]), _number(report["mR"]), _number(t2i["mAP"]), _number(i2i["R@1"]), _number(i2i["P@10"])]],
    )
    lines += ["", *paraphrase_markdown(report["paraphrase"], "image")]
    if report.get("word_pairs"):
        lines += ["", *word_pair_markdown(report["word_pairs"], "image")]
    crops = report.get("composite_crops")
    if crops:
        lines += ["", "## Vehicles cut from the MSTAR composite scenes (zero-shot over the 10 MSTAR classes)", ""]
        if crops.get("top1") is None:
            lines.append(f"Not measured: {crops.get('note')}.")
        else:
            lines += _table(["crops", "top-1", "balanced acc.", "chance"],
                            [[str(crops["n"]), _number(crops["top1"]), _number(crops["balanced_accuracy"]),
                              _number(crops["chance"])]])
    limits = [f"- {dataset} {name}: {entry['data_limit']}" for dataset, scores in report["zero_shot"].items()
              for name, entry in scores.items() if isinstance(entry, dict) and entry.get("data_limit")]
    if limits:
        lines += ["", "## Data limits", "", *limits]
    for dataset, scores in report["zero_shot"].items():
        lines += ["", f"## {dataset}: per-class zero-shot accuracy and confusion (rows true, columns predicted)", ""]
        classes = scores["classes"]
        lines += _table(["class", "accuracy", *classes],
                        [[name, _number(scores["per_class"][name]), *map(str, scores["confusion"][i])]
                         for i, name in enumerate(classes)])
    return "\n".join(lines) + "\n"


def paraphrase_markdown(paraphrase: dict[str, Any], unit: str) -> list[str]:
    """The paraphrase table: each query's kind, relevance rule, relevant items, chance and P@10."""
    lines = [(f"## Paraphrase queries (text→{unit} P@10; mean {_number(paraphrase['mean_P@10'])}, chance "
             f"{_number(paraphrase.get('mean_chance'))}, over {paraphrase['n_scored']} of "
             f"{len(paraphrase['queries'])} queries with a relevant {unit})"), ""]
    return lines + _table(["query", "kind", "relevant when", f"relevant {unit}s", "chance", "P@10"],
                          [[q["text"], q.get("kind", ""), q.get("rule", ""), str(q["n_relevant"]),
                            _number(q.get("chance")), _number(q["P@10"])] for q in paraphrase["queries"]])


def word_pair_markdown(pairs: dict[str, Any], unit: str) -> list[str]:
    """The word-vs-object table: per text, P@10 over the items of both domains, and how often the own text wins."""
    lines = [(f"## Word vs object (over the {unit}s of both domains; pairwise: own text scores higher than the "
             f"other, balanced over the two sides, chance 0.5; mean {_number(pairs['mean_pairwise_balanced'])})"), ""]
    rows = []
    for pair in pairs["pairs"]:
        for side in (pair["first"], pair["second"]):
            rows.append([side["text"], side["rule"], str(side["n_relevant"]), _number(side["chance"]),
                         _number(side["P@10"]), _number(side["own_text_wins"]), _number(pair["pairwise_balanced"])])
    return lines + _table(["text", "relevant when", f"{unit}s", "chance", "P@10", "own text wins", "pair balanced"],
                          rows)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_recall_curves(report: dict[str, Any], path: Path) -> None:
    """R@K for K = 1..10 of each retrieval mode, one line each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    names = {"text_to_image": "text → image", "image_to_text": "image → text", "image_to_image": "image → image"}
    for mode, values in report["curves"].items():
        ks = list(range(1, len(values) + 1))
        axes.plot(ks, [float("nan") if v is None else v for v in values], marker="o", label=names.get(mode, mode))
    axes.set_xlabel("K")
    axes.set_ylabel("R@K")
    axes.set_ylim(0, 1.02)
    axes.set_xticks(range(1, 11))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(f"R@K, split {report['split']} ({report['n_images']} images)")
    figure.tight_layout()
    figure.savefig(path)


def plot_confusion(scores: dict[str, Any], dataset: str, path: Path) -> None:
    """A zero-shot confusion matrix, row-normalized colours with the counts written in the cells."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(scores["confusion"], dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    classes = scores["classes"]
    side = 2.5 + 0.45 * len(classes)
    figure = Figure(figsize=(side + 1, side), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                axes.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                          color="white" if rates[i, j] > 0.5 else "black")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{dataset}: top-1 {_number(scores['top1'])}, balanced {_number(scores['balanced_accuracy'])}")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    figure.savefig(path)


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write eval.json, eval.md, recall_at_k.png and confusion_<dataset>.png into `out_dir`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "eval.json", out / "eval.md", out / "recall_at_k.png"]
    written[0].write_text(json.dumps(report, indent=2, default=str) + "\n")
    written[1].write_text(to_markdown(report))
    plot_recall_curves(report, written[2])
    for dataset, scores in report["zero_shot"].items():
        path = out / f"confusion_{_slug(dataset)}.png"
        plot_confusion(scores, dataset, path)
        written.append(path)
    return written
