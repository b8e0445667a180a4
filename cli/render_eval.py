"""Rich tables of `sarsearch eval` (the report dict comes from sarclip_search.training.evaluate)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from sarclip_search.cli.render import console


def _number(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def eval_report(report: dict[str, Any]) -> None:
    """Zero-shot, retrieval and paraphrase tables, then where the files went (with --out)."""
    source, model = report["source"], report["model"]
    per_dataset = ", ".join(f"{d} {n}" for d, n in report["images_per_dataset"].items())
    console.print(f"[bold]eval[/] split {report['split']} from {source['kind']} {source['path']}: "
                  f"{report['n_images']} labelled images ({per_dataset}); model {model['name']} "
                  f"(checkpoint {str(model['checkpoint_sha256'])[:12]})", highlight=False)

    zero_shot = Table(title="zero-shot classification", title_justify="left")
    for column in ("dataset", "classes", "images", "top-1", "top-5", "balanced", "chance"):
        zero_shot.add_column(column, justify="left" if column == "dataset" else "right")
    for dataset, scores in report["zero_shot"].items():
        entries = [(dataset, scores)] + [(f"  {name}", sub) for name, sub in scores.items()
                                         if isinstance(sub, dict) and "top1" in sub]
        for name, entry in entries:
            zero_shot.add_row(name, str(len(entry["classes"])), str(entry["n"]), _number(entry["top1"]),
                              _number(entry["top5"]), _number(entry["balanced_accuracy"]), _number(entry["chance"]))
    console.print(zero_shot)

    retrieval = Table(title="retrieval (label-level relevance)", title_justify="left")
    for column in ("mode", "R@1", "R@5", "R@10", "mAP", "P@10", "queries"):
        retrieval.add_column(column, justify="left" if column == "mode" else "right")
    t2i, i2t, i2i = report["text_to_image"], report["image_to_text"], report["image_to_image"]
    retrieval.add_row("text → image", _number(t2i["R@1"]), _number(t2i["R@5"]), _number(t2i["R@10"]),
                      _number(t2i["mAP"]), "", str(t2i["n_queries"]))
    retrieval.add_row("image → text", _number(i2t["R@1"]), _number(i2t["R@5"]), _number(i2t["R@10"]), "", "",
                      str(i2t["n_queries"]))
    retrieval.add_row("image → image", _number(i2i["R@1"]), "", "", "", _number(i2i["P@10"]), str(i2i["n_queries"]))
    retrieval.add_row("[bold]mR[/] (mean of the six cross-modal R@K)", _number(report["mR"]), "", "", "", "", "")
    console.print(retrieval)

    paraphrase_table(report["paraphrase"], "image")
    if report.get("word_pairs"):
        word_pair_table(report["word_pairs"], "image")
    crops = report.get("composite_crops")
    if crops:
        if crops.get("top1") is None:
            console.print(f"composite-scene crops: not measured ({crops.get('note')})", highlight=False)
        else:
            was = f"; before {_number(crops['before_top1'])}" if "before_top1" in crops else ""
            console.print(f"[bold]composite-scene crops[/]: {crops['n']} vehicles cut from the MSTAR composite scenes, "
                          f"zero-shot top-1 {_number(crops['top1'])}, balanced {_number(crops['balanced_accuracy'])} "
                          f"(chance {_number(crops['chance'])}{was})", highlight=False)
    for dataset, scores in report["zero_shot"].items():
        for name, entry in scores.items():
            if isinstance(entry, dict) and entry.get("data_limit"):
                console.print(f"[bold]data limit[/] {dataset} {name}: {entry['data_limit']}", highlight=False)
    for path in report.get("files", []):
        console.print(f"wrote {path}", highlight=False)


def _before(section: dict[str, Any]) -> str:
    return f"; before {_number(section['before_mean_P@10'])}" if "before_mean_P@10" in section else ""


def paraphrase_table(paraphrase: dict[str, Any], unit: str) -> None:
    """Paraphrase queries: kind, relevance rule, relevant items, chance, P@10 (and before, with --baseline)."""
    before = "before_mean_P@10" in paraphrase
    table = Table(title=f"paraphrase queries: text → {unit} P@10, mean {_number(paraphrase['mean_P@10'])} "
                        f"(chance {_number(paraphrase.get('mean_chance'))}{_before(paraphrase)}) over "
                        f"{paraphrase['n_scored']} of {len(paraphrase['queries'])} queries with a relevant {unit}",
                  title_justify="left")
    columns = ("query", "kind", "relevant when", f"relevant {unit}s", "chance", *(["before"] if before else []), "P@10")
    for column in columns:
        table.add_column(column, justify="left" if column in ("query", "kind", "relevant when") else "right")
    for query in paraphrase["queries"]:
        table.add_row(query["text"], query.get("kind", ""), query.get("rule", ""), str(query["n_relevant"]),
                      _number(query.get("chance")), *([_number(query.get("before_P@10"))] if before else []),
                      _number(query["P@10"]))
    console.print(table)


def word_pair_table(pairs: dict[str, Any], unit: str) -> None:
    """Word vs object: each text's P@10 over the items of both domains and how often its own items prefer it."""
    before = "before_mean_pairwise_balanced" in pairs
    was = f"; before {_number(pairs['before_mean_pairwise_balanced'])}" if before else ""
    table = Table(title=f"word vs object over the {unit}s of both domains: pairwise balanced accuracy "
                        f"{_number(pairs['mean_pairwise_balanced'])} (chance 0.5{was})", title_justify="left")
    columns = ("text", "relevant when", f"{unit}s", "chance", "P@10", "own text wins", *(["before"] if before else []),
               "pair balanced")
    for column in columns:
        table.add_column(column, justify="left" if column in ("text", "relevant when") else "right")
    for pair in pairs["pairs"]:
        for i, side in enumerate((pair["first"], pair["second"])):
            table.add_row(side["text"], side["rule"], str(side["n_relevant"]), _number(side["chance"]),
                          _number(side["P@10"]), _number(side["own_text_wins"]),
                          *([_number(pair.get("before_pairwise_balanced")) if i == 0 else ""] if before else []),
                          _number(pair["pairwise_balanced"]) if i == 0 else "")
    console.print(table)


