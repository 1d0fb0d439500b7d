"""What a learned router sees: features of a prompt, and of a cheap answer to it.

Nothing here knows a dataset, a subject or a benchmark. A prompt is its hashed word unigrams and
bigrams (sparse columns) and character 3-5-grams (a dense block), sublinear counts, each group scaled to
unit length (the fitted model weighs them by inverse document frequency), plus its size and shape. An
answer is its size, shape and tone (hedges, refusal phrases, repetition), whether its own arithmetic
holds together, the validator's verdict, and the provider's token log-probabilities when there are any.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierq.router.design import Builder, Design

Matrix = npt.NDArray[np.float32]

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACES = re.compile(r"\s+")
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)]|\(?[a-hA-H][.)])\s+", re.MULTILINE)
_CODE = re.compile(r"```|^\s{4}\S|[{};]\s*$", re.MULTILINE)
# No two adjacent parts may match the same white space: overlapping `\s*`s backtrack exponentially.
# A step stays on one line and has at most 12 operators, so a failed match costs a bounded amount of work:
# a long list of numbers without "=" is linear, not quadratic.
_AMOUNT = r"(?:[$€£][ \t]*)?-?\d[\d,]{0,30}(?:\.\d{1,30})?%?"
_STEP = re.compile(
    rf"({_AMOUNT}(?:[ \t]*[-+*/x×÷][ \t]*{_AMOUNT}){{1,12}})[ \t]*=[ \t]*(?:[$€£][ \t]*)?(-?\d[\d,]*(?:\.\d+)?)"
)
MAX_CHECKED_CHARS = 20_000  # arithmetic is checked in the first this many characters of an answer
_FINAL_MARK = re.compile(r"^\s*(?:#{2,}|\**(?:final answer|answer|the answer is|therefore|thus|so the answer)\b)",
                         re.IGNORECASE | re.MULTILINE)
_HEDGES = ("i think", "probably", "perhaps", "maybe", "might", "approximately", "roughly", "assume", "assuming",
           "not sure", "unclear", "cannot be determined", "not enough information", "it depends", "however",
           "likely", "estimate", "seems")
_REFUSALS = ("i can't", "i cannot", "i'm sorry", "i am sorry", "as an ai", "i'm unable", "i am unable",
             "i won't", "not able to")
_CHAR_BASE = np.uint64(1_000_003)
_MASK = np.uint64(0xFFFFFFFF)

PROMPT_SHAPE = ("log_chars", "log_words", "log_lines", "digit_share", "upper_share", "numbers", "questions",
                "list_items", "code", "long_words", "mean_word_len")
ANSWER_SHAPE = (
    "log_chars",
    "chars_vs_prompt",
    "log_lines",
    "numbers",
    "steps",
    "steps_wrong",
    "steps_wrong_share",
    "last_number_in_working",
    "prompt_numbers_used",
    "final_marker",
    "final_from_working",
    "final_integer",
    "final_magnitude",
    "hedges",
    "refusals",
    "repeated_lines",
    "validator_ok",
    "has_logprobs",
    "logprob_mean",
    "logprob_min",
    "ends_cleanly",
)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """The shape of the hashed part: kept with a fitted router, so workers compute the same features.
    Word n-grams are sparse columns, so they get many (distinct words seldom share one); character
    n-grams, dozens to hundreds per prompt, are a dense block."""

    word_bits: int = 18
    char_bits: int = 11

    @property
    def hashed(self) -> int:
        """Columns of the hashed n-grams (words, then characters)."""
        return (1 << self.word_bits) + (1 << self.char_bits)

    @property
    def prompt_width(self) -> int:
        """Columns of a prompt's features."""
        return self.hashed + len(PROMPT_SHAPE)

    def as_dict(self) -> dict[str, int]:
        """JSON form."""
        return {"word_bits": self.word_bits, "char_bits": self.char_bits}


