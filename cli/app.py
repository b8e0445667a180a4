"""`sarsearch`: the command line, a thin skin over the library.

Each command validates its options, calls one library function and renders the result. Library
errors (`SarclipError`) become one red line and exit code 1; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from sarclip_search.cli import render
from sarclip_search.errors import InputError, SarclipError

EXIT_OK = 0
EXIT_ERROR = 1  # a user error: bad input, missing index, mismatched model ...
EXIT_USAGE = 2  # typer/click: unknown option, missing argument
EXIT_PARTIAL = 3  # `index` finished but some files failed (listed); everything else was indexed

F = TypeVar("F", bound=Callable[..., Any])


def _plain_metavars(params: list[Any]) -> list[Any]:
    """Flags get an empty metavar (typer shows it instead of the type, ``<bool>``); arguments their name in
    capitals (TEXT, ARCHIVE)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = str(param.name).upper()
    return params


class Group(TyperGroup):
    """The `sarsearch` group: its --help shows no ``<bool>`` either."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_metavars(super().get_params(ctx))


class Command(TyperCommand):
    """A typer command whose help reads like a man page: flags show no type (typer prints ``<bool>``),
    arguments are named in capitals and the usage line shows them as ``ARCHIVE`` / ``[TEXT]`` rather
    than typer's ``{archive}``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_metavars(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                # a metavar naming its pieces ("[TEXT] SCENE") is shown as it is, without "..."
                spelled = param.metavar is not None and " " in param.metavar
                name = param.display_name_raw + ("..." if param.nargs != 1 and not spelled else "")
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


app = typer.Typer(
    cls=Group,
    name="sarsearch",
    help="Search SAR imagery by text, by example image and by metadata.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Index directory (default: $SARSEARCH_DB or ./.sarsearch).", show_default=False),
]
DbsOption = Annotated[
    list[Path] | None,
    typer.Option("--db", help="Index directory (default: $SARSEARCH_DB or ./.sarsearch); repeat it, or give a JSON "
                 "manifest, to search several indexes as one (ids become NAME:ID; docs/query.md).", show_default=False),
]


def tile_id(value: str) -> int | str:
    """A tile id (an integer, refused as typer refuses one) or the NAME:ID of a tile of several indexes."""
    from sarclip_search.query.multi import REF_PATTERN

    if REF_PATTERN.fullmatch(value.strip()):
        return value.strip()
    from pydantic import TypeAdapter

    return TypeAdapter(int).validate_python(value)  # refused as an int option refuses it


ModelOption = Annotated[
    Path | None, typer.Option("--model", help="SARCLIP checkpoint (default: the one shipped with sarclip-search).")
]


def user_errors(command: F) -> F:
    """Turn library errors into one line on stderr and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sarclip_search.index.errors import VectorIndexError

        try:
            return command(*args, **kwargs)
        except (SarclipError, VectorIndexError) as exc:
            render.error(str(exc))
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            render.error("interrupted; the index keeps its last committed state")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_size(text: str | None) -> int | None:
    """'2G', '512M', '1000000' → bytes."""
    if not text:
        return None
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        size = int(float(value[:-1]) * units[value[-1]]) if value and value[-1] in units else int(value)
    except (ValueError, OverflowError):  # not a number, or inf / nan
        size = 0
    if size <= 0:
        raise InputError(f"--memory-budget {text!r} is not a positive size; use e.g. 2G or 512M")
    return size


class IndexCommand(Command):
    """`index`: `--ray` takes an optional ADDRESS, which typer's parser cannot express: a bare `--ray` (last,
    or followed by another option) is read as `--ray=local`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = ["--ray=local" if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")) else arg
                for i, arg in enumerate(args)]
        return super().parse_args(ctx, args)


