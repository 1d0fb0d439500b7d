"""A scorer: features -> column scaling -> logistic regression -> P(the cheap answer is good enough).

Hashed n-gram columns are weighed by their inverse document frequency on the training rows; the dense
shape columns are standardised. The regularisation strength is picked from a small grid by out-of-fold
log-loss on the training rows, and the out-of-fold scores of the chosen strength are kept: thresholds
are chosen on them, never on scores a model gives the rows it was fitted on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierq.router import logreg
from tierq.router.features import FeatureSpec, Matrix

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

    def score(self, x: Matrix) -> Array:
        """P(cheap is good enough) for each row of raw features."""
        return self.model.predict(x * self.scale + self.shift)

    def to_bytes(self) -> bytes:
        """The arrays, as one `.npz` blob (stored in Postgres with the router version)."""
        buffer = io.BytesIO()
        np.savez(buffer, scale=self.scale, shift=self.shift, weights=self.model.weights,
                 intercept=np.array([self.model.intercept]), l2=np.array([self.l2]))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, spec: FeatureSpec, answers: bool) -> Scorer:
        """Inverse of `to_bytes`."""
        with np.load(io.BytesIO(blob)) as arrays:
            return cls(spec, answers, arrays["scale"], arrays["shift"],
                       logreg.Linear(arrays["weights"], float(arrays["intercept"][0])), float(arrays["l2"][0]))


def column_scaling(x: Matrix, hashed: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """IDF weights for hashed columns (present in few rows: heavier), z-scores for the dense ones."""
    n = max(len(x), 1)
    scale = np.ones(x.shape[1], dtype=np.float32)
    shift = np.zeros(x.shape[1], dtype=np.float32)
    documents = np.count_nonzero(x[:, hashed], axis=0)
    scale[hashed] = np.log((1 + n) / (1 + documents)) + 1.0
    dense = ~hashed
    mean = x[:, dense].mean(axis=0) if len(x) else np.zeros(int(dense.sum()), dtype=np.float32)
    std = x[:, dense].std(axis=0) if len(x) else np.ones(int(dense.sum()), dtype=np.float32)
    std = np.where(std > 1e-6, std, 1.0)
    scale[dense] = 1.0 / std
    shift[dense] = -mean / std
    return scale, shift


def fit_scorer(x: Matrix, y: Array, spec: FeatureSpec, answers: bool, hashed: npt.NDArray[np.bool_],
               seed: int = 0) -> tuple[Scorer, Array]:
    """Fit on all rows; also return each row's out-of-fold score (from models that did not see it)."""
    scale, shift = column_scaling(x, hashed)
    z = (x * scale + shift).astype(np.float32)
    best: tuple[float, float, Array] | None = None
    for l2 in L2_GRID:
        oof = logreg.out_of_fold(z, y, FOLDS, seed, l2)
        loss = logreg.log_loss(oof, y)
        if best is None or loss < best[0]:
            best = (loss, l2, oof)
    assert best is not None
    _, l2, oof = best
    return Scorer(spec, answers, scale, shift, logreg.fit(z, y, l2), l2), oof