def tile_report(report: dict[str, Any]) -> None:
    """`eval --tiles`: P@10 per tile query with its chance, then the means per kind (and before, with --baseline)."""
    how = ", queries through the prompt ensemble" if report.get("templates") else ""
    before = "before_mean_P@10" in report
    table = Table(title=f"tile-level text → tile P@10 (box relevance{how}), split {report['split']}, {report['n_tiles']} tiles; "
                        f"mean {_number(report['mean_P@10'])} (chance {_number(report['mean_chance'])}{_before(report)})",
                  title_justify="left")
    for column in ("kind", "query", "relevant tiles", "chance", *(["before"] if before else []), "P@10", "note"):
        table.add_column(column, justify="left" if column in ("kind", "query", "note") else "right")
    for row in report["queries"]:
        auc = row.get("auc_vs_offshore_ships")
        note = "" if auc is None else f"AUC vs open-sea ship tiles {auc:.3f}"
        table.add_row(row["kind"], row["text"], str(row["n_relevant"]), _number(row["chance"]),
                      *([_number(row.get("before_P@10"))] if before else []), _number(row["P@10"]), note)
    for kind, entry in report["by_kind"].items():
        table.add_row(f"[bold]{kind}[/]", f"mean of {entry['queries']}", "", _number(entry["mean_chance"]),
                      *([_number(entry.get("before_mean_P@10"))] if before else []), _number(entry["mean_P@10"]), "")
    console.print(table)
    if report.get("paraphrase"):
        paraphrase_table(report["paraphrase"], "tile")
    if report.get("word_pairs"):
        word_pair_table(report["word_pairs"], "tile")
    for path in report.get("files", []):
        console.print(f"wrote {path}", highlight=False)
