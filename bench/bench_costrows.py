"""Cost rows: rows/s through the workers' accounting path, against psycopg COPY in batches of 100.

    .venv/bin/python bench/bench_costrows.py [--rows 200000]

Ours: from one thread, chunks of 50 calls (a tier task's `tier_chunk`), each turned into rows by
`CallRecord.cost_row` and written by `models.costs.record_calls` in a transaction of its own, as
`workers.process._finish` does. Anchor: the same rows, prepared beforehand as tuples, written with
psycopg's COPY, 100 rows per transaction. The table is emptied between runs. Commits are counted to
show that nothing commits per row. Diagnostics (printed, not judged) split the gap: the same two
paths at other transaction sizes, and the accounting path with the commit's WAL flush left out.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from harness import BenchError, Stack, cli, open_stack
from rows import Row, Target, table
from sqlalchemy import Engine, event, text

from models.costs import record_calls
from models.enums import CallOutcome
from tierq.money import Usage
from workers.llm import CallRecord

CHUNK = 50  # tier_chunk: one transaction per tier task
COPY_BATCH = 100
COLUMNS = ("id", "job_id", "batch_id", "attempt", "tier", "model", "provider", "prompt_tokens", "completion_tokens",
           "cached_tokens", "usage_estimated", "cost_usd", "saved_usd", "latency_ms", "outcome", "error")
JOBS = 2_000


@dataclass(frozen=True, slots=True)
class Call:
    """A call as the worker holds it after the model answered: its record and the job it belongs to."""

    record: CallRecord
    job_id: int
    batch_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class CostRowsResult:
    """The rows and the diagnostics."""

    rows: list[Row]
    details: list[str]


def make_calls(stack: Stack, n: int) -> list[Call]:
    """A batch, JOBS jobs and `n` call records spread over them (one in twenty refused, with a reason)."""
    batch = uuid.uuid4()
    with stack.engine.begin() as conn:
        conn.execute(text("INSERT INTO batches (id, tenant, task_type, params, total, rejected, cancelled) "
                          "VALUES (:b, 'bench', 'support', '{}', :n, 0, false)"), {"b": batch, "n": JOBS})
        job_ids = conn.execute(text(
            "INSERT INTO jobs (batch_id, seq, custom_id, tenant, task_type, messages, params, prompt_chars, status, "
            "attempts, escalations) SELECT :b, g, 'c-' || g, 'bench', 'support', '[]', '{}', 40, 'running', 0, 0 "
            "FROM generate_series(1, :n) AS g RETURNING id"), {"b": batch, "n": JOBS}).scalars().all()
    calls = []
    for i in range(n):
        refused = i % 20 == 0
        record = CallRecord(
            uuid.uuid4(), "sim-nano", "sim", Usage(180 + i % 97, 40 + i % 31, (i % 3) * 64),
            Decimal("0.000034") + Decimal(i % 89) / Decimal(10**9), 700 + i % 600,
            CallOutcome.REFUSAL if refused else CallOutcome.OK,
            error="refusal: the answer starts with a refusal phrase" if refused else None,
        )
        calls.append(Call(record, job_ids[i % JOBS], batch))
    return calls


@contextmanager
def counting_commits(engine: Engine) -> Iterator[list[int]]:
    """Count the engine's commits while the block runs."""
    count = [0]

    def on_commit(_: Any) -> None:
        count[0] += 1

    event.listen(engine, "commit", on_commit)
    try:
        yield count
    finally:
        event.remove(engine, "commit", on_commit)


def accounting_path(engine: Engine, calls: Sequence[Call], chunk: int, *, sync: bool = True) -> float:
    """Seconds for cost_row + record_calls, one transaction per `chunk` calls."""
    started = time.perf_counter()
    for start in range(0, len(calls), chunk):
        with engine.begin() as conn:
            if not sync:
                conn.execute(text("SET LOCAL synchronous_commit = off"))
            record_calls(conn, [c.record.cost_row(job_id=c.job_id, batch_id=c.batch_id, attempt=1, tier="hot")
                                for c in calls[start : start + chunk]])
    return time.perf_counter() - started


# A prototype of what record_calls could send instead (see docs/benchmarks.md): one statement per
# chunk, the house's unnest pattern (models/lifecycle.py `succeed`), keeping ON CONFLICT DO NOTHING.
_UNNEST = text(
    f"INSERT INTO calls ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    "CAST(:id AS uuid[]), CAST(:job_id AS bigint[]), CAST(:batch_id AS uuid[]), CAST(:attempt AS int[]), "
    "CAST(:tier AS text[]), CAST(:model AS text[]), CAST(:provider AS text[]), CAST(:prompt_tokens AS int[]), "
    "CAST(:completion_tokens AS int[]), CAST(:cached_tokens AS int[]), CAST(:usage_estimated AS bool[]), "
    "CAST(:cost_usd AS numeric[]), CAST(:saved_usd AS numeric[]), CAST(:latency_ms AS int[]), "
    "CAST(:outcome AS text[]), CAST(:error AS text[])) ON CONFLICT (id) DO NOTHING"
)


