"""Deterministic answer text, refusals, token accounting and embeddings."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fakellm.behaviour import Decision, ModelBehaviour, Outcome

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
REFUSAL_CONTENT = "I'm sorry, but I can't help with that."

_OPENERS = (
    "Thanks for reaching out.",
    "Good question.",
    "Here is a short answer.",
    "Happy to help with this.",
    "Let me walk you through it.",
)
_SUBJECTS = (
    "The main idea",
    "This approach",
    "A simple option",
    "Your request",
    "The best next step",
    "Each part of the plan",
    "The short version",
    "A careful review",
    "The usual answer",
    "Most teams",
)
_VERBS = (
    "depends on",
    "works well with",
    "starts from",
    "comes down to",
    "builds on",
    "should focus on",
    "can improve",
    "usually requires",
    "fits nicely with",
    "benefits from",
)
_OBJECTS = (
    "the details you shared",
    "a clear goal",
    "a few small changes",
    "the current setup",
    "good test coverage",
    "the way the data is stored",
    "a steady budget",
    "the expected load",
    "simple and honest metrics",
    "a quick second look",
)
_TAILS = ("", "in most cases", "over time", "for now", "without much effort", "at a fair cost")


def _build_stream(sentences: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Precompute a long run of English-looking words and its sentence starts."""
    rng = random.Random(20240229)
    words: list[str] = []
    starts: list[int] = []
    for _ in range(sentences):
        if rng.random() < 0.2:
            sentence = rng.choice(_OPENERS)
        else:
            parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
            tail = rng.choice(_TAILS)
            sentence = " ".join(parts + ([tail] if tail else [])) + "."
        starts.append(len(words))
        words.extend(sentence.split())
    return tuple(words), tuple(starts)


# Precomputed once so that building an answer is only a slice and a join.
_WORDS, _SENTENCE_STARTS = _build_stream(4096)


@dataclass(frozen=True)
class Answer:
    """The assistant message of a billed chat completion."""

    content: str | None
    refusal: str | None
    finish_reason: str
    completion_tokens: int


def count_tokens(text: str) -> int:
    """Approximate token count used for billing: one token per 4 characters."""
    return (len(text) + 3) // 4


def prompt_tokens(texts: Iterable[str]) -> int:
    """Bill each message as 4 tokens of overhead plus its text."""
    return sum(4 + count_tokens(text) for text in texts)


def answer_text(prompt_hash: int, words_range: tuple[int, int]) -> str:
    """Return the deterministic full answer for a prompt hash."""
    low, high = words_range
    count = low + prompt_hash % (high - low + 1)
    position = _SENTENCE_STARTS[(prompt_hash >> 20) % len(_SENTENCE_STARTS)]
    chosen: list[str] = []
    while len(chosen) < count:
        chunk = _WORDS[position : position + count - len(chosen)]
        chosen.extend(chunk)
        position = 0
    text = " ".join(chosen)
    return text if text.endswith(".") else text + "."


def truncated(text: str, prompt_hash: int) -> str:
    """Cut an answer to a deterministic 30-70% prefix, at a word boundary if possible."""
    percent = 30 + (prompt_hash >> 40) % 41
    cut = max(1, len(text) * percent // 100)
    space = text.rfind(" ", 0, cut)
    return text[:space] if space > 0 else text[:cut]


def make_answer(decision: Decision, behaviour: ModelBehaviour, max_tokens: int | None) -> Answer:
    """Build the assistant message for an answered (billed) outcome."""
    outcome = decision.outcome
    if outcome is Outcome.REFUSAL:
        return _refusal((decision.prompt_hash + decision.occurrence) % 3)
    if outcome is Outcome.EMPTY:
        return Answer(content="", refusal=None, finish_reason="stop", completion_tokens=0)
    text = answer_text(decision.answer_hash or decision.prompt_hash, behaviour.answer_words)
    finish = "stop"
    if outcome is Outcome.TRUNCATE:
        text, finish = truncated(text, decision.prompt_hash), "length"
    if max_tokens is not None and count_tokens(text) > max_tokens:
        text, finish = text[: max_tokens * 4], "length"
    return Answer(
        content=text, refusal=None, finish_reason=finish, completion_tokens=count_tokens(text)
    )


def _refusal(variant: int) -> Answer:
    """Return one of the three refusal shapes that real providers produce."""
    if variant == 0:
        return Answer(None, REFUSAL_TEXT, "stop", count_tokens(REFUSAL_TEXT))
    if variant == 1:
        return Answer(REFUSAL_CONTENT, None, "stop", count_tokens(REFUSAL_CONTENT))
    return Answer("", None, "content_filter", 0)


_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def _trigram_hashes(text: str) -> npt.NDArray[np.uint64]:
    """Hash every character 3-gram of the padded, lower-cased text."""
    padded = " " + text.lower() + " "
    codes = np.frombuffer(padded.encode("utf-32-le"), dtype="<u4").astype(np.uint64)
    if codes.size < 3:
        return np.zeros(0, dtype=np.uint64)
    # Code points fit in 21 bits, so the three shifted values never overlap.
    grams = (codes[:-2] << np.uint64(42)) | (codes[1:-1] << np.uint64(21)) | codes[2:]
    # splitmix64 finaliser: spreads similar trigrams over all buckets.
    grams = (grams ^ (grams >> np.uint64(30))) * _MIX_1
    grams = (grams ^ (grams >> np.uint64(27))) * _MIX_2
    return grams ^ (grams >> np.uint64(31))


def embed(text: str, dimensions: int) -> npt.NDArray[np.float32]:
    """Return the L2-normalised signed feature-hashing vector of a text's 3-grams."""
    hashes = _trigram_hashes(text)
    buckets = (hashes % np.uint64(dimensions)).astype(np.intp)
    signs = np.where((hashes >> np.uint64(63)) == 0, 1.0, -1.0)
    vector = np.bincount(buckets, weights=signs, minlength=dimensions)
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        # All trigrams cancelled out (or none): still hand back a unit vector.
        unit = np.zeros(dimensions, dtype=np.float32)
        unit[0] = 1.0
        return unit
    return (vector / norm).astype(np.float32)


def encode_embedding(vector: npt.NDArray[np.float32], encoding: str) -> list[float] | str:
    """Encode a vector as a float list or as base64 little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = vector.tolist()
    return values
