"""Everything the CLI shows: rich tables, progress bars and one-line errors. Only cli/ prints."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

# Piped output is not squeezed to 80 columns (use --json for machine-readable output).
PIPE_WIDTH = 140


class _StreamConsole:
    """A rich Console made for each use, so that it sizes itself to the stream and $COLUMNS of that moment.

    A console built once at import keeps the width it saw then: a test runner that swaps sys.stdout, or a
    caller that sets COLUMNS, would not be honoured. Width: $COLUMNS when set, else the terminal's, else
    `PIPE_WIDTH` for pipes and files.
    """

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr

    def _console(self) -> Console:
        stream = sys.stderr if self._stderr else sys.stdout
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            width: int | None = int(columns)
        else:
            width = None if stream.isatty() else PIPE_WIDTH
        return Console(file=stream, width=width)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._console(), name)


console: Any = _StreamConsole()
err_console: Any = _StreamConsole(stderr=True)


def error(message: str) -> None:
    """One red line on stderr (no traceback: the message says what to do)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


ETA_AFTER_SECONDS = 3.0  # no ETA before this much of the task has run (one slow first item says little)


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the task's mean rate so far (total elapsed / items done), None while unknown.

    The whole-run mean settles as the run goes on, where a short moving window swings with every slow item
    (model loading, a commit, a large scene): rich's default estimate said 20 minutes at the start of a
    1:40 indexing run.
    """
    if total > 0 and done >= total:
        return 0.0
    if done <= 0 or total <= 0 or elapsed < ETA_AFTER_SECONDS:
        return None
    return (total - done) * elapsed / done


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """A rich progress bar driven by library callbacks `(event, done, total)` or, from the indexer,
    `(event, done, total, tiles)`: then done/total count tiles and the rate is tiles read per second (what the
    summary reports), else items/s. The ETA is `eta_seconds`."""
    if quiet:
        yield lambda event, done, total, tiles=None: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    with Progress(*columns, console=err_console._console(), transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(event: str, done: int, total: int, tiles: int | None = None) -> None:
            if event not in tasks:
                tasks[event] = bar.add_task(f"{description} ({event})", total=total, rate="", eta="eta -:--")
            task = bar.tasks[tasks[event]]
            elapsed = task.elapsed or 0.0
            rate = ""
            if elapsed > 0:
                rate = f"tiles, {tiles / elapsed:.1f} tiles/s" if tiles is not None else f"{done / elapsed:.1f}/s"
            left = eta_seconds(done, total, elapsed)
            bar.update(tasks[event], completed=done, total=total, rate=rate,
                       eta="eta -:--" if left is None else f"eta {_clock(left)}")

        yield update


def index_report(report: Any) -> None:
    lines = [
        f"[bold green]indexed[/] {report.archive} → {report.db}",
        f"  files: {report.indexed} embedded, {report.unchanged} unchanged, {report.removed} removed, "
        f"{len(report.failed)} failed" + (f", {report.relabelled} re-labelled" if report.relabelled else "")
        + (f", {report.not_in_manifest} not in manifest.csv (skipped)" if report.not_in_manifest else ""),
        f"  tiles added: {report.tiles_added} in {report.seconds:.1f} s "
        f"({report.tiles_per_second:.1f} tiles/s overall"
        + (f", {report.tiles_added / report.embed_seconds:.0f} tiles/s embedding" if report.embed_seconds else "")
        + ")",
        (f"  total: {report.totals.get('scenes', 0)} scenes, {report.totals.get('tiles', 0)} tiles, "
         f"index {report.index_factory}"),
    ]
    for line in lines:
        err_console.print(line, highlight=False)
    for path, reason in report.warnings[:20]:
        warn(f"{path}: {reason}")
    for path, reason in report.failed[:20]:
        warn(f"{path}: {reason}")
    if len(report.failed) > 20:
        warn(f"... and {len(report.failed) - 20} more failed files")


def check_report(report: Any) -> None:
    """`info --check`: one line per problem on stderr, or one line saying all agree."""
    for problem in report.problems:
        error(problem)
    if report.ok:
        checkpoint = "checkpoint hash checked" if report.checkpoint_checked else "checkpoint file not found, hash not checked"
        encoders = {"ok": "ONNX query encoders ok", "absent": "no ONNX query encoders (queries load torch)"}
        console.print(f"[bold green]ok[/] {report.db} ({report.generation}): {report.tiles} tiles = "
                      f"{report.vectors} vectors, same ids; {checkpoint}; {encoders.get(report.encoders, '')}",
                      highlight=False, soft_wrap=True)


# table header of the score column, by Hit.score_kind
SCORE_HEADERS = {"cosine": "score", "rrf": "rrf", "probe": "probe"}


@dataclass(frozen=True)
class HitColumn:
    """A column of the results table: header, cell text of (rank, hit), the widest it gets (None: no cap)."""

    header: str
    cell: Callable[[int, Any], str]
    max_width: int | None = None
    justify: str = "left"


def _meta(column: str) -> Callable[[int, Any], str]:
    def cell(rank: int, hit: Any) -> str:
        value = hit.metadata.get(column)
        return "" if value is None else str(value)
    return cell


def _score(rank: int, hit: Any) -> str:
    return f"{hit.score:.4f}" if hit.score_kind == "rrf" else f"{hit.score:.3f}"  # RRF scores are ~1/60


def _lonlat(rank: int, hit: Any) -> str:
    if hit.bbox is None:
        return ""
    minlon, minlat, maxlon, maxlat = hit.bbox
    return f"{(minlon + maxlon) / 2:.3f},{(minlat + maxlat) / 2:.3f}"


# `query --columns` names (besides any catalog column, shown as it is stored)
HIT_COLUMNS: dict[str, HitColumn] = {
    "rank": HitColumn("#", lambda rank, hit: str(rank), justify="right"),
    "score": HitColumn("score", _score),
    "id": HitColumn("id", lambda rank, hit: str(hit.id), justify="right"),
    "date": HitColumn("date", lambda rank, hit: str(hit.metadata.get("datetime") or "")[:10]),
    "dataset": HitColumn("dataset", _meta("dataset"), 22),
    "label": HitColumn("label", _meta("label"), 20),
    "split": HitColumn("split", _meta("split"), 8),
    "sensor": HitColumn("sensor", _meta("sensor"), 22),
    "pol": HitColumn("pol", _meta("sar:polarizations"), 8),
    "band": HitColumn("band", _meta("sar:frequency_band"), 8),
    "mode": HitColumn("mode", _meta("sar:instrument_mode"), 6),
    "scene": HitColumn("scene", lambda rank, hit: Path(hit.path).stem, 40),
    "path": HitColumn("path", lambda rank, hit: hit.path),
    "window": HitColumn("window", lambda rank, hit: ",".join(str(v) for v in hit.window)),
    "lonlat": HitColumn("lon,lat", _lonlat),
}
COLUMN_ALIASES = {"#": "rank", "polarization": "pol", "polarizations": "pol", "datetime": "date", "tile": "id"}
# Shown by default, when any hit has a value; when the terminal is narrow, columns of DROP_ORDER go first
# (left to right) until the path gets at least PATH_MIN characters.
DEFAULT_HIT_COLUMNS = ("rank", "score", "id", "date", "dataset", "label", "split", "sensor", "pol", "path", "window")
DROP_ORDER = ("window", "sensor", "split", "pol", "dataset", "date")
ALWAYS_SHOWN = ("rank", "score", "id")  # even without values
PATH_MIN = 36
CATALOG_COLUMN_MAX = 30  # widest cell of a catalog column named in --columns
COLUMN_GAP = 3  # a space, the column rule (blank in box.SIMPLE_HEAD) and a space


def _cut_middle(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def shorten_path(path: str, width: int) -> str:
    """`path` in at most `width` characters, keeping what identifies the file.

    The file name stays whole while it fits (else it loses its middle); the folders nearest to it are kept
    whole while they fit and the rest become "…" (the archive's top folders say least, and the `dataset`
    column names them). A nearest folder too long to keep whole keeps its head: a Sentinel-1 product
    name starts with its mission, mode, product type and date.
    """
    if len(path) <= width:
        return path
    *folders, name = path.split("/")
    if not folders or len(name) + 2 > width:
        return _cut_middle(name, width)
    room = width - len(name) - 1  # for the folders, each with its slash, and "…" for those left out
    kept: list[str] = []
    for position in range(len(folders) - 1, -1, -1):
        folder = folders[position]
        reserve = 2 if position > 0 else 0  # "…/" in front when farther folders are left out
        if len(folder) + 1 + reserve <= room:
            kept.insert(0, folder)
            room -= len(folder) + 1
            continue
        if not kept and room - 2 >= 8:  # the nearest folder, cut after its head
            kept.insert(0, folder[: room - 2 - 1] + "…")
        break
    dropped = len(kept) < len(folders)
    return ("…/" if dropped else "") + "".join(f"{folder}/" for folder in kept) + name


def hit_columns(names: Sequence[str] | None, hits: Sequence[Any], width: int) -> list[tuple[str, HitColumn, int]]:
    """(name, column, width) of the results table: `names` as given, or the default columns that have values,
    fitted to `width` characters (columns dropped in DROP_ORDER while the path would get under PATH_MIN)."""
    chosen = list(names) if names else [
        name for name in DEFAULT_HIT_COLUMNS
        if name in ALWAYS_SHOWN or name == "path" or any(HIT_COLUMNS[name].cell(r, h) for r, h in enumerate(hits, 1))
    ]
    specs = {name: HIT_COLUMNS.get(name) or HitColumn(name.removeprefix("sar:"), _meta(name), CATALOG_COLUMN_MAX)
             for name in chosen}

    def natural(name: str) -> int:
        spec = specs[name]
        longest = max([len(spec.header), *(len(spec.cell(r, h)) for r, h in enumerate(hits, 1))])
        return min(longest, spec.max_width) if spec.max_width else longest

    widths = {name: natural(name) for name in chosen}

    def path_room() -> int:
        others = sum(w for n, w in widths.items() if n != "path")
        return width - others - COLUMN_GAP * (len(widths) - 1)

    if not names and "path" in widths:
        for name in DROP_ORDER:
            if path_room() >= min(PATH_MIN, widths["path"]):
                break
            widths.pop(name, None)
    if "path" in widths:
        widths["path"] = max(len("path"), min(widths["path"], path_room()))
    return [(name, specs[name], widths[name]) for name in chosen if name in widths]


def hits_table(hits: Sequence[Any], title: str, columns: Sequence[str] | None = None) -> None:
    """The results as a table as wide as the terminal; `columns` (names of HIT_COLUMNS or catalog columns)
    replaces the default choice."""
    out = console._console()  # one console: its width is the terminal's now
    if not hits:
        out.print(title, highlight=False)
        out.print("no tile matches the filters", style="yellow")
        return
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    layout = hit_columns(columns, hits, out.width)
    score_header = SCORE_HEADERS.get(hits[0].score_kind, "score")
    for name, spec, width in layout:
        header = score_header if name == "score" else spec.header
        table.add_column(header, no_wrap=True, overflow="ellipsis", width=width, justify=spec.justify)  # type: ignore[arg-type]
    for rank, hit in enumerate(hits, start=1):
        table.add_row(*(shorten_path(hit.path, width) if name == "path" else spec.cell(rank, hit)
                        for name, spec, width in layout))
    out.print(table)


def hint(message: str) -> None:
    """One line on stderr explaining a result (e.g. why it is empty); stdout stays the table or the JSON."""
    err_console.print(f"[yellow]hint:[/] {message}", highlight=False, soft_wrap=True)


def written(outputs: Sequence[str]) -> None:
    """One line on stderr per result file written (stdout stays the table or the JSON)."""
    for output in outputs:
        err_console.print(f"[green]wrote[/] {output}", highlight=False, soft_wrap=True)


def _literal(value: Any) -> str:
    """A value as --where would spell it: text in single quotes, numbers bare."""
    return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else str(value)


def _column_values(info: Any) -> str:
    """What a column holds: every value with its tile count, else the number of values and their range."""
    if info.values:
        return ", ".join(f"{_literal(value)} ({count})" for value, count in info.values)
    text = f"{info.distinct} distinct values" if info.distinct else "no values"
    if info.minimum is not None:
        text += f", {_literal(info.minimum)} .. {_literal(info.maximum)}"
    return text


def columns_table(infos: Sequence[Any], tiles: int) -> None:
    """`sarsearch columns`: one row per filterable catalog column (name as --where takes it, type, tiles
    with a value, values)."""
    from sarclip_search.store.filters import quoted_column

    table = Table(title=f"catalog columns ({tiles} tiles); use them in --where, e.g. --where \"label = 'T72'\"",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("column", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("tiles", justify="right", no_wrap=True)
    table.add_column("values (tiles)", overflow="fold")
    for info in infos:
        name = quoted_column(info.name) + (" (internal)" if info.internal else "")
        table.add_row(name, info.type, str(info.tiles), _column_values(info))
    console.print(table, highlight=False)


def info_table(summary: dict[str, Any]) -> None:
    catalog = summary["catalog"]
    model = summary.get("model") or {}
    index = summary.get("index") or {}
    console.print(f"[bold]index[/] {summary['db']} (generation {summary['generation']}, "
                  f"{summary['size_bytes'] / 1e6:.1f} MB on disk)", highlight=False, soft_wrap=True)
    console.print(f"  archive: {summary.get('archive_root')}  tiling: {summary.get('tiling')}", highlight=False, soft_wrap=True)
    console.print(f"  scenes: {catalog.get('scenes')}  tiles: {catalog.get('tiles')}", highlight=False, soft_wrap=True)
    console.print(f"  model: {model.get('model_name')} (checkpoint {str(model.get('checkpoint_sha256'))[:12]}, "
                  f"{model.get('embed_dim')}-d)", highlight=False, soft_wrap=True)
    console.print(f"  vectors: {index.get('ntotal')} in FAISS {index.get('factory')}, metric "
                  f"{(summary.get('embedding') or {}).get('metric')}", highlight=False, soft_wrap=True)
    for key in ("dataset", "label", "split"):
        counts = catalog.get(key)
        if counts:
            table = Table(title=f"scenes by {key}", title_justify="left")
            table.add_column(key)
            table.add_column("scenes", justify="right")
            for value, count in sorted(counts.items(), key=lambda kv: -kv[1]):
                table.add_row(str(value), str(count))
            console.print(table)


def train_summary(result: Any) -> None:
    console.print(f"[bold green]trained[/] {result.steps} steps in {result.seconds:.0f} s "
                  f"({result.images_per_second:.1f} img/s) → {result.checkpoint} (sha256 {result.checkpoint_sha256[:12]})",
                  highlight=False)
    if result.losses:
        console.print(f"  loss {result.losses[0]:.3f} → {sum(result.losses[-10:]) / len(result.losses[-10:]):.3f}")
    for dataset, scores in (result.metrics.get("zero_shot") or {}).items():
        console.print(f"  zero-shot {dataset}: top-1 {scores['top1']:.3f} on {scores['n']} images "
                      f"(chance {scores['chance']:.3f})", highlight=False)
