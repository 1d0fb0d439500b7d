"""The learned router on GSM8K: `route eval` over seeds, and a run through real workers that learns from its audits.

    .venv/bin/python -m eval.routing --seeds 10 [--prompt-only] [--data CSV] [--json FILE]   # route eval, seeds 0..9
    .venv/bin/python -m eval.routing --pipeline [--seed 0] [--json FILE]        # batch 1 audited, fit, batch 2

`--seeds N` runs exactly what `tierq route eval` runs (tierq.router.evaluate) for seeds 0..N-1 and prints
each seed's figures and their spread. `--pipeline` splits the questions into two halves by a hash of the
prompt and the seed; batch 1 (one half) runs through real workers and the replaying simulator with every
cheap answer audited against the strong tier (comparator `number`), `tierq route fit` learns from its
labels, and batch 2 (the other half) runs with the router deciding and no audits. For both batches it
reports accuracy from the dataset's labels (the final answer's model was right or not) and cost against
sending every question of the batch to the strong model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from eval.gsm8k_data import CHEAP, DEFAULT_DATA, STRONG, Question, load
from eval.pipeline import local_stack, replay_toml, start_worker
from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.config import load_config
from tierq.router.evaluate import evaluate, read, split, spread

CONFIG = Path(__file__).with_name("gsm8k.toml")


def seeds(data: Path, count: int, target: float, confidence: float, prompt_only: bool) -> dict[str, Any]:
    """`tierq route eval` for seeds 0..count-1; each seed's report and the spread of each figure."""
    config = load_config(CONFIG)
    labelled = read([data], CHEAP, STRONG, config.price(CHEAP), config.price(STRONG),
                    warn=lambda line: print(line, file=sys.stderr))
    if prompt_only:  # as `route eval --prompt-only`: decision (a) alone, as on data without answer texts
        labelled.cheap_answers[:] = [None] * len(labelled.cheap_answers)
    reports = []
    for seed in range(count):
        report = evaluate(labelled, seed, target, confidence)
        reports.append(report)
        print(
            f"seed {seed}: {report['policy']}, cut {report['cost_reduction_pct']:.1f}% at "
            f"{report['quality_share_pct']:.1f}% of the strong quality "
            f"(random {report['random_cost_reduction_pct']:.1f}%, "
            f"oracle {report['oracle_cost_reduction_pct']:.1f}%), strong answered {report['strong_share_pct']:.1f}%, "
            f"AUC prompt {report['auc']} answer {report['answer_auc']}",
            flush=True,
        )
    figures = spread(reports)
    for name, s in figures.items():
        print(f"{name}: mean {s['mean']}, sd {s['sd']}, min {s['min']}, max {s['max']}")
    return {"target": target, "confidence": confidence, "seeds": reports, "spread": figures}


def _scored(questions: dict[str, Question], results: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch's accuracy from the dataset's labels, and its cost against all-on-the-strong-model."""
    right = 0
    total_cost, all_strong = Decimal(0), Decimal(0)
    by_model = {CHEAP: 0, STRONG: 0}
    for result in results:
        q = questions[result["id"]]
        all_strong += q.strong_cost
        total_cost += Decimal(result["cost_usd"])
        if result["status"] != "succeeded":
            continue
        by_model[result["model"]] = by_model.get(result["model"], 0) + 1
        right += q.cheap_correct if result["model"] == CHEAP else q.strong_correct
    strong_right = sum(questions[r["id"]].strong_correct for r in results)
    cost = float(1 - total_cost / all_strong) * 100 if all_strong else 0.0
    return {"jobs": len(results), "accuracy_pct": round(100 * right / len(results), 2),
            "strong_accuracy_pct": round(100 * strong_right / len(results), 2),
            "quality_share_pct": round(100 * right / strong_right, 2) if strong_right else None,
            "cost_usd": str(total_cost), "all_strong_cost_usd": str(all_strong),
            "cost_reduction_pct": round(cost, 2), "answered_by": by_model}


def pipeline(data: Path, seed: int) -> dict[str, Any]:
    """Batch 1 audited, `tierq route fit`, batch 2 routed; both scored."""
    config = load_config(CONFIG)
    questions = load(data, config)
    first, second = split([q.prompt for q in questions], seed)
    by_id = {str(q.index): q for q in questions}
    report: dict[str, Any] = {"seed": seed}
    with tempfile.TemporaryDirectory(prefix="tierq-routing-") as tmp:
        # The two TOMLs differ in [quality] alone, which the simulator does not read: one simulator serves both.
        tomls = {name: replay_toml(CONFIG, data, Path(tmp) / f"{name}.toml",
                                   f'\n[quality]\naudit_rate = {rate}\ncomparator = "number"\n\n[router]\npoll_s = 1\n')
                 for name, rate in (("batch1", 1.0), ("batch2", 0.0))}
        with local_stack(tomls["batch1"]) as stack:
            for name, ids in (("batch1", first), ("batch2", second)):
                toml = tomls[name]
                start_worker(stack, toml, name)
                with Tierq(stack.settings(toml), load_config(toml)) as tq:
                    batch = tq.submit([{"id": str(questions[i].index), "prompt": questions[i].prompt,
                                        "task_type": "gsm8k"} for i in ids],
                                      BatchOptions(use_cache=False, source="eval/routing.py"))
                    tq.wait(batch.batch_id, timeout=1800, poll_s=0.5)
                    report[name] = _scored(by_id, list(tq.results(batch.batch_id)))
                stack.stop_workers()
                print(f"{name}: {json.dumps(report[name])}", flush=True)
                if name == "batch1":
                    report["fit"] = _fit(stack.env(toml))
    return report


def _fit(env: dict[str, str]) -> Any:
    """`tierq route fit` from batch 1's audit labels, as a user runs it."""
    fitted = subprocess.run([sys.executable, "-m", "producer.cli", "route", "fit", "--task-type", "gsm8k", "--json"],
                            env=env, capture_output=True, text=True, check=False)
    if fitted.returncode != 0:
        raise SystemExit(f"route fit failed: {fitted.stderr.strip()}")
    print(f"fit: {fitted.stdout.strip()}", flush=True)
    return json.loads(fitted.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=0, help="route eval over seeds 0..N-1")
    parser.add_argument("--prompt-only", action="store_true", help="route eval from prompts alone")
    parser.add_argument("--pipeline", action="store_true", help="batch 1 audited, fit, batch 2 routed")
    parser.add_argument("--seed", type=int, default=0, help="the pipeline's split")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=0.8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(
            f"{args.data} not found: the GSM8K recorded answers live in ../shared/datasets/gsm8k-responses; "
            "pass --data FILE"
        )
    out: dict[str, Any] = {}
    if args.seeds:
        out["route_eval"] = seeds(args.data, args.seeds, args.target, args.confidence, args.prompt_only)
    if args.pipeline:
        out["pipeline"] = pipeline(args.data, args.seed)
    if not out:
        parser.error("give --seeds N and/or --pipeline")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
