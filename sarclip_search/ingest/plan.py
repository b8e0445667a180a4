"""The incremental plan of an `index` run: the archive as walked (`walk.walk_archive`) against the
committed catalog (`Catalog.scene_states`).

A file new to the catalog, or whose size or mtime changed, is to be embedded; one of unchanged size and
mtime whose manifest row or STAC sidecar changed (`metadata.metadata_hash`) is to be re-labelled (its rows
rewritten, its vectors kept); a catalog path the archive (or its manifest) no longer has is to be removed.
What the plan learns of a file (stat, real path, a re-label's sidecar) travels with it (`Todo`), so the
indexer asks nothing twice. Files that cannot be indexed (a link loop or dangling link, a broken sidecar, a
manifest row without its file, a link leading outside the archive that was not followed) go to `fail`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sarclip_search.errors import MetadataError, RasterError
from sarclip_search.ingest import raster
from sarclip_search.ingest.metadata import load_stac_sidecar, metadata_hash
from sarclip_search.ingest.tiling import tile_count
from sarclip_search.ingest.walk import ArchiveWalk, OutsideLink

# A committed scene's (size_bytes, mtime, content_hash, metadata_hash), from Catalog.scene_states
State = tuple[int, float, str, "str | None"]
# fail(path relative to the archive, one-line reason): a file listed as failed, not indexed (raises with --strict)
Fail = Callable[[str, str], None]


class Todo(NamedTuple):
    """A file to embed (new or changed) or, with `relabel`, whose unchanged pixels get new metadata.

    What the planning walk learnt of it is kept, so that nothing is asked twice: its real path and stat
    (`walk.walk_archive`), and for a re-label its sidecar and metadata hash (read to find it changed).
    """

    path: Path
    rel: str
    real: str  # its real path (the catalog's abs_path)
    stat: os.stat_result
    previous: State | None
    relabel: bool = False
    stac: dict | None = None  # a re-label's sidecar properties, as `plan_run` read them
    digest: str | None = None  # a re-label's metadata hash, as `plan_run` computed it
    tiles: int = 0  # tiles it is planned to give (progress): from its header, 0 for a re-label


@dataclass
class Plan:
    """What a run is to do (`todo`, `removed`) and what planning counted."""

    todo: list[Todo]  # files to embed or re-label, in path order
    removed: list[str]  # catalog paths to remove (deleted or no longer listed files), sorted
    files_seen: int  # image files the walk found
    not_in_manifest: int  # of them, those the manifest does not list: not indexed
    unchanged: int  # files of unchanged size, mtime and metadata: nothing to do


def plan_run(
    archive: Path,
    walk: ArchiveWalk,
    manifest: dict[str, dict[str, object]],
    states: dict[str, State],
    fail: Fail,
    *,
    tiling: tuple[int, int] | None = None,
) -> Plan:
    """Files to (re-)embed or re-label and catalog paths to remove, from the archive and the committed catalog.

    Sizes and mtimes are those the walk took. A file of unchanged size and mtime is re-labelled when the
    hash of its manifest row and sidecar differs from the catalog's; that costs reading the sidecar (if
    any), not the raster. Links leading outside the archive that the walk did not follow are listed (with
    a manifest, those it lists or lists files under), and their files removed from the index if an earlier
    run had them. With `tiling` (tile size, stride), each file to embed is planned its number of tiles
    from its header (`raster.header_size`, for progress; 1 when the header cannot be read).
    Each file that cannot be indexed is handed to `fail` as it is met (with --strict, `fail` raises).
    """
    files = list(walk.files)
    files_seen, unchanged = len(files), 0
    rel_paths = {path: path.relative_to(archive).as_posix() for path in files}
    links = {link.path.relative_to(archive).as_posix(): link for link in walk.outside_links}

    def behind_link(rel: str) -> str | None:  # the unfollowed link a path lies at or under
        return next((name for name in links if rel == name or rel.startswith(name + "/")), None)

    not_in_manifest = 0
    reported = set(links)
    if manifest:
        reported = {name for name in (behind_link(rel) for rel in manifest) if name is not None}
    for name in sorted(reported):
        fail(name, _link_reason(links[name]))
    if manifest:
        listed = [p for p in files if rel_paths[p] in manifest]
        not_in_manifest = len(files) - len(listed)
        files = listed
        for rel in sorted(set(manifest) - set(rel_paths.values())):
            if behind_link(rel) is None:  # else the link's line says why
                fail(rel, "listed in manifest.csv but not found; fix the path or remove the row")
    wanted = {rel_paths[p] for p in files}
    removed = sorted(set(states) - wanted)  # deleted (or no longer listed) files
    todo: list[Todo] = []
    for path in files:
        rel = rel_paths[path]
        real, stat = walk.found[path]
        if isinstance(stat, OSError):  # a symlink loop or a dangling link
            fail(rel, failure_reason(stat, path))
            continue
        previous = states.get(rel)
        if previous is not None and previous[0] == stat.st_size and previous[1] == stat.st_mtime:
            try:
                stac = load_stac_sidecar(path)
                digest = metadata_hash(manifest.get(rel), stac)
            except MetadataError as exc:  # a sidecar broken since: listed, the committed scene kept as it was
                fail(rel, failure_reason(exc, path))
                continue
            if previous[3] == digest:
                unchanged += 1
            else:
                todo.append(Todo(path, rel, real, stat, previous, relabel=True, stac=stac, digest=digest))
            continue
        todo.append(Todo(path, rel, real, stat, previous, tiles=_planned_tiles(path, tiling)))
    return Plan(todo, removed, files_seen, not_in_manifest, unchanged)


def _planned_tiles(path: Path, tiling: tuple[int, int] | None) -> int:
    """The number of tiles `path` is cut into, from its header (progress only); 1 if unknown."""
    if tiling is None:
        return 0
    size = raster.header_size(path)
    return tile_count(size[0], size[1], *tiling) if size is not None else 1


def _link_reason(link: OutsideLink) -> str:
    """Why an unfollowed link is not indexed, and the fix."""
    if link.is_dir:
        return (f"symbolic link to a folder outside the archive ({link.target}); not entered, its images are not "
                "indexed; pass --follow-symlinks to index them, or copy them into the archive")
    return (f"symbolic link to a file outside the archive ({link.target}); not indexed; "
            "pass --follow-symlinks to index it, or copy the file into the archive")


def failure_reason(exc: Exception, path: Path) -> str:
    """The one-line reason a file failed, without its path (the report line starts with it)."""
    if isinstance(exc, RasterError):
        return exc.reason
    if isinstance(exc, OSError):  # permissions, symlink loops, files vanishing mid-run
        return f"cannot read the file ({exc.strerror or exc}); check that it exists and is readable, or remove it"
    return str(exc).removeprefix(f"{path}: ")