def unnest_path(engine: Engine, calls: Sequence[Call], chunk: int) -> float:
    """Seconds for cost_row + the one-statement prototype, one transaction per `chunk` calls."""
    started = time.perf_counter()
    for start in range(0, len(calls), chunk):
        rows = [c.record.cost_row(job_id=c.job_id, batch_id=c.batch_id, attempt=1, tier="hot")
                for c in calls[start : start + chunk]]
        with engine.begin() as conn:
            conn.execute(_UNNEST, {col: [getattr(r, col) for r in rows] for col in COLUMNS})
    return time.perf_counter() - started


def as_tuple(call: Call) -> tuple[Any, ...]:
    """The COPY row of a call, the same values cost_row gives."""
    r = call.record
    return (r.id, call.job_id, call.batch_id, 1, "hot", r.model, r.provider, r.usage.prompt_tokens,
            r.usage.completion_tokens, r.usage.cached_tokens, r.usage.estimated, r.cost_usd, Decimal(0),
            r.latency_ms, r.outcome.value, r.error)


def copy_path(engine: Engine, tuples: Sequence[tuple[Any, ...]], batch: int) -> float:
    """Seconds for psycopg COPY of prepared tuples, one transaction per `batch` rows."""
    sql = f"COPY calls ({', '.join(COLUMNS)}) FROM STDIN"
    with engine.connect() as sa_conn:
        raw = sa_conn.connection.driver_connection
        assert raw is not None
        raw.commit()  # leave the transaction the pool's ping opened
        started = time.perf_counter()
        for start in range(0, len(tuples), batch):
            with raw.transaction(), raw.cursor() as cur, cur.copy(sql) as copy:
                for row in tuples[start : start + batch]:
                    copy.write_row(row)
        return time.perf_counter() - started


def timed(stack: Stack, n: int, write: Callable[[], float]) -> float:
    """Rows/s of one write of `n` rows into an empty calls table; the rows are checked afterwards."""
    with stack.engine.begin() as conn:
        conn.execute(text("TRUNCATE calls"))
    rate = n / write()
    with stack.engine.connect() as conn:
        written = conn.execute(text("SELECT count(*) FROM calls")).scalar_one()
    if written != n:
        raise BenchError(f"{written} rows in calls after writing {n}")
    return rate


def diagnose(stack: Stack, calls: Sequence[Call], tuples: Sequence[tuple[Any, ...]]) -> dict[str, float]:
    """Rows/s of the variants that tell where the gap to COPY comes from."""
    n, engine = len(calls), stack.engine
    return {
        f"COPY, {CHUNK} rows per transaction": timed(stack, n, lambda: copy_path(engine, tuples, CHUNK)),
        "accounting path, 500 rows per transaction": timed(stack, n, lambda: accounting_path(engine, calls, 500)),
        f"accounting path, {CHUNK} per transaction, synchronous_commit off":
            timed(stack, n, lambda: accounting_path(engine, calls, CHUNK, sync=False)),
        f"one INSERT ... SELECT FROM unnest(...) ON CONFLICT per {CHUNK}-call transaction (prototype)":
            timed(stack, n, lambda: unnest_path(engine, calls, CHUNK)),
    }


def run(stack: Stack, quick: bool = False, rows: int | None = None) -> CostRowsResult:
    """Ours, the anchor, and the diagnostics."""
    n = rows or (50_000 if quick else 200_000)
    stack.reset()
    calls = make_calls(stack, n)
    tuples = [as_tuple(c) for c in calls]
    commits: list[int] = []

    def ours_write() -> float:
        with counting_commits(stack.engine) as count:
            seconds = accounting_path(stack.engine, calls, CHUNK)
        commits.append(count[0])
        return seconds

    ours = timed(stack, n, ours_write)
    ours_commits = commits[0]
    anchor = timed(stack, n, lambda: copy_path(stack.engine, tuples, COPY_BATCH))
    diagnostics = {} if quick else diagnose(stack, calls, tuples)
    note = f"{n:,} rows; {ours_commits:,} commits ({n / max(ours_commits, 1):.0f} rows per commit)"
    result_rows = [
        Row(f"cost rows, record_calls ({CHUNK}/txn) vs COPY ({COPY_BATCH}/txn)", "rows/s", ours, anchor,
            Target("ratio", 0.25), note=note),
        Row("cost rows, absolute", "rows/s", ours, None, Target("min", 20_000)),
    ]
    details = [f"  {name}: {rate:,.0f} rows/s ({rate / anchor:.2f}x the anchor)" for name, rate in diagnostics.items()]
    return CostRowsResult(result_rows, ["cost rows diagnostics:", *details] if details else [])


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args(argv)
    with open_stack() as stack:
        result = run(stack, rows=args.rows)
    print(table(result.rows))
    print("\n".join(result.details))
    return 0 if all(r.passed for r in result.rows) else 1


if __name__ == "__main__":
    sys.exit(cli(main))
