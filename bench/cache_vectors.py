"""Synthetic 384-dim unit vectors with the cosine structure of one domain of sentence embeddings.

MiniLM on Banking77's training texts (one domain, like one tenant's tickets): random-pair cosine
0.22 ± 0.15 (p99 0.64), norm of the mean vector 0.47, same-intent pairs 0.58 on average. These vectors
have a shared direction, topics drawn from a low-rank subspace (so topics overlap), paraphrase clusters
and noise; `Domain(shared=0, topic=0)` gives isotropic clusters, the easy case for random hyperplanes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierq.cache.embedders import Vectors

DIM = 384


@dataclass(frozen=True, slots=True)
class Domain:
    """Squared weights of the shared, topic and cluster parts (the rest is noise), and the cluster size."""

    shared: float = 0.20
    topic: float = 0.30
    cluster: float = 0.18
    topic_rank: int = 6
    cluster_size: int = 50


def unit(x: npt.NDArray[np.floating]) -> Vectors:
    """Rows scaled to length 1, as float32."""
    result: Vectors = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return result


def make_vectors(n: int, rng: np.random.Generator, domain: Domain, seed_parts: int = 7) -> Vectors:
    """N unit vectors: shared direction + topic + cluster centre + noise, cluster picked at random."""
    parts = np.random.default_rng(seed_parts)
    shared = unit(parts.standard_normal((1, DIM)))
    basis = unit(parts.standard_normal((domain.topic_rank, DIM)))
    clusters = max(1, n // domain.cluster_size)
    topics = unit(parts.standard_normal((clusters, domain.topic_rank)) @ basis)
    centres = unit(parts.standard_normal((clusters, DIM)))
    noise = 1.0 - domain.shared - domain.topic - domain.cluster
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        k = rng.integers(0, clusters, min(100_000, n - start))
        out[start : start + len(k)] = unit(
            np.sqrt(domain.shared) * shared + np.sqrt(domain.topic) * topics[k]
            + np.sqrt(domain.cluster) * centres[k] + np.sqrt(noise) * unit(rng.standard_normal((len(k), DIM)))
        )
    return out


def near_duplicates(stored: Vectors, count: int, rng: np.random.Generator) -> Vectors:
    """Vectors at a cosine drawn uniformly from [0.85, 0.99] to randomly chosen stored vectors."""
    source = stored[rng.integers(0, len(stored), count)]
    side = rng.standard_normal((count, DIM)).astype(np.float32)
    side = unit(side - (side * source).sum(axis=1, keepdims=True) * source)
    cos = rng.uniform(0.85, 0.99, (count, 1)).astype(np.float32)
    return unit(cos * source + np.sqrt(1 - cos * cos) * side)


def describe(sample: Vectors) -> str:
    """Cosine statistics of a sample, to set beside those of real embeddings."""
    rng = np.random.default_rng(1)
    i, j = rng.integers(0, len(sample), (2, 50_000))
    cos = (sample[i] * sample[j]).sum(axis=1)[i != j]
    return (f"random-pair cosine {cos.mean():.2f} ± {cos.std():.2f} (p99 {np.percentile(cos, 99):.2f}), "
            f"norm of the mean vector {np.linalg.norm(sample.mean(axis=0)):.2f}")
