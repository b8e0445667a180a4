"""Hits as STAC Items of the API, built by `query.export.stac_item` (the same fields as `sarsearch query --stac`).

What the API changes on export's Item: `id` is the tile id (what `like`, `positive` and `/items/{id}`
take), `collection` the dataset, `score`/`score_kind` plain properties (null for a metadata-only search),
the archive-relative `path`, and links and a thumbnail asset pointing at this server. The `data` asset
(the scene file's absolute path on the server) is left out: no server path leaves the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from sarclip_search.query.engine import Engine
from sarclip_search.query.export import stac_item
from sarclip_search.query.hit import Hit
from sarclip_search.query.multi import MultiEngine

THUMBNAIL_MEDIA_TYPE = "image/png"


def hits_by_id(engine: Engine | MultiEngine, ids: Sequence[int | str]) -> list[Hit]:
    """Hits (score 0, kind "none") of tile ids (NAME:ID of several indexes) in the given order; unknown ids left out."""
    return engine.hits_by_id(ids)


def item_links(hit: Hit) -> list[dict[str, Any]]:
    dataset = hit.metadata.get("dataset")
    # STAC asks an item with a `collection` for a link to it: the search of that collection's items
    collection = ([{"rel": "collection", "href": f"/search?{urlencode({'collections': dataset})}",
                    "type": "application/geo+json", "title": f"items of {dataset}"}] if dataset is not None else [])
    return [
        {"rel": "self", "href": f"/items/{hit.id}", "type": "application/geo+json"}, *collection,
        {"rel": "thumbnail", "href": f"/items/{hit.id}/thumbnail.png", "type": THUMBNAIL_MEDIA_TYPE},
        {"rel": "scene", "href": f"/scenes/{hit.scene_id}/quicklook.png?outline={hit.id}", "type": THUMBNAIL_MEDIA_TYPE,
         "title": "the tile's scene, the tile outlined"},
    ]


def item(hit: Hit, rank: int, *, scored: bool = True) -> dict[str, Any]:
    """The API's STAC Item of a hit (see the module docstring); `scored` False for metadata-only results."""
    document = stac_item(hit, rank).to_dict(transform_hrefs=False)
    document["id"] = str(hit.id)
    dataset = hit.metadata.get("dataset")
    if dataset is not None:
        document["collection"] = str(dataset)
    properties = document["properties"]
    if not scored:
        for key in ("sarsearch:score", "sarsearch:score_kind", "sarsearch:rank"):
            properties.pop(key, None)
    properties.update({
        "score": round(hit.score, 6) if scored else None,
        "score_kind": hit.score_kind if scored else None,
        "path": hit.path,
    })
    document["links"] = item_links(hit)
    document["assets"] = {"thumbnail": {"href": f"/items/{hit.id}/thumbnail.png", "type": THUMBNAIL_MEDIA_TYPE,
                                        "roles": ["thumbnail"], "title": "quicklook of the tile"}}
    return document