@app.command(cls=IndexCommand)
@user_errors
def index(
    archive: Annotated[Path | None, typer.Argument(help="Folder of SAR images (GeoTIFF, TIFF, PNG, JPEG); a manifest.csv at its root adds metadata.", show_default=False)] = None,
    db: DbOption = None,
    model: ModelOption = None,
    tile_size: Annotated[int, typer.Option(help="Images larger than this (px) are cut into tiles of this size.")] = 256,
    stride: Annotated[int | None, typer.Option(help="Tile stride in px (default: tile size, no overlap).")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Re-embed everything (new model, other tiling, repair).")] = False,
    index_factory: Annotated[str | None, typer.Option(help='FAISS factory string, e.g. "IVF1024,PQ32x8" (default: chosen by size).')] = None,
    memory_budget: Annotated[str | None, typer.Option(help="Memory budget for the FAISS index, e.g. 2G.")] = None,
    commit_every: Annotated[int, typer.Option(help="Commit every N files: a killed run loses at most N files' work and the next run resumes.")] = 256,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first failed file (exit 1) and commit nothing of this run.")] = False,
    follow_symlinks: Annotated[bool, typer.Option("--follow-symlinks", help="Also index symbolic links (files, folders) that lead outside ARCHIVE; by default each is listed and skipped.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    from_shards: Annotated[Path | None, typer.Option("--from-shards", metavar="<dir>", help="Instead of ARCHIVE: build the index from a folder of embedding shards (docs/scale.md).", show_default=False)] = None,
    ray: Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help="Read and embed on Ray (put it after ARCHIVE): a bare --ray starts a local Ray on this machine's CPUs, auto joins the running cluster, or HOST:6379 / ray://HOST:10001. Same index as without it; see docs/scale.md.", show_default=False)] = None,
    ray_batch_size: Annotated[int, typer.Option(help="With --ray: tiles per embedding batch of an actor.")] = 64,
    ray_actors: Annotated[int | None, typer.Option(help="With --ray: embedding actors (default: one per GPU, else one per node).", show_default=False)] = None,
    shards: Annotated[Path | None, typer.Option("--shards", metavar="<dir>", help="With --ray: write embedding shards to DIR instead of an index (build it with --from-shards DIR); a re-run skips the scenes DIR holds.", show_default=False)] = None,
) -> None:
    """Index an archive: read, tile, embed and catalog every image. Re-runs are incremental.

    Example: sarsearch index ./archive
    """
    if from_shards is not None or archive is None:  # the body lives in cli/shards.py
        if archive is not None or from_shards is None:
            if archive is None:
                raise typer.BadParameter("missing: the folder of SAR images to index (or --from-shards DIR)",
                                         param_hint="'ARCHIVE'")
            raise InputError(f"give ARCHIVE ({archive}) or --from-shards {from_shards}, not both")
        from sarclip_search.cli.shards import index_from_shards

        return index_from_shards(from_shards, db, model=model, index_factory=index_factory,
                                 memory_budget=parse_size(memory_budget), rebuild=rebuild, ray=ray, quiet=quiet)
    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.model.checkpoints import DEFAULT_CHECKPOINT
    from sarclip_search.store.layout import IndexStore

    def load_sarclip():  # called only when something must be embedded: an unchanged archive needs no torch
        from sarclip_search.model.sarclip import load_model

        return load_model(model)

    budget = parse_size(memory_budget)
    model_path = str((model or DEFAULT_CHECKPOINT).resolve())
    stream_context: Any = contextlib.nullcontext()
    if ray is not None:
        from sarclip_search.ingest.ray_pipeline import RayOptions, ray_session, ray_stream, write_shards

        options = RayOptions(ray, ray_batch_size, ray_actors)
        stream_context = ray_stream(options, model_path)
    if shards is not None:  # embedding shards instead of an index
        if ray is None:
            raise InputError("--shards DIR is written by the Ray pipeline: add --ray (docs/scale.md)")
        options.check()
        with ray_session(ray), render.progress_bar("embedding", quiet) as progress:
            report = write_shards(archive, shards, load_sarclip, model_path=model_path, options=options,
                                  tile_size=tile_size, stride=stride, follow_symlinks=follow_symlinks, progress=progress)
        render.index_report(report)
        raise typer.Exit(EXIT_PARTIAL if report.failed else EXIT_OK)
    with stream_context as stream, render.progress_bar("indexing", quiet) as progress:
        report = index_archive(
            archive,
            IndexStore(db),
            load_sarclip,
            model_path=model_path,
            tile_size=tile_size,
            stride=stride,
            rebuild=rebuild,
            index_factory=index_factory,
            memory_budget=budget,
            commit_every=commit_every,
            strict=strict,
            follow_symlinks=follow_symlinks,
            progress=progress,
            stream=stream,
        )
    render.index_report(report)
    if report.failed:
        raise typer.Exit(EXIT_PARTIAL)


@app.command(cls=Command)
@user_errors
def query(
    text: Annotated[str | None, typer.Argument(help='What to look for, in words, e.g. "ship near harbor".')] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", metavar="<path>", help="Example image (repeatable), read as the index read its archive: a larger one is cut into its tiles, a hit scoring its best match to any; fused with TEXT when both are given.")] = None,
    like: Annotated[list[str] | None, typer.Option("--like", metavar="<id>", parser=tile_id, help="More like this: the id of a tile from an earlier result (repeatable).")] = None,
    not_text: Annotated[list[str] | None, typer.Option("--not", metavar="<text>", help="Push results away from this text (repeatable).")] = None,
    not_image: Annotated[list[Path] | None, typer.Option("--not-image", metavar="<path>", help="Push results away from this image (repeatable).")] = None,
    positive: Annotated[list[str] | None, typer.Option("--positive", metavar="<id>", parser=tile_id, help="Relevance feedback: id of a relevant tile (repeatable); re-ranks with a probe fitted on the marked tiles.")] = None,
    negative: Annotated[list[str] | None, typer.Option("--negative", metavar="<id>", parser=tile_id, help="Relevance feedback: id of a tile that is not relevant (repeatable).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    where: Annotated[str | None, typer.Option(help="""SQL predicate over catalog columns, e.g. "label = 'T72' AND split = 'test'".""")] = None,
    label: Annotated[str | None, typer.Option(help="Only tiles with this label.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only tiles of this dataset.")] = None,
    split: Annotated[str | None, typer.Option(help="Only tiles of this split (train/val/test).")] = None,
    sensor: Annotated[str | None, typer.Option(help="Sensor name contains this (case-insensitive).")] = None,
    polarization: Annotated[str | None, typer.Option(help="Polarizations contain this, e.g. VV.")] = None,
    bbox: Annotated[str | None, typer.Option(help="minlon,minlat,maxlon,maxlat: footprints intersecting it.")] = None,
    after: Annotated[str | None, typer.Option(help="Acquired on or after this date (YYYY-MM-DD).")] = None,
    before: Annotated[str | None, typer.Option(help="Acquired before this date (YYYY-MM-DD).")] = None,
    min_objects: Annotated[int | None, typer.Option("--min-objects", metavar="<n>", help="Only tiles holding at least this many boxed objects (tile_n_objects; scenes with boxes in the manifest).")] = None,
    fusion: Annotated[str | None, typer.Option(help="How a text and examples combine: blend (one fused vector) or rrf (reciprocal rank fusion). Default: see docs/query.md.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the text against the examples (0..1). Default: see docs/query.md.")] = None,
    dedup: Annotated[bool, typer.Option("--dedup", help="Keep only the best of overlapping tiles of one scene (still k results).")] = False,
    geojson: Annotated[Path | None, typer.Option("--geojson", help="Also write the hits' footprints as a GeoJSON FeatureCollection.")] = None,
    stac: Annotated[Path | None, typer.Option("--stac", help="Also write the hits as a STAC ItemCollection (JSON).")] = None,
    thumbnails: Annotated[Path | None, typer.Option("--thumbnails", help="Also write a PNG quicklook per hit and contact_sheet.png into this folder.")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF lists to probe (approximate indexes only).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as a JSON array.")] = False,
    columns: Annotated[str | None, typer.Option("--columns", metavar="<names>", help="Table columns, comma-separated: " + ", ".join(render.HIT_COLUMNS) + ", or any catalog column (sarsearch columns). Default: what fits the terminal.")] = None,
    db: DbsOption = None,
    model: ModelOption = None,
) -> None:
    """Search the index by text, example images, earlier results (--like) or feedback, with metadata filters.

    Examples: sarsearch query "T72 tank" --split test;  sarsearch query "ship" --image a.tif --not "harbor";
    sarsearch query --like 4692 --dedup --geojson hits.geojson;  sarsearch query --positive 12 --positive 40 --negative 7
    """
    from sarclip_search.query.export import check_writable
    from sarclip_search.query.multi import open_engine
    from sarclip_search.store.filters import Filters, parse_bbox, parse_date

    # dates and --bbox are parsed once, here, before the index is opened; they reach the SQL as they are
    after_time, before_time = (parse_date(value) if value is not None else None for value in (after, before))
    filters = Filters(
        where=where, label=label, dataset=dataset, split=split, sensor=sensor, polarization=polarization,
        bbox=parse_bbox(bbox) if bbox is not None else None, after=after_time, before=before_time,
        min_objects=min_objects,
    )
    _check_query_inputs(image or [], not_image or [], positive or [], negative or [], like or [], not_text or [])
    for path in (geojson, stac):
        if path is not None:
            check_writable(path)
    if thumbnails is not None:
        check_writable(thumbnails, directory=True)
    fused = {name: value for name, value in (("alpha", alpha), ("fusion", fusion)) if value is not None}
    table_columns = _parse_columns(columns) if columns is not None else None
    with open_engine(db, model_path=model) as engine:  # several --db: one MultiEngine, ids NAME:ID
        if table_columns is not None:
            _check_columns(table_columns, engine.catalog.columns())
        if positive:
            hits = engine.feedback(positive, negative or [], text=text, filters=filters, k=k, dedup=dedup, nprobe=nprobe)
        else:
            hits = engine.query(text, image or [], like=like or [], negative_texts=not_text or [],
                                negative_images=not_image or [], filters=filters, k=k, dedup=dedup, nprobe=nprobe, **fused)
        hints = [] if hits else _empty_result_hints(engine, filters)
    _write_outputs(hits, geojson, stac, thumbnails)
    if as_json:
        render.print_json([hit.to_dict() for hit in hits])
    else:
        render.hits_table(hits, title=f"top {k} for {_describe_query(text, image, like, not_text, not_image, positive, negative)}",
                          columns=table_columns)
    for line in hints:
        render.hint(line)


def _parse_columns(spec: str) -> list[str]:
    """--columns "a,b,c" -> canonical names (aliases resolved); empty or repeated names are one-line errors."""
    names = [render.COLUMN_ALIASES.get(part.strip().lower(), part.strip()) for part in spec.split(",")]
    if not all(names):
        raise InputError(f"--columns {spec!r}: give column names separated by commas, e.g. --columns rank,score,label,path")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"--columns {spec!r}: {repeated[0]} is named twice; name each column once")
    return [name.lower() if name.lower() in render.HIT_COLUMNS else name for name in names]


def _check_columns(names: list[str], catalog_columns: list[str]) -> None:
    """Every --columns name is a table column or a catalog column; else one line with the closest names."""
    from sarclip_search.store.filters import close_matches, filterable_columns

    known = {c.lower(): c for c in catalog_columns}
    for position, name in enumerate(names):
        if name in render.HIT_COLUMNS:
            continue
        if name.lower() in known:
            names[position] = known[name.lower()]
            continue
        guesses = close_matches(name, [*render.HIT_COLUMNS, *filterable_columns(catalog_columns)])
        hint = f"did you mean {' or '.join(guesses)}? " if guesses else ""
        raise InputError(f"--columns: no column {name!r}; {hint}valid: {', '.join(render.HIT_COLUMNS)}, "
                         "or a catalog column (sarsearch columns)")


def _empty_result_hints(engine: Any, filters: Any) -> list[str]:
    """Why a filtered query came back empty: each --label/--dataset/--split/--sensor/--polarization value no
    tile has, with the closest values."""
    from sarclip_search.store.filters import unmatched_filters

    catalog = engine.catalog
    hints = unmatched_filters(filters, lambda column: [value for value, _ in catalog.values(column)], catalog.columns())
    return [hint.message for hint in hints]


def _check_query_inputs(images: list[Path], not_images: list[Path], positive: list[int], negative: list[int],
                        like: list[int], not_text: list[str]) -> None:
    """Reject missing example files and option mixes that mean nothing, before the index is opened."""
    for option, paths in (("--image", images), ("--not-image", not_images)):
        for path in paths:
            if not path.is_file():
                raise InputError(f"{option} {path}: image not found; give the path of an image file")
    if negative and not positive:
        raise InputError("--negative needs at least one --positive ID (feedback marks relevant tiles too)")
    if positive and (images or like or not_images or not_text):
        raise InputError("--positive/--negative re-rank by feedback; combine them with TEXT only, not --image/--like/--not")


def _write_outputs(hits: list[Any], geojson: Path | None, stac: Path | None, thumbnails: Path | None) -> None:
    """Write the requested result files (thumbnails first, so the STAC items can link them)."""
    from sarclip_search.query.export import write_geojson, write_stac
    from sarclip_search.query.quicklook import write_thumbnails

    written: list[str] = []
    quicklooks: dict[int, Path] = {}
    if thumbnails is not None:
        report = write_thumbnails(hits, thumbnails)
        quicklooks = {hit.id: path.resolve() for hit, path in zip(hits, report.paths)}
        if report.contact_sheet is not None:
            written.append(f"{len(report.paths)} quicklooks and {report.contact_sheet}"
                           + (f" (removed {len(report.removed)} files an earlier query wrote there)" if report.removed else ""))
        for tile_id, reason in report.failed:
            render.warn(f"tile {tile_id}: no quicklook ({reason})")
    if geojson is not None:
        written.append(str(write_geojson(hits, geojson)))
    if stac is not None:
        written.append(str(write_stac(hits, stac, thumbnails=quicklooks)))
    render.written(written)


def _describe_query(text: str | None, images: list[Path] | None, like: list[int] | None, not_text: list[str] | None,
                    not_images: list[Path] | None, positive: list[int] | None, negative: list[int] | None) -> str:
    parts = ([f'"{text}"'] if text else []) + [str(p) for p in images or []] + [f"like {i}" for i in like or []]
    parts += [f"+{i}" for i in positive or []] + [f"-{i}" for i in negative or []]
    parts += [f'not "{t}"' for t in not_text or []] + [f"not {p}" for p in not_images or []]
    return " + ".join(parts)


@app.command(cls=Command)
@user_errors
def info(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Verify catalog and vectors agree (ids, counts, model hash, dims); exit 1 on any problem.")] = False,
) -> None:
    """What is indexed: scenes, tiles, datasets, labels, the model, the index type and size on disk.

    Example: sarsearch info;  sarsearch info --check
    """
    from sarclip_search.query.engine import Engine

    if check:
        from sarclip_search.store.check import check_index

        report = check_index(db)
        render.check_report(report)
        if not report.ok:
            raise typer.Exit(EXIT_ERROR)
        return
    with Engine.open(db) as engine:
        summary = engine.summary()
    if as_json:
        render.print_json(summary)
    else:
        render.info_table(summary)


@app.command("columns", cls=Command)
@user_errors
def columns_command(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the columns as JSON.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Also list the catalog's internal columns (ids, file state, hashes, raster file tags); --where accepts them too.")] = False,
) -> None:
    """The catalog columns to filter on (--where, --label ...): type, tiles with a value, values with counts.

    Columns with few values list every value with its tile count; others their number of values and range.

    Example: sarsearch columns;  sarsearch columns --json
    """
    from sarclip_search.query.engine import Engine

    with Engine.open(db) as engine:
        infos = engine.catalog.column_info(include_internal=show_all)
        tiles = engine.catalog.counts()["tiles"]
    if as_json:
        render.print_json([info.to_dict() for info in infos])
    else:
        render.columns_table(infos, tiles)


@app.command(cls=Command, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def train(
    ctx: typer.Context,
    config: Annotated[str, typer.Option(help="Training config: a name in training/configs (default, smoke) or a JSON path.")] = "default",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train a SARCLIP model; settings from --config plus --key=value overrides.

    Example: sarsearch train --config default --epochs=2 --out=runs/mine.pt
    """
    from sarclip_search.training.train import TrainConfig
    from sarclip_search.training.train import train as run_training

    settings = TrainConfig.load(config, ctx.args)
    with render.progress_bar("training", quiet) as progress:

        def on_step(step: int, total: int, loss: float, images_per_second: float) -> None:
            progress(f"loss {loss:.3f}", step, total) if quiet else progress("steps", step, total)

        result = run_training(settings, progress=progress, on_step=on_step)
    render.train_summary(result)


@app.command("eval", cls=Command)
@user_errors
def evaluate(
    db: Annotated[Path | None, typer.Option("--db", help="Evaluate the vectors of this index (default: $SARSEARCH_DB or ./.sarsearch when --data is not given).", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option(help="Instead, embed the labelled images of this archive's manifest.csv.", show_default=False)] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate on (manifest / catalog `split`).")] = "test",
    model: ModelOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write eval.json, eval.md and PNG plots into this folder.", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    tiles: Annotated[bool, typer.Option("--tiles", help="Instead, tile-level text queries scored by what each tile of the index holds (its boxed objects, its scene's sea context): P@10 with chance per query (docs/evaluation.md).")] = False,
    prompt_ensemble: Annotated[bool, typer.Option("--prompt-ensemble", help="With --tiles: embed each query through a small ensemble of SAR prompt templates instead of as it is.")] = False,
    baseline: Annotated[Path | None, typer.Option(help="An earlier report of the same kind (its --json output, eval.json or tiles.json): its numbers go beside this run's in the tables, JSON and plots.", show_default=False)] = None,
    locate: Annotated[bool, typer.Option("--locate", help="Instead, SeLo metrics of `sarsearch locate` (Rsu, Ras, Rda, Rmi) on the boxed/masked scenes of --data, with the model of --db (docs/locate.md).")] = False,
) -> None:
    """Zero-shot accuracy, text/image retrieval R@K, mR, mAP, image→image P@10 and paraphrase P@10 on a labelled split.

    Example: sarsearch eval --data ../shared/data --split test --out runs/eval;  sarsearch eval --db .sarsearch --json
    """
    from sarclip_search.cli import render_eval
    from sarclip_search.store.layout import resolve_db
    from sarclip_search.training import evaluate as evaluation

    if locate:
        from sarclip_search.cli.locate import locate_eval

        return locate_eval(db, data, split, model, as_json, out, quiet)
    if db is not None and data is not None:
        raise InputError("give --db DIR (an index) or --data ROOT (a labelled archive), not both")
    earlier = None
    if baseline is not None:  # read before the run: a wrong file fails fast
        from sarclip_search.training.report import load_baseline

        earlier = (baseline, load_baseline(baseline, tiles))
    if tiles:
        from sarclip_search.query.engine import Engine
        from sarclip_search.training.tile_eval import QUERY_TEMPLATES, tile_retrieval_report

        if data is not None:
            raise InputError("--tiles scores the tiles of an index: give --db DIR, not --data")
        with Engine.open(db, model_path=model) as engine:
            tile_report = tile_retrieval_report(engine, split, templates=QUERY_TEMPLATES if prompt_ensemble else None)
        _eval_files(tile_report, earlier, out, tiles=True)
        if as_json:
            render.print_json(tile_report)
        else:
            render_eval.tile_report(tile_report)
        return
    if data is not None:
        from sarclip_search.model.sarclip import load_model

        if not (data / "manifest.csv").is_file():
            raise InputError(f"{data}: no manifest.csv with labels; pass --data PATH to a labelled archive")
        with render.progress_bar("embedding", quiet) as progress:
            report = evaluation.evaluate_manifest(load_model(model), data, split, progress)
    else:
        from sarclip_search.query.engine import Engine

        if db is None and not resolve_db(None).exists():
            raise InputError(f"no index at {resolve_db(None)}; pass --db DIR for an indexed archive "
                             "or --data ROOT for an archive with a labelled manifest.csv")
        with Engine.open(db, model_path=model) as engine:
            report = evaluation.evaluate_index(engine, split)
    _eval_files(report, earlier, out, tiles=False)
    if as_json:
        render.print_json(report)
    else:
        render_eval.eval_report(report)


def _eval_files(report: dict, earlier: tuple[Path, dict] | None, out: Path | None, *, tiles: bool) -> None:
    """`eval --baseline` numbers beside this run's, then the files of `--out` (training/report.py)."""
    from sarclip_search.training import report as report_files

    if earlier is not None:
        report_files.attach_baseline(report, earlier[1], earlier[0])
    if out is not None:
        (report_files.write_tile_report if tiles else report_files.write_report)(report, out)


@app.command(cls=Command)
@user_errors
def serve(
    db: DbsOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback (127.0.0.1, ::1, localhost) needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    token: Annotated[str | None, typer.Option(envvar="SARSEARCH_TOKEN", show_default=False, help="Secret every request must carry (Authorization: Bearer, or a cookie set by opening /?token=SECRET once); also $SARSEARCH_TOKEN.")] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request on stderr.")] = False,
) -> None:
    """Serve the index over HTTP: a STAC item-search API with similarity search, and the web page. Ctrl-C stops it.

    The index is read only; generations that `sarsearch index` commits meanwhile are picked up. API: docs/server.md.

    Example: sarsearch serve --db runs/corpus-db, then open http://127.0.0.1:8765/
    """
    from sarclip_search.query.multi import several
    from sarclip_search.server.serve import serve as run_server

    target = db if several(db) else (db[0] if db else None)  # one --db: served exactly as before

    def ready(url: str, generation: str) -> None:
        first = f"{url}?token=…" if token else url
        shown = ", ".join(map(str, target)) if isinstance(target, list) else target or "the index"
        render.err_console.print(f"[green]serving[/] {shown} ({generation}) at {first}  (Ctrl-C stops)",
                                 highlight=False, soft_wrap=True)

    run_server(target, host, port, token, access_log=access_log, on_ready=ready)
    render.err_console.print("stopped", highlight=False)


# `locate` (its body lives in cli/locate.py), registered after the commands above so it is listed last
from sarclip_search.cli.locate import locate_command

app.command("locate", cls=Command)(user_errors(locate_command))


def main() -> None:
    logging.basicConfig(level=os.environ.get("SARSEARCH_LOG", "WARNING").upper(), format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
