"""Alternative threshold rules, compared with the product's (tierq.router.policy.choose) by eval/thresholds.py.

Every rule sees what `choose` sees (the training rows and their out-of-fold scores) and tries the same
policies: route only, and the cascade with 0, 5, 10 or 20% of the prompts started at the strong tier. A
policy family is a `Curve`: the rows in the order they are sent to the strong tier, and what sending the
first k of them adds. The rules differ only in how they pick k on a curve:

- `bound`: the product's rule, optionally with the bootstrap deviations widened by `widen` (sqrt(2) makes
  the bound one for a fresh sample as large as the training rows: a prediction, not a confidence, bound);
  `last=True` takes the first k from which every larger k also qualifies, not the first k that does.
- `bagged`: per resample, the k from which the resample keeps the target; the `confidence` quantile of k.
- `isotonic`: the gain of sending a row is smoothed to fall with its score (pool-adjacent-violators) before
  it is summed, in the point estimate and in every resample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierq.router.policy import START_STRONG_SHARES, Array, Policy, Rows, _cut, _cuttable, outcome

Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Curve:
    """A policy family: sending the first k of `order` to the strong tier, k = 0..len(order)."""

    order: Ints
    gain: Array  # quality added by sending each row of `order`, in that order
    gain_cost: Array
    base_weights: Array  # per resample: quality with k = 0
    base_point: float
    base_cost: float
    scores: Array  # the sorted scores the threshold is cut from
    start: float | None  # the family's start threshold (cascade), or None for route only
    route: bool


def pava_falling(values: Array, weights: Array) -> Array:
    """Weighted least-squares fit of `values` by a non-increasing sequence (pool adjacent violators)."""
    means: list[float] = []
    mass: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(value)
        mass.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] < means[-1]:  # a rise: pool the last two blocks
            total = mass[-2] + mass[-1]
            pooled = (means[-2] * mass[-2] + means[-1] * mass[-1]) / total if total > 0 else (means[-2] + means[-1]) / 2
            size = sizes[-2] + sizes[-1]
            del means[-1], mass[-1], sizes[-1]
            means[-1], mass[-1], sizes[-1] = pooled, total, size
    return np.repeat(np.asarray(means), sizes)


def curves(rows: Rows, prompt: Array, answer: Array | None, weights: Array) -> Iterator[Curve]:
    """The policy families `choose` tries."""
    n = len(rows)
    order = np.argsort(prompt, kind="stable")
    yield Curve(order, (rows.strong_ok - rows.cheap_ok)[order], (rows.strong_cost - rows.cheap_cost)[order],
                weights @ rows.cheap_ok, float(rows.cheap_ok.sum()), float(rows.cheap_cost.sum()), prompt[order],
                None, True)
    if answer is None:
        return
    sorted_prompts = np.sort(prompt)
    for share in START_STRONG_SHARES:
        start = _cut(sorted_prompts, int(round(share * n)))
        direct = prompt < start if start is not None else np.zeros(n, dtype=bool)
        rest = np.flatnonzero(~direct)
        rest_order = rest[np.argsort(answer[rest], kind="stable")]
        kept = np.where(direct, rows.strong_ok, rows.cheap_ok)
        yield Curve(rest_order, (rows.strong_ok - rows.cheap_ok)[rest_order], rows.strong_cost[rest_order],
                    weights @ kept, float(kept.sum()), float(np.where(direct, rows.strong_cost, rows.cheap_cost).sum()),
                    answer[rest_order], start, False)


def _shares(
    curve: Curve, weights: Array, strong_total: Array, strong_point: float, isotonic: bool
) -> tuple[Array, Array]:
    """(point share, share per resample) for k = 0..m."""
    picked = weights[:, curve.order]
    if isotonic:
        point_gain = pava_falling(curve.gain, np.ones(len(curve.gain)))
        resampled = np.stack([pava_falling(curve.gain, w) for w in picked]) * picked
    else:
        point_gain, resampled = curve.gain, picked * curve.gain
    point = (curve.base_point + np.concatenate([[0.0], np.cumsum(point_gain)])) / strong_point
    cum = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(resampled, axis=1)], axis=1)
    return point, (curve.base_weights[:, None] + cum) / strong_total[:, None]


Pick = Callable[[Array, Array, float, float], npt.NDArray[np.bool_]]


def bound(widen: float = 1.0, last: bool = False) -> Pick:
    """Qualifies where point + widen x (the `1 - confidence` quantile of the deviation) reaches the target."""

    def pick(point: Array, shares: Array, target: float, confidence: float) -> npt.NDArray[np.bool_]:
        lower = point + widen * np.quantile(shares - point[None, :], 1.0 - confidence, axis=0)
        good: npt.NDArray[np.bool_] = lower >= target
        return np.flip(np.logical_and.accumulate(np.flip(good))) if last else good

    return pick


def bagged(point: Array, shares: Array, target: float, confidence: float) -> npt.NDArray[np.bool_]:
    """Qualifies from the `confidence` quantile of the k from which each resample keeps the target."""
    bad = shares < target
    steps = np.arange(shares.shape[1])
    needed = np.where(bad, steps[None, :], -1).max(axis=1) + 1
    enough: npt.NDArray[np.bool_] = steps >= np.ceil(np.quantile(needed, confidence))
    return enough


def choose_with(rows: Rows, prompt: Array, answer: Array | None, target: float, confidence: float, pick: Pick,
                seed: int = 0, resamples: int = 200, isotonic: bool = False) -> Policy:
    """The cheapest policy that `pick` lets through (everything to the strong tier when none is)."""
    n = len(rows)
    weights = np.random.default_rng(seed).poisson(1.0, size=(resamples, n)).astype(np.float64)
    strong_total = np.maximum(weights @ rows.strong_ok, 1.0)
    strong_point = max(float(rows.strong_ok.sum()), 1.0)
    all_strong = float(rows.strong_cost.sum()) or 1.0
    best = Policy(float("inf"), None, 1.0, 1.0, 1.0)
    for curve in curves(rows, prompt, answer, weights):
        point, shares = _shares(curve, weights, strong_total, strong_point, isotonic)
        feasible = np.flatnonzero(pick(point, shares, target, confidence) & _cuttable(curve.scores))
        if not len(feasible):
            continue
        cost = curve.base_cost + np.concatenate([[0.0], np.cumsum(curve.gain_cost)])
        k = int(feasible[np.argmin(cost[feasible])])
        if cost[k] / all_strong >= best.cost_share - 1e-12:
            continue
        threshold = _cut(curve.scores, k)
        lower = float(np.quantile(shares[:, k], 1.0 - confidence))
        best = (Policy(threshold, None, float(point[k]), lower, float(cost[k]) / all_strong) if curve.route
                else Policy(curve.start, threshold, float(point[k]), lower, float(cost[k]) / all_strong))
    return best


CONFIDENCE_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)


def cross_fitted_confidence(rows: Rows, prompt: Array, answer: Array | None, target: float, confidence: float,
                            seed: int = 0, splits: int = 10) -> float:
    """The lowest bootstrap confidence whose policy, chosen on a random half of the rows, keeps the target on
    the other half in at least `confidence` of `splits` half-splits."""
    rng = np.random.default_rng(seed + 1)
    n = len(rows)
    halves = [rng.permutation(n) for _ in range(splits)]
    for level in CONFIDENCE_GRID:
        kept = 0
        for perm in halves:
            a, b = np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])
            policy = choose_with(rows.take(a), prompt[a], None if answer is None else answer[a], target, level,
                                 bound(), seed, resamples=100)
            direct, escalated = policy.decide(prompt[b], None if answer is None else answer[b])
            quality, _ = outcome(rows.take(b), direct, escalated)
            kept += quality >= target * max(float(rows.strong_ok[b].sum()), 1.0)
        if kept >= confidence * splits:
            return level
    return CONFIDENCE_GRID[-1]
