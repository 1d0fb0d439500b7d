"""The NumPy MiniLM against vectors that sentence-transformers (torch) computed for the same texts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

minilm = pytest.importorskip("tierq.cache.minilm", reason="the minilm extra is not installed")

REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def embedder() -> minilm.MiniLMEmbedder:
    return minilm.MiniLMEmbedder()


def test_vectors_match_sentence_transformers(embedder: minilm.MiniLMEmbedder) -> None:
    expected = np.asarray(REFERENCE["vectors"], dtype=np.float32)
    got = embedder.embed(REFERENCE["sentences"])
    assert got.shape == expected.shape == (len(REFERENCE["sentences"]), 384) and got.dtype == np.float32
    cosines = (got * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 1 - 1e-5, dict(zip(REFERENCE["sentences"], cosines.tolist(), strict=True))
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_long_text_is_truncated_like_the_reference(embedder: minilm.MiniLMEmbedder) -> None:
    longest = max(REFERENCE["tokens"])
    assert longest > embedder.max_length == 256
    assert len(embedder.tokenizer.encode(REFERENCE["sentences"][REFERENCE["tokens"].index(longest)]).ids) == 256


def test_a_batch_gives_what_each_text_gives_alone(embedder: minilm.MiniLMEmbedder) -> None:
    texts = REFERENCE["sentences"] + ["short", "a somewhat longer sentence about a card payment"] * 3
    together = embedder.embed(texts)
    alone = np.stack([embedder.embed([text])[0] for text in texts])
    assert np.abs(together - alone).max() < 1e-5
    assert embedder.embed([]).shape == (0, 384)


def test_paraphrases_score_above_unrelated_texts(embedder: minilm.MiniLMEmbedder) -> None:
    a, b, c = embedder.embed(["My card has not arrived yet, where is it?", "I am still waiting for my new card.",
                              "What is the exchange rate for euros today?"])
    assert float(a @ b) > float(a @ c) + 0.3
    assert float(a @ b) > 0.5
