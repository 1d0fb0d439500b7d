"""Fit a router for one task type from labelled examples, and apply it to one prompt or answer.

A router is two scorers (the prompt alone; the prompt and a cheap answer, when the examples have answer
texts) and a policy (two thresholds) chosen on their out-of-fold scores. The label of an example is
"the cheap tier's answer is as good as the strong tier's" (cheap right, or both wrong): a router keeps
the cheap answer exactly when that is likely.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tierq.router import logreg
from tierq.router.features import ANSWER_SHAPE, FeatureSpec, LogprobSummary, answer_matrix, prompt_matrix
from tierq.router.model import FOLDS, Array, Scorer, fit_scorer
from tierq.router.policy import Policy, Rows, choose, outcome

LONG_FIT_ROWS = 5_000  # a fit of 10-20 s and more (6,000 rows: 9-20 s; 50,000: 6 minutes): say how far it is
MIN_ANSWERS = 50  # fewer examples with an answer text: no answer scorer, the router decides from prompts


@dataclass(frozen=True, slots=True)
class Examples:
    """Labelled examples of one task type. `answers[i]` is the cheap answer's text, or None without one."""

    prompts: Sequence[str]
    answers: Sequence[str | None]
    rows: Rows
    valid: Sequence[bool] | None = None
    logprobs: Sequence[LogprobSummary | None] | None = None

    @property
    def labels(self) -> Array:
        """1 where the cheap answer is as good as the strong one."""
        return (self.rows.cheap_ok >= self.rows.strong_ok).astype(np.float64)

    def take(self, index: Sequence[int]) -> Examples:
        """The examples at `index`."""
        pick = list(index)
        return Examples([self.prompts[i] for i in pick], [self.answers[i] for i in pick],
                        self.rows.take(np.asarray(pick, dtype=np.int64)),
                        [self.valid[i] for i in pick] if self.valid is not None else None,
                        [self.logprobs[i] for i in pick] if self.logprobs is not None else None)

    def with_answers(self) -> npt.NDArray[np.int64]:
        """Indexes of the examples that have a cheap answer text."""
        return np.flatnonzero([a is not None for a in self.answers])

    def failed(self) -> npt.NDArray[np.bool_]:
        """Examples whose cheap answer a validator failed: they escalate whatever a router says."""
        if self.valid is None:
            return np.zeros(len(self.prompts), dtype=bool)
        return ~np.asarray(self.valid, dtype=bool)

    def answer_scorable(self) -> bool:
        """Whether an answer scorer can be fitted: every example that passed its validator has its text."""
        failed = self.failed()
        have = self.with_answers()
        return len(have) >= MIN_ANSWERS and all(failed[i] or self.answers[i] is not None for i in range(len(failed)))


@dataclass(frozen=True, slots=True)
class Router:
    """A fitted router: scorers and thresholds."""

    spec: FeatureSpec
    prompt: Scorer
    answer: Scorer | None
    policy: Policy

    def blobs(self) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes | None]:
        """What a router version stores: feature layout, policy, and the two scorers' arrays."""
        policy = self.policy
        return (
            self.spec.as_dict(),
            {
                "start_strong_below": _finite(policy.start_strong_below),
                "escalate_below": _finite(policy.escalate_below),
                "share": policy.share,
                "share_lower": policy.share_lower,
                "cost_share": policy.cost_share,
            },
            self.prompt.to_bytes(),
            self.answer.to_bytes() if self.answer is not None else None,
        )

    @classmethod
    def from_blobs(cls, spec: dict[str, Any], policy: dict[str, Any], prompt: bytes, answer: bytes | None) -> Router:
        """Inverse of `blobs`."""
        layout = FeatureSpec(**spec)
        return cls(layout, Scorer.from_bytes(prompt, layout, False),
                   Scorer.from_bytes(answer, layout, True) if answer is not None else None,
                   Policy(_infinite(policy.get("start_strong_below")), _infinite(policy.get("escalate_below")),
                          float(policy["share"]), float(policy["share_lower"]), float(policy["cost_share"])))

    def prompt_scores(self, prompts: Sequence[str]) -> Array:
        """P(cheap is good enough) from each prompt alone."""
        return self.prompt.score(prompt_matrix(prompts, self.spec))

    def answer_scores(self, prompts: Sequence[str], answers: Sequence[str], valid: Sequence[bool] | None = None,
                      logprobs: Sequence[LogprobSummary | None] | None = None) -> Array | None:
        """P(cheap is good enough) from each prompt and its cheap answer; None without an answer scorer."""
        if self.answer is None:
            return None
        return self.answer.score(answer_matrix(prompts, answers, self.spec, valid, logprobs))

    def start_strong(self, prompt: str) -> bool:
        """Decision (a): does this prompt skip the cheap tier?"""
        threshold = self.policy.start_strong_below
        return threshold is not None and float(self.prompt_scores([prompt])[0]) < threshold

    def escalate(self, prompt: str, answer: str, valid: bool = True, logprobs: LogprobSummary | None = None) -> bool:
        """Decision (b): does this cheap answer go on to the strong tier?"""
        threshold = self.policy.escalate_below
        if threshold is None or self.answer is None:
            return False
        scores = self.answer_scores([prompt], [answer], [valid], [logprobs])
        return scores is not None and float(scores[0]) < threshold


def _finite(value: float | None) -> float | str | None:
    """JSON has no infinity: "inf" and "-inf" stand for them."""
    if value is not None and np.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _infinite(value: float | str | None) -> float | None:
    return None if value is None else float(value)


