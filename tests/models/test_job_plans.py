"""A worker's statements on its chunk's jobs find them by primary key, whatever Postgres's statistics say.

They say `id = ANY(...) AND status = 'queued'` (or 'running', ...). When the statistics had not seen jobs in
that state, an index that can answer the status half looked as if it held a few rows, and the planner read
all of it instead of the chunk's rows: every claim, answer and hand-off read every active job (migration
0014). Two ways the statistics fall behind, both common: a large batch lands on a table whose last ANALYZE
saw no job active (the batch before had finished), and a batch's jobs move on from pending, which the last
ANALYZE saw, to queued and running, which it did not.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Stack
from sqlalchemy import event, text

from workers.classify import classify_chunk
from workers.context import WorkerContext
from workers.process import process_chunk

ACTIVE = 20_000
# A statement about the chunk's own jobs, by their ids.
BY_IDS = re.compile(r"\bid = ANY\(|\bj\.id = v\.id\b")
JOBS_INDEX = re.compile(r"(ix|uq)_jobs_\w+|pk_jobs")


def _fill(stack: Stack, finished: int, analysed: str, per_message: int, cache: bool) -> list[list[int]]:
    """`finished` finished jobs and ACTIVE pending ones, `per_message` to a classify message as submit writes
    them, analysed before the pending ones were written (`analysed` "finished") or after ("pending").
    Returns the pending jobs of each message."""
    batch = uuid.uuid4()
    prompt = json.dumps([{"role": "user", "content": "Where is my parcel?"}])
    columns = ("INSERT INTO jobs (batch_id, seq, custom_id, tenant, task_type, messages, params, prompt_chars, "
               "status, handoff, attempts, escalations, finished_at) ")

    def analyse() -> None:
        with stack.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))  # as autovacuum leaves it

    with stack.engine.begin() as conn:
        conn.execute(text("INSERT INTO batches (id, tenant, task_type, params, total, rejected, cancelled, use_cache) "
                          "VALUES (:id, 't', 'default', '{}', :n, 0, false, :cache)"),
                     {"id": batch, "n": ACTIVE, "cache": cache})
        conn.execute(text(columns + "SELECT :b, g, 'f' || g, 't', 'default', CAST(:m AS jsonb), '{}', 20, "
                          "'succeeded', NULL, 1, 0, now() FROM generate_series(1, CAST(:n AS int)) g"),
                     {"b": batch, "m": prompt, "n": finished})
    if analysed == "finished":
        analyse()
    with stack.engine.begin() as conn:
        rows = conn.execute(text(
            columns + "SELECT CAST(:b AS uuid), g, 'a' || g, 't', 'default', CAST(:m AS jsonb), '{}', 20, 'pending', "
            "CAST(md5(CAST(:b AS text) || (g / CAST(:per AS int))) AS uuid), 0, 0, NULL "
            "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) g RETURNING handoff, id"),
            {"b": str(batch), "m": prompt, "per": per_message, "first": 0, "last": ACTIVE - 1}).all()
    if analysed == "pending":
        analyse()
    messages: dict[uuid.UUID, list[int]] = {}
    for handoff, job in rows:
        messages.setdefault(handoff, []).append(job)
    return list(messages.values())


def _handoffs(stack: Stack, ids: list[int]) -> dict[uuid.UUID, list[int]]:
    with stack.engine.connect() as conn:
        rows = conn.execute(text("SELECT handoff, id FROM jobs WHERE id = ANY(:ids) ORDER BY id"), {"ids": ids}).all()
    grouped: dict[uuid.UUID, list[int]] = {}
    for handoff, job in rows:
        grouped.setdefault(handoff, []).append(job)
    return grouped


def _followers(stack: Stack, ids: list[int]) -> set[int]:
    with stack.engine.connect() as conn:
        return set(conn.execute(text("SELECT id FROM jobs WHERE id = ANY(:ids) AND follows IS NOT NULL"),
                                {"ids": ids}).scalars())


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


# With the cache on, every job of a classify chunk asks the same question: one leads, the others follow it.
@pytest.mark.parametrize(("finished", "analysed", "cache"),
                         [(60_000, "finished", False), (0, "pending", False), (0, "pending", True)])
def test_a_chunks_statements_read_its_jobs_by_primary_key_whatever_the_statistics_saw(
        clean: Stack, worker_ctx: Callable[..., WorkerContext], finished: int, analysed: str, cache: bool) -> None:
    ctx = worker_ctx()
    messages = _fill(clean, finished, analysed, ctx.config.worker.classify_chunk, cache)
    seen: dict[str, Any] = {}

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if BY_IDS.search(statement) and " jobs " in statement and not executemany:
            seen[statement] = parameters

    event.listen(ctx.engine, "before_cursor_execute", record)
    try:
        jobs = messages[len(messages) // 2]
        with clean.engine.connect() as conn:
            message = conn.execute(text("SELECT handoff FROM jobs WHERE id = :j"), {"j": jobs[0]}).scalar_one()
        routed = classify_chunk(ctx, jobs, message)
        assert (sum(routed.routed.values()), routed.following) == ((1, len(jobs) - 1) if cache else (len(jobs), 0))
        tier_messages = _handoffs(clean, [job for job in jobs if job not in _followers(clean, jobs)])
        assert len(tier_messages) == 1 if cache else len(tier_messages) > 1  # else several tier chunks
        handoff, chunk = next(iter(tier_messages.items()))
        done = process_chunk(ctx, "hot", chunk, handoff)
        assert (done.succeeded, done.shared) == (len(chunk), len(jobs) - 1 if cache else 0)
    finally:
        event.remove(ctx.engine, "before_cursor_execute", record)

    # resend (classify's and the tier's), the pending jobs, route, claim, answers, leftovers, ...
    assert len(seen) >= 6, list(seen)
    with clean.engine.connect() as conn:
        for statement, parameters in seen.items():
            (plan,) = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar_one()
            nodes = list(_nodes(plan["Plan"]))
            whole = [n for n in nodes if n.get("Relation Name") == "jobs" and n["Node Type"] == "Seq Scan"]
            indexes = {n["Index Name"] for n in nodes if JOBS_INDEX.fullmatch(n.get("Index Name", ""))}
            # A nested loop that runs the list of ids again for each row it finds compares every row with
            # every id: 250,000 comparisons for a classify chunk of 500 when the planner expected one row.
            again = [n["Plans"][1]["Node Type"] for n in nodes
                     if n["Node Type"] == "Nested Loop" and n["Plans"][1]["Node Type"] == "Function Scan"]
            assert not whole and not again and indexes == {"pk_jobs"}, (statement[:300], again, indexes)
