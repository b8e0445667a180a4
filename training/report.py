"""Files of an evaluation report: eval.json, eval.md (markdown tables) and PNG plots.

Plots use matplotlib's Agg canvas directly (no pyplot, no display, no global state):
`recall_at_k.png` (R@K for K = 1..10 of each retrieval mode), `confusion_<dataset>.png` per
zero-shot dataset and `p10_by_kind.png` (P@10 per query kind with chance, word-pair accuracy; before/after
bars when a baseline report is attached, `attach_baseline`). `eval --tiles --out` writes tiles.json,
tiles.md and its own p10_by_kind.png (`write_tile_report`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sarclip_search.errors import InputError


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
            before = "before_top1" in crops
            lines += _table(["crops", *(["top-1 before"] if before else []), "top-1", "balanced acc.", "chance"],
                            [[str(crops["n"]), *([_number(crops["before_top1"])] if before else []),
                              _number(crops["top1"]), _number(crops["balanced_accuracy"]), _number(crops["chance"])]])
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
    """The paraphrase table: each query's kind, relevance rule, relevant items, chance and P@10 (and the
    baseline's P@10 when one is attached)."""
    before = any("before_P@10" in q for q in paraphrase["queries"])
    title = (f"## Paraphrase queries (text→{unit} P@10; mean {_number(paraphrase['mean_P@10'])}, chance "
             f"{_number(paraphrase.get('mean_chance'))}, over {paraphrase['n_scored']} of "
             f"{len(paraphrase['queries'])} queries with a relevant {unit}"
             + (f"; before {_number(paraphrase.get('before_mean_P@10'))})" if before else ")"))
    header = ["query", "kind", "relevant when", f"relevant {unit}s", "chance", *(["P@10 before"] if before else []), "P@10"]
    return [title, ""] + _table(header, [[q["text"], q.get("kind", ""), q.get("rule", ""), str(q["n_relevant"]),
                                          _number(q.get("chance")), *([_number(q.get("before_P@10"))] if before else []),
                                          _number(q["P@10"])] for q in paraphrase["queries"]])


def word_pair_markdown(pairs: dict[str, Any], unit: str) -> list[str]:
    """The word-vs-object table: per text, P@10 over the items of both domains, and how often the own text wins."""
    before = "before_mean_pairwise_balanced" in pairs
    lines = [(f"## Word vs object (over the {unit}s of both domains; pairwise: own text scores higher than the "
              f"other, balanced over the two sides, chance 0.5; mean {_number(pairs['mean_pairwise_balanced'])}"
              + (f", before {_number(pairs['before_mean_pairwise_balanced'])})" if before else ")")), ""]
    rows = []
    for pair in pairs["pairs"]:
        for i, side in enumerate((pair["first"], pair["second"])):
            rows.append([side["text"], side["rule"], str(side["n_relevant"]), _number(side["chance"]),
                         _number(side["P@10"]), _number(side["own_text_wins"]),
                         *([_number(pair.get("before_pairwise_balanced")) if i == 0 else ""] if before else []),
                         _number(pair["pairwise_balanced"]) if i == 0 else ""])
    header = ["text", "relevant when", f"{unit}s", "chance", "P@10", "own text wins",
              *(["pair balanced before"] if before else []), "pair balanced"]
    return lines + _table(header, rows)


