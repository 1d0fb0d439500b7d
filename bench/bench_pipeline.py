"""Pipeline overhead: jobs/s through submit -> classify -> tier -> result, against no-op Celery tasks.

    .venv/bin/python bench/bench_pipeline.py [--jobs 20000]

Ours: one worker process serving `classify,hot` (the thread pool, `[worker] threads`), the simulator at 0 ms,
N distinct prompts forced to the hot tier with the cache off (`BatchOptions(force_tier="hot",
use_cache=False)` and `[cache] enabled = false`: every job is a miss and a real call), timed from the
start of `Tierq.submit` until every job is final in Postgres. Anchor: one worker process of a Celery
app with a single no-op task (bench/noop_app.py: same broker, same broker settings, same pool),
timed from the first of N sends until the N-th task has run. The anchor keeps Celery's defaults
(the plain ceiling); the same task with tierq's broker settings is measured too and shown in the note.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
from harness import BenchError, Stack, cli, open_stack, wait_for
from measure import FINAL, count_jobs, span_rate
from noop_app import COUNTER, QUEUE, TASK, make_app
from rows import Row, Target, table
from simconfigs import write_config

from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.config import load_config

TARGET = Target("ratio", 0.5, aim=1.0)
SECONDS_PER_JOB_LIMIT = 0.05  # gives up below 20 jobs/s: something is broken, not slow


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """Both rates, and the simulator's call rate during ours (for the capacity check)."""

    jobs_per_s: float
    noop_per_s: float
    calls_per_s: float
    rows: list[Row]


def records(n: int) -> list[dict[str, str]]:
    """Distinct short prompts, so no two jobs share an answer."""
    return [{"id": f"p-{i}", "prompt": f"Ticket {i}: my parcel {i * 7919 % 100003} has not arrived yet."}
            for i in range(n)]


def tierq_rate(stack: Stack, config: Path, jobs: int) -> tuple[float, float]:
    """Jobs per second through the whole pipeline, and the simulator's calls per second while busy."""
    stack.reset({"latency_ms": 0})
    worker = stack.start_worker("classify,hot", config, "pipeline")
    items = records(jobs)
    with Tierq(stack.settings(config), load_config(config)) as tq:
        tq.engine.connect().close()  # the pool opened outside the timing, as in a long-lived client
        started = time.perf_counter()
        result = tq.submit(items, BatchOptions(force_tier="hot", use_cache=False))
        wait_for(lambda: count_jobs(tq.engine, result.batch_id, FINAL) >= result.accepted,
                 jobs * SECONDS_PER_JOB_LIMIT + 60, f"{jobs} jobs to finish", poll_s=0.05)
        elapsed = time.perf_counter() - started
        succeeded = count_jobs(tq.engine, result.batch_id, ["succeeded"])
    stack.stop_worker(worker)
    if succeeded != jobs:
        raise BenchError(f"only {succeeded} of {jobs} jobs succeeded with a well-behaved simulator")
    return jobs / elapsed, span_rate(stack.sim.stats()["calls"])


def noop_rate(stack: Stack, config: Path, tasks: int, *, tierq_settings: bool = False) -> float:
    """No-op tasks per second, from the first send until the last has run."""
    stack.reset()
    app = "bench.noop_app:tierq_app" if tierq_settings else "bench.noop_app"
    worker = stack.start_worker(QUEUE, config, "noop", app=app)
    sender = make_app(stack.redis_url, load_config(config), tierq_settings=tierq_settings)
    counter = redis.Redis.from_url(stack.redis_url)
    try:
        started = time.perf_counter()
        with sender.producer_or_acquire() as producer:
            for n in range(tasks):
                sender.send_task(TASK, args=[n], task_id=str(uuid.uuid4()), queue=QUEUE, producer=producer)
        wait_for(lambda: int(counter.get(COUNTER) or 0) >= tasks, tasks * SECONDS_PER_JOB_LIMIT + 60,
                 f"{tasks} no-op tasks to run", poll_s=0.02)
        elapsed = time.perf_counter() - started
    finally:
        counter.close()
        sender.close()
    stack.stop_worker(worker)
    return tasks / elapsed


def run(stack: Stack, quick: bool = False, jobs: int | None = None) -> PipelineResult:
    """Measure ours and the anchors, one after the other, on the same services."""
    n = jobs or (4_000 if quick else 20_000)
    config = write_config(stack.workdir / "pipeline.toml", tables={"cache": {"enabled": False}})
    jobs_per_s, calls_per_s = tierq_rate(stack, config, n)
    noop_per_s = noop_rate(stack, config, n)
    note = (f"{n:,} jobs vs {n:,} no-op tasks (Celery defaults), 1 worker process each "
            f"({load_config(config).worker.threads} threads); "
            f"the simulator served {calls_per_s:,.0f} calls/s")
    if not quick:
        tierq_settings = noop_rate(stack, config, n, tierq_settings=True)
        note += f"; no-op tasks with tierq's broker settings (late acks, prefetch 1, events): {tierq_settings:,.0f}/s"
    row = Row("pipeline overhead (0 ms, cache misses)", "jobs/s", jobs_per_s, noop_per_s, TARGET, note=note)
    return PipelineResult(jobs_per_s, noop_per_s, calls_per_s, [row])


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone."""

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args(argv)
    with open_stack() as stack:
        result = run(stack, jobs=args.jobs)
    print(table(result.rows))
    return 0 if all(r.passed for r in result.rows) else 1


if __name__ == "__main__":
    sys.exit(cli(main))
