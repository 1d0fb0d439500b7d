"""Threshold rules compared over two disjoint sets of `route eval` seeds (issue 15's worst-seed question).

    .venv/bin/python -m eval.thresholds [--seeds 0-9 10-29] [--data CSV] [--json FILE]   # about 10 minutes

Each seed is split and fitted once, exactly as `tierq route eval` does (tierq.router.evaluate.split and
tierq.router.fit.fit); every rule then picks thresholds from the same out-of-fold training scores and is
scored on the same test half, with and without the answer scorer (`--prompt-only`). Figures per seed set:
mean, sd and min of the cost cut and of the quality share, and how many seeds fall below 93%. A rule
that helps on the first seed set only was tuned to it; the second set is there to show that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.gsm8k_data import CHEAP, DEFAULT_DATA, STRONG
from eval.threshold_rules import bagged, bound, choose_with, cross_fitted_confidence
from tierq.config import load_config
from tierq.router import logreg
from tierq.router.design import Design
from tierq.router.evaluate import Labelled, read, split
from tierq.router.features import answer_matrix, prompt_matrix
from tierq.router.fit import fit
from tierq.router.model import FOLDS, Scorer
from tierq.router.policy import Array, Policy, Rows, choose, outcome

CONFIG = Path(__file__).with_name("gsm8k.toml")
TARGET = 0.95
FLOOR = 93.0  # the "no seed below"
EXTRA_FOLD_SEEDS = (1000, 2000)  # out-of-fold scores repeated with other folds, for the averaged rule


@dataclass(frozen=True, slots=True)
class Seed:
    """One split: training rows and their out-of-fold scores, test rows and the fitted scorers' scores."""

    seed: int
    train: Rows
    test: Rows
    prompt_oof: Array
    answer_oof: Array
    prompt_oof_mean: Array  # averaged over the fold seeds
    answer_oof_mean: Array
    prompt_test: Array
    answer_test: Array


def _repeat_oof(scorer: Scorer, x: Design, y: Array, seed: int, first: Array) -> Array:
    z, _ = x.scaled(scorer.scale, scorer.shift).compact()
    repeats = [first] + [logreg.out_of_fold(z, y, FOLDS, seed + offset, scorer.l2) for offset in EXTRA_FOLD_SEEDS]
    return np.asarray(np.mean(repeats, axis=0), dtype=np.float64)


def prepare(data: Labelled, seed: int) -> Seed:
    """Fit seed `seed` as `route eval` does and keep every score the rules need."""
    train, test = split(data.prompts, seed)
    examples, held = data.examples(train), data.examples(test)
    fitted = fit(examples, TARGET, 0.8, seed)
    router = fitted.router
    assert router.answer is not None and fitted.answer_oof is not None, "the file needs the cheap model's answers"
    texts = [a or "" for a in examples.answers]
    y = examples.labels
    prompt_mean = _repeat_oof(router.prompt, prompt_matrix(examples.prompts, router.spec), y, seed, fitted.prompt_oof)
    answer_mean = _repeat_oof(router.answer, answer_matrix(examples.prompts, texts, router.spec), y, seed,
                              fitted.answer_oof)
    answer_test = router.answer_scores(held.prompts, [a or "" for a in held.answers])
    assert answer_test is not None
    return Seed(seed, examples.rows, held.rows, fitted.prompt_oof, fitted.answer_oof, prompt_mean, answer_mean,
                router.prompt_scores(held.prompts), answer_test)


Rule = Callable[[Seed, bool], Policy]  # (seed, prompt only) -> policy


def product(confidence: float) -> Rule:
    """tierq.router.policy.choose at `confidence` (0.8 is the product's default)."""
    return lambda s, po: choose(s.train, s.prompt_oof, None if po else s.answer_oof, TARGET, confidence, s.seed)


def averaged(confidence: float) -> Rule:
    """`choose` on out-of-fold scores averaged over three fold assignments."""
    return lambda s, po: choose(s.train, s.prompt_oof_mean, None if po else s.answer_oof_mean, TARGET, confidence,
                                s.seed)


def variant(confidence: float, **options: Any) -> Rule:
    """A rule of threshold_rules.py."""
    pick = options.pop("pick", bound())
    return lambda s, po: choose_with(s.train, s.prompt_oof, None if po else s.answer_oof, TARGET, confidence, pick,
                                     s.seed, **options)


def cross_fitted(s: Seed, po: bool) -> Policy:
    """`choose` at the confidence that kept the target on held-out halves of the training rows 8 times in 10."""
    answer = None if po else s.answer_oof
    level = cross_fitted_confidence(s.train, s.prompt_oof, answer, TARGET, 0.8, s.seed)
    return choose(s.train, s.prompt_oof, answer, TARGET, level, s.seed)


