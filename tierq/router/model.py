"""A scorer: features -> column scaling -> logistic regression -> P(the cheap answer is good enough).

Hashed n-gram columns are weighed by their inverse document frequency on the training rows; the dense
shape columns are standardised. The regularisation strength is picked from a small grid by out-of-fold
log-loss on the training rows, and the out-of-fold scores of the chosen strength are kept: thresholds
are chosen on them, never on scores a model gives the rows it was fitted on.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierq.router import logreg
from tierq.router.design import Design
from tierq.router.features import FeatureSpec
from tierq.router.logreg import Features, design

Array = npt.NDArray[np.float64]
L2_GRID = (2.0, 8.0, 32.0, 128.0, 512.0)
FOLDS = 5


@dataclass(frozen=True, slots=True)
class Scorer:
    """A fitted scorer over one feature layout (`answers`: prompt and answer features, else prompt only)."""

    spec: FeatureSpec
    answers: bool
    scale: npt.NDArray[np.float32]
    shift: npt.NDArray[np.float32]
    model: logreg.Linear
    l2: float

    def score(self, x: Features) -> Array:
        """P(cheap is good enough) for each row of raw features."""
        return self.model.predict(design(x).scaled(self.scale, self.shift))

    def to_bytes(self) -> bytes:
        """The arrays, as one `.npz` blob (stored in Postgres with the router version)."""
        buffer = io.BytesIO()
        # Compressed: most word columns never occurred in training (weight 0, the same IDF).
        np.savez_compressed(buffer, scale=self.scale, shift=self.shift, weights=self.model.weights,
                            intercept=np.array([self.model.intercept]), l2=np.array([self.l2]))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, spec: FeatureSpec, answers: bool) -> Scorer:
        """Inverse of `to_bytes`."""
        with np.load(io.BytesIO(blob)) as arrays:
            return cls(spec, answers, arrays["scale"], arrays["shift"],
                       logreg.Linear(arrays["weights"], float(arrays["intercept"][0])), float(arrays["l2"][0]))


def column_scaling(x: Design, hashed: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """IDF weights for hashed columns (present in few rows: heavier), z-scores for the others (which
    are all dense columns)."""
    n = max(x.rows, 1)
    scale = np.ones(x.width, dtype=np.float32)
    shift = np.zeros(x.width, dtype=np.float32)
    scale[hashed] = np.log((1 + n) / (1 + x.documents()[hashed])) + 1.0
    shape = ~hashed[x.dense_at]  # the dense columns that are not hashed n-grams
    at = x.dense_at[shape]
    if x.rows:
        mean = x.dense[:, shape].mean(axis=0)
        std = x.dense[:, shape].std(axis=0)
        std = np.where(std > 1e-6, std, 1.0)
        scale[at] = 1.0 / std
        shift[at] = -mean / std
    return scale, shift


def fit_scorer(x: Design, y: Array, spec: FeatureSpec, answers: bool, hashed: npt.NDArray[np.bool_],
               seed: int = 0, groups: npt.NDArray[np.int64] | None = None,
               on_fold: Callable[[int], None] | None = None) -> tuple[Scorer, Array]:
    """Fit on all rows; also return each row's out-of-fold score (from models that did not see it, nor
    another row of its group: `logreg.folds`)."""
    scale, shift = column_scaling(x, hashed)
    # Columns that no training row has would keep a weight of 0 anyway: leave them out of the fit.
    z, kept = x.scaled(scale, shift).compact()
    # The l2 whose out-of-fold scores have the smallest log-loss (on a tie, the smaller l2).
    path = logreg.out_of_fold_path(z, y, FOLDS, seed, L2_GRID, groups, on_fold)
    l2, oof = min(path, key=lambda p: (logreg.log_loss(p[1], y), p[0]))
    fitted = logreg.fit(z, y, l2)
    weights = np.zeros(x.width, dtype=np.float32)
    weights[kept] = fitted.weights
    return Scorer(spec, answers, scale, shift, logreg.Linear(weights, fitted.intercept), l2), oof
