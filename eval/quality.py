"""Does tierq's measured quality find the truth? GSM8K through real workers, with audits on.

    .venv/bin/python -m eval.quality [--data CSV] [--runs 5] [--rate 0.1] [--json FILE]
    .venv/bin/python -m eval.quality --offline 2000     # the same draw without workers, many seeds

Every run submits all 1,319 questions as one batch (cheap tier first, the final-number validator of
eval/gsm8k.toml escalating what it rejects) with `[quality] audit_rate`, comparator `number` and the
strong tier as the reference, answered by the replaying simulator from the recorded Mixtral and GPT-4
texts. Each run starts its job ids elsewhere (its seed), so it audits a new sample. For each run it reports the
cheap tier's measured agreement with its Wilson 95% interval, and whether the interval holds the true
agreement: the same comparator applied to every question the cheap tier answered (computed from the
dataset, not from the run), and the same for the bill's batch estimate against the comparator applied to
every final answer of the run. It also checks that the bill's audit cost equals the audit calls' rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from eval.gsm8k_data import CHEAP, DEFAULT_DATA, STRONG, load
from eval.pipeline import local_stack, replay_toml, start_worker
from producer.api import Tierq
from producer.bill.quality import wilson
from producer.submit import BatchOptions
from tierq.config import load_config
from tierq.quality import ComparatorConfig
from workers.audits import draw
from workers.comparators import comparator
from workers.validators import Checks

CONFIG = Path(__file__).with_name("gsm8k.toml")


def verdicts(config_path: Path, data: Path) -> list[tuple[int, bool | None]]:
    """(question index, does the cheap answer agree with the strong one) for every question the cheap tier
    answers past the validator; None where the comparator cannot tell."""
    config = load_config(config_path)
    check = Checks(config).by_task["gsm8k"]
    compare = comparator(ComparatorConfig(kind="number"))
    return [(i, compare(q.cheap_answer, q.strong_answer, [])) for i, q in enumerate(load(data, config))
            if check.reason(q.cheap_answer, []) is None]


def truth(config_path: Path, data: Path) -> tuple[float, int]:
    """The true agreement of the cheap tier's answers with the strong model's, and how many it answers."""
    found = verdicts(config_path, data)
    decided = [v for _, v in found if v is not None]
    return sum(decided) / len(decided), len(found)


def offline(config_path: Path, data: Path, rates: list[float], seeds: int) -> None:
    """Without workers: the samples the audit draw would take for `seeds` batches (job ids placed as in
    `one_run`), and how often each rate's Wilson interval holds the true agreement."""
    found = [(i, v) for i, v in verdicts(config_path, data) if v is not None]
    true_agreement = sum(v for _, v in found) / len(found)
    for rate in rates:
        estimates, inside = [], 0
        for seed in range(seeds):
            start = seed * 1_000_003 + 1
            sample = [v for i, v in found if draw(start + 1 + i) < rate]
            low, high = wilson(sum(sample), len(sample))
            inside += low <= true_agreement <= high
            estimates.append(sum(sample) / len(sample))
        print(f"rate {rate}: {seeds} batches, mean estimate {statistics.mean(estimates):.4f} "
              f"(truth {true_agreement:.4f}), spread (sd) {statistics.pstdev(estimates):.4f}, "
              f"interval holds the truth in {inside / seeds:.1%}")