def _unit(counts: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    np.log1p(counts, out=counts)  # sublinear term frequency
    norm = float(np.linalg.norm(counts))
    if norm > 0:
        counts /= norm
    return counts


def _words(text: str, bits: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """A text's hashed word unigrams and bigrams: (distinct slots, sublinear counts at unit length)."""
    words = _WORD.findall(text.casefold())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    slots = np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint32, count=len(grams))
    columns, counts = np.unique(slots & np.uint32((1 << bits) - 1), return_counts=True)
    return columns.astype(np.int64), _unit(counts.astype(np.float32))


def _chars(text: str, bits: int, sizes: Sequence[int] = (3, 4, 5)) -> npt.NDArray[np.float32]:
    codes = np.frombuffer(_SPACES.sub(" ", f" {text.casefold()} ").encode("utf-8", "replace"), dtype=np.uint8)
    codes = codes.astype(np.uint64)
    slots: list[npt.NDArray[np.uint64]] = []
    for size in sizes:
        if len(codes) < size:
            continue
        value = np.zeros(len(codes) - size + 1, dtype=np.uint64)
        for k in range(size):  # a polynomial hash of each window, in 32 bits, for all windows at once
            value = (value * _CHAR_BASE + codes[k : len(codes) - size + 1 + k] + np.uint64(size)) & _MASK
        slots.append(value)
    if not slots:
        return np.zeros(1 << bits, dtype=np.float32)
    mixed = (np.concatenate(slots) * np.uint64(2_654_435_761)) & _MASK  # spread the low bits
    counts = np.bincount((mixed >> np.uint64(32 - bits)).astype(np.int64), minlength=1 << bits).astype(np.float32)
    return _unit(counts)


def numbers(text: str) -> list[float]:
    """The numbers written in a text ("1,250", "-3.5")."""
    found = []
    for match in _NUMBER.finditer(text):
        try:
            value = float(match.group(0).replace(",", ""))
        except ValueError:
            continue
        if math.isfinite(value):  # "1,2,3,...": digits and commas that no float holds
            found.append(value)
    return found


def prompt_shape(text: str) -> list[float]:
    """A prompt's size and shape (PROMPT_SHAPE)."""
    words = _WORD.findall(text)
    chars = max(len(text), 1)
    return [
        math.log1p(len(text)),
        math.log1p(len(words)),
        math.log1p(text.count("\n")),
        sum(c.isdigit() for c in text) / chars,
        sum(c.isupper() for c in text) / chars,
        math.log1p(len(numbers(text))),
        math.log1p(text.count("?")),
        math.log1p(len(_LIST_ITEM.findall(text))),
        float(bool(_CODE.search(text))),
        math.log1p(sum(len(w) >= 10 for w in words)),
        sum(map(len, words)) / len(words) if words else 0.0,
    ]


def _prompt_rows(builder: Builder, texts: Sequence[str], spec: FeatureSpec) -> None:
    chars = slice(0, 1 << spec.char_bits)  # dense columns start with the characters
    shape = slice(chars.stop, chars.stop + len(PROMPT_SHAPE))
    for row, text in enumerate(texts):
        columns, values = _words(text, spec.word_bits)
        builder.sparse(row, columns, values)
        builder.dense[row, chars] = _chars(text, spec.char_bits)
        builder.dense[row, shape] = prompt_shape(text)


def prompt_matrix(texts: Sequence[str], spec: FeatureSpec) -> Design:
    """One row of prompt features per text: words sparse, the rest dense."""
    builder = Builder(len(texts), spec.prompt_width, np.arange(1 << spec.word_bits, spec.prompt_width))
    _prompt_rows(builder, texts, spec)
    return builder.build()


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(0.01, 1e-6 * abs(b))


def _steps(answer: str) -> tuple[int, int, list[float]]:
    """Arithmetic the answer states (`a op b = c`): how many steps, how many wrong, their results."""
    checked = wrong = 0
    results: list[float] = []
    for match in _STEP.finditer(answer[:MAX_CHECKED_CHARS]):
        expression = re.sub(r"[$€£\s]", "", match.group(1)).replace(",", "").replace("x", "*").replace("×", "*")
        expression = re.sub(r"(\d+(?:\.\d+)?)%", lambda m: str(float(m.group(1)) / 100), expression.replace("÷", "/"))
        value = _evaluate(expression)
        stated = numbers(match.group(2))
        if value is None or not stated:
            continue
        checked += 1
        wrong += not _close(value, stated[0])
        results.append(stated[0])
    return checked, wrong, results


_TOKEN = re.compile(r"\d+(?:\.\d+)?|[-+*/]")


def _evaluate(expression: str) -> float | None:
    """A flat arithmetic expression's value (* and / before + and -); None if it is not one."""
    tokens = _TOKEN.findall(expression)
    if len(tokens) < 3 or len(tokens) % 2 == 0:
        return None
    try:
        terms: list[float] = [float(tokens[0])]
        for op, raw in zip(tokens[1::2], tokens[2::2], strict=True):
            value = float(raw)
            if op == "*":
                terms[-1] *= value
            elif op == "/":
                terms[-1] /= value
            else:
                terms.append(value if op == "+" else -value)
        return sum(terms)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


LogprobSummary = tuple[float, float]  # the mean and the least of an answer's token log-probabilities


def answer_shape(
    prompt: str, answer: str, validator_ok: bool = True, logprobs: LogprobSummary | None = None
) -> list[float]:
    """A cheap answer's size, shape, tone and consistency (ANSWER_SHAPE)."""
    folded = answer.casefold()
    found = numbers(answer)
    checked, wrong, results = _steps(answer)
    asked = set(numbers(prompt))
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    last = found[-1] if found else None
    working = found[:-1]
    has_logprobs = bool(logprobs)
    return [
        math.log1p(len(answer)),
        math.log1p(len(answer)) - math.log1p(len(prompt)),
        math.log1p(len(lines)),
        math.log1p(len(found)),
        math.log1p(checked),
        math.log1p(wrong),
        wrong / checked if checked else 0.0,
        float(last is not None and any(_close(last, n) for n in working)),
        sum(any(_close(a, n) for n in found) for a in asked) / len(asked) if asked else 1.0,
        float(bool(_FINAL_MARK.search(answer))),
        float(last is not None and any(_close(last, r) for r in results)),
        float(last is not None and last == int(last)),
        math.log10(abs(last) + 1) if last is not None else 0.0,
        math.log1p(sum(folded.count(h) for h in _HEDGES)),
        float(any(r in folded for r in _REFUSALS)),
        (len(lines) - len(set(lines))) / len(lines) if lines else 0.0,
        float(validator_ok),
        float(has_logprobs),
        logprobs[0] if logprobs else 0.0,
        logprobs[1] if logprobs else 0.0,
        float(answer.rstrip().endswith((".", "!", "?", ")", "]", "}", "`")) or bool(re.search(r"\d\s*$", answer))),
    ]


def answer_matrix(
    prompts: Sequence[str],
    answers: Sequence[str],
    spec: FeatureSpec,
    valid: Sequence[bool] | None = None,
    logprobs: Sequence[LogprobSummary | None] | None = None,
) -> Design:
    """One row per (prompt, cheap answer): the prompt's features, the answer's hashed words, its shape."""
    words = 1 << spec.word_bits
    start = spec.prompt_width  # the answer's words, then its shape
    width = start + words + len(ANSWER_SHAPE)
    dense_at = np.concatenate([np.arange(words, start), np.arange(start + words, width)])
    builder = Builder(len(prompts), width, dense_at)
    _prompt_rows(builder, prompts, spec)
    shape = slice(start - words, start - words + len(ANSWER_SHAPE))  # after the prompt's dense columns
    for row, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        columns, values = _words(answer, spec.word_bits)
        builder.sparse(row, columns + start, values)
        builder.dense[row, shape] = answer_shape(
            prompt, answer, True if valid is None else valid[row], None if logprobs is None else logprobs[row])
    return builder.build()
