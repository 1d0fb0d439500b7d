"""Routing policies replayed on recorded answers: who answers each question, what it costs, whether it is right.

A cascade pays for the cheap call of every question and for the strong call of each one it escalates;
a router pays for one call per question. Labels are read only to score the answer a policy kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

import numpy as np

from eval.gsm8k_data import Question
from eval.logreg import Array

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Result:
    """One policy on a set of questions."""

    name: str
    jobs: int
    strong_calls: int
    cost: Decimal
    correct: int

    @property
    def accuracy(self) -> float:
        """Share of questions whose kept answer is right."""
        return self.correct / self.jobs if self.jobs else 0.0

    def against(self, strong: Result) -> tuple[float, float]:
        """Cost reduction against `strong` and accuracy as a share of its accuracy, both in %."""
        reduction = float(1 - self.cost / strong.cost) * 100 if strong.cost else 0.0
        share = self.accuracy / strong.accuracy * 100 if strong.accuracy else 0.0
        return reduction, share


def route(name: str, questions: Sequence[Question], strong: Callable[[Question], bool]) -> Result:
    """Each question goes to one model, chosen before any call."""
    cost, correct, calls = ZERO, 0, 0
    for q in questions:
        if strong(q):
            cost, correct, calls = cost + q.strong_cost, correct + q.strong_correct, calls + 1
        else:
            cost, correct = cost + q.cheap_cost, correct + q.cheap_correct
    return Result(name, len(questions), calls, cost, correct)


def cascade(name: str, questions: Sequence[Question], accept: Callable[[Question], bool]) -> Result:
    """The cheap model answers every question; an answer `accept` rejects goes on to the strong model."""
    cost, correct, calls = ZERO, 0, 0
    for q in questions:
        cost += q.cheap_cost
        if accept(q):
            correct += q.cheap_correct
        else:
            cost, correct, calls = cost + q.strong_cost, correct + q.strong_correct, calls + 1
    return Result(name, len(questions), calls, cost, correct)


def cheapest_threshold(
    questions: Sequence[Question], scores: Array, target: float, run: Callable[[Callable[[Question], bool]], Result],
    keep: Callable[[Question, float, float], bool],
) -> float:
    """The threshold whose policy (`keep(q, score, t)`: the cheap answer stays) is cheapest at `target` accuracy."""
    by_index = {q.index: float(s) for q, s in zip(questions, scores, strict=True)}
    best: tuple[Decimal, float] | None = None
    for threshold in [*np.unique(scores).tolist(), float("inf")]:
        result = run(partial(_kept, keep, by_index, threshold))
        if result.accuracy >= target and (best is None or result.cost < best[0]):
            best = (result.cost, threshold)
    return best[1] if best is not None else float("inf")


def _kept(keep: Callable[[Question, float, float], bool], scores: dict[int, float], threshold: float,
          q: Question) -> bool:
    return keep(q, scores[q.index], threshold)


def random_share(cheap: Result, strong: Result, share: float) -> float:
    """The share of questions random routing must send to the strong model to reach `share` of its accuracy."""
    if strong.accuracy <= cheap.accuracy:
        return 0.0
    return min(1.0, max(0.0, (share * strong.accuracy - cheap.accuracy) / (strong.accuracy - cheap.accuracy)))
