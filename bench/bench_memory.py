"""Memory: resident memory of one tier worker process holding 750+ calls open.

    .venv/bin/python bench/bench_memory.py

The simulator answers after 5 s; the worker runs with its defaults (`[worker] threads`, `tier_chunk`
and `open_calls`: 800 calls open; a temporary copy of sim.toml, with the hot tier's timeout raised to
30 s so that no call times out). 2 x 800 jobs are submitted forced to the hot tier (a separate classify
worker routes them and is not measured), so the worker also holds the claimed jobs that wait for a slot.
VmRSS of the worker (and of any child process; the thread
pool has none) is sampled from /proc while it runs; the figure is the largest sample taken while the
simulator counted at least 750 open calls. For scale, the raw asyncio client (anchor_client.py)
holding the same 800 calls is sampled the same way; the target is on our figure alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness import BenchError, Stack, cli, open_stack, wait_for
from measure import FINAL, children, count_jobs, finish_anchor, rss_mb, start_anchor
from rows import Row, Target, table
from simconfigs import write_config

from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.config import load_config

OPEN = 800  # [worker] open_calls, the default
NEEDED = 750
BEHAVIOUR = {"latency_ms": 5000}
LIMIT_MB = 250


@dataclass(frozen=True, slots=True)
class Peak:
    """The largest resident memory seen with at least NEEDED calls open, and the most calls seen open."""

    rss_mb: float
    open_calls: int


def sample(stack: Stack, pids: list[int], done: Callable[[], bool], timeout_s: float) -> Peak:
    """Sample the processes' memory and the simulator's open calls until `done()` is true."""
    peak, most = 0.0, 0
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise BenchError(f"memory run did not finish within {timeout_s:.0f} s")
        open_calls = stack.sim.stats(calls=False)["in_flight"]
        rss = sum(rss_mb(pid)[0] for pid in pids + [c for p in pids for c in children(p)])
        most = max(most, open_calls)
        if open_calls >= NEEDED:
            peak = max(peak, rss)
        time.sleep(0.25)
    return Peak(peak, most)


def worker_peak(stack: Stack, jobs: int) -> tuple[Peak, float]:
    """The hot worker's peak under load, and its memory when idle just before."""
    config = write_config(stack.workdir / "memory.toml",
                          tables={"cache": {"enabled": False}, "worker": {"open_calls": OPEN, "classify_chunk": OPEN}},
                          tiers={"hot": {"timeout_s": 30}})
    stack.reset(BEHAVIOUR)
    hot = stack.start_worker("hot", config, "memory")
    router = stack.start_worker("classify", config, "classify")
    idle = rss_mb(hot.pid)[0]
    with Tierq(stack.settings(config), load_config(config)) as tq:
        items = [
            {"id": f"m-{i}", "prompt": f"Ticket {i}: please refund order {i * 7919 % 100003}."} for i in range(jobs)
        ]
        batch = tq.submit(items, BatchOptions(force_tier="hot", use_cache=False)).batch_id
        peak = sample(stack, [hot.pid], lambda: count_jobs(tq.engine, batch, FINAL) >= jobs, 120)
    stack.stop_worker(router)
    stack.stop_worker(hot)
    return peak, idle


def anchor_peak(stack: Stack) -> Peak:
    """The raw asyncio client holding the same number of calls open."""
    stack.reset(BEHAVIOUR)
    proc = start_anchor(stack.sim.base_url, 2 * OPEN, OPEN, tag="memory")
    wait_for(lambda: stack.sim.stats(calls=False)["in_flight"] > 0 or proc.poll() is not None, 30,
             "the anchor's first call")
    peak = sample(stack, [proc.pid], lambda: proc.poll() is not None, 120)
    finish_anchor(proc, 10)
    return peak


def run(stack: Stack, quick: bool = False) -> list[Row]:
    """The worker's peak memory with 800 calls open, beside the raw client's."""
    ours, idle = worker_peak(stack, 2 * OPEN)
    raw = anchor_peak(stack)
    if ours.open_calls < NEEDED:
        raise BenchError(f"the worker never held {NEEDED} calls open (at most {ours.open_calls})")
    return [Row(f"memory, 1 worker with {NEEDED}+ calls open", "MB", ours.rss_mb, raw.rss_mb, Target("max", LIMIT_MB),
                note=f"VmRSS with {ours.open_calls} calls open at most (idle before: {idle:.0f} MB); "
                     f"anchor: the raw asyncio client with {raw.open_calls} open")]


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    with open_stack() as stack:
        rows = run(stack)
    print(table(rows))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(cli(main))
