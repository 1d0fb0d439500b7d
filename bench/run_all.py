"""Every throughput benchmark, each against its anchor in the same run, and one table of the results.

    .venv/bin/python bench/run_all.py [--quick] [--only pipeline inflight costrows memory startup classify] [--markdown]
    make bench

Needs the local Postgres (a throwaway database is created and dropped) and Redis (database 15 is
flushed before and after); starts the simulated provider and the Celery workers itself and stops
them at the end, also on failure or Ctrl-C. The full run takes about 5 minutes on 2 cores,
`--quick` (smaller runs, no diagnostics) about 2. Not part of the test suite: the figures depend
on the machine and on what else runs on it, which is why each benchmark has an anchor measured
alongside. Exit status 1 when a target is missed or a benchmark stopped without a result, 2 when the run
could not start (another run holds database 15, a service is down).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import bench_classify
import bench_costrows
import bench_inflight
import bench_memory
import bench_pipeline
import bench_simulator
import bench_startup
from harness import POSTGRES_URL, REDIS_URL, BenchError, Stack, cli, open_stack
from rows import Row, markdown, table

from producer.services import ServiceUnavailable

BENCHMARKS = ("pipeline", "inflight", "costrows", "memory", "startup", "classify")


class TimeLimit(Exception):
    """The whole run took longer than --time-limit; what was started is cleaned up on the way out."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeLimit in the main thread after `seconds`."""
    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeLimit(f"the benchmarks did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def machine() -> str:
    """Cores, memory, CPU, Python and load, for the record."""
    mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2
    cpus = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")]
    cpu = cpus[0] if cpus else "unknown CPU"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GB, Python {platform.python_version()}, "
            f"load average at start {load}")


def run_one(name: str, stack: Stack, quick: bool, rows: list[Row], details: list[str]) -> float:
    """Run benchmark `name`, add its rows; the busiest call rate it made the simulator serve."""
    if name == "pipeline":
        pipeline = bench_pipeline.run(stack, quick)
        rows += pipeline.rows
        return pipeline.calls_per_s
    if name == "inflight":
        inflight = bench_inflight.run(stack, quick)
        rows += inflight.rows
        return inflight.peak_calls_per_s
    if name == "costrows":
        costrows = bench_costrows.run(stack, quick)
        rows += costrows.rows
        details += costrows.details
        return 0.0
    if name == "startup":
        rows += bench_startup.run(stack, 5 if quick else 15)
        return 0.0
    if name == "classify":
        rows += bench_classify.run(stack, quick)
        return 0.0
    rows += bench_memory.run(stack, quick)
    return 0.0


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs and no diagnostics (about 2 minutes)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument(
        "--postgres", default=POSTGRES_URL, help="server (and admin database) for the throwaway database"
    )
    parser.add_argument("--redis", default=REDIS_URL, help="a Redis database the run may flush")
    parser.add_argument("--time-limit", type=int, default=None, help="seconds (default 900, 300 with --quick)")
    args = parser.parse_args(argv)
    print(f"tierq benchmarks, {time.strftime('%Y-%m-%d %H:%M %Z')}: {machine()}", flush=True)
    rows: list[Row] = []
    details: list[str] = []
    failures: list[str] = []
    busiest = 0.0
    started = time.monotonic()
    try:
        with (
            time_limit(args.time_limit or (300 if args.quick else 900)),
            open_stack(args.postgres, args.redis) as stack,
        ):
            for name in args.only:
                print(f"running {name} ...", flush=True)
                try:
                    busiest = max(busiest, run_one(name, stack, args.quick, rows, details))
                except (BenchError, ServiceUnavailable) as exc:  # a worker that did not start, too
                    failures.append(f"{name}: {exc}")
                stack.stop_workers()
            if busiest:
                rows += bench_simulator.run(stack, busiest, args.quick)
    except TimeLimit as exc:
        failures.append(f"the rest: {exc}")  # everything it started was stopped on the way out
    print(f"\n{table(rows)}")
    for line in details + [f"could not run {f}" for f in failures]:
        print(line)
    if args.markdown:
        print(f"\n{markdown(rows)}")
    print(f"\n{sum(r.passed for r in rows)} of {len(rows)} targets met in {time.monotonic() - started:.0f} s")
    return 0 if not failures and all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(cli(main))
