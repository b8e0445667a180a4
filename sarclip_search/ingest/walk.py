"""The archive walk: the image files under a folder (`walk_archive`, `iter_rasters`), each with the real path
and stat taken as it is listed (`ArchiveWalk.found`), and the symbolic links leading outside the folder that
were not followed (`OutsideLink`). Nothing here opens an image: `raster` reads them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from sarclip_search.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "ArchiveFile", "ArchiveWalk", "OutsideLink", "iter_rasters", "walk_archive"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


class OutsideLink(NamedTuple):
    """A symbolic link under the archive whose target (its real path) lies outside the archive root."""

    path: Path  # the link, as found under the root
    target: str  # the real path it leads to
    is_dir: bool  # a folder link (its images were not looked at) or a file link


class ArchiveFile(NamedTuple):
    """What the walk learnt of one image file, so that no later step asks the file system again."""

    real: str  # its real path (links resolved): `Path.resolve()` of it
    stat: os.stat_result | OSError  # `os.stat` (following a link) at the walk, or why it failed (loop, dangling)


@dataclasses.dataclass
class ArchiveWalk:
    """What `walk_archive` found: image files (sorted) and the links leaving the root it did not follow.

    `found` holds each file's real path and stat, taken in the same walk.
    """

    files: list[Path]
    outside_links: list[OutsideLink]
    found: dict[Path, ArchiveFile] = dataclasses.field(default_factory=dict)


def _is_within(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def walk_archive(root: str | os.PathLike[str], *, follow_symlinks: bool = False) -> ArchiveWalk:
    """Image files under the folder `root` with a suffix in `IMAGE_SUFFIXES` (any case), sorted by path.

    Hidden folders and files (name starting with ".") are skipped. Symbolic links are judged by their
    real path: a link (to a file or a folder) that stays inside the root is followed like any path of
    the archive; one that leads outside it is not followed but listed in `outside_links`, unless
    `follow_symlinks`. A folder link back to a folder being walked (a loop) is never entered.
    Files keep the path they were found under (``root/link/x.tif``), not their target's; `found` gives
    each one's real path and `os.stat` result (or the OSError it raised), taken as it is listed.

    Raises:
        InputError: `root` is not a folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"{base}: no such folder; give a folder of rasters")
    real_root = os.path.realpath(base)
    files: list[Path] = []
    found: dict[Path, ArchiveFile] = {}
    outside: list[OutsideLink] = []
    pending: list[tuple[Path, tuple[str, ...]]] = [(base, (real_root,))]  # folder, real paths from the root down
    while pending:
        folder, ancestors = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:  # an unreadable folder: its images cannot be listed
            logger.warning("cannot list %s (%s); its images are not indexed", folder, exc.strerror or exc)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()  # follows a link
            except OSError:  # a link loop: not a folder; a file of that name fails when it is read
                is_dir = False
            link = entry.is_symlink()
            if not is_dir and Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            real = os.path.realpath(path) if link else os.path.join(ancestors[-1], entry.name)
            if link and not follow_symlinks and not _is_within(real, real_root):
                outside.append(OutsideLink(path, real, is_dir))
            elif not is_dir:
                files.append(path)
                try:
                    stat: os.stat_result | OSError = entry.stat()  # follows a link, as Path.stat does
                except OSError as exc:  # a link loop or a dangling link: the indexer lists it as failed
                    stat = exc
                found[path] = ArchiveFile(real, stat)
            elif real in ancestors:
                logger.info("%s: link back to %s, a folder it is inside of; not entered (a loop)", path, real)
            else:
                pending.append((path, (*ancestors, real)))
    return ArchiveWalk(sorted(files), sorted(outside), found)


def iter_rasters(root: str | os.PathLike[str], *, follow_symlinks: bool = False) -> Iterator[Path]:
    """Image files under `root` (see `walk_archive`: links leaving the root are left out), sorted by path.

    A `root` that is itself an image file yields just that file.

    Raises:
        InputError: `root` does not exist.
    """
    base = Path(root)
    if base.is_file():
        if base.suffix.lower() in IMAGE_SUFFIXES:
            yield base
        return
    yield from walk_archive(base, follow_symlinks=follow_symlinks).files
