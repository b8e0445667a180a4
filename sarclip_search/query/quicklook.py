"""Quicklook PNGs of hits and a contact sheet of the top k, for a human to look at results.

    report = write_thumbnails(hits, "out/")   # out/001_tile4692.png ..., out/contact_sheet.png

A quicklook is the hit's pixel window of band 1 read with `raster.read_window`, converted to dB and
stretched between its 1st and 99.5th percentile (`radiometry.to_model_input`, the model's own view),
as 8-bit grey, scaled to fit `size` px. A tile that cannot be read (file moved or deleted since
indexing) gets a grey placeholder and is listed in `ThumbnailReport.failed`; the others are written.

The folder keeps a manifest of what the last run wrote there (`MANIFEST_NAME`: file names and their
sha256). The next run into the same folder removes the files of that list it does not write again and
that are still as that run left them; it never removes a file it did not write.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sarclip_search._fs import bytes_sha256, file_sha256
from sarclip_search.errors import RasterError, printable_path
from sarclip_search.ingest import radiometry, raster
from sarclip_search.ingest.tiling import Window
from sarclip_search.query.export import ExportError, check_writable, write_atomic
from sarclip_search.query.hit import Hit

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 128  # px, the longer side of a quicklook (the model's input size)
SHEET_COLUMNS = 5
CAPTION_LINES = 3  # rank, score, tile id / label, date / scene name
LINE_HEIGHT = 13  # px per caption line of PIL's default font
CAPTION_HEIGHT = CAPTION_LINES * LINE_HEIGHT + 4  # px under each tile
CAPTION_MARGIN = 3  # px left and right of a caption
SHEET_NAME = "contact_sheet.png"
MANIFEST_NAME = ".sarsearch-thumbnails.json"  # what the last run wrote into the folder (name -> sha256)
MANIFEST_FORMAT = 1
PLACEHOLDER_GREY = 96


@dataclass
class ThumbnailReport:
    """What `write_thumbnails` wrote: one PNG per hit in rank order, the contact sheet, unreadable tiles."""

    paths: list[Path] = field(default_factory=list)
    contact_sheet: Path | None = None
    failed: list[tuple[int, str]] = field(default_factory=list)  # (hit id, reason)
    removed: list[Path] = field(default_factory=list)  # files an earlier run wrote that this one did not rewrite


def quicklook(hit: Hit, size: int = THUMBNAIL_SIZE) -> Image.Image:
    """The hit's window as an 8-bit grey image (dB, percentile stretch), longer side `size` px.

    Raises RasterError when the scene file cannot be read.
    """
    path = hit.metadata.get("abs_path") or hit.path
    # read at most twice the output size: a whole-scene quicklook of a large scene is decimated by GDAL
    values = raster.read_window(path, Window(*hit.window), bands=[1], max_side=2 * size)
    scale = hit.metadata.get("scale") or raster.read_info(path).scale
    stretched = radiometry.to_model_input(values, str(scale))
    image = Image.fromarray(np.round(stretched * 255).astype(np.uint8), mode="L")
    factor = size / max(image.size)
    shape = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(shape, Image.Resampling.BILINEAR)


def _placeholder(size: int) -> Image.Image:
    return Image.new("L", (size, size), PLACEHOLDER_GREY)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _fit(text: str, width: float, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """`text`, or its head and tail around "…", in at most `width` px of `font`."""
    if font.getlength(text) <= width:
        return text
    head, tail = text[: (len(text) + 1) // 2], text[(len(text) + 1) // 2:]
    while head or tail:
        if len(head) >= len(tail):
            head = head[:-1]
        else:
            tail = tail[1:]
        if font.getlength(head + "…" + tail) <= width:
            return head + "…" + tail
    return "…"


def contact_sheet(images: Sequence[Image.Image], captions: Sequence[Sequence[str]], size: int = THUMBNAIL_SIZE,
                  columns: int = SHEET_COLUMNS) -> Image.Image:
    """A grid of `images` (each centred in a `size` px cell) with up to `CAPTION_LINES` lines under each
    (each fitted to the cell, long ones losing their middle), row by row."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    cell_height = size + CAPTION_HEIGHT
    sheet = Image.new("RGB", (columns * size, rows * cell_height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, (image, lines) in enumerate(zip(images, captions)):
        left, top = (index % columns) * size, (index // columns) * cell_height
        sheet.paste(image.convert("RGB"), (left + (size - image.width) // 2, top + (size - image.height) // 2))
        for line_number, line in enumerate(lines[:CAPTION_LINES]):
            text = _fit(line, size - 2 * CAPTION_MARGIN, font)
            draw.text((left + CAPTION_MARGIN, top + size + 2 + LINE_HEIGHT * line_number), text,
                      fill=(235, 235, 235), font=font)
    return sheet


def caption(rank: int, hit: Hit) -> list[str]:
    """The lines under a tile of the contact sheet: rank, score and tile id (what --like and --positive
    take); label and acquisition date when known; the scene's file name without extension."""
    label = hit.metadata.get("label")
    date = str(hit.metadata.get("datetime") or "")[:10]
    second = "  ".join(part for part in (str(label) if label is not None else "", date) if part)
    return [f"#{rank}  {hit.score:.3f}  id {hit.id}", second or "-", Path(hit.path).stem]


def _read_manifest(folder: Path) -> dict[str, list[str]]:
    """name -> sha256s of the files an earlier run wrote into `folder` ({} without a readable manifest).

    Only plain file names count: a manifest edited to name other folders' files cannot make us delete them.
    """
    path = folder / MANIFEST_NAME
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        files = payload["files"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); files of earlier runs are left in place", path, exc)
        return {}
    if not isinstance(files, dict):
        return {}
    manifest: dict[str, list[str]] = {}
    for name, digests in files.items():
        plain = isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..", MANIFEST_NAME)
        if plain and isinstance(digests, list) and all(isinstance(d, str) for d in digests):
            manifest[name] = list(digests)
    return manifest


def _write_manifest(folder: Path, files: dict[str, list[str]]) -> None:
    payload = {"format": MANIFEST_FORMAT, "written_by": "sarclip_search.query.quicklook.write_thumbnails",
               "files": dict(sorted(files.items()))}
    write_atomic(folder / MANIFEST_NAME, (json.dumps(payload, indent=2) + "\n").encode())


def _remove_stale(folder: Path, earlier: dict[str, list[str]], keep: set[str]) -> list[Path]:
    """Delete the files an earlier run wrote (same name, same sha256) that this run did not write again."""
    removed = []
    for name, digests in sorted(earlier.items()):
        path = folder / name
        if name in keep or path.is_symlink() or not path.is_file():
            continue
        try:
            if file_sha256(path) not in digests:
                log.info("%s: changed since sarsearch wrote it; left in place", path)
                continue
            path.unlink()
        except OSError as exc:
            log.warning("%s: could not remove this file of an earlier run (%s)", path, exc.strerror or exc)
            continue
        removed.append(path)
    return removed


def write_thumbnails(hits: Sequence[Hit], directory: str | Path, size: int = THUMBNAIL_SIZE) -> ThumbnailReport:
    """One quicklook PNG per hit (``NNN_tileID.png``, NNN the rank) and ``contact_sheet.png`` in `directory`.

    The folder is created if missing; files are written atomically. What an earlier call wrote there and
    this one does not write again is removed (see the module docstring), so the folder holds this result
    only, besides files that were not written here. ExportError if the folder cannot be written.
    """
    folder = check_writable(directory, directory=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {printable_path(folder)} ({exc.strerror or exc}); choose a writable folder") from None
    report = ThumbnailReport()
    images = []
    files: dict[str, bytes] = {}
    for rank, hit in enumerate(hits, start=1):
        try:
            image = quicklook(hit, size)
        except (RasterError, ValueError) as exc:
            log.warning("tile %s (%s): no quicklook: %s", hit.id, hit.path, exc)
            report.failed.append((hit.id, str(exc)))
            image = _placeholder(size)
        images.append(image)
        files[f"{rank:03d}_tile{str(hit.id).replace(':', '-')}.png"] = _png_bytes(image)  # NAME:ID -> NAME-ID
    if images:
        sheet = contact_sheet(images, [caption(rank, hit) for rank, hit in enumerate(hits, start=1)], size)
        files[SHEET_NAME] = _png_bytes(sheet)
    written = {name: [bytes_sha256(data)] for name, data in files.items()}
    earlier = _read_manifest(folder)
    # First the union, so that a run killed half-way still knows every file either run wrote.
    _write_manifest(folder, {name: sorted({*earlier.get(name, []), *written.get(name, [])})
                             for name in {*earlier, *written}})
    for name, data in files.items():
        path = write_atomic(folder / name, data)
        if name == SHEET_NAME:
            report.contact_sheet = path
        else:
            report.paths.append(path)
    report.removed = _remove_stale(folder, earlier, keep=set(files))
    _write_manifest(folder, written)
    return report