RULES: dict[str, Rule] = {
    **{f"product, confidence {c}": product(c) for c in (0.7, 0.8, 0.85, 0.9, 0.95, 0.975)},
    "1,000 resamples, 0.8": variant(0.8, resamples=1000),
    "prediction bound (deviations x sqrt 2), 0.8": variant(0.8, pick=bound(widen=2**0.5)),
    "last crossing, 0.8": variant(0.8, pick=bound(last=True)),
    "last crossing, 0.9": variant(0.9, pick=bound(last=True)),
    "bagged k, 0.8": variant(0.8, pick=bagged),
    "bagged k, 0.9": variant(0.9, pick=bagged),
    "averaged OOF (3 fold seeds), 0.8": averaged(0.8),
    "averaged OOF (3 fold seeds), 0.9": averaged(0.9),
    **{f"isotonic gains, {c}": variant(c, isotonic=True, resamples=100) for c in (0.8, 0.9, 0.95, 0.975)},
    "cross-fitted confidence": cross_fitted,
}


def on_test(s: Seed, policy: Policy, po: bool) -> tuple[float, float]:
    """(cost cut, quality share) in % on the test half."""
    direct, escalated = policy.decide(s.prompt_test, None if po else s.answer_test)
    quality, cost = outcome(s.test, direct, escalated)
    return 100 * (1 - cost / float(s.test.strong_cost.sum())), 100 * quality / float(s.test.strong_ok.sum())


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sd, min."""
    return {"mean": round(statistics.mean(values), 1), "sd": round(statistics.stdev(values), 1) if len(values) > 1
            else 0.0, "min": round(min(values), 1)}


def diagnose(prepared: dict[int, Seed]) -> dict[str, float]:
    """Is the product's rule optimistic, or do the halves differ? Over every prepared seed, with the answer scorer."""
    gaps, shifts, auc_oof, auc_test = [], [], [], []
    for s in prepared.values():
        policy = product(0.8)(s, False)
        share = on_test(s, policy, False)[1]
        gaps.append(share - 100 * policy.share)
        # How much better the cheap tier alone does on the training half than on the test half (share points).
        alone = [100 * float(r.cheap_ok.sum() / r.strong_ok.sum()) for r in (s.train, s.test)]
        shifts.append(alone[0] - alone[1])
        if share < FLOOR:
            print(f"seed {s.seed}: {share:.1f}% on test, chosen at {100 * policy.share:.1f}% on training; the cheap "
                  f"model alone keeps {alone[0]:.1f}% on training, {alone[1]:.1f}% on test", flush=True)
        auc_oof.append(logreg.auc(s.answer_oof, (s.train.cheap_ok >= s.train.strong_ok).astype(np.float64)))
        auc_test.append(logreg.auc(s.answer_test, (s.test.cheap_ok >= s.test.strong_ok).astype(np.float64)))
    if len(gaps) < 3:
        return {}
    out = {"test_minus_train_share_mean": statistics.mean(gaps), "test_minus_train_share_sd": statistics.stdev(gaps),
           "correlation_with_halves_difference": float(np.corrcoef(gaps, shifts)[0, 1]),
           "answer_auc_oof": statistics.mean(auc_oof), "answer_auc_test": statistics.mean(auc_test)}
    print(", ".join(f"{k} {v:.3f}" for k, v in out.items()), flush=True)
    return out


def seed_range(text: str) -> range:
    """`10-29` or `7`."""
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", nargs="+", type=seed_range, default=[range(0, 10), range(10, 30)])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found: pass --data FILE (RouteLLM format with the models' responses)")
    config = load_config(CONFIG)
    data = read([args.data], CHEAP, STRONG, config.price(CHEAP), config.price(STRONG),
                warn=lambda line: print(line, file=sys.stderr))
    prepared: dict[int, Seed] = {}
    for seeds in args.seeds:
        for seed in seeds:
            if seed not in prepared:
                prepared[seed] = prepare(data, seed)
                print(f"fitted seed {seed}", file=sys.stderr, flush=True)
    report: dict[str, Any] = {"diagnosis": diagnose(prepared)}
    table: list[dict[str, Any]] = []
    for po in (False, True):
        for name, rule in RULES.items():
            for seeds in args.seeds:
                results = [on_test(prepared[s], rule(prepared[s], po), po) for s in seeds]
                cut, share = spread([r[0] for r in results]), spread([r[1] for r in results])
                below = sum(r[1] < FLOOR for r in results)
                table.append({"rule": name, "prompt_only": po, "seeds": f"{seeds.start}-{seeds.stop - 1}",
                              "cut_pct": cut, "share_pct": share, "below_93": below})
                print(f"| {'prompt only' if po else 'cascade'} | {name} | {seeds.start}-{seeds.stop - 1} | "
                      f"{cut['mean']} / {cut['sd']} / {cut['min']} | {share['mean']} / {share['sd']} / {share['min']} "
                      f"| {below} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({**report, "rules": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
