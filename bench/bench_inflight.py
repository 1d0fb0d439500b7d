"""In-flight concurrency: calls/s of tier worker processes at 1 s latency, against a raw asyncio client.

    .venv/bin/python bench/bench_inflight.py [--calls 3200] [--jitter] [--threads 32]

The simulator answers every call after exactly 1 s. Anchor: bench/anchor_client.py, one process with
`openai.AsyncOpenAI` over aiohttp and a semaphore of `[worker] open_calls` (800: the calls one worker
process keeps open, over its `[worker] threads` task threads), making N calls. Ours: the same N jobs
submitted forced to the hot tier and classified first by a classify worker that is then stopped; the hot
worker processes, already started on an idle queue, are told to consume "hot" together (Celery's
`add_consumer`), so that none starts ahead. Both steady rates come from the simulator's finish times,
counted after the first wave (measure.steady_rate); two worker processes get 2N jobs and are compared with
one. The end-to-end rows are what a user waits for: N over the time from the start (the anchor's first call;
the workers told to consume) to the last call's finish, ramp-up and tail included.
`--jitter` adds a row at 0.5-1.5 s latency (mean 1 s), where a chunk waits for its slowest call;
`--threads`, `--open-calls` and `--flush-ms` override the workers' `[worker]` settings (the anchor's semaphore
follows the calls a worker can hold open). `--threads 4 --open-calls 100000 --flush-ms 1e9` is the chunk
barrier as it was before issue 17 at 200 open calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import BenchError, Stack, cli, open_stack, wait_for
from measure import FINAL, count_jobs, finish_anchor, start_anchor, steady_rate
from rows import Row, Target, table
from simconfigs import write_config

from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.config import Config, load_config

FIXED = {"latency_ms": 1000}
JITTERED = {"latency_ms": 500, "latency_jitter_ms": 1000}
# The hot workers wait on a queue the config defines (workers refuse others) and that this run never
# fills: the jobs are forced to the hot tier and the simulator fails no call, so nothing escalates.
IDLE_QUEUE = "cold"


@dataclass(frozen=True, slots=True)
class Run:
    """One measured run: steady and end-to-end calls/s, and the simulator's peak of open calls."""

    rate: float
    max_in_flight: int
    end_to_end: float


@dataclass(frozen=True, slots=True)
class InflightResult:
    """The rows, and the highest call rate the simulator had to serve."""

    rows: list[Row]
    peak_calls_per_s: float


def anchor(stack: Stack, calls: int, concurrency: int, behaviour: dict[str, Any]) -> Run:
    """The raw asyncio client's steady rate."""
    stack.reset(behaviour)
    result = finish_anchor(start_anchor(stack.sim.base_url, calls, concurrency), timeout_s=calls / 50 + 60)
    stats = stack.sim.stats()
    return Run(steady_rate(stats["calls"], concurrency), stats["max_in_flight"], calls / result["seconds"])


def workers(stack: Stack, config: Path, processes: int, jobs: int, behaviour: dict[str, Any]) -> Run:
    """`processes` hot workers answering `jobs` pre-classified jobs together."""
    stack.reset(behaviour)
    threads = load_config(config).worker.threads
    hot = [stack.start_worker(IDLE_QUEUE, config, f"hot{n}", args=["-c", str(threads)]) for n in range(processes)]
    router = stack.start_worker("classify", config, "classify")
    with Tierq(stack.settings(config), load_config(config)) as tq:
        items = [{"id": f"f-{i}", "prompt": f"Ticket {i}: where is parcel {i * 7919 % 100003}?"} for i in range(jobs)]
        batch = tq.submit(items, BatchOptions(force_tier="hot", use_cache=False)).batch_id
        wait_for(lambda: count_jobs(tq.engine, batch, ["queued"]) >= jobs, 120, f"{jobs} jobs to be classified")
        stack.stop_worker(router)
        started = time.time()
        replies = stack.control.control.add_consumer("hot", destination=[w.nodename for w in hot], reply=True,
                                                     timeout=5)
        if len(replies) != processes:
            raise BenchError(f"only {len(replies)} of {processes} workers took the hot queue: {replies}")
        wait_for(lambda: count_jobs(tq.engine, batch, FINAL) >= jobs, jobs / 20 + 60, f"{jobs} jobs to finish",
                 poll_s=0.2)
        succeeded = count_jobs(tq.engine, batch, ["succeeded"])
    for worker in hot:
        stack.stop_worker(worker)
    if succeeded != jobs:
        raise BenchError(f"only {succeeded} of {jobs} jobs succeeded with a well-behaved simulator")
    stats = stack.sim.stats()
    last = max(float(c["at"]) for c in stats["calls"])
    return Run(steady_rate(stats["calls"], processes * open_slots(load_config(config))),
               stats["max_in_flight"], jobs / (last - started))


