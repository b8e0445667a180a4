"""Errors raised by `sarclip_search.index`.

`index/` imports nothing else from sarclip_search, so these do not derive from `SarclipError`;
callers (the CLI) map `VectorIndexError` to a one-line message. Every message says what was
expected, what was found and what to do.
"""

from __future__ import annotations

# The fix for a saved index this version cannot use as it is: the same text as `sarclip_search.errors.REBUILD`
# (tests/system/test_layering.py checks), kept here because index/ imports nothing else of sarclip_search.
REBUILD = "rebuild with `sarsearch index ARCHIVE --rebuild`"


class VectorIndexError(Exception):
    """A vector index that is missing, inconsistent, or used with incompatible input."""


class UnknownIdError(VectorIndexError, KeyError):
    """One or more ids are not in the index (also a `KeyError`, so `except KeyError` works)."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it a plain line
        return Exception.__str__(self)
