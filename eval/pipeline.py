"""Policy (d) end to end: the test split through tierq's real workers, answered by the replaying simulator.

Everything is started for the run and removed after it, even on failure (producer/localstack.py): a
redis-server of its own on a free loopback port (so no shared Redis database is touched), a throwaway
database on the local Postgres (TIERQ_EVAL_POSTGRES_URL, default the local server) migrated with Alembic,
the simulator replaying the recorded answers, and one Celery worker on every queue of the TOML.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from eval.gsm8k_data import CHEAP, STRONG, Question
from eval.policies import Result
from producer.api import Tierq
from producer.localstack import LocalStack, open_stack
from producer.services import ServiceUnavailable
from producer.submit import BatchOptions
from tierq.config import load_config
from tierq.queues import queue_names

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("TIERQ_EVAL_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def replay_toml(config_path: Path, data: Path, path: Path, extra: str = "") -> Path:
    """Write `config_path` plus `extra` and a [simulator.replay] table that answers from the recorded `data`."""
    models = f"{{ {json.dumps(CHEAP)} = {json.dumps(CHEAP)}, {json.dumps(STRONG)} = {json.dumps(STRONG)} }}"
    path.write_text(config_path.read_text() + extra + "\n[simulator.replay]\n"
                    f"file = {json.dumps(str(data.resolve()))}\nmodels = {models}\n")
    return path


@contextlib.contextmanager
def local_stack(sim_config: Path) -> Iterator[LocalStack]:
    """A Redis, a database and the simulator of this run's own; SystemExit saying why when one cannot start."""
    try:
        with open_stack(sim_config, POSTGRES_URL, prefix="tierq-eval", root=ROOT) as stack:
            yield stack
    except ServiceUnavailable as exc:
        raise SystemExit(f"the pipeline run needs a service that is missing: {exc}") from None


def start_worker(stack: LocalStack, config_path: Path, name: str = "eval") -> None:
    """One Celery worker on every queue of `config_path`; the stack stops it on the way out."""
    stack.start_worker(queue_names(load_config(config_path)), config_path, name)


def run_cascade(
    config_path: Path, data: Path, test: list[Question], offline: Result, report: dict[str, Any]
) -> list[str]:
    """Submit the test split, wait, score what came back, and compare it with the offline policy (d)."""
    with tempfile.TemporaryDirectory(prefix="tierq-eval-") as folder:
        toml = replay_toml(config_path, data, Path(folder) / "gsm8k.toml")
        with local_stack(toml) as stack:
            start_worker(stack, toml)
            with Tierq(stack.settings(toml), load_config(toml)) as tq:
                started = time.monotonic()
                # --max-tier cheap: every job starts at the cheap tier, whatever the routing rules say.
                batch = tq.submit([{"id": str(q.index), "prompt": q.prompt, "task_type": "gsm8k"} for q in test],
                                  BatchOptions(max_tier="cheap", use_cache=False, source="eval/gsm8k.py"))
                tq.wait(batch.batch_id, timeout=900, poll_s=0.5)
                seconds = time.monotonic() - started
                results = list(tq.results(batch.batch_id))
                bill = tq.report(batch.batch_id).as_dict()
    return _compare(test, results, bill, offline, seconds, report)


def _compare(test: list[Question], results: list[dict[str, Any]], bill: dict[str, Any], offline: Result,
             seconds: float, report: dict[str, Any]) -> list[str]:
    by_id = {str(q.index): q for q in test}
    correct = strong = replayed = 0
    for r in results:
        q = by_id[r["id"]]
        strong += r["model"] == STRONG
        correct += (q.cheap_correct if r["model"] == CHEAP else q.strong_correct) if r["status"] == "succeeded" else 0
        replayed += r["content"] == (q.cheap_answer if r["model"] == CHEAP else q.strong_answer)
    cost = Decimal(bill["totals"]["cost_usd"])
    same = (cost, strong, correct) == (offline.cost, offline.strong_calls, offline.correct)
    report["pipeline"] = {"jobs": len(results), "strong": strong, "correct": correct, "cost_usd": str(cost),
                          "seconds": seconds, "matches_offline": same}
    return [
        f"Pipeline run of (d) on the test split: {len(results)} jobs through a real worker and the replaying "
        f"simulator in {seconds:.1f} s; {replayed} answers are the recorded texts; {strong} answered by the strong "
        f"model, {correct} right ({correct / len(results):.1%}); billed ${cost:.6f} against ${offline.cost:.6f} "
        f"offline: {'identical' if same else 'DIFFERENT'} cost, escalations and accuracy.",
        "",
    ]
