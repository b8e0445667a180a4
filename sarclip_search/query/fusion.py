"""How several query parts become one ranking: embedding blending and reciprocal rank fusion.

Pure numpy, no I/O. A query has positive parts (a text, example images, stored tiles) and negative
parts (`--not TEXT`, `--not-image PATH`). Two ways to combine them:

- **blend** (embedding level): each part is L2-normalized so that no part wins by its norm, the text
  gets weight ``alpha`` and the mean of the examples ``1 - alpha``, negatives are subtracted
  (Rocchio: ``q = alpha·t + (1-alpha)·mean(examples) - NEGATIVE_WEIGHT·mean(negatives)``), and the
  result is searched once. Scores stay cosine similarities to ``q``.
- **rrf** (rank level): each positive part is searched on its own (with the negatives subtracted from
  it the same way) and the rankings are merged by weighted reciprocal rank fusion (Cormack et al.
  2009): ``score(d) = sum_i w_i / (RRF_K + rank_i(d))`` with ranks from 1, ``w_text = alpha`` and the
  examples sharing ``1 - alpha``. A part's ranking only contributes to the documents it retrieved.

An example image larger than a tile is a set of tile vectors: blend makes one query vector per tile
(`blend_tiles`), rrf ranks the image by its tiles' merged search; either way a hit scores its best match.

Parts come in as unit vectors (the encoders return them; the engine normalizes a stored tile's float16
copy once), so no part weighs more because of its norm. What is normalized here is what a combination
makes (a mean, a weighted sum, a difference), once, by `vectors.l2_normalize`; a part used alone is
returned as it came, never normalized again, and the engine searches what comes out as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sarclip_search.model.vectors import l2_normalize

FUSION_METHODS = ("blend", "rrf")
# Rocchio's gamma: how hard negatives push. 0.5 moves the query clearly away from a negative example
# without letting one negative outweigh the positive parts (whose weights sum to 1).
NEGATIVE_WEIGHT = 0.5
# RRF's constant from Cormack et al. (2009): damps the head of each ranking, 60 is their tuned value.
RRF_K = 60


def mean_direction(vectors: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """The unit mean of unit vectors (each example counts once); a single vector is returned as it is."""
    stacked = np.stack([np.asarray(v, dtype=np.float32) for v in vectors])
    return stacked[0] if len(stacked) == 1 else l2_normalize(stacked.mean(axis=0))


def push_away(query: np.ndarray, negatives: Sequence[np.ndarray], weight: float = NEGATIVE_WEIGHT) -> np.ndarray:
    """``query - weight · mean_direction(negatives)``, renormalized; the unit `query` as it is without negatives."""
    query = np.asarray(query, dtype=np.float32)
    if not len(negatives):
        return query
    return l2_normalize(query - weight * mean_direction(negatives))


def blend(
    text: np.ndarray | None,
    examples: Sequence[np.ndarray],
    alpha: float,
    negatives: Sequence[np.ndarray] = (),
    negative_weight: float = NEGATIVE_WEIGHT,
) -> np.ndarray:
    """One unit query vector: ``alpha·text + (1-alpha)·mean_direction(examples)`` renormalized, negatives
    pushed away; the parts are unit vectors.

    With only a text or only examples, or alpha 1 or 0 (one part weighs nothing), the other part has weight 1
    and is used as it is, not renormalized.
    """
    if text is None and not len(examples):
        raise ValueError("blend needs a text vector or at least one example vector")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if text is None or (alpha == 0.0 and len(examples)):
        positive = mean_direction(examples)
    elif not len(examples) or alpha == 1.0:
        positive = text
    else:
        positive = l2_normalize(alpha * np.asarray(text, dtype=np.float32) + (1.0 - alpha) * mean_direction(examples))
    return push_away(positive, negatives, negative_weight)


def blend_tiles(text: np.ndarray | None, examples: Sequence[np.ndarray], alpha: float,
                negatives: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Query vectors (n, d) of a blend whose examples are sets of vectors (m_j, d): an image's tiles.

    Examples of one vector (a stored tile, an image no larger than a tile) blend as in `blend`: one
    query vector. When some examples have several tiles, every one of their tiles gives one query
    vector, `blend` of the text, the one-vector examples and that tile; a search scores a hit by its
    best cosine over these vectors (`Engine.search_vectors`), so a hit matches the text and some tile.
    """
    single = [np.asarray(example)[0] for example in examples if len(example) == 1]
    tiles = [tile for example in examples if len(example) > 1 for tile in np.asarray(example)]
    if not tiles:
        return blend(text, single, alpha, negatives)[None]
    return np.stack([blend(text, [*single, tile], alpha, negatives) for tile in tiles])


def part_weights(has_text: bool, n_examples: int, alpha: float) -> list[float]:
    """RRF weights of the rankings [text?, example 1, ...]: text alpha, the examples share 1 - alpha."""
    if not has_text:
        return [1.0 / n_examples] * n_examples
    if not n_examples:
        return [1.0]
    return [alpha] + [(1.0 - alpha) / n_examples] * n_examples


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], weights: Sequence[float] | None = None, k: int = RRF_K
) -> list[tuple[int, float]]:
    """Merge rankings (ids, best first) into [(id, score)], best first; ties keep first-seen order.

    ``score(id) = sum over rankings containing id of weight / (k + rank)``, rank counted from 1.
    """
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"expected one weight per ranking ({len(rankings)}), got {len(weights)}")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, item in enumerate(ranking, start=1):
            scores[int(item)] = scores.get(int(item), 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])  # sorted() is stable: ties keep first-seen order
