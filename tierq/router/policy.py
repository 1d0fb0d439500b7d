"""Thresholds from labels: the cheapest policy whose quality, with a margin for the sampling error, keeps
the target share of the strong tier's quality.

A policy has two thresholds. `start_strong_below`: a prompt scored below it starts at the strong tier
(no cheap call). `escalate_below`: a cheap answer scored below it goes on to the strong tier (the cheap
call was paid too). Each row carries what each outcome costs and whether each tier was right, so the
policy's quality and cost on the rows are sums. The rows' scores must be out-of-fold.

The margin is a bootstrap: the rows are re-weighted (Poisson(1) weights) `resamples` times, and a
policy qualifies when the `1 - confidence` quantile of its quality share over the resamples reaches the
target. Of the qualifying policies the cheapest wins; sending everything to the strong tier always
qualifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
# Shares of prompts sent straight to the strong tier that a two-stage policy tries.
START_STRONG_SHARES = (0.0, 0.05, 0.1, 0.2)


@dataclass(frozen=True, slots=True)
class Rows:
    """Labelled rows: whether each tier was right, and what each call costs (any unit, the same for all)."""

    cheap_ok: Array
    strong_ok: Array
    cheap_cost: Array
    strong_cost: Array

    def __len__(self) -> int:
        return len(self.cheap_ok)

    def take(self, index: npt.NDArray[np.int64]) -> Rows:
        """The rows at `index`."""
        return Rows(self.cheap_ok[index], self.strong_ok[index], self.cheap_cost[index], self.strong_cost[index])


@dataclass(frozen=True, slots=True)
class Policy:
    """Two thresholds (None: that decision is off) and what the policy did on the rows it was chosen on."""

    start_strong_below: float | None
    escalate_below: float | None
    share: float  # quality share on the rows it was chosen on
    share_lower: float  # the bootstrap lower bound that met the target
    cost_share: float  # its cost as a share of all-strong

    def decide(
        self, prompt_scores: Array, answer_scores: Array | None
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """(started at the strong tier, cheap answer escalated) per row."""
        direct = (prompt_scores < self.start_strong_below if self.start_strong_below is not None
                  else np.zeros(len(prompt_scores), dtype=bool))
        escalated = np.zeros(len(prompt_scores), dtype=bool)
        if answer_scores is not None:
            # -inf: an answer its validator failed, which escalates whatever the router says.
            doubted = answer_scores < self.escalate_below if self.escalate_below is not None else escalated
            escalated = ~direct & (np.isneginf(answer_scores) | doubted)
        return direct, escalated


def outcome(rows: Rows, direct: npt.NDArray[np.bool_], escalated: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """(quality, cost) of a set of decisions on `rows`."""
    strong = direct | escalated
    quality = float(np.where(strong, rows.strong_ok, rows.cheap_ok).sum())
    cost = float(np.where(direct, rows.strong_cost, rows.cheap_cost).sum() + rows.strong_cost[escalated].sum())
    return quality, cost


def _cut(sorted_scores: Array, k: int) -> float | None:
    """The threshold below which exactly the first `k` of `sorted_scores` fall (k must not split ties)."""
    if k == 0:
        return None
    if k >= len(sorted_scores):
        return float("inf")
    return float((sorted_scores[k - 1] + sorted_scores[k]) / 2)


def _cuttable(sorted_scores: Array) -> npt.NDArray[np.bool_]:
    """For k = 0..m: whether a threshold can send exactly the first k (no tie between k-1 and k)."""
    inner = sorted_scores[1:] > sorted_scores[:-1]
    return np.concatenate([[True], inner, [True]]) if len(sorted_scores) else np.array([True])


def choose(rows: Rows, prompt_scores: Array, answer_scores: Array | None, target: float, confidence: float,
           seed: int = 0, resamples: int = 200) -> Policy:
    """The cheapest policy whose bootstrap lower bound of quality share reaches `target`."""
    n = len(rows)
    if n == 0:
        return Policy(float("inf"), None, 1.0, 1.0, 1.0)
    weights = np.random.default_rng(seed).poisson(1.0, size=(resamples, n)).astype(np.float64)
    strong_total = weights @ rows.strong_ok
    strong_total = np.where(strong_total > 0, strong_total, 1.0)
    all_strong_cost = float(rows.strong_cost.sum()) or 1.0
    quantile = 1.0 - confidence
    best: tuple[float, Policy] | None = None

    def consider(order: npt.NDArray[np.int64], gain: Array, gain_cost: Array,
                 base_quality: Array, base_quality_point: float, base_cost: float, scores: Array,
                 stage: str, fixed_threshold: float | None) -> None:
        nonlocal best
        # Sending the k lowest-scored of `order` (k = 0..m) adds the cumulative gains.
        cum = np.concatenate([np.zeros((resamples, 1)), np.cumsum(weights[:, order] * gain[order], axis=1)], axis=1)
        shares = (base_quality[:, None] + cum) / strong_total[:, None]
        lower = np.quantile(shares, quantile, axis=0)
        cost = base_cost + np.concatenate([[0.0], np.cumsum(gain_cost[order])])
        feasible = np.flatnonzero((lower >= target) & _cuttable(scores[order]))
        if not len(feasible):
            return
        k = int(feasible[np.argmin(cost[feasible])])
        point = (base_quality_point + float(np.concatenate([[0.0], np.cumsum(gain[order])])[k])) / max(
            float(rows.strong_ok.sum()), 1.0
        )
        threshold = _cut(scores[order], k)
        policy = (Policy(threshold, None, point, float(lower[k]), float(cost[k]) / all_strong_cost) if stage == "route"
                  else Policy(fixed_threshold, threshold, point, float(lower[k]), float(cost[k]) / all_strong_cost))
        if best is None or policy.cost_share < best[0] - 1e-12:
            best = (policy.cost_share, policy)

    # Route: every prompt is sent to one tier, the lowest-scored to the strong one.
    order = np.argsort(prompt_scores, kind="stable")
    consider(order, rows.strong_ok - rows.cheap_ok, rows.strong_cost - rows.cheap_cost,
             weights @ rows.cheap_ok, float(rows.cheap_ok.sum()), float(rows.cheap_cost.sum()), prompt_scores,
             "route", None)
    if answer_scores is not None:
        # Two stages: some prompts start at the strong tier, the cheap answers to the rest may escalate.
        sorted_prompts = np.sort(prompt_scores)
        for share in START_STRONG_SHARES:
            k = int(round(share * n))
            start = _cut(sorted_prompts, k)
            direct = prompt_scores < start if start is not None else np.zeros(n, dtype=bool)
            forced = ~direct & np.isneginf(answer_scores)  # its validator failed it: it escalates anyway
            rest = np.flatnonzero(~direct & ~forced)
            rest_order = rest[np.argsort(answer_scores[rest], kind="stable")]
            strong_answers = direct | forced
            base_quality = weights @ np.where(strong_answers, rows.strong_ok, rows.cheap_ok)
            point = float(np.where(strong_answers, rows.strong_ok, rows.cheap_ok).sum())
            base_cost = float(
                np.where(direct, rows.strong_cost, rows.cheap_cost).sum() + rows.strong_cost[forced].sum()
            )
            consider(rest_order, rows.strong_ok - rows.cheap_ok, rows.strong_cost, base_quality, point,
                     base_cost, answer_scores, "cascade", start)
    if best is None:
        return Policy(float("inf"), None, 1.0, 1.0, 1.0)
    return best[1]


def random_cost_share(rows: Rows, share: float) -> float:
    """The cost (share of all-strong) of random routing that reaches `share` of the strong quality on average."""
    cheap, strong = float(rows.cheap_ok.mean()), float(rows.strong_ok.mean())
    fraction = 1.0 if strong <= cheap else min(1.0, max(0.0, (share * strong - cheap) / (strong - cheap)))
    total = float(rows.strong_cost.sum()) or 1.0
    return float((1 - fraction) * rows.cheap_cost.sum() + fraction * rows.strong_cost.sum()) / total


def oracle_cost_share(rows: Rows) -> float:
    """The cost of an oracle that sends a prompt to the strong tier only when only the strong tier is right."""
    needed = (rows.strong_ok > rows.cheap_ok)
    total = float(rows.strong_cost.sum()) or 1.0
    return float(np.where(needed, rows.strong_cost, rows.cheap_cost).sum()) / total


def summary_order(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, standard deviation, min, max) of per-seed figures."""
    array = np.asarray(values, dtype=np.float64)
    return (
        float(array.mean()),
        float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        float(array.min()),
        float(array.max()),
    )
