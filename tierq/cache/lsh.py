"""Random-hyperplane LSH: vectors close in cosine share at least one band of sign bits, with high odds.

With `bands` bands of `rows` bits, two vectors at cosine s collide in a band with probability
p**rows where p = 1 - arccos(s)/pi, and in at least one band with 1 - (1 - p**rows)**bands.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tierq.cache.embedders import Vectors


class Hyperplanes:
    """The planes of one (dim, bands, rows, seed); every process derives the same ones."""

    def __init__(self, dim: int, bands: int, rows: int, seed: int = 20261129) -> None:
        if rows > 62:
            raise ValueError("rows must be at most 62 bits per band")
        self.dim, self.bands, self.rows = dim, bands, rows
        rng = np.random.default_rng(seed)
        self.planes = rng.standard_normal((bands * rows, dim)).astype(np.float32)
        self._weights = (1 << np.arange(rows, dtype=np.int64)).astype(np.int64)

    def buckets(self, vectors: Vectors) -> npt.NDArray[np.int64]:
        """For each vector, one bucket number per band (shape: n x bands)."""
        bits = (vectors @ self.planes.T) > 0
        grouped = bits.reshape(len(vectors), self.bands, self.rows).astype(np.int64)
        result: npt.NDArray[np.int64] = grouped @ self._weights
        return result

    def collision_odds(self, cosine: float) -> float:
        """Probability that two vectors at `cosine` share at least one band."""
        p = 1.0 - float(np.arccos(np.clip(cosine, -1.0, 1.0))) / np.pi
        return 1.0 - (1.0 - p**self.rows) ** self.bands
