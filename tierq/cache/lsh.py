"""Random-hyperplane LSH with a centre and multi-probe: which buckets hold a vector, which to search.

With `bands` bands of `rows` sign bits, two vectors at angle θ share a band's bucket with probability
(1 - θ/π)**rows. Two things make that work on real embeddings:

- **A centre.** Sentence embeddings of one domain share a direction (MiniLM on support tickets: the
  mean vector has norm 0.47), so hyperplanes through the origin put most vectors on the same side and
  buckets fill unevenly. The bits can be taken of `vector - centre` instead, the centre being the
  mean of the domain's vectors (the store learns one per namespace: tierq.cache.generations). The direction
  is the domain's, not the model's: MiniLM's mean over STS-B sentences has norm 0.13 and cosine 0.07
  with its mean over Banking77, so no centre can be shipped with an embedder.
- **Multi-probe.** A query also searches the buckets it would fall in if its least certain bits (those
  whose projection is nearest zero) were flipped, cheapest first by the sum of squared margins
  (Lv et al., 2007). That buys the recall of many more bands without storing them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt

from tierq.cache.embedders import Vectors

# A sketch: the signs of a vector (from the origin, not the centre) on 128 more planes. Their Hamming
# distance d estimates the angle between two vectors (E[d] = 128 θ/π), so the index can skip, without
# fetching them, candidates that share a bucket but are far apart. 128 bits, not 64: on one-domain data
# at 1M entries 64 bits let through 24 times as many candidates (312 against 13 on average), all of
# them below the threshold.
SKETCH_BITS = 128

# Perturbations flip up to 3 of the 10 least certain bits of a band: 176 per band, scored per query.
_FLIPPABLE = 10
_MAX_FLIPS = 3


def _subsets(k: int) -> npt.NDArray[np.int64]:
    """Every subset of range(k) of at most _MAX_FLIPS members, as rows of 0/1."""
    rows = [np.isin(np.arange(k), combo)
            for n in range(_MAX_FLIPS + 1) for combo in itertools.combinations(range(k), n)]
    return np.array(rows, dtype=np.int64)


class Hyperplanes:
    """The planes of one (dim, bands, rows, seed); every process derives the same ones.

    `offset` arguments are `offset(centre)`: the planes' values at the centre (None: the origin).
    """

    def __init__(self, dim: int, bands: int, rows: int, seed: int = 20261129) -> None:
        if rows > 62:
            raise ValueError("rows must be at most 62 bits per band")
        self.dim, self.bands, self.rows = dim, bands, rows
        rng = np.random.default_rng(seed)
        self.planes = rng.standard_normal((bands * rows, dim)).astype(np.float32)
        self._sketch_planes = rng.standard_normal((SKETCH_BITS, dim)).astype(np.float32)
        self._weights = (1 << np.arange(rows, dtype=np.int64)).astype(np.int64)
        self._subsets = _subsets(min(_FLIPPABLE, rows))

    def offset(self, centre: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """What `margins` subtracts to measure from `centre` instead of from the origin."""
        if centre.shape != (self.dim,):
            raise ValueError(f"the centre has shape {centre.shape}, expected ({self.dim},)")
        result: npt.NDArray[np.float32] = self.planes @ centre.astype(np.float32)
        return result

    def margins(self, vectors: Vectors, offset: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
        """Signed distances (up to scale) of each vector to each plane: n x bands x rows."""
        values = vectors @ self.planes.T
        if offset is not None:
            values = values - offset
        result: npt.NDArray[np.float32] = values.reshape(len(vectors), self.bands, self.rows)
        return result

    def buckets(self, vectors: Vectors, offset: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.int64]:
        """For each vector, one bucket number per band (shape: n x bands)."""
        return self._codes(self.margins(vectors, offset))

    def _codes(self, margins: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        result: npt.NDArray[np.int64] = (margins > 0).astype(np.int64) @ self._weights
        return result

    def probes(self, vector: Vectors, count: int, offset: npt.NDArray[np.float32] | None = None
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The `count` most likely (band, bucket) pairs of one vector's neighbours, most likely first."""
        bands, buckets = self.probes_many(vector.reshape(1, -1), count, offset)
        return bands[0], buckets[0]

    def probes_many(self, vectors: Vectors, count: int, offset: npt.NDArray[np.float32] | None = None
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """For each of n vectors, the `count` most likely (band, bucket) pairs of its neighbours, most likely
        first (two n x count arrays).

        Every band's own bucket comes first (when count >= bands), then buckets one, two or three bit
        flips away, cheapest first. All vectors at once: per vector, NumPy's call overhead would cost
        more than the arithmetic.
        """
        n = len(vectors)
        margins = self.margins(vectors, offset)  # n x bands x rows
        base = self._codes(margins)  # n x bands
        squared = margins * margins
        flips = self._subsets  # perturbations x K
        k = flips.shape[1]
        order = np.argsort(squared, axis=2)[:, :, :k]  # n x bands x K, least certain first
        # One matrix product for every query and band: (n * bands) x K times K x perturbations.
        least = np.take_along_axis(squared, order, axis=2).reshape(-1, k)
        scores = (least @ flips.T.astype(np.float32)).reshape(n, -1)  # n x (bands * perturbations)
        total = scores.shape[1]
        count = min(count, total)
        if count < total:
            flat = np.argpartition(scores, count - 1, axis=1)[:, :count]
        else:
            flat = np.broadcast_to(np.arange(total), (n, total))
        flat = np.take_along_axis(flat, np.argsort(np.take_along_axis(scores, flat, axis=1), axis=1, kind="stable"),
                                  axis=1)
        bands, perturbation = np.divmod(flat, len(flips))
        # The bits a chosen perturbation flips, only for the `count` chosen ones.
        bits = np.int64(1) << order[np.arange(n)[:, None], bands]  # n x count x K
        masks = (bits * flips[perturbation]).sum(axis=2)
        buckets = np.take_along_axis(base, bands, axis=1) ^ masks
        return bands.astype(np.int64), buckets

    def sketch(self, vectors: Vectors) -> npt.NDArray[np.uint8]:
        """Each vector's sign bits on the sketch planes, packed (n x SKETCH_BITS/8 bytes)."""
        result: npt.NDArray[np.uint8] = np.packbits((vectors @ self._sketch_planes.T) > 0, axis=1)
        return result

    def sketch_distance(self, cosine: float, quantile: float = 0.999) -> int:
        """The sketch distance that two vectors at `cosine` stay within with probability `quantile`."""
        p = float(np.arccos(np.clip(cosine, -1.0, 1.0))) / np.pi
        total, d = 0.0, 0
        for d in range(SKETCH_BITS + 1):
            total += math.comb(SKETCH_BITS, d) * p**d * (1 - p) ** (SKETCH_BITS - d)
            if total >= quantile:
                break
        return d

    def collision_odds(self, cosine: float) -> float:
        """Probability that two vectors at `cosine` (measured from the centre) share a band's bucket."""
        p = 1.0 - float(np.arccos(np.clip(cosine, -1.0, 1.0))) / np.pi
        return 1.0 - (1.0 - p**self.rows) ** self.bands
