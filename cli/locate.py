"""`sarsearch locate`: where in a scene a phrase or an example matches (heat map, overlay, peaks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sarclip_search.cli import render
from sarclip_search.errors import InputError


def _report(result: Any, query: str, files: list[Path]) -> None:
    """The peaks as a table on stdout, then what was written and how long it took on stderr."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"where {query!r} matches in {result.path}", box=box.SIMPLE_HEAD, title_justify="left")
    for header in ("#", "heat", "peak (col,row)", "box (col,row,w,h)", "lon,lat"):
        table.add_column(header, justify="right" if header in ("#", "heat") else "left")
    for peak in result.peaks:
        bbox = peak.bbox
        lonlat = "" if bbox is None else f"{(bbox[0] + bbox[2]) / 2:.5f},{(bbox[1] + bbox[3]) / 2:.5f}"
        table.add_row(str(peak.rank), f"{peak.score:.2f}", f"{peak.col},{peak.row}",
                      ",".join(str(v) for v in peak.window), lonlat)
    render.console.print(table)
    source = "window embeddings from the cache" if result.cached else "windows embedded"
    render.err_console.print(
        f"{result.windows} {source} (scales {','.join(map(str, result.scales))}, stride {result.stride}); "
        f"cosine {result.raw_range[0]:.3f}..{result.raw_range[1]:.3f} -> heat 0..1; {result.seconds['total']:.1f} s",
        highlight=False, soft_wrap=True)
    for file in files:
        render.err_console.print(f"wrote {file}", highlight=False, soft_wrap=True)


def _scene_path(engine: Any, scene: str) -> str:
    """A file path as it is, else the archive path of a scene of the index (its `path` column)."""
    if Path(scene).exists():
        return scene
    ids = engine.catalog.tile_ids("path = ?", [scene])
    if len(ids):
        row = engine.catalog.fetch_tiles([int(ids[0])])[0]
        return str(row.get("abs_path") or row.get("path"))
    raise InputError(f"{scene}: no such file, nor a scene `path` of the index; give a raster file or the `path` "
                     "of a result (sarsearch query ... --json)")


def locate_command(
    arguments: Annotated[list[str], typer.Argument(metavar="[TEXT] SCENE", show_default=False, help='What to look for, in words (e.g. "ship"), then the scene: a raster file, or the archive `path` of an indexed scene. With --image or --like, only SCENE.')],
    image: Annotated[list[Path] | None, typer.Option("--image", metavar="<path>", help="Where is something like this image (repeatable; read as `query --image` reads it).")] = None,
    like: Annotated[list[int] | None, typer.Option("--like", metavar="<id>", help="Where is something like this tile of an earlier result (repeatable).")] = None,
    scales: Annotated[str | None, typer.Option(help="Window sides in px, comma-separated (default 64,128,256; 128,256,512 for a scene over 2048 px).", show_default=False)] = None,
    stride: Annotated[float, typer.Option(help="Step between windows as a fraction of the window side.")] = 0.5,
    k: Annotated[int, typer.Option("-k", "--k", help="Peaks to report.")] = 5,
    out: Annotated[Path | None, typer.Option(help="Folder for heat.tif, overlay.png and peaks.geojson (default ./locate-<scene name>).", show_default=False)] = None,
    size: Annotated[int, typer.Option(help="Longer side of overlay.png in px.")] = 1024,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the per-scene window cache in the index directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the peaks as GeoJSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    db: Annotated[Path | None, typer.Option("--db", help="Index directory whose model is used (default: $SARSEARCH_DB or ./.sarsearch).", show_default=False)] = None,
    model: Annotated[Path | None, typer.Option("--model", help="SARCLIP checkpoint (default: the index's).")] = None,
) -> None:
    """Semantic localisation: a heat map of where TEXT (or --image / --like) matches inside SCENE.

    Multi-scale sliding windows embedded by the index's model; writes heat.tif (the scene's grid, CRS and
    transform), overlay.png (heat on the quicklook, peaks boxed) and peaks.geojson. See docs/locate.md.

    Examples: sarsearch locate "ship" hrsid/images/P0017_1800_2600_4200_5000.jpg --db runs/corpus-db;
    sarsearch locate scene.tif --image example.png --scales 128,256
    """
    from sarclip_search.query import locate as localisation
    from sarclip_search.query.engine import Engine, given_text
    from sarclip_search.query.export import check_writable, write_atomic
    from sarclip_search.query.fusion import mean_direction

    if len(arguments) > 2:
        raise InputError(f"expected [TEXT] SCENE, got {len(arguments)} arguments; quote a phrase of several words")
    text, scene = (arguments[0], arguments[1]) if len(arguments) == 2 else (None, arguments[0])
    if text is not None and given_text(text) is None:
        raise InputError(f"TEXT {text!r} is blank; give the words to look for, or --image PATH / --like ID")
    if text is None and not image and not like:
        raise InputError("give a TEXT before SCENE, or --image PATH / --like ID: what to look for")
    if k < 1 or k > 100:
        raise InputError(f"-k {k}: give between 1 and 100 peaks")
    if not 64 <= size <= 8192:
        raise InputError(f"--size {size}: give the overlay's longer side in px, 64..8192")
    chosen = localisation.parse_scales(scales) if scales is not None else None
    folder = out if out is not None else Path(f"locate-{Path(scene).stem}")
    check_writable(folder, directory=True)
    with Engine.open(db, model_path=model) as engine:
        path = _scene_path(engine, scene)
        parts = [engine.embed_text(text)] if text is not None else []
        parts += [engine.embed_image_file(file) for file in image or []]
        if like:
            parts += list(engine.stored_vectors(like))
        cache = None if no_cache else engine.generation.path.parent / localisation.LOCATE_CACHE_DIR
        with render.progress_bar("locating", quiet) as progress:
            result = localisation.locate(engine.encoder, path, mean_direction(parts), scales=chosen, stride=stride,
                                         cache_root=cache, k=k, progress=progress)
    described = text if text is not None else "the example"
    heat = localisation.write_heat_geotiff(result, folder / "heat.tif")
    picture = folder / "overlay.png"
    overlay = localisation.overlay(result, size)
    from io import BytesIO

    buffer = BytesIO()
    overlay.save(buffer, format="PNG")
    write_atomic(picture, buffer.getvalue())
    geojson = localisation.peaks_geojson(result, described)
    write_atomic(folder / "peaks.geojson", (json.dumps(geojson, indent=1) + "\n").encode())
    if as_json:
        render.print_json(geojson)
    else:
        _report(result, described, [heat, picture, folder / "peaks.geojson"])


