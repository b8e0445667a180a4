"""Everything the CLI shows: rich tables, progress bars and one-line errors. Only cli/ prints."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
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

# columns shown in the query table after rank/score/path/window, when the catalog has them
KEY_COLUMNS = ("label", "dataset", "split")


def error(message: str) -> None:
    """One red line on stderr (no traceback: the message says what to do)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


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
    `(event, done, total, tiles)`: then the rate is tiles/s (what the summary reports), else items/s. The
    ETA is `eta_seconds`."""
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
                rate = f"{tiles} tiles, {tiles / elapsed:.1f} tiles/s" if tiles is not None else f"{done / elapsed:.1f}/s"
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


def _tail(text: str, width: int) -> str:
    """The end of a long path (the file name matters more than the folders)."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


# table header of the score column, by Hit.score_kind
SCORE_HEADERS = {"cosine": "score", "rrf": "rrf", "probe": "probe"}


def hits_table(hits: Sequence[Any], title: str) -> None:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    score_header = SCORE_HEADERS.get(hits[0].score_kind, "score") if hits else "score"
    for name, width in (("#", 2), (score_header, 5), ("id", 4), ("path", 20), ("window", 11)):
        table.add_column(name, no_wrap=True, min_width=width)
    present = [c for c in KEY_COLUMNS if any(h.metadata.get(c) is not None for h in hits)]
    for name in present:
        table.add_column(name.removeprefix("sar:"), no_wrap=True, overflow="ellipsis", max_width=14)
    for rank, hit in enumerate(hits, start=1):
        window = ",".join(str(v) for v in hit.window)
        extra = [str(hit.metadata.get(c) if hit.metadata.get(c) is not None else "") for c in present]
        score = f"{hit.score:.4f}" if hit.score_kind == "rrf" else f"{hit.score:.3f}"  # RRF scores are ~1/60
        table.add_row(str(rank), score, str(hit.id), _tail(hit.path, 34), window, *extra)
    console.print(table)
    if not hits:
        console.print("no tile matches the filters", style="yellow")


def written(outputs: Sequence[str]) -> None:
    """One line on stderr per result file written (stdout stays the table or the JSON)."""
    for output in outputs:
        err_console.print(f"[green]wrote[/] {output}", highlight=False, soft_wrap=True)


def info_table(summary: dict[str, Any]) -> None:
    catalog = summary["catalog"]
    model = summary.get("model") or {}
    index = summary.get("index") or {}
    console.print(f"[bold]index[/] {summary['db']} (generation {summary['generation']}, "
                  f"{summary['size_bytes'] / 1e6:.1f} MB on disk)", highlight=False)
    console.print(f"  archive: {summary.get('archive_root')}  tiling: {summary.get('tiling')}", highlight=False)
    console.print(f"  scenes: {catalog.get('scenes')}  tiles: {catalog.get('tiles')}", highlight=False)
    console.print(f"  model: {model.get('model_name')} (checkpoint {str(model.get('checkpoint_sha256'))[:12]}, "
                  f"{model.get('embed_dim')}-d)", highlight=False)
    console.print(f"  vectors: {index.get('ntotal')} in FAISS {index.get('factory')}, metric "
                  f"{(summary.get('embedding') or {}).get('metric')}", highlight=False)
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
