"""HTTP errors of the API: a 4xx status and a body ``{"error": "<one line>", "fix": "<what to do>"}``.

Library errors (`SarclipError`) carry one line "what is wrong; what to do" written for the command line;
`api_error` splits it into `error` and `fix`, names the API's parameters instead of the CLI's options
(``--like 7`` -> ``like 7``) and replaces the server's own paths (the index directory, an upload's
temporary file) by what the client knows them as, so no response shows a path of the server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sarclip_search.errors import SarclipError

# CLI option -> API parameter, in messages of the engine and the filters
_OPTIONS = {"--like": "like", "--positive": "positive", "--negative": "negative", "--not": "not",
            "--alpha": "alpha", "--fusion": "fusion", "--image": "image", "--where": "filter",
            "--label": "label", "--dataset": "collections", "--split": "split", "--sensor": "sensor",
            "--polarization": "polarization", "--bbox": "bbox", "--after": "datetime", "--before": "datetime"}
_OPTION = re.compile(r"--(?:like|positive|negative|not|alpha|fusion|image|where|label|dataset|split|sensor"
                     r"|polarization|bbox|after|before)\b")
_CLI_HINTS = ((" (sarsearch columns)", " (GET /queryables)"), ("(types and values: sarsearch columns)", "(GET /queryables)"),
              ("with `sarsearch columns`", "at GET /queryables"),
              ("(sarsearch query ... --json)", "(the `id` of an item of an earlier result)"))


class ApiError(Exception):
    """A request the API refuses: `status` (4xx), `error` (what is wrong) and `fix` (what to do), one line each."""

    def __init__(self, status: int, error: str, fix: str = "") -> None:
        super().__init__(error)
        self.status = status
        self.error = _one_line(error)
        self.fix = _one_line(fix)

    def body(self) -> dict[str, str]:
        return {"error": self.error, "fix": self.fix}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def api_error(exc: SarclipError, replacements: Mapping[str, str] = {}, status: int = 400) -> ApiError:
    """The ApiError of a library error: its message split at the first "; " into error and fix, with the
    CLI's option names and `replacements` (server path -> what to call it) applied."""
    message = str(exc)
    for old, new in sorted(replacements.items(), key=lambda pair: -len(pair[0])):  # longest first
        if old:
            message = message.replace(old, new)
    for old, new in _CLI_HINTS:
        message = message.replace(old, new)
    message = _OPTION.sub(lambda match: _OPTIONS[match.group(0)], message)
    error, _, fix = message.partition("; ")
    return ApiError(status, error, fix or "see /openapi.json for the parameters")
