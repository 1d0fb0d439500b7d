"""Jobs that must wait (for a rate-limit slot, for budget that calls in flight hold, for a provider that
cannot be reached) go back to their queue with a delay instead of holding a worker thread, and fail with
their reason once they have waited longer than the configured limit; an audit whose reference waits that long
ends with the answer it had (docs/quality.md).

The tier task's plain function runs in this process against the real database, Redis and simulator.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import time
import uuid
from collections.abc import Callable

import pytest
import redis
from conftest import Stack, age_holds, insert_job, published
from sqlalchemy import text

from tierq.quality import ComparatorConfig
from workers.context import WorkerContext
from workers.process import process_chunk


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_job_whose_budget_calls_in_flight_hold_waits_on_its_queue_then_fails(
    clean: Stack, worker_ctx: Callable[..., WorkerContext]
) -> None:
    ctx = worker_ctx(max_wait_s=0.5, budget_wait_s=600)
    message = uuid.uuid4()
    job = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=message)
    with clean.engine.begin() as conn:  # calls in flight (or a worker that died mid-call) hold the rest
        conn.execute(text("UPDATE batches SET budget_usd = 1, reserved_usd = 0.9999"))
        # Held an hour before, in tierq's own rate schedule (a long backlog): no wait for budget yet.
        conn.execute(text("UPDATE jobs SET held_since = now() - interval '1 hour'"))
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
    # Held for budget longer than budget_wait_s: the job fails with its reason rather than waiting for ever.
    age_holds(clean, 3600)
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


@pytest.mark.parametrize("outage", ["key refused", "unreachable"])
def test_an_audit_whose_reference_is_held_past_the_outage_limit_keeps_its_candidate(
    clean: Stack, worker_ctx: Callable[..., WorkerContext], monkeypatch: pytest.MonkeyPatch, outage: str
) -> None:
    spare = clean.dbs.url(3)  # breaker counts of their own, apart from the session's worker
    redis.Redis.from_url(spare).flushdb()

    def make() -> WorkerContext:
        ctx = worker_ctx(outage_limit_s=600)
        ctx.settings = ctx.settings.model_copy(update={"redis_url": spare})
        quality = ctx.config.quality.model_copy(update={"audit_rate": 1.0,
                                                        "comparator": ComparatorConfig(kind="exact")})
        ctx.config = ctx.config.model_copy(update={"quality": quality})
        return ctx

    # The reference would answer otherwise ("Rome"), and replace the candidate, if it answered.
    prompt = "What is the capital of France? [[sim:say@sim-nano=Paris]] [[sim:say@sim-flagship=Rome]]"
    message = uuid.uuid4()
    job = insert_job(clean, prompt, status="queued", tier="hot", handoff=message)
    assert process_chunk(make(), "hot", [job], message).succeeded == 0  # answered, then sent to be audited
    with clean.engine.connect() as conn:
        audit_message = conn.execute(text("SELECT handoff FROM jobs WHERE tier = 'cold' AND candidate = 'Paris' "
                                          "AND audited")).scalar_one()
    if outage == "key refused":
        clean.simulate({"latency_ms": 0, "api_key": "sk-not-the-one-tierq-has"})
    else:
        monkeypatch.setenv("TIERQ_SIM_URL", f"http://127.0.0.1:{closed_port()}/v1")
    try:
        ctx = make()
        assert process_chunk(ctx, "cold", [job], audit_message).held == 1
        with clean.engine.connect() as conn:
            status, tier, handoff, candidate, reason = conn.execute(
                text("SELECT status, tier, handoff, candidate, error FROM jobs")).one()
        assert (status, tier, candidate) == ("queued", "cold", "Paris")
        why = "key: provider 'sim' refused" if outage == "key refused" else "sim-flagship: connection"
        assert reason.startswith(why), reason
        # Held longer than outage_limit_s: the audit is given up, the candidate kept, the job finished.
        age_holds(clean, 3600)
        summary = process_chunk(ctx, "cold", [job], handoff)
    finally:
        redis.Redis.from_url(spare).flushdb()
    assert (summary.succeeded, summary.held, summary.failed) == (1, 0, 0)
    # The audit's message and the held job's, and nothing after: it does not come back.
    assert sorted(m["headers"]["id"] for m in published(ctx, "cold")) == sorted([str(audit_message), str(handoff)])
    with clean.engine.connect() as conn:
        done = conn.execute(text("SELECT status, content, tier, model, replaced, candidate, error FROM jobs")).one()
        outcomes = conn.execute(text("SELECT tier, outcome, cost_usd FROM calls ORDER BY created_at, id")).all()
        labels = conn.execute(text("SELECT count(*) FROM labels")).scalar_one()
    assert tuple(done) == ("succeeded", "Paris", "hot", "sim-nano", False, None, None)
    assert outcomes[0][:2] == ("hot", "ok") and len(outcomes) > 1
    assert all(tier == "cold" and outcome != "audit" and cost == 0 for tier, outcome, cost in outcomes[1:])
    assert labels == 0  # nothing was measured


def test_a_job_whose_batch_is_cancelled_while_its_calls_time_out_makes_no_more_calls(
    clean: Stack, worker_ctx: Callable[..., WorkerContext]
) -> None:
    # A lease far longer than the test: the cancel is seen by the keeper's check of the batches (every
    # CANCEL_CHECK_S), not by a renewal. One call open at a time, so the chunk's other jobs wait for the
    # first one's slot.
    ctx = worker_ctx(lease_s=600, open_calls=1)
    hot = ctx.config.tier("hot").model_copy(update={"timeout_s": 6.0})
    ctx.config = ctx.config.model_copy(update={"tiers": [hot if t.name == "hot" else t for t in ctx.config.tiers]})
    every = (hot.max_retries + 1) * len(hot.models)  # what a job whose calls all time out makes at hot
    clean.simulate({"latency_ms": 60_000})  # each call times out after the tier's timeout_s
    message = uuid.uuid4()
    first, *others = [insert_job(clean, f"Where is my parcel {n}?", status="queued", tier="hot", handoff=message)
                      for n in range(3)]
    with clean.engine.begin() as conn:  # one batch, as a submission makes
        conn.execute(text("UPDATE jobs SET batch_id = (SELECT batch_id FROM jobs WHERE id = :j), "
                          "custom_id = 'j' || id"), {"j": first})
        batch = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": first}).scalar_one()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(process_chunk, ctx, "hot", [first, *others], message)
        deadline = time.monotonic() + 30
        while clean.sim_stats()["requests"] == 0:  # the first job's first call is out
            assert time.monotonic() < deadline and not running.done(), "no call was made"
            time.sleep(0.05)
        with clean.client() as tq:
            assert tq.cancel(batch).running == 3
        summary = running.result(timeout=120)
    with clean.engine.connect() as conn:
        jobs = conn.execute(text("SELECT j.id, j.status, j.error, j.attempts, (SELECT count(*) FROM calls c "
                                 "WHERE c.job_id = j.id) FROM jobs j ORDER BY j.id")).all()
    assert all(status == "cancelled" and error.startswith("cancelled: its batch was cancelled")
               for _, status, error, _, _ in jobs), jobs
    assert all(attempts == paid for _, _, _, attempts, paid in jobs)  # every call made is a cost row
    assert summary.calls == sum(paid for *_, paid in jobs) == clean.sim_stats()["requests"]
    calls = {job_id: paid for job_id, *_, paid in jobs}
    assert 1 <= calls[first] < every, f"{calls[first]} calls: the retries went on after the cancel"
    assert [calls[job] for job in others] == [0, 0]  # they waited for the open call: none after the cancel


def test_an_answer_that_comes_back_after_its_batch_was_cancelled_is_kept_not_sent_to_be_audited(
    clean: Stack, worker_ctx: Callable[..., WorkerContext]
) -> None:
    # Picked for an audit, it could not be queued (the batch is cancelled) and ended cancelled without the
    # answer it had paid for. The lease renewal would see the cancel only after a third of this long lease.
    ctx = worker_ctx(lease_s=600)
    quality = ctx.config.quality.model_copy(update={"audit_rate": 1.0, "comparator": ComparatorConfig(kind="exact")})
    ctx.config = ctx.config.model_copy(update={"quality": quality})
    clean.simulate({"latency_ms": 2_000})
    message = uuid.uuid4()
    job = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=message)
    with clean.engine.connect() as conn:
        batch = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": job}).scalar_one()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(process_chunk, ctx, "hot", [job], message)
        deadline = time.monotonic() + 30
        while clean.sim_stats()["requests"] == 0:
            assert time.monotonic() < deadline and not running.done(), "no call was made"
            time.sleep(0.05)
        with clean.client() as tq:
            assert tq.cancel(batch).running == 1
        running.result(timeout=60)
    with clean.engine.connect() as conn:
        status, content, audited = conn.execute(text("SELECT status, content, audited FROM jobs")).one()
    assert (status, audited) == ("succeeded", False) and content, (status, content, audited)
    assert published(ctx, "cold") == []  # nothing sent to be audited


def held(stack: Stack, job: int) -> tuple[str, object, object]:
    with stack.engine.connect() as conn:
        row = conn.execute(text("SELECT status, held_since, held_until FROM jobs WHERE id = :j"), {"j": job}).one()
    return str(row[0]), row[1], row[2]


def test_a_job_held_while_pending_is_not_held_once_routed(
        clean: Stack, worker_ctx: Callable[..., WorkerContext]) -> None:
    # Found by a review: routing left held_since/held_until of a hold before it, so `tierq status` counted a
    # job waiting on its tier's queue as held ("all due now, waiting for a worker") for as long as it waited.
    from workers.classify import classify_chunk

    message = uuid.uuid4()
    job = insert_job(clean, "Where is my parcel?", status="pending", tier=None, handoff=message)
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET held_since = now(), held_until = now() WHERE id = :j"), {"j": job})
    assert sum(classify_chunk(worker_ctx(), [job], message).routed.values()) == 1
    assert held(clean, job) == ("queued", None, None)
