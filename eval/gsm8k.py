"""Cost against quality on real recorded GSM8K answers: five routing policies, and one run through tierq.

    .venv/bin/python -m eval.gsm8k [--data CSV] [--seed 0] [--seeds 5] [--json FILE] [--pipeline]

Policies, each scored with the recorded correctness labels (never read to decide):
  (a) every question on the cheap model; (b) every question on the strong model; (c) the seed's routing
  rules; (d) the cascade: the cheap model first, escalating answers that fail the final-number
  validator of eval/gsm8k.toml (the workers' own validator code); (e) learned policies, fitted and
  thresholded on a training split only: (e1) a router that sees only the prompt, (e2) the cascade plus
  a scorer that sees the prompt and the cheap answer (as FrugalGPT does). The threshold is the cheapest
  one reaching 95% of (b)'s accuracy on out-of-fold training scores; every number is on the held-out
  test split. `--pipeline` also runs (d) on the test split through real workers and the replaying
  simulator (needs Postgres and redis-server; eval/pipeline.py) and compares its bill with (d)'s.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.features import answer_features, matrix, prompt_features
from eval.gsm8k_data import DEFAULT_DATA, Question, load
from eval.logreg import auc, fit, out_of_fold
from eval.policies import Result, cascade, cheapest_threshold, random_share, route
from tierq.config import Config, load_config
from workers.routing import Router
from workers.validators import Checks

CONFIG = Path(__file__).with_name("gsm8k.toml")
TARGET = 0.95  # of the strong model's accuracy
TRAIN_SHARE = 0.6
FOLDS = 5


def passes(config: Config, questions: Sequence[Question]) -> dict[int, bool]:
    """Whether each cheap answer passes the task type's validator, as the cheap tier's workers decide."""
    check = Checks(config).by_task["gsm8k"]
    return {q.index: check.reason(q.cheap_answer, [{"role": "user", "content": q.prompt}]) is None
            for q in questions}


def split(questions: Sequence[Question], seed: int) -> tuple[list[Question], list[Question]]:
    """A random training and test split."""
    order = np.random.default_rng(seed).permutation(len(questions))
    cut = int(len(questions) * TRAIN_SHARE)
    return [questions[i] for i in order[:cut]], [questions[i] for i in order[cut:]]


Keep = Callable[[Question, float, float], bool]
Run = Callable[[Sequence[Question], Callable[[Question], bool]], Result]


def learned(train: list[Question], test: list[Question], valid: dict[int, bool], seed: int) -> dict[str, Any]:
    """Fit (e1) and (e2) on `train`, choose their thresholds there, and run them on `test`."""
    target = TARGET * route("b", train, lambda q: True).accuracy

    def routed(questions: Sequence[Question], keep: Callable[[Question], bool]) -> Result:
        return route("", questions, lambda q: not keep(q))

    def cascaded(questions: Sequence[Question], keep: Callable[[Question], bool]) -> Result:
        return cascade("", questions, keep)

    def router_keeps(q: Question, score: float, threshold: float) -> bool:
        return score >= threshold

    def scorer_keeps(q: Question, score: float, threshold: float) -> bool:
        return valid[q.index] and score >= threshold

    return {
        "e1": _learn(train, test, lambda q: prompt_features(q.prompt), routed, router_keeps, target, seed),
        "e2": _learn(train, test, lambda q: answer_features(q.prompt, q.cheap_answer), cascaded, scorer_keeps,
                     target, seed),
    }


def _learn(train: list[Question], test: list[Question], featurise: Callable[[Question], list[float]], run: Run,
           keep: Keep, target: float, seed: int) -> dict[str, Any]:
    y_train = np.array([q.cheap_correct for q in train], dtype=np.float64)
    x_train, x_test = matrix([featurise(q) for q in train]), matrix([featurise(q) for q in test])
    scores = out_of_fold(x_train, y_train, FOLDS, seed)
    threshold = cheapest_threshold(train, scores, target, lambda k: run(train, k), keep)
    test_scores = fit(x_train, y_train).predict(x_test)
    by_index = {q.index: float(s) for q, s in zip(test, test_scores, strict=True)}
    return {"threshold": threshold, "auc_train_oof": auc(scores, y_train),
            "auc_test": auc(test_scores, np.array([q.cheap_correct for q in test], dtype=np.float64)),
            "result": run(test, lambda q: keep(q, by_index[q.index], threshold))}


def policies(config: Config, questions: list[Question], valid: dict[int, bool]) -> list[Result]:
    """(a) to (d) on `questions`."""
    router = Router(config)
    return [
        route("(a) all on the cheap model", questions, lambda q: False),
        route("(b) all on the strong model", questions, lambda q: True),
        route("(c) the seed's routing rules", questions, lambda q: router.rule_tier(q.prompt, "gsm8k")[0] > 0),
        cascade("(d) cascade with the final-number validator", questions, lambda q: valid[q.index]),
    ]


def table(results: Sequence[Result]) -> list[str]:
    """A Markdown table of results against (b), which must be the second row."""
    strong = results[1]
    lines = ["| policy | jobs | strong calls | cost (USD) | cost reduction vs (b) | accuracy | accuracy vs (b) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        reduction, share = r.against(strong)
        lines.append(f"| {r.name} | {r.jobs} | {r.strong_calls} ({r.strong_calls / r.jobs:.1%}) | {r.cost:.4f} "
                     f"| {reduction:.1f}% | {r.accuracy:.1%} | {share:.1f}% |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation and print its tables (Markdown)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="gsm8k_responses.csv")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reported train/test split")
    parser.add_argument("--seeds", type=int, default=5, help="splits for the spread of the learned policies")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--pipeline", action="store_true", help="also run (d) through workers and the simulator")
    args = parser.parse_args(argv)
    config = load_config(CONFIG)
    questions = load(args.data, config)
    valid = passes(config, questions)
    train, test = split(questions, args.seed)
    fitted = learned(train, test, valid, args.seed)
    on_test = [*policies(config, test, valid), fitted["e1"]["result"], fitted["e2"]["result"]]
    on_test[4] = _renamed(on_test[4], "(e1) learned router, prompt only")
    on_test[5] = _renamed(on_test[5], "(e2) cascade + scorer of prompt and cheap answer")
    report: dict[str, Any] = {"test": on_test, "all": policies(config, questions, valid), "learned": fitted}
    lines = [f"Test split: {len(test)} of {len(questions)} questions (seed {args.seed}; "
             f"{len(train)} for training and thresholds)", "", *table(on_test), ""]
    lines += [f"All {len(questions)} questions, policies that learn nothing:", "", *table(report["all"]), ""]
    lines += _notes(report, test)
    lines += _spread(questions, args.seeds, valid, report)
    if args.pipeline:
        from eval.pipeline import run_cascade

        lines += run_cascade(CONFIG, args.data, test, on_test[3], report)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(report, default=_jsonable, indent=2))
    return 0


def _renamed(result: Result, name: str) -> Result:
    return Result(name, result.jobs, result.strong_calls, result.cost, result.correct)


def _notes(report: dict[str, Any], test: list[Question]) -> list[str]:
    cheap, strong = report["test"][0], report["test"][1]
    oracle = sum(q.cheap_correct or q.strong_correct for q in test) / len(test)
    e1, e2 = report["learned"]["e1"], report["learned"]["e2"]
    return [
        f"- random routing needs {random_share(cheap, strong, TARGET):.0%} of questions on the strong model "
        f"to reach {TARGET:.0%} of its accuracy (expected value on this split)",
        f"- ROC AUC for predicting the cheap answer's correctness on the test split: prompt only "
        f"{e1['auc_test']:.3f} (out-of-fold on train {e1['auc_train_oof']:.3f}); prompt and cheap answer "
        f"{e2['auc_test']:.3f} ({e2['auc_train_oof']:.3f})",
        f"- thresholds chosen on the training split: (e1) sends a question to the strong model when its score is "
        f"below {e1['threshold']:.3f}; (e2) escalates a valid cheap answer scoring below {e2['threshold']:.3f}",
        f"- an oracle that knew which answers are right would reach {oracle:.1%} (the labels' ceiling, not a policy)",
        "",
    ]


def _spread(questions: list[Question], seeds: int, valid: dict[int, bool], report: dict[str, Any]) -> list[str]:
    """(e2) on `seeds` different splits: how much its numbers move with the split."""
    rows = []
    for seed in range(seeds):
        train, test = split(questions, seed)
        result = learned(train, test, valid, seed)["e2"]["result"]
        rows.append(result.against(route("b", test, lambda q: True)))
    report["e2_over_seeds"] = rows
    reductions, shares = [r for r, _ in rows], [s for _, s in rows]
    return [f"(e2) over {seeds} splits (seeds 0-{seeds - 1}): cost reduction {min(reductions):.1f}% to "
            f"{max(reductions):.1f}% against (b) (mean {sum(reductions) / seeds:.1f}%), accuracy {min(shares):.1f}% "
            f"to {max(shares):.1f}% of (b)'s (mean {sum(shares) / seeds:.1f}%)", ""]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Result):
        return {"name": value.name, "jobs": value.jobs, "strong_calls": value.strong_calls,
                "cost_usd": str(value.cost), "correct": value.correct, "accuracy": value.accuracy}
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
