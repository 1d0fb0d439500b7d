"""A worker process's open calls are bounded over all its tasks, and a chunk's answered jobs are finished
without waiting for its slowest call (issue 17: no chunk barrier).

The tier step's plain function runs in this process against the real database and simulator.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import Callable

from conftest import Stack, insert_job
from sqlalchemy import text

from workers.context import WorkerContext
from workers.loop import LoopThread
from workers.process import TierSummary, _next_answer, process_chunk

PARCEL = "Where is my parcel {n}?"


def queued(stack: Stack, prompts: list[str]) -> tuple[uuid.UUID, list[int]]:
    message = uuid.uuid4()
    return message, [insert_job(stack, p, status="queued", tier="hot", handoff=message) for p in prompts]


def test_answered_jobs_are_finished_while_the_chunks_slowest_call_still_runs(
        clean: Stack, worker_ctx: Callable[..., WorkerContext]) -> None:
    ctx = worker_ctx(flush_ms=50)
    clean.simulate({"latency_ms": 20, "hang_s": 1.0})  # a hung call ends with a 504 after 1 s, and is retried
    slow = "Where is my parcel? [[sim:hang@sim-nano]]"
    message, ids = queued(clean, [PARCEL.format(n=n) for n in range(6)] + [slow])
    summary = process_chunk(ctx, "hot", ids, message)
    assert (summary.claimed, summary.succeeded) == (7, 7)
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, model, finished_at, attempts FROM jobs ORDER BY id")).all()
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == sum(r.attempts for r in rows)
    *fast, last = rows
    assert {(r.status, r.model) for r in fast} == {("succeeded", "sim-nano")}
    assert (last.status, last.model) == ("succeeded", "sim-mini")
    # The fast jobs were written long before the slow one (at least its three hung attempts) came back.
    assert (last.finished_at - max(r.finished_at for r in fast)).total_seconds() > 2.5


def test_one_limit_bounds_the_open_calls_of_every_task_of_the_process(
        clean: Stack, worker_ctx: Callable[..., WorkerContext]) -> None:
    ctx = worker_ctx(open_calls=4)
    clean.simulate({"latency_ms": 150})
    chunks = [queued(clean, [f"{PARCEL.format(n=n)} (chunk {c})" for n in range(6)]) for c in range(3)]
    summaries: list[TierSummary] = []
    threads = [threading.Thread(target=lambda m=m, i=i: summaries.append(process_chunk(ctx, "hot", i, m)))
               for m, i in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(s.succeeded for s in summaries) == [6, 6, 6]
    stats = clean.sim_stats()
    assert stats["requests"] == 18
    assert 1 < stats["max_in_flight"] <= 4


def test_a_wait_that_timed_out_while_the_last_call_ended_is_not_the_end_of_the_chunk() -> None:
    """The end of a chunk's calls is the None its future puts after the last index. Before, a wait that
    timed out followed by `future.done()` was taken for the end; when the last call ended in between, the
    task failed with its answered jobs unwritten and left running until the reconciler."""
    loop = LoopThread()
    last = threading.Event()
    ready: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    async def calls() -> None:
        ready.put(0)
        await asyncio.get_running_loop().run_in_executor(None, last.wait)
        ready.put(1)

    future = loop.start(calls())
    future.add_done_callback(lambda _: ready.put(None))
    assert _next_answer(ready, future, None) == 0
    assert _next_answer(ready, future, 0.05) is None  # the wait timed out: the last call is still out
    last.set()
    future.result(10)  # the coroutine has ended, its last index in the queue
    assert _next_answer(ready, future, 0.05) == 1
