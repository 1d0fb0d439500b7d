"""Judging an answer: good, or a refusal, empty, truncated answer that must escalate."""

from __future__ import annotations

from dataclasses import dataclass

from models.enums import CallOutcome
from tierq.sections import AnswerConfig


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a call that returned HTTP 200, with the reason when it is not OK."""

    outcome: CallOutcome
    reason: str | None = None


def judge(content: str | None, refusal: str | None, finish_reason: str | None, rules: AnswerConfig) -> Verdict:
    """Decide whether an answer is usable, following the order in which providers signal problems."""
    if finish_reason == "content_filter":
        return Verdict(CallOutcome.REFUSAL, "refusal: the provider's content filter stopped the answer")
    if refusal:
        return Verdict(CallOutcome.REFUSAL, "refusal: the model refused to answer")
    if finish_reason == "length":
        return Verdict(CallOutcome.TRUNCATED, "truncated: the answer hit the max_tokens limit")
    text = (content or "").strip()
    if len(text) < max(rules.min_chars, 1):
        return Verdict(
            CallOutcome.EMPTY, f"empty: the answer has {len(text)} characters (minimum {max(rules.min_chars, 1)})"
        )
    head = text[:200].casefold()
    for phrase in rules.refusal_phrases:
        if head.startswith(phrase.casefold()):
            return Verdict(CallOutcome.REFUSAL, f"refusal: the answer starts with {phrase!r}")
    return Verdict(CallOutcome.OK)
