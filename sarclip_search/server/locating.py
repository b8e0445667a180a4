"""`GET /scenes/{id}/locate.png` and `/locate.json`: `sarsearch locate` of a phrase in an indexed scene.

The scene's file is the one the catalog names (never a path from the request); the phrase is embedded by the
generation's encoder and located with `query.locate` at its default scales, the window embeddings cached in
the index directory's `locate-cache/` as the CLI caches them (a second phrase on a scene is fast). The JSON
names no server path: the peaks' pixel boxes and, for a placed scene, their lon/lat boxes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sarclip_search.query import locate as localisation
from sarclip_search.query.engine import Engine, given_text
from sarclip_search.query.hit import Hit

MAX_QUERY_CHARS = 500


def checked_phrase(q: str | None) -> str | None:
    """The phrase, or None when it is missing, blank or too long (the route answers 400)."""
    text = given_text(q)
    return text if text is not None and len(text) <= MAX_QUERY_CHARS else None


def locate_scene(engine: Engine, tile: Hit, phrase: str) -> localisation.LocateResult:
    """Locate `phrase` in the scene of `tile` (RasterError when its file cannot be read)."""
    path = str(tile.metadata.get("abs_path") or tile.path)
    cache = Path(engine.generation.path.parent) / localisation.LOCATE_CACHE_DIR
    return localisation.locate(engine.encoder, path, engine.embed_text(phrase), cache_root=cache)


def overlay_png(result: localisation.LocateResult, size: int) -> bytes:
    buffer = io.BytesIO()
    localisation.overlay(result, size).save(buffer, format="PNG")
    return buffer.getvalue()


def peaks_json(result: localisation.LocateResult, scene_id: int, phrase: str) -> dict[str, Any]:
    payload = localisation.peaks_geojson(result, phrase)
    payload.pop("sarsearch:scene")
    payload["sarsearch:scene_id"] = scene_id
    payload["sarsearch:windows"] = result.windows
    return payload
