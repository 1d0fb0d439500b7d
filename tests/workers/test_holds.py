"""Jobs that must wait (for a rate-limit slot, for budget that calls in flight hold, for a provider that
cannot be reached) go back to their queue with a delay instead of holding a worker thread, and fail with
their reason once they have waited longer than the configured limit.

The tier task's plain function runs in this process against the real database, Redis and simulator.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from conftest import Stack, insert_job, published
from sqlalchemy import text

from workers.context import WorkerContext
from workers.process import process_chunk


def test_a_job_whose_budget_calls_in_flight_hold_waits_on_its_queue_then_fails(
    clean: Stack, worker_ctx: Callable[..., WorkerContext]
) -> None:
    ctx = worker_ctx(max_wait_s=0.5, budget_wait_s=600)
    message = uuid.uuid4()
    job = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=message)
    with clean.engine.begin() as conn:  # calls in flight (or a worker that died mid-call) hold the rest
        conn.execute(text("UPDATE batches SET budget_usd = 1, reserved_usd = 0.9999"))
    started = time.monotonic()
    summary = process_chunk(ctx, "hot", [job], message)
    assert summary.held == 1 and time.monotonic() - started < 5
    with clean.engine.connect() as conn:
        status, tier, handoff, holds, since, error = conn.execute(
            text("SELECT status, tier, handoff, holds, held_since, error FROM jobs")).one()
    assert (status, tier, holds) == ("queued", "hot", 1) and since is not None and handoff != message
    assert error.startswith("budget: calls in flight hold")
    later = published(ctx, "hot")
    assert [m["headers"]["id"] for m in later] == [str(handoff)] and later[0]["headers"]["eta"]
    assert clean.sim_stats()["requests"] == 0
    # Held longer than budget_wait_s: the job fails with its reason rather than waiting for ever.
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET held_since = now() - interval '1 hour'"))
    assert process_chunk(ctx, "hot", [job], handoff).failed == 1
    with clean.engine.connect() as conn:
        status, error = conn.execute(text("SELECT status, error FROM jobs")).one()
    assert status == "failed" and re.search(r"; held 36\d\d s, longer than 600 s$", error), error
    assert clean.sim_stats()["requests"] == 0


def test_a_rate_limited_job_goes_back_to_its_queue_without_a_call(
    clean: Stack, worker_ctx: Callable[..., WorkerContext]
) -> None:
    ctx = worker_ctx(max_wait_s=0.5)
    limited = ctx.config.models["sim-nano"].model_copy(update={"rpm": 1})
    ctx.config = ctx.config.model_copy(update={"models": {**ctx.config.models, "sim-nano": limited}})
    first, second = uuid.uuid4(), uuid.uuid4()
    jobs = [
        insert_job(clean, f"ticket {n}", status="queued", tier="hot", handoff=m) for n, m in enumerate((first, second))
    ]
    assert process_chunk(ctx, "hot", [jobs[0]], first).succeeded == 1  # the minute's one call
    started = time.monotonic()
    summary = process_chunk(ctx, "hot", [jobs[1]], second)
    assert (summary.held, summary.calls) == (1, 0) and time.monotonic() - started < 5
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT status, holds FROM jobs WHERE id = :j"), {"j": jobs[1]}).one() == ("queued", 1)
    assert clean.sim_stats()["requests"] == 1