def tile_markdown(report: dict[str, Any]) -> str:
    """`eval --tiles` as markdown: tile queries (P@10 with chance, before when a baseline is attached),
    the means per kind, the paraphrase and word-pair tables."""
    before = "before_mean_P@10" in report
    how = ", queries through the prompt ensemble" if report.get("templates") else ""
    lines = [f"# Tile-level retrieval on split `{report['split']}` ({report['n_tiles']} tiles, box relevance{how})", "",
             f"- model checkpoint sha256 `{str((report.get('model') or {}).get('checkpoint_sha256'))[:12]}`"]
    if before:
        base = report["baseline"]
        lines.append(f"- before: `{base['path']}` (checkpoint `{str(base.get('checkpoint_sha256'))[:12]}`, "
                     f"split {base.get('split')}, {base.get('n_tiles')} tiles)")
    lines += ["", f"## Tile queries: mean P@10 {_number(report['mean_P@10'])} (chance {_number(report['mean_chance'])}"
              + (f"; before {_number(report['before_mean_P@10'])})" if before else ")"), ""]
    lines += _table(["kind", "query", "relevant tiles", "chance", *(["P@10 before"] if before else []), "P@10", "note"],
                    [[r["kind"], r["text"], str(r["n_relevant"]), _number(r["chance"]),
                      *([_number(r.get("before_P@10"))] if before else []), _number(r["P@10"]),
                      "" if r.get("auc_vs_offshore_ships") is None else
                      f"AUC vs open-sea ship tiles {r['auc_vs_offshore_ships']:.3f}"] for r in report["queries"]])
    for title, section in (("Tile queries", report), ("Paraphrases", report.get("paraphrase"))):
        if not section:
            continue
        lines += ["", f"## {title}: mean per kind", ""]
        lines += _table(["kind", "queries", "chance", *(["P@10 before"] if before else []), "P@10"],
                        [[kind, str(e["queries"]), _number(e["mean_chance"]),
                          *([_number(e.get("before_mean_P@10"))] if before else []), _number(e["mean_P@10"])]
                         for kind, e in section["by_kind"].items()])
    if report.get("paraphrase"):
        lines += ["", *paraphrase_markdown(report["paraphrase"], "tile")]
    if report.get("word_pairs"):
        lines += ["", *word_pair_markdown(report["word_pairs"], "tile")]
    return "\n".join(lines) + "\n"


# --- a baseline (an earlier report) beside this one -------------------------------------------------


def load_baseline(path: str | Path, tiles: bool) -> dict[str, Any]:
    """An earlier `eval --json` / eval.json (or `eval --tiles --json` / tiles.json with `tiles`) to compare with."""
    path = Path(path)
    try:
        baseline = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"--baseline {path}: not a readable JSON report ({error}); pass the --json output or "
                         "the eval.json/tiles.json of an earlier `sarsearch eval`") from None
    if not isinstance(baseline, dict) or tiles != ("n_tiles" in baseline):
        want = "an `eval --tiles` report (tiles.json)" if tiles else "an `eval` report without --tiles (eval.json)"
        raise InputError(f"--baseline {path}: not {want}; compare like with like")
    return baseline


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _attach_queries(section: dict[str, Any], before: dict[str, Any] | None) -> None:
    """Per query its `before_P@10` (matched by text), and the before means over this run's scored queries."""
    old = {q["text"]: q.get("P@10") for q in (before or {}).get("queries", [])}
    for row in section["queries"]:
        row["before_P@10"] = old.get(row["text"])
    scored = [r for r in section["queries"] if r["P@10"] is not None and r["before_P@10"] is not None]
    section["before_mean_P@10"] = _mean([r["before_P@10"] for r in scored])
    section["before_n_scored"] = len(scored)
    for kind, entry in section.get("by_kind", {}).items():
        entry["before_mean_P@10"] = _mean([r["before_P@10"] for r in scored if r["kind"] == kind])


