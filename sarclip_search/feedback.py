"""Relevance feedback: a linear probe fitted on the embeddings of tiles an analyst marked.

Pure numpy. The probe is L2-regularized logistic regression, ``p(relevant | x) = sigmoid(w·x + b)``,
fitted by Newton's method (IRLS) on the marked tiles' stored embeddings. Positives and negatives
get equal total weight, so 5 positives against 2 negatives do not just learn "say yes". With a
handful of examples in 256 dimensions the data are separable; the L2 term keeps ``w`` finite and,
as it grows, turns the probe into the Rocchio direction mean(positives) - mean(negatives).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# L2 strength on w (not on b), relative to a loss whose sample weights sum to 1. 0.1 keeps the
# probe close to the marked examples while staying well-posed with a single positive.
PROBE_L2 = 0.1
NEWTON_STEPS = 25  # separable data converge in < 15 steps at this L2; 25 is a safe cap
# How many tiles are re-ranked around each query part (the positives' centroid, the text).
CANDIDATES_PER_PART = 500


@dataclass(frozen=True)
class LinearProbe:
    """A fitted logistic-regression probe: `decision(x) = x @ weights + bias` (a logit)."""

    weights: np.ndarray  # (d,) float64
    bias: float

    def decision(self, vectors: np.ndarray) -> np.ndarray:
        """Logits (n,) of vectors (n, d): higher means more like the positives."""
        return np.asarray(vectors, dtype=np.float64) @ self.weights + self.bias


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warnings for large |z|


def fit_probe(positives: np.ndarray, negatives: np.ndarray, l2: float = PROBE_L2) -> LinearProbe:
    """Fit a logistic-regression probe separating `positives` (n, d) from `negatives` (m, d).

    Minimizes ``sum_i s_i·logloss(y_i, w·x_i + b) + l2/2·|w|^2`` with class-balanced sample weights
    ``s_i`` (each class sums to 1/2) by Newton steps on (w, b).
    """
    positives = np.atleast_2d(np.asarray(positives, dtype=np.float64))
    negatives = np.atleast_2d(np.asarray(negatives, dtype=np.float64))
    if not len(positives) or not len(negatives):
        raise ValueError("a probe needs at least one positive and one negative example")
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    features = np.vstack([positives, negatives])
    design = np.hstack([features, np.ones((len(features), 1))])  # last column: the bias
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    sample_weights = np.r_[np.full(len(positives), 0.5 / len(positives)), np.full(len(negatives), 0.5 / len(negatives))]
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    theta = np.zeros(design.shape[1])
    for _ in range(NEWTON_STEPS):
        probability = _sigmoid(design @ theta)
        gradient = design.T @ (sample_weights * (probability - labels)) + penalty * theta
        curvature = sample_weights * probability * (1.0 - probability)
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty) + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return LinearProbe(weights=theta[:-1], bias=float(theta[-1]))
