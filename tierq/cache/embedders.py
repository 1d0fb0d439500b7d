"""Embedders: text to unit vectors, in batches. Each has the similarity threshold it was measured at."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
_SPACE = re.compile(r"\s+")


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of `dim` dimensions."""

    name: str
    dim: int
    default_threshold: float

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text."""
        ...


def normalise(vectors: Vectors) -> Vectors:
    """Scale rows to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit: Vectors = (vectors / norms).astype(np.float32)
    return unit


class HashingEmbedder:
    """Character n-gram feature hashing: no model, catches near-identical text (typos, spacing, case)."""

    name = "hashing"
    # STS-B alone would allow 0.79, but then one-word edits ("What"/"Why", "activate"/"reactivate") hit:
    # on Banking77 6.4% of hits change intent at 0.79, 3.9% at 0.9, near the labels' own noise (docs/cache.md).
    default_threshold = 0.9

    def __init__(self, dim: int = 384, ngram: int = 3) -> None:
        self.dim = dim
        self.ngram = ngram

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Hash each text's character n-grams into signed buckets."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        n = self.ngram
        for row, text in enumerate(texts):
            clean = " " + _SPACE.sub(" ", text.casefold()).strip() + " "
            for start in range(max(1, len(clean) - n + 1)):
                # crc32 is stable across processes, unlike hash(); its top bit picks the sign.
                h = zlib.crc32(clean[start : start + n].encode())
                out[row, h % self.dim] += 1.0 if h & 0x80000000 else -1.0
        return normalise(out)


class OpenAIEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` endpoint (e.g. text-embedding-3-small)."""

    name = "openai"
    default_threshold = 0.92

    def __init__(self, base_url: str, api_key: str | None, model: str, dim: int, batch: int = 256) -> None:
        import openai

        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=3)
        self.model, self.dim, self.batch = model, dim, batch

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed in requests of `batch` texts."""
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch):
            response = self._client.embeddings.create(
                model=self.model, input=list(texts[start : start + self.batch]), dimensions=self.dim
            )
            rows.extend(item.embedding for item in sorted(response.data, key=lambda d: d.index))
        return normalise(np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim))