def attach_baseline(report: dict[str, Any], baseline: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """`report` with the numbers of an earlier report of the same kind beside its own (keys `before_*`)."""
    report["baseline"] = {"path": str(path), "checkpoint_sha256": (baseline.get("model") or {}).get("checkpoint_sha256"),
                          "split": baseline.get("split"), "n_tiles": baseline.get("n_tiles"),
                          "templates": baseline.get("templates")}
    if "n_tiles" in report:
        _attach_queries(report, baseline)
    if report.get("paraphrase"):
        _attach_queries(report["paraphrase"], baseline.get("paraphrase"))
    pairs = report.get("word_pairs")
    if pairs:
        old = {(p["first"]["text"], p["second"]["text"]): p for p in (baseline.get("word_pairs") or {}).get("pairs", [])}
        for pair in pairs["pairs"]:
            match = old.get((pair["first"]["text"], pair["second"]["text"]), {})
            pair["before_pairwise_balanced"] = match.get("pairwise_balanced")
            for side in ("first", "second"):
                pair[side]["before_P@10"] = (match.get(side) or {}).get("P@10")
        pairs["before_mean_pairwise_balanced"] = _mean([p["before_pairwise_balanced"] for p in pairs["pairs"]
                                                        if p["before_pairwise_balanced"] is not None
                                                        and p["pairwise_balanced"] is not None])
    if report.get("composite_crops"):
        report["composite_crops"]["before_top1"] = (baseline.get("composite_crops") or {}).get("top1")
    return report


# --- bar plots of P@10 per kind -------------------------------------------------------------------


def _kind_panels(report: dict[str, Any]) -> list[tuple[str, list[str], list, list, list]]:
    """(title, names, values, before values, chance) of each panel: tile queries and paraphrases per kind,
    word pairs per pair."""
    panels = []
    for title, section in (("tile queries", report if "n_tiles" in report else None),
                           ("paraphrases", report.get("paraphrase"))):
        if section and section.get("by_kind"):
            kinds = list(section["by_kind"])
            entries = [section["by_kind"][k] for k in kinds]
            panels.append((f"{title}: P@10 per kind", [f"{k}\n({e['queries']})" for k, e in zip(kinds, entries)],
                           [e["mean_P@10"] for e in entries], [e.get("before_mean_P@10") for e in entries],
                           [e["mean_chance"] for e in entries]))
    pairs = report.get("word_pairs")
    if pairs and pairs["pairs"]:
        panels.append(("word vs object: pairwise balanced accuracy",
                       [f"{p['first']['text']}\nvs {p['second']['text']}" for p in pairs["pairs"]],
                       [p["pairwise_balanced"] for p in pairs["pairs"]],
                       [p.get("before_pairwise_balanced") for p in pairs["pairs"]], [0.5] * len(pairs["pairs"])))
    return panels


def plot_p10_by_kind(report: dict[str, Any], path: Path) -> bool:
    """Bars of P@10 per query kind (and of the word pairs), chance as a black tick over each bar, the baseline's
    bars beside them when one is attached. False (nothing written) without any panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _kind_panels(report)
    if not panels:
        return False
    before = "baseline" in report
    figure = Figure(figsize=(7.5, 3.2 * len(panels)), dpi=110)
    FigureCanvasAgg(figure)
    for i, (title, names, values, old, chance) in enumerate(panels):
        axes = figure.add_subplot(len(panels), 1, i + 1)
        width = 0.38 if before else 0.6
        xs = list(range(len(names)))
        nan = float("nan")
        if before:
            base = report["baseline"]
            axes.bar([x - width / 2 for x in xs], [nan if v is None else v for v in old], width, color="#bbbbbb",
                     label=f"before: {Path(base['path']).name} ({str(base.get('checkpoint_sha256'))[:12]})")
        shift = width / 2 if before else 0.0
        axes.bar([x + shift for x in xs], [nan if v is None else v for v in values], width, color="#3b75af",
                 label="this run" if before else None)
        half = width if before else width / 2
        for x, c in zip(xs, chance):
            if c is not None:
                axes.plot([x - half, x + half], [c, c], color="black", linewidth=2)
        axes.plot([], [], color="black", linewidth=2, label="chance")
        axes.set_xticks(xs, names, fontsize=7)
        axes.set_ylim(0, 1.3)
        axes.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        axes.set_ylabel("P@10" if "pairwise" not in title else "accuracy")
        axes.set_title(title, fontsize=9)
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=7, loc="upper center", ncol=3, frameon=False)
    figure.suptitle(f"split {report['split']}, checkpoint {str((report.get('model') or {}).get('checkpoint_sha256'))[:12]}",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    return True


def write_tile_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write tiles.json, tiles.md and p10_by_kind.png (`eval --tiles --out`) into `out_dir`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "tiles.json", out / "tiles.md"]
    written[1].write_text(tile_markdown(report))
    if plot_p10_by_kind(report, out / "p10_by_kind.png"):
        written.append(out / "p10_by_kind.png")
    report["files"] = [str(p) for p in written]
    written[0].write_text(json.dumps(report, indent=2, default=str) + "\n")
    return written


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
    written[1].write_text(to_markdown(report))
    plot_recall_curves(report, written[2])
    if plot_p10_by_kind(report, out / "p10_by_kind.png"):
        written.append(out / "p10_by_kind.png")
    for dataset, scores in report["zero_shot"].items():
        path = out / f"confusion_{_slug(dataset)}.png"
        plot_confusion(scores, dataset, path)
        written.append(path)
    report["files"] = [str(p) for p in written]
    written[0].write_text(json.dumps(report, indent=2, default=str) + "\n")
    return written