def open_slots(config: Config) -> int:
    """The calls one worker process keeps open: its limit, or fewer when its threads' chunks hold fewer jobs."""
    return min(config.worker.open_calls, config.worker.threads * config.worker.tier_chunk)


def run(stack: Stack, quick: bool = False, calls: int | None = None, jitter: bool | None = None,
        worker: dict[str, Any] | None = None) -> InflightResult:
    """One worker against the anchor, and two workers against one; `worker` overrides `[worker]` settings."""
    config = write_config(stack.workdir / "inflight.toml",
                          tables={"cache": {"enabled": False}, "worker": worker or {}})
    concurrency = open_slots(load_config(config))
    n = calls or (concurrency * 4 if quick else concurrency * 8)
    raw = anchor(stack, n, concurrency, FIXED)
    one = workers(stack, config, 1, n, FIXED)
    two = workers(stack, config, 2, 2 * n, FIXED)
    rows = [
        Row("in-flight, 1 worker process (1 s)", "calls/s", one.rate, raw.rate, Target("ratio", 0.8),
            note=f"{n:,} calls; peak open calls: worker {one.max_in_flight}, anchor {raw.max_in_flight} "
                 f"(semaphore {concurrency}; {load_config(config).worker.threads} threads)"),
        Row("in-flight, 2 worker processes vs 1", "calls/s", two.rate, one.rate, Target("ratio", 1.6),
            note=f"{2 * n:,} calls; peak open calls {two.max_in_flight}"),
        Row("in-flight, 1 worker (1 s), end to end", "calls/s", one.end_to_end, raw.end_to_end, Target("ratio", 0.9),
            note="from the start to the last finish, first wave and tail included"),
        Row("in-flight, 2 workers vs 1, end to end", "calls/s", two.end_to_end, one.end_to_end, Target("ratio", 1.7)),
    ]
    if jitter if jitter is not None else not quick:
        raw_j = anchor(stack, n, concurrency, JITTERED)
        one_j = workers(stack, config, 1, n, JITTERED)
        rows.append(Row("in-flight, 1 worker (0.5-1.5 s)", "calls/s", one_j.rate, raw_j.rate, Target("ratio", 0.8),
                        note="latency uniform in 0.5-1.5 s (mean 1 s): a chunk's thread waits for its slowest call, "
                             "its answered calls' slots go to other chunks"))
        rows.append(Row("in-flight, 1 worker (0.5-1.5 s), end to end", "calls/s", one_j.end_to_end, raw_j.end_to_end,
                        Target("ratio", 0.85)))
    return InflightResult(rows, max(raw.rate, one.rate, two.rate))


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=None, help="calls per worker process (default 8 x open_calls)")
    parser.add_argument("--jitter", action="store_true", help="add the 0.5-1.5 s latency row")
    parser.add_argument("--threads", type=int, help="task threads per worker (default: [worker] threads)")
    parser.add_argument("--open-calls", type=int, help="open calls per worker (default: [worker] open_calls)")
    parser.add_argument("--flush-ms", type=float, help="default: [worker] flush_ms")
    args = parser.parse_args(argv)
    worker = {k: v for k, v in (("threads", args.threads), ("open_calls", args.open_calls),
                                ("flush_ms", args.flush_ms)) if v is not None}
    with open_stack() as stack:
        result = run(stack, calls=args.calls, jitter=args.jitter, worker=worker)
    print(table(result.rows))
    return 0 if all(r.passed for r in result.rows) else 1


if __name__ == "__main__":
    sys.exit(cli(main))
