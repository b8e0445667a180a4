"""Text proxies: text queries made from an index's own vocabulary, to tune the vector index for text search.

Text embeddings sit apart from image embeddings (the modality gap), so a setting tuned on the index's own
image vectors under-serves text queries (recall@10 0.67 at 1M; benchmarks/README.md). `VectorIndex.tune`
therefore takes text query vectors too (`text_queries`) and keeps a setting for them. This module makes
those queries where the model is at hand (the indexer): the catalog's labels, target kinds, datasets and
scene types through caption-style templates (the wording of the training captions, written out here: the
core package does not import training), plus a fixed list of paraphrases people type. No query log exists
yet; when `serve` keeps one, its texts belong here too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from sarclip_search.errors import CatalogError
from sarclip_search.store.catalog import Catalog

log = logging.getLogger(__name__)

MAX_PROXIES = 256  # as many as tune() measures (TUNE_MAX_QUERIES)
PROXY_SEED = 17
VOCABULARY_COLUMNS = ("label", "target_kind", "dataset", "scene_type")  # catalog columns read, most frequent first
VALUES_PER_COLUMN = 60

# "{}" is the subject; the prefixes of the training captions (training/captions.py IMAGE_WORDS) and plain forms
TEMPLATES = ("a SAR image of {}", "a radar image of {}", "a synthetic aperture radar image of {}", "{}",
             "SAR chip showing {}")

# Plain-language queries, none a template's output: what people type into the search box.
PARAPHRASES = (
    "a ship sailing on the open ocean", "ships moored in a harbour", "a large container vessel", "a fishing boat",
    "an oil tanker ship", "a merchant freighter", "boats near the coastline", "an oil slick on the water",
    "dark patches on the sea surface", "a tank parked in a field", "a main battle tank in the desert",
    "a wheeled armoured personnel carrier", "a tracked infantry carrier", "a self-propelled howitzer",
    "an anti-aircraft gun vehicle", "a military truck", "a bulldozer", "an amphibious reconnaissance car",
    "several military vehicles among trees", "armoured vehicles in open terrain", "a lake", "a river through farmland",
    "flooded farmland", "flood water after heavy rain", "dry fields without water", "a city with buildings",
    "an airport runway", "a bridge over a river", "a forest", "farmland with small fields", "the coastline",
    "calm sea without ships", "a port with cranes and docks", "an island", "mountains", "a road through fields",
)


def _subject(value: str) -> str:
    """A catalog value as words: snake_case spaced, a scene type's description before its measurements."""
    words = value.split(";")[0].strip().replace("_", " ")
    return " ".join(words.split())


def proxy_texts(vocabulary: Iterable[str], *, limit: int = MAX_PROXIES, seed: int = PROXY_SEED) -> list[str]:
    """Caption-style texts of the `vocabulary` (each value through two seeded templates) plus PARAPHRASES,
    deduplicated, at most `limit`; the paraphrases are kept whole, the templated texts sampled (seeded)."""
    rng = random.Random(seed)
    subjects = list(dict.fromkeys(s for s in (_subject(str(v)) for v in vocabulary) if s))
    templated = [template.format(subject) for subject in subjects for template in rng.sample(TEMPLATES, 2)]
    templated = [t for t in dict.fromkeys(templated) if t not in PARAPHRASES]
    room = max(0, limit - len(PARAPHRASES))
    if len(templated) > room:
        templated = rng.sample(templated, room)
    return [*PARAPHRASES, *templated][:limit]


def catalog_vocabulary(catalog_path: str | Path, columns: Sequence[str] = VOCABULARY_COLUMNS) -> list[str]:
    """The most frequent values of `columns` in a catalog file (columns it lacks are skipped)."""
    values: list[str] = []
    with Catalog(catalog_path, read_only=True) as catalog:
        for column in columns:
            try:
                values += [str(value) for value, _ in catalog.values(column, VALUES_PER_COLUMN)]
            except CatalogError:
                continue
    return values


def text_proxy_vectors(catalog_path: str | Path, encode_texts: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray | None:
    """Unit text embeddings of the proxy texts of a catalog's vocabulary (`encode_texts`: the index's text
    tower, e.g. `RunModel.encode_texts`), or None when they cannot be made (logged: tuning then treats text
    queries like image queries, as before)."""
    try:
        texts = proxy_texts(catalog_vocabulary(catalog_path))
        vectors = np.asarray(encode_texts(texts), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - tuning must not fail an index run: without proxies, text uses the image setting
        log.warning("no text proxies for tuning (%s: %s); text queries use the image setting", type(exc).__name__, exc)
        return None
    log.info("tuning for text queries with %d proxy texts", len(texts))
    return vectors
