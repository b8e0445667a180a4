"""Model evaluation on a manifest split: zero-shot classification by text prompts.

The full report (Recall@K, mR, image→image P@10) lives with `sarsearch eval`; this is the part the
trainer needs to say whether a run learned anything.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sarclip_search.training import data as training_data
from sarclip_search.training.captions import class_prompts

from sarclip_search.model import SarClip

log = logging.getLogger(__name__)

# datasets evaluated zero-shot, with the labels that form their classes (None: every label in the split)
ZERO_SHOT_DATASETS: dict[str, tuple[str, ...] | None] = {
    "MSTAR-SOC": None,
    "OpenSARShip": ("cargo", "tanker", "other_type"),
}


def class_text_embeddings(sarclip: SarClip, dataset: str, labels: list[str]) -> np.ndarray:
    """One classifier vector per class: the normalized mean of its prompt ensemble's embeddings."""
    vectors = []
    for label in labels:
        embedded = sarclip.encode_texts(class_prompts(dataset, label)).mean(axis=0)
        vectors.append(embedded / np.linalg.norm(embedded))
    return np.stack(vectors).astype(np.float32)


def zero_shot_accuracy(sarclip: SarClip, root: Path, split: str) -> dict[str, Any]:
    """Top-1 zero-shot accuracy per dataset of ZERO_SHOT_DATASETS on one split, with chance level."""
    samples = [s for s in training_data.manifest_samples(root, (split,)) if s.window is None]
    by_dataset: dict[str, list] = defaultdict(list)
    for sample in samples:
        allowed = ZERO_SHOT_DATASETS.get(sample.dataset, ())
        if sample.dataset in ZERO_SHOT_DATASETS and (allowed is None or sample.label in allowed):
            by_dataset[sample.dataset].append(sample)
    report: dict[str, Any] = {}
    for dataset, items in sorted(by_dataset.items()):
        labels = sorted({s.label for s in items})
        chips = training_data.load_chips(items, sarclip.image_size)  # the view the indexer embeds
        image_vectors = sarclip.encode_images(chips)
        predictions = (image_vectors @ class_text_embeddings(sarclip, dataset, labels).T).argmax(axis=1)
        truth = np.array([labels.index(s.label) for s in items])
        report[dataset] = {
            "top1": round(float((predictions == truth).mean()), 4),
            "n": len(items),
            "classes": len(labels),
            "chance": round(1.0 / len(labels), 4),
        }
        log.info("zero-shot %s on %s: top-1 %.3f (%d images)", dataset, split, report[dataset]["top1"], len(items))
    return report
