"""Quicklook PNGs of hits and a contact sheet of the top k, for a human to look at results.

    report = write_thumbnails(hits, "out/")   # out/001_tile4692.png ..., out/contact_sheet.png

A quicklook is the hit's pixel window of band 1 read with `raster.read_window`, converted to dB and
stretched between its 1st and 99.5th percentile (`radiometry.to_model_input`, the model's own view),
as 8-bit grey, scaled to fit `size` px. A tile that cannot be read (file moved or deleted since
indexing) gets a grey placeholder and is listed in `ThumbnailReport.failed`; the others are written.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sarclip_search import radiometry, raster
from sarclip_search.engine import Hit
from sarclip_search.errors import RasterError, printable_path
from sarclip_search.export import ExportError, check_writable, write_atomic
from sarclip_search.tiling import Window

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 128  # px, the longer side of a quicklook (the model's input size)
SHEET_COLUMNS = 5
CAPTION_HEIGHT = 30  # px under each tile: two lines of PIL's default font
SHEET_NAME = "contact_sheet.png"
PLACEHOLDER_GREY = 96


@dataclass
class ThumbnailReport:
    """What `write_thumbnails` wrote: one PNG per hit in rank order, the contact sheet, unreadable tiles."""

    paths: list[Path] = field(default_factory=list)
    contact_sheet: Path | None = None
    failed: list[tuple[int, str]] = field(default_factory=list)  # (hit id, reason)


def quicklook(hit: Hit, size: int = THUMBNAIL_SIZE) -> Image.Image:
    """The hit's window as an 8-bit grey image (dB, percentile stretch), longer side `size` px.

    Raises RasterError when the scene file cannot be read.
    """
    path = hit.metadata.get("abs_path") or hit.path
    values = raster.read_window(path, Window(*hit.window), bands=[1])
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


def contact_sheet(images: Sequence[Image.Image], captions: Sequence[Sequence[str]], size: int = THUMBNAIL_SIZE,
                  columns: int = SHEET_COLUMNS) -> Image.Image:
    """A grid of `images` (each centred in a `size` px cell) with caption lines under each, row by row."""
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
        for line_number, line in enumerate(lines[:2]):
            draw.text((left + 3, top + size + 2 + 13 * line_number), line, fill=(235, 235, 235), font=font)
    return sheet


def _caption(rank: int, hit: Hit) -> list[str]:
    label = hit.metadata.get("label")
    return [f"#{rank}  {hit.score:.3f}", str(label)[:20] if label is not None else f"tile {hit.id}"]


def write_thumbnails(hits: Sequence[Hit], directory: str | Path, size: int = THUMBNAIL_SIZE) -> ThumbnailReport:
    """One quicklook PNG per hit (``NNN_tileID.png``, NNN the rank) and ``contact_sheet.png`` in `directory`.

    The folder is created if missing; files are written atomically. ExportError if it cannot be written.
    """
    folder = check_writable(directory, directory=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {printable_path(folder)} ({exc.strerror or exc}); choose a writable folder") from None
    report = ThumbnailReport()
    images = []
    for rank, hit in enumerate(hits, start=1):
        try:
            image = quicklook(hit, size)
        except (RasterError, ValueError) as exc:
            log.warning("tile %d (%s): no quicklook: %s", hit.id, hit.path, exc)
            report.failed.append((hit.id, str(exc)))
            image = _placeholder(size)
        images.append(image)
        report.paths.append(write_atomic(folder / f"{rank:03d}_tile{hit.id}.png", _png_bytes(image)))
    if images:
        sheet = contact_sheet(images, [_caption(rank, hit) for rank, hit in enumerate(hits, start=1)], size)
        report.contact_sheet = write_atomic(folder / SHEET_NAME, _png_bytes(sheet))
    return report