def locate_eval(db: Path | None, data: Path | None, split: str, model: Path | None, as_json: bool, out: Path | None,
                quiet: bool) -> None:
    """`sarsearch eval --locate`: the SeLo table of `training.locate_eval` (and eval.md with overlays in --out)."""
    import shlex
    import sys

    from rich import box
    from rich.table import Table

    from sarclip_search.query.engine import Engine
    from sarclip_search.query.locate import LOCATE_CACHE_DIR
    from sarclip_search.training.locate_eval import evaluate_locate, write_markdown

    if data is None:
        raise InputError("eval --locate needs --data ROOT: an archive whose manifest.csv has boxes or masks")
    with Engine.open(db, model_path=model) as engine:
        cache = engine.generation.path.parent / LOCATE_CACHE_DIR
        with render.progress_bar("locating", quiet) as progress:
            report = evaluate_locate(engine, data, split, cache_root=cache, overlays=out, progress=progress)
    if out is not None:
        command = "sarsearch " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        (out / "eval-locate.json").write_text(json.dumps(report, indent=1))
        report["files"] = [str(write_markdown(report, out, command)), str(out / "eval-locate.json")]
    if as_json:
        render.print_json(report)
        return
    table = Table(title=f"SeLo on the {split} split", box=box.SIMPLE_HEAD, title_justify="left")
    for header in ("query", "scenes", "Rsu", "Ras", "Rda", "Rmi", "splits"):
        table.add_column(header, justify="left" if header in ("query", "splits") else "right")
    for query, values in report["summary"]["per_query"].items():
        table.add_row(query, str(values["n"]), *(f"{values[m]:.4f}" for m in ("rsu", "ras", "rda", "rmi")),
                      ", ".join(values["splits"]))
    mean = report["summary"]["mean_of_query_types"]
    if mean:
        table.add_row(f"mean ({split} types)", "", *(f"{mean[m]:.4f}" for m in ("rsu", "ras", "rda", "rmi")), "")
    groups = report["summary"].get("mean_of_groups")
    if groups:
        table.add_row("mean (groups)", "", *(f"{groups[m]:.4f}" for m in ("rsu", "ras", "rda", "rmi")),
                      ", ".join(report["summary"]["per_group"]))
    render.console.print(table)
    for name, value in report["anchors"].items():
        render.console.print(f"  anchor: {name} Rmi {value:.4f}", highlight=False)
    for file in report.get("files", []):
        render.err_console.print(f"wrote {file}", highlight=False)
