"""Comparators: does a candidate answer agree with the reference answer? (docs/quality.md says which to
use for what.) Each returns True, False, or None when it cannot tell (an audit without a label).

`similarity` needs the cache's embedder and `judge` a model call; both live in workers/audits.py. The
rest are pure functions here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from tierq.quality import ComparatorConfig, normalised
from tierq.validator_config import import_callable

Verdict = bool | None
Compare = Callable[[str, str, list[dict[str, Any]]], Verdict]

_CHOICE = (
    re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Ea-e])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-E])\)?(?:[.):]|\s*$)", re.MULTILINE),
    re.compile(r"\(([A-E])\)"),
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def choice(text: str) -> str | None:
    """The multiple-choice letter an answer gives: "The answer is (B)", "B)", "Answer: c"; the last stated."""
    for pattern in _CHOICE:
        found = pattern.findall(text)
        if found:
            return str(found[-1]).upper()
    return None


def final_number(text: str) -> float | None:
    """The last number of an answer ("#### 1,250", "The total is $18.50."), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        value = float(found[-1].replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def json_value(text: str) -> Any:
    """The JSON an answer holds: the whole text, else its outermost {...} or [...]; None when there is none."""
    for candidate in (text.strip(), _outermost(text, "{", "}"), _outermost(text, "[", "]")):
        if candidate:
            try:
                return json.loads(candidate)
            except ValueError:
                continue
    return None


def _outermost(text: str, opening: str, closing: str) -> str:
    start, end = text.find(opening), text.rfind(closing)
    return text[start : end + 1] if 0 <= start < end else ""


def _at(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


_MISSING = object()


def label_of(text: str, labels: tuple[str, ...]) -> str | None:
    """The configured label an answer names first (whole words, any case), or None."""
    best: tuple[int, str] | None = None
    for label in labels:
        found = re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", text, re.IGNORECASE)
        if found and (best is None or found.start() < best[0]):
            best = (found.start(), label)
    return best[1] if best else None


def comparator(config: ComparatorConfig) -> Compare:
    """The pure comparison `config` names (not `similarity` or `judge`, which need more than two texts)."""
    kind = config.kind
    if kind == "exact":
        return lambda a, b, _: normalised(a) == normalised(b)
    if kind == "choice":
        return lambda a, b, _: _same(choice(a), choice(b))
    if kind == "number":
        return lambda a, b, _: _close(final_number(a), final_number(b), config.tolerance)
    if kind == "json":
        return lambda a, b, _: _json_agree(json_value(a), json_value(b), config.fields)
    if kind == "label":
        return lambda a, b, _: _same(label_of(a, config.labels), label_of(b, config.labels))
    if kind == "callable":
        assert config.callable is not None
        function = import_callable(config.callable, "quality comparator")
        return lambda a, b, messages: bool(function(a, b, messages))
    raise ValueError(f"comparator {kind!r} is not a pure comparison")


def _same(a: str | None, b: str | None) -> Verdict:
    """Equal answers agree; an answer that gives none (where the reference does) does not."""
    if b is None:
        return None  # the reference gave no letter or label either: nothing to measure against
    return a == b


def _close(a: float | None, b: float | None, tolerance: float) -> Verdict:
    if b is None:
        return None
    if a is None:
        return False
    return abs(a - b) <= tolerance * max(1.0, abs(b))


def _json_agree(a: Any, b: Any, fields: tuple[str, ...]) -> Verdict:
    if b is None:
        return None
    if a is None:
        return False
    if not fields:
        return bool(a == b)
    return all(_at(a, f) == _at(b, f) and _at(b, f) is not _MISSING for f in fields)
