"""How long a `tierq` command takes before it does anything: `--help`, `status` and `results` of a small
finished batch, and `status` of a running one (which also asks Redis for workers and live messages), each
started afresh (median of repeated runs), against the anchor of a bare `python -c pass` started the same
way in the same run.

    .venv/bin/python bench/bench_startup.py [--runs 15]     (or as part of bench/run_all.py)

A user waits for the whole command, so the figure is wall time from fork to exit, imports included. Each
round starts every command once, in turn, so a change in the machine's load falls on all of them alike.
The commands run as an installed package runs: with Python's cached bytecode (written to a directory of
this run's, whatever PYTHONDONTWRITEBYTECODE the shell sets) and after one warm-up round that writes it
and fills the operating system's file cache, which is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness import POSTGRES_URL, REDIS_URL, ROOT, Stack, cli, open_stack
from rows import Row, Target, table
from sqlalchemy import text

TIERQ = Path(sys.executable).with_name("tierq")
SIM_CONFIG = ROOT / "tierq" / "configs" / "sim.toml"
LIMIT_MS = 500.0


def _seed(stack: Stack, waiting: int = 0) -> uuid.UUID:
    """A batch of 20 jobs, all answered but the last `waiting` (queued on the hot tier), written straight
    into the run's database."""
    batch = uuid.uuid4()
    with stack.engine.begin() as conn:
        conn.execute(text("INSERT INTO batches (id, tenant, task_type, params, total, rejected, cancelled) "
                          "VALUES (:b, 'bench', 'default', '{}', 20, 0, false)"), {"b": batch})
        conn.execute(text("INSERT INTO jobs (batch_id, seq, custom_id, tenant, task_type, messages, params, "
                          "prompt_chars, status, tier, start_tier, attempts, escalations, content, model, finished_at) "
                          "SELECT :b, n, 'j' || n, 'bench', 'default', '[{\"role\": \"user\", \"content\": \"hi\"}]', "
                          "'{}', 2, 'succeeded', 'hot', 'hot', 1, 0, 'hello', 'sim-nano', now() "
                          "FROM generate_series(1, 20) AS n"), {"b": batch})
        conn.execute(text("UPDATE jobs SET status = 'queued', content = NULL, model = NULL, finished_at = NULL "
                          "WHERE batch_id = :b AND seq > :answered"), {"b": batch, "answered": 20 - waiting})
    return batch


def _medians_ms(commands: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, float]:
    """Each command's median wall time over `runs` rounds, every round starting each command once in turn,
    after a warm-up round that is not counted."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(runs + 1):
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True)
            if round_:
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(figures) for name, figures in times.items()}


def _with_bytecode(env: dict[str, str], cache: str) -> dict[str, str]:
    """`env` with Python's bytecode cache on, kept in `cache` (the checkout stays as it is)."""
    return {**{k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPYCACHEPREFIX": cache}


def run(stack: Stack, runs: int = 15) -> list[Row]:
    """Rows for `tierq --help`, `tierq status` (of a finished and of a running batch) and `tierq results`
    against `python -c pass`."""
    finished, running = _seed(stack), _seed(stack, waiting=10)
    commands = {"anchor": [sys.executable, "-c", "pass"], "tierq --help": [str(TIERQ), "--help"],
                "tierq status": [str(TIERQ), "status", str(finished)],
                "tierq status (running batch)": [str(TIERQ), "status", str(running)],
                "tierq results": [str(TIERQ), "results", str(finished)]}
    with tempfile.TemporaryDirectory(prefix="tierq-pycache-") as cache:
        medians = _medians_ms(commands, _with_bytecode(stack.env(SIM_CONFIG), cache), runs)
    anchor = medians.pop("anchor")
    note = f"median of {runs} rounds after a warm-up, with bytecode; anchor: python -c pass"
    return [Row(f"start-up: {name}", "ms", ours, anchor, Target("max", LIMIT_MS), note=note)
            for name, ours in medians.items()]


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
    sys.exit(cli(main))
