"""Simulator headroom: the simulated provider must serve at least twice the busiest rate measured.

    .venv/bin/python bench/bench_simulator.py [--rate CALLS_PER_S]

Two raw aiohttp clients (anchor_client.py --client raw, the cheapest client) call the simulator at 0 ms
latency, 200 calls open each; its capacity is the calls it finished per second while busy (from its
own finish times). The other benchmarks pass in the highest call rate they made it serve.
"""

from __future__ import annotations

import argparse
import sys

from harness import Stack, cli, open_stack
from measure import finish_anchor, span_rate, start_anchor
from rows import Row, Target, table

CLIENTS = 2
OPEN_PER_CLIENT = 200


def capacity(stack: Stack, calls_per_client: int) -> float:
    """Calls/s the simulator finishes when clients keep it saturated."""
    stack.reset({"latency_ms": 0})
    procs = [start_anchor(stack.sim.base_url, calls_per_client, OPEN_PER_CLIENT, client="raw",
                          tag=f"cap{n}")
             for n in range(CLIENTS)]
    for proc in procs:
        finish_anchor(proc, timeout_s=calls_per_client / 100 + 60)
    return span_rate(stack.sim.stats()["calls"])


def run(stack: Stack, busiest: float, quick: bool = False) -> list[Row]:
    """The capacity against twice the busiest rate measured in this run."""
    served = capacity(stack, 3_000 if quick else 6_000)
    return [Row("simulator capacity vs busiest rate", "calls/s", served, busiest, Target("ratio", 2.0),
                note=f"{CLIENTS} raw aiohttp clients x {OPEN_PER_CLIENT} open calls at 0 ms; "
                     "anchor: the most calls/s any benchmark of this run made it serve")]


def main(argv: list[str] | None = None) -> int:
    """Run this check alone, against a rate given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="the busiest rate to compare with")
    args = parser.parse_args(argv)
    with open_stack() as stack:
        rows = run(stack, args.rate)
    print(table(rows))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(cli(main))