def one_run(toml: Path, data: Path, rate: float, seed: int) -> dict[str, Any]:
    """Submit every question once with audits on; the cheap stratum's estimate and the audit bill. The job
    ids start at `seed` x 1,000,003 + 1, as if other batches had come first, so each seed audits another
    sample (a job's audit is drawn from its id)."""
    config = load_config(toml)
    questions = load(data, config)
    with local_stack(toml) as stack:
        start_worker(stack, toml)
        with Tierq(stack.settings(toml), config) as tq:
            with tq.engine.begin() as conn:
                conn.execute(text("SELECT setval('jobs_id_seq', :start)"), {"start": seed * 1_000_003 + 1})
            started = time.monotonic()
            batch = tq.submit([{"id": str(q.index), "prompt": q.prompt, "task_type": "gsm8k"} for q in questions],
                              BatchOptions(max_tier="cheap", use_cache=False, source="eval/quality.py"))
            tq.wait(batch.batch_id, timeout=1200, poll_s=0.5)
            quality = tq.report(batch.batch_id).as_dict()["quality"]
            with tq.engine.connect() as conn:
                rows = conn.execute(text("SELECT COALESCE(sum(cost_usd), 0) FROM calls WHERE outcome IN "
                                         "('audit', 'judge')")).scalar_one()
            seconds = time.monotonic() - started
            final = batch_truth(questions, list(tq.results(batch.batch_id)))
    cheap = next(s for s in quality["strata"] if s["tier"] == "cheap" and s["source"] == "answer")
    return {"audited": cheap["audited"], "agree": cheap["agree"], "agreement": cheap["agreement"],
            "interval": cheap["interval"], "audit_cost_usd": quality["audit_cost_usd"],
            "audit_rows_usd": str(Decimal(rows)), "batch_estimate": quality["estimated_agreement"],
            "batch_interval": quality["interval"], "batch_truth": final, "seconds": round(seconds, 1), "rate": rate}


def batch_truth(questions: list[Any], results: list[dict[str, Any]]) -> float:
    """The true share of the batch's final answers that agree with the strong model's (what the bill's
    estimate estimates): the comparator on each succeeded job's final text, where it can decide."""
    compare = comparator(ComparatorConfig(kind="number"))
    by_id = {str(q.index): q for q in questions}
    verdicts = [compare(r["content"], by_id[r["id"]].strong_answer, []) for r in results
                if r["status"] == "succeeded"]
    decided = [v for v in verdicts if v is not None]
    return round(sum(decided) / len(decided), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--offline", type=int, metavar="SEEDS",
                        help="no workers: the coverage of the audit draw over SEEDS batches at 2%%, 5%% and 10%%")
    args = parser.parse_args()
    if args.offline:
        offline(CONFIG, args.data, [0.02, 0.05, 0.1], args.offline)
        return 0
    true_agreement, answered = truth(CONFIG, args.data)
    print(f"true agreement of the cheap tier's answers with {STRONG} (comparator number): {true_agreement:.4f} "
          f"over the {answered} questions {CHEAP} answers past the validator")
    runs = []
    with tempfile.TemporaryDirectory(prefix="tierq-quality-") as tmp:
        toml = replay_toml(CONFIG, args.data, Path(tmp) / "gsm8k-quality.toml",
                           f'\n[quality]\naudit_rate = {args.rate}\ncomparator = "number"\n')
        for n in range(args.runs):
            run = one_run(toml, args.data, args.rate, n)
            low, high = run["interval"]
            run["holds_truth"] = low <= true_agreement <= high
            run["batch_holds_truth"] = run["batch_interval"][0] <= run["batch_truth"] <= run["batch_interval"][1]
            run["audit_cost_matches_rows"] = Decimal(run["audit_cost_usd"]) == Decimal(run["audit_rows_usd"])
            runs.append(run)
            print(f"run {n + 1}: {run['agree']}/{run['audited']} audited cheap answers agree "
                  f"({run['agreement']:.4f}, 95% interval {low:.4f}-{high:.4f}): truth "
                  f"{'inside' if run['holds_truth'] else 'OUTSIDE'}; audit cost ${run['audit_cost_usd']} "
                  f"{'=' if run['audit_cost_matches_rows'] else '!='} rows ${run['audit_rows_usd']}; "
                  f"batch estimate {run['batch_estimate']} {run['batch_interval']} vs true {run['batch_truth']} "
                  f"({'inside' if run['batch_holds_truth'] else 'OUTSIDE'}); {run['seconds']} s", flush=True)
    inside = sum(r["holds_truth"] for r in runs)
    print(f"{inside} of {len(runs)} intervals hold the true agreement {true_agreement:.4f}; "
          f"{sum(r['batch_holds_truth'] for r in runs)} of {len(runs)} batch intervals hold the batch's true share")
    if args.json:
        args.json.write_text(json.dumps({"true_agreement": true_agreement, "answered_by_cheap": answered,
                                         "runs": runs}, indent=2))
    return 0 if all(r["audit_cost_matches_rows"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
