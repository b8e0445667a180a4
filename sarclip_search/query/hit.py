"""A search result (`Hit`) and what is done to lists of them: dedup of overlapping tiles, the first k kept.

    hit = Hit.from_row(tile_id, score, row)      # row: the tile's `tile_view` row (Catalog.fetch_tiles)
    first_k(fetch, k, dedup=True, exclude=[...]) # fetch(depth) -> hits best first, deepened while too few survive
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sarclip_search.store.schema import BBOX_COLUMNS

MAX_K = 10_000
# --dedup first fetches this many candidates per wanted result, and 4x more while too few survive.
DEDUP_OVERFETCH = 4


@dataclass(frozen=True)
class Hit:
    """One search result: a tile, where it is, and what the catalog knows of its scene."""

    id: int  # the tile id; the str NAME:ID when several indexes are searched as one (query/multi.py)
    score: float
    path: str
    scene_id: int  # likewise NAME:SCENE_ID of several indexes
    window: tuple[int, int, int, int]  # col_off, row_off, width, height in pixels of the scene
    bbox: tuple[float, float, float, float] | None  # lon/lat footprint of the tile, when the scene has a CRS
    metadata: dict[str, Any] = field(default_factory=dict)  # every catalog column of the tile's row
    score_kind: str = "cosine"  # what `score` is: "cosine" similarity, "rrf" fused score, "probe" logit

    @classmethod
    def from_row(cls, tile_id: int, score: float, row: dict[str, Any]) -> Hit:
        """The hit of a `tile_view` row: the tile's bbox columns become `bbox`, every other column `metadata`."""
        bbox_values = [row.get(name) for name in BBOX_COLUMNS]
        bbox = tuple(float(v) for v in bbox_values) if all(v is not None for v in bbox_values) else None
        return cls(
            id=tile_id,
            score=score,
            path=str(row.get("path")),
            scene_id=int(row["scene_id"]),
            window=(int(row["col_off"]), int(row["row_off"]), int(row["width"]), int(row["height"])),
            bbox=bbox,  # type: ignore[arg-type]
            metadata={k: v for k, v in row.items() if not k.startswith("bbox_")},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.metadata,
            "id": self.id,
            "score": round(self.score, 6),
            "score_kind": self.score_kind,
            "path": self.path,
            "scene_id": self.scene_id,
            "window": list(self.window),
            "bbox": list(self.bbox) if self.bbox is not None else None,
        }


def windows_overlap(a: Hit, b: Hit) -> bool:
    """True when two hits are tiles of the same scene whose pixel windows share at least one pixel."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a.window, b.window
    return a.scene_id == b.scene_id and ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def dedup_hits(hits: Sequence[Hit]) -> list[Hit]:
    """`hits` (best first) without any hit overlapping a better one of the same scene."""
    kept: list[Hit] = []
    for hit in hits:
        if not any(windows_overlap(hit, other) for other in kept):
            kept.append(hit)
    return kept


def first_k(fetch: Callable[[int], list[Hit]], k: int, *, dedup: bool, exclude: Sequence[int], pool: int) -> list[Hit]:
    """The first k hits of `fetch(depth)` not in `exclude` (and, with dedup, not overlapping a better hit of
    the same scene), deepening the fetch while too few survive and more of the `pool` tiles exist."""
    excluded = {i if isinstance(i, str) else int(i) for i in exclude}  # str: NAME:ID of several indexes
    depth = min(MAX_K, (DEDUP_OVERFETCH * k if dedup else k) + len(excluded))
    while True:
        candidates = fetch(depth)
        kept = [hit for hit in candidates if hit.id not in excluded]
        if dedup:
            kept = dedup_hits(kept)
        if len(kept) >= k or len(candidates) < depth or depth >= min(pool, MAX_K):
            return kept[:k]
        depth = min(MAX_K, pool, depth * DEDUP_OVERFETCH)
