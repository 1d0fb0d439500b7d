"""L2-regularised logistic regression (Newton's method), k-fold out-of-fold scores and ROC AUC, in NumPy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Model:
    """A fitted model: feature standardisation and weights (the last one is the intercept)."""

    mean: Array
    scale: Array
    weights: Array

    def predict(self, x: Array) -> Array:
        """The probability of the positive class for each row of `x`."""
        z = _design((x - self.mean) / self.scale) @ self.weights
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def _design(x: Array) -> Array:
    return np.hstack([x, np.ones((x.shape[0], 1))])


def fit(x: Array, y: Array, l2: float = 1.0, steps: int = 50) -> Model:
    """Fit by Newton's method; the intercept is not penalised."""
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    design = _design((x - mean) / scale)
    weights = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(design @ weights)))
        gradient = design.T @ (p - y) + penalty * weights
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + np.diag(penalty) + 1e-9 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return Model(mean, scale, weights)


def out_of_fold(x: Array, y: Array, folds: int, seed: int, l2: float = 1.0) -> Array:
    """Each row's score from a model fitted without its fold: honest scores to choose a threshold on."""
    order = np.random.default_rng(seed).permutation(len(y))
    scores = np.zeros(len(y))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        scores[fold] = fit(x[train], y[train], l2).predict(x[fold])
    return scores


def auc(scores: Array, labels: Array) -> float:
    """Area under the ROC curve (ties count half)."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    if not len(positive) or not len(negative):
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positive) * len(negative)))
