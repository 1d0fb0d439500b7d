"""How long a `tierq` command takes before it does anything: `--help`, `status` and `results` of a small
finished batch, each started afresh (median of repeated runs), against the anchor of a bare `python -c
pass` started the same way in the same run.

    .venv/bin/python bench/bench_startup.py [--runs 15]     (or as part of bench/run_all.py)

A user waits for the whole command, so the figure is wall time from fork to exit, imports included.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from harness import POSTGRES_URL, REDIS_URL, ROOT, Stack, open_stack
from rows import Row, Target, table
from sqlalchemy import text

TIERQ = Path(sys.executable).with_name("tierq")
SIM_CONFIG = ROOT / "tierq" / "configs" / "sim.toml"
LIMIT_MS = 500.0


def _seed(stack: Stack) -> uuid.UUID:
    """A finished batch of 20 answered jobs, written straight into the run's database."""
    batch = uuid.uuid4()
    with stack.engine.begin() as conn:
        conn.execute(text("INSERT INTO batches (id, tenant, task_type, params, total, rejected, cancelled) "
                          "VALUES (:b, 'bench', 'default', '{}', 20, 0, false)"), {"b": batch})
        conn.execute(text("INSERT INTO jobs (batch_id, seq, custom_id, tenant, task_type, messages, params, "
                          "prompt_chars, status, tier, start_tier, attempts, escalations, content, model, finished_at) "
                          "SELECT :b, n, 'j' || n, 'bench', 'default', '[{\"role\": \"user\", \"content\": \"hi\"}]', "
                          "'{}', 2, 'succeeded', 'hot', 'hot', 1, 0, 'hello', 'sim-nano', now() "
                          "FROM generate_series(1, 20) AS n"), {"b": batch})
    return batch


def _median_ms(command: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(stack: Stack, runs: int = 15) -> list[Row]:
    """Rows for `tierq --help`, `tierq status` and `tierq results` against `python -c pass`."""
    batch = _seed(stack)
    env = {**stack.env(SIM_CONFIG)}
    anchor = _median_ms([sys.executable, "-c", "pass"], env, runs)
    rows = []
    for name, args in (("tierq --help", ["--help"]), ("tierq status", ["status", str(batch)]),
                       ("tierq results", ["results", str(batch)])):
        ours = _median_ms([str(TIERQ), *args], env, runs)
        rows.append(Row(f"start-up: {name}", "ms", ours, anchor, Target("max", LIMIT_MS),
                        note=f"median of {runs} runs; anchor: python -c pass"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--postgres", default=POSTGRES_URL)
    parser.add_argument("--redis", default=REDIS_URL)
    args = parser.parse_args()
    with open_stack(args.postgres, args.redis) as stack:
        rows = run(stack, args.runs)
    print(table(rows))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
