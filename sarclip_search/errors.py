"""Typed errors of sarclip-search.

Every message is one line a user can act on: what was expected, what was found, what to do.
The CLI turns any `SarclipError` into one red line and a non-zero exit; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import os

# The fix for an index this version cannot use as it is (another format, schema or checkpoint, damaged or
# missing files): every such message ends with it. index/errors.py keeps its own copy, as index/ imports
# nothing of the core.
REBUILD = "rebuild with `sarsearch index ARCHIVE --rebuild`"


def printable_path(path: object) -> str:
    """`path` as printable UTF-8: bytes of a non-UTF-8 file name appear as escapes (caf\\xe9.tif)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


class SarclipError(Exception):
    """Base of all errors a user can cause and fix."""

    exit_code = 1


class InputError(SarclipError):
    """A bad option, argument or input file."""


class RasterError(InputError):
    """A raster that cannot be read or used; `path` names the file."""

    def __init__(self, path: object, message: str) -> None:
        self.path = printable_path(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")


class UnreadableRasterError(RasterError):
    """A file that is not a decodable image: empty, truncated, corrupt, or not an image format at all."""


class NoValidPixelsError(RasterError):
    """A raster (or window of it) whose pixels are all NaN, nodata or infinite: nothing to embed."""


class MetadataError(InputError):
    """A manifest or STAC sidecar that cannot be used."""


class FilterError(InputError):
    """A metadata filter (`--where`, `--bbox`, dates ...) that is not valid."""


class CatalogError(SarclipError):
    """The DuckDB catalog is missing, of another schema version, or inconsistent."""


class IndexNotFoundError(SarclipError):
    """No index directory where one was expected."""


class ArtifactMismatchError(SarclipError):
    """An artifact (checkpoint, index) was made by another model, version or configuration."""


class ModelError(SarclipError):
    """A model config or checkpoint that cannot be loaded."""


class LockedError(SarclipError):
    """Another process is writing to the same index directory."""


class MissingDependencyError(SarclipError):
    """An optional dependency is not installed; the message carries the pip line."""


class ExportError(InputError):
    """An output file or folder (query results, thumbnails) that cannot be written."""