def hashed_columns(spec: FeatureSpec, answers: bool) -> npt.NDArray[np.bool_]:
    """Which feature columns are hashed n-grams (the rest are dense shape features)."""
    width = spec.prompt_width + ((1 << spec.word_bits) + len(ANSWER_SHAPE) if answers else 0)
    mask = np.zeros(width, dtype=bool)
    mask[: spec.hashed] = True
    if answers:
        mask[spec.prompt_width : spec.prompt_width + (1 << spec.word_bits)] = True
    return mask


@dataclass(frozen=True, slots=True)
class Fitted:
    """A router and the out-of-fold scores its policy was chosen on."""

    router: Router
    prompt_oof: Array
    answer_oof: Array | None


def _folds_told(progress: Callable[[str], None] | None, what: str, rows: int) -> Callable[[int], None] | None:
    """A fold callback that tells `progress` which scorer's fold is being fitted, on a fit long enough to
    leave a person wondering (LONG_FIT_ROWS)."""
    if progress is None or rows < LONG_FIT_ROWS:
        return None
    return lambda number: progress(f"fitting the {what} scorer on {rows:,} rows: fold {number} of {FOLDS}")


def fit(examples: Examples, target: float, confidence: float, seed: int = 0, spec: FeatureSpec | None = None,
        progress: Callable[[str], None] | None = None) -> Fitted:
    """Fit both scorers and choose the cheapest policy that keeps `target` of the strong quality; `progress`
    hears a line as each fold of each scorer starts, on LONG_FIT_ROWS rows or more."""
    spec = spec or FeatureSpec()
    y = examples.labels
    x = prompt_matrix(examples.prompts, spec)
    # Rows of one prompt share a fold (a file given twice, a question asked in two batches).
    groups = logreg.groups_of(examples.prompts)
    prompt, prompt_oof = fit_scorer(x, y, spec, False, hashed_columns(spec, False), seed, groups,
                                    _folds_told(progress, "prompt", len(y)))
    answer: Scorer | None = None
    answer_oof: Array | None = None
    if examples.answer_scorable():
        have = examples.with_answers()
        prompts = [examples.prompts[i] for i in have]
        texts = [examples.answers[i] or "" for i in have]
        valid = [examples.valid[i] for i in have] if examples.valid is not None else None
        logprobs = [examples.logprobs[i] for i in have] if examples.logprobs is not None else None
        xa = answer_matrix(prompts, texts, spec, valid, logprobs)
        answer, oof = fit_scorer(xa, y[have], spec, True, hashed_columns(spec, True), seed,
                                 logreg.groups_of(prompts), _folds_told(progress, "answer", len(have)))
        answer_oof = np.full(len(y), -np.inf)  # -inf: a validator failed it (policy.py)
        answer_oof[have] = oof
    policy = choose(examples.rows, prompt_oof, answer_oof, target, confidence, seed)
    return Fitted(Router(spec, prompt, answer, policy), prompt_oof, answer_oof)


def decide(router: Router, examples: Examples) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(started at the strong tier, escalated) for each example, as workers would decide."""
    prompt_scores = router.prompt_scores(examples.prompts)
    answer_scores: Array | None = None
    if router.answer is not None:
        # A validator failed it: -inf (it escalates). No text to judge: +inf (the router cannot doubt it).
        answer_scores = np.where(examples.failed(), -np.inf, np.inf)
        have = examples.with_answers()
        if len(have):
            scored = router.answer_scores(
                [examples.prompts[i] for i in have],
                [examples.answers[i] or "" for i in have],
                [examples.valid[i] for i in have] if examples.valid is not None else None,
                [examples.logprobs[i] for i in have] if examples.logprobs is not None else None,
            )
            assert scored is not None
            answer_scores[have] = scored
    return router.policy.decide(prompt_scores, answer_scores)


@dataclass(frozen=True, slots=True)
class Check:
    """A fitted router on labels it did not see: the quality share it kept, the `confidence` upper bound of
    that share over bootstrap resamples of the rows, and its cost (share of all-strong)."""

    rows: int
    share: float
    upper: float
    cost_share: float
    target: float

    @property
    def passed(self) -> bool:
        """It did not miss the target: the held-out share, within its sampling error, reaches it. (A
        router exactly at the target would miss it on half of all held-out sets by chance alone.)"""
        return self.upper >= self.target


def check(router: Router, examples: Examples, target: float, confidence: float = 0.8, seed: int = 0) -> Check:
    """How `router` does on `examples` (labels it was not fitted on)."""
    direct, escalated = decide(router, examples)
    rows = examples.rows
    quality, cost = outcome(rows, direct, escalated)
    strong = float(rows.strong_ok.sum())
    total = float(rows.strong_cost.sum())
    kept = np.where(direct | escalated, rows.strong_ok, rows.cheap_ok)
    weights = np.random.default_rng(seed).poisson(1.0, size=(500, len(kept)))
    shares = (weights @ kept) / np.maximum(weights @ rows.strong_ok, 1e-9)
    upper = float(np.quantile(shares, confidence)) if len(kept) else 1.0
    return Check(len(rows), quality / strong if strong else 1.0, upper, cost / total if total else 1.0, target)


def holdout(prompts: Sequence[str], share: float) -> tuple[list[int], list[int]]:
    """(fit, held out) indexes: a prompt is held out by a hash of its text, so a refit holds out the same ones."""
    fit_rows: list[int] = []
    held: list[int] = []
    for index, prompt in enumerate(prompts):
        value = int.from_bytes(
            hashlib.blake2b(prompt.encode(), digest_size=8, person=b"tierq-holdout").digest(), "little"
        )
        (held if value / 2**64 < share else fit_rows).append(index)
    return fit_rows, held
