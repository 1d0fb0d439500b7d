"""The learned policies' model: the product's logistic regression (tierq/router/logreg.py) on standardised
features, with its out-of-fold scores and ROC AUC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierq.router import logreg
from tierq.router.logreg import auc

Array = npt.NDArray[np.float64]
__all__ = ["Array", "Model", "auc", "fit", "out_of_fold"]


@dataclass(frozen=True)
class Model:
    """A fitted model: feature standardisation and the linear model on standardised features."""

    mean: Array
    scale: Array
    linear: logreg.Linear

    def predict(self, x: Array) -> Array:
        """The probability of the positive class for each row of `x`."""
        return self.linear.predict(((x - self.mean) / self.scale).astype(np.float32))


def fit(x: Array, y: Array, l2: float = 1.0) -> Model:
    """Standardise, then fit (the intercept is not penalised)."""
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    return Model(mean, scale, logreg.fit(((x - mean) / scale).astype(np.float32), y, l2))


def out_of_fold(x: Array, y: Array, folds: int, seed: int, l2: float = 1.0) -> Array:
    """Each row's score from a model fitted without its fold: honest scores to choose a threshold on."""
    scores = np.zeros(len(y))
    for part in logreg.folds(len(y), folds, seed):
        train = np.setdiff1d(np.arange(len(y)), part)
        scores[part] = fit(x[train], y[train], l2).predict(x[part])
    return scores
