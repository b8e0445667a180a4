"""Embedding vectors: L2 normalization, the one place it happens for everything indexed or searched.

The index metric is inner product, so cosine similarity needs unit vectors: the torch model
(`SarClip.encode_*`), the ONNX encoders (`encoders.OnnxEncoder`) and the query path
(`Engine.search_vector`) all normalize here, on numpy arrays, so the query path needs no torch.
"""

from __future__ import annotations

import numpy as np

# Same floor as torch.nn.functional.normalize: a zero vector stays zero instead of becoming NaN.
NORM_EPSILON = 1e-12


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """`vectors` (…, D) divided by their L2 norm along the last axis, as float32."""
    values = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    return (values / np.maximum(norms, NORM_EPSILON)).astype(np.float32, copy=False)
