"""Relevance feedback: a linear probe fitted on the embeddings of tiles an analyst marked.

Pure numpy. The probe is L2-regularized logistic regression, ``p(relevant | x) = sigmoid(w·x + b)``,
fitted by Newton's method (IRLS) on the marked tiles' stored embeddings. Positives and negatives
get equal total weight, so 5 positives against 2 negatives do not just learn "say yes". With a
handful of examples in 256 dimensions the data are separable; the L2 term keeps ``w`` finite and,
as it grows, turns the probe into the Rocchio direction mean(positives) - mean(negatives).

With a text (`fit_probe_with_text`), the L2 term pulls ``w`` towards the text's direction instead of
towards 0: the text is the probe's prior and the marks move it, so feedback with a text ranks by both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# L2 strength on w (not on b), relative to a loss whose sample weights sum to 1. 0.1 keeps the
# probe close to the marked examples while staying well-posed with a single positive.
PROBE_L2 = 0.1
NEWTON_STEPS = 25  # separable data converge in < 15 steps at this L2; 25 is a safe cap
# With a text, how strong the text's prior is against the marks: 1 spreads the collection's logits as widely
# as the probe fitted on the marks alone does (`text_prior`).
TEXT_PRIOR_WEIGHT = 1.0
# How many tiles are re-ranked around each query part (the probe's weights, the positives' centroid, the text).
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


def fit_probe(positives: np.ndarray, negatives: np.ndarray, l2: float = PROBE_L2,
              prior: np.ndarray | None = None) -> LinearProbe:
    """Fit a logistic-regression probe separating `positives` (n, d) from `negatives` (m, d).

    Minimizes ``sum_i s_i·logloss(y_i, w·x_i + b) + l2/2·|w - prior|^2`` with class-balanced sample
    weights ``s_i`` (each class sums to 1/2) by Newton steps on (w, b), starting from ``w = prior``.
    Without a prior (0) the L2 term shrinks ``w`` towards nothing; with one (`text_prior`) it keeps
    ``w`` near the prior as far as the examples allow.
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
    anchor = np.zeros(design.shape[1])
    if prior is not None:
        anchor[:-1] = np.asarray(prior, dtype=np.float64).reshape(-1)
    theta = anchor.copy()
    for _ in range(NEWTON_STEPS):
        probability = _sigmoid(design @ theta)
        gradient = design.T @ (sample_weights * (probability - labels)) + penalty * (theta - anchor)
        curvature = sample_weights * probability * (1.0 - probability)
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty) + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return LinearProbe(weights=theta[:-1], bias=float(theta[-1]))


def text_prior(text: np.ndarray, probe: LinearProbe, reference: np.ndarray) -> np.ndarray:
    """Prior weights (d,) for a probe that also follows a text: the text's direction at the probe's strength.

    ``beta·unit(text)`` with ``beta = std(reference·w) / std(reference·unit(text))`` over `reference`
    tiles (a random sample of the searched set), `w` the weights of `probe` fitted on the marked tiles
    alone: the text's scores spread as widely over the collection as the marks' probe does, so neither
    drowns the other out whatever their scales (a text's cosines to images spread less than an image's).
    Without spread to measure (fewer than 2 reference tiles) beta is ``|w|``.
    """
    direction = np.asarray(text, dtype=np.float64).reshape(-1)
    direction = direction / np.linalg.norm(direction)
    reference = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    text_spread = float(np.std(reference @ direction)) if len(reference) > 1 else 0.0
    if text_spread > 1e-12:
        beta = float(np.std(reference @ probe.weights)) / text_spread
    else:
        beta = float(np.linalg.norm(probe.weights))
    return TEXT_PRIOR_WEIGHT * beta * direction


def fit_probe_with_text(positives: np.ndarray, negatives: np.ndarray, text: np.ndarray,
                        reference: np.ndarray) -> LinearProbe:
    """A probe on the marked tiles whose prior is the text (`text_prior`): feedback that keeps the text's say.

    Rocchio's rule, ``q' = q + beta·mean(positives) - gamma·mean(negatives)``, with the text as the
    original query `q` and the probe in place of the mean difference: the L2 term pulls the weights
    towards the text, the examples pull them towards what separates the marked tiles. Where the marks
    agree with the text, the result ranks as both do; where they disagree, each moves it part of the way.
    """
    marks_only = fit_probe(positives, negatives)
    return fit_probe(positives, negatives, prior=text_prior(text, marks_only, reference))
