"""A cancel never throws away an answer already paid for, and never leaves a dead worker's job running.

- A job queued at the reference tier to be audited holds an answer paid for below it (its candidate):
  `tierq cancel` ends it succeeded with that answer, not cancelled with the answer lost.
- A pick for an audit whose batch is cancelled after the worker looked (the lease keeper's word, or
  `_in_cancelled_batches`, is older than the transaction that records it) keeps its answer the same way.
- A job running when its batch was cancelled, whose worker then died, is cancelled by the next delivery of
  its message; before, no delivery could claim it (its batch is cancelled) and it stayed `running` until the
  reconciler failed it as stuck after `max_recoveries` rounds.

The state machine's functions run in this process against the real database (as in test_redelivery.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import redis
from conftest import Stack, insert_job
from sqlalchemy import text

from models import lifecycle
from models.lifecycle import Candidate, Lease, Outbox
from producer.control import cancel_batch
from tierq.vault import TextVault
from workers.context import WorkerContext
from workers.follow import check_followers
from workers.process import process_chunk


@pytest.fixture()
def ctx(worker_ctx: Callable[..., WorkerContext]) -> WorkerContext:
    return worker_ctx()


def _batch_of(stack: Stack, job: int) -> uuid.UUID:
    with stack.engine.connect() as conn:
        return uuid.UUID(str(conn.execute(text("SELECT batch_id FROM jobs WHERE id = :id"), {"id": job}).scalar_one()))


def test_a_cancel_keeps_the_answer_of_a_job_queued_for_its_audit(clean: Stack, ctx: WorkerContext) -> None:
    reference = ctx.config.reference_tier
    job = insert_job(clean, "Where is my parcel?", status="queued", tier=reference, handoff=uuid.uuid4())
    with clean.engine.begin() as conn:  # answered at hot (one paid call), then sent to be audited
        conn.execute(text("UPDATE jobs SET candidate = 'In transit.', candidate_model = 'sim-nano', "
                          "candidate_tier = 'hot', candidate_source = 'answer', audited = true, attempts = 1"))
    done = cancel_batch(clean.engine, _batch_of(clean, job))
    assert (done.cancelled, done.kept, done.finished) == (0, 1, False)
    with clean.engine.connect() as conn:
        row = conn.execute(text("SELECT status, content, model, tier, candidate, finished_at IS NOT NULL "
                                "FROM jobs")).one()
    assert tuple(row) == ("succeeded", "In transit.", "sim-nano", "hot", None, True)
    # Nothing claims it again: it is final.
    assert process_chunk(ctx, reference, [job], uuid.uuid4()).claimed == 0
    assert clean.sim_stats()["requests"] == 0


def test_a_private_job_that_keeps_its_answer_at_a_cancel_leaves_no_prompt_in_redis(clean: Stack) -> None:
    job = insert_job(clean, "", status="queued", tier="cold", handoff=uuid.uuid4())
    vault = TextVault(redis.Redis.from_url(clean.settings.redis_url))
    vault.put_prompts({job: [{"role": "user", "content": "Where is my parcel?"}]})
    vault.put_answers({job: "In transit."})  # a private answer under audit waits in the vault
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE batches SET store_text = false"))
        conn.execute(text("UPDATE jobs SET candidate_model = 'sim-nano', candidate_tier = 'hot', "
                          "candidate_source = 'answer', audited = true, attempts = 1"))
    assert cancel_batch(clean.engine, _batch_of(clean, job), vault).cancelled == 0
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs")).scalar_one() == "succeeded"
    assert vault.prompts([job]) == {} and vault.take_answer(job) == "In transit."  # kept, for `results`


def test_an_audit_pick_whose_batch_was_cancelled_meanwhile_keeps_its_answer(clean: Stack) -> None:
    message = uuid.uuid4()
    job = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=message)
    batch = _batch_of(clean, job)
    lease = Lease(message)
    with clean.engine.begin() as conn:
        assert [r[0] for r in lifecycle.claim(conn, [job], "hot", lease, 30)] == [job]
    # The worker checked the batch (not cancelled) and picked the answer for an audit; the cancel commits
    # before the chunk's transaction.
    cancel_batch(clean.engine, batch)
    outbox = Outbox()
    with clean.engine.begin() as conn:  # what workers/process.py `_finish` runs for it
        pick = Candidate(job, "In transit.", "sim-nano", "hot", 1)
        assert lifecycle.audit(conn, outbox, lease, [pick], "cold", 10, batch) == 0  # not queued: cancelled
        assert lifecycle.cancel_leftovers(conn, lease, [job]) == ([], [job])  # none cancelled, one kept
    assert outbox.messages == []
    with clean.engine.connect() as conn:
        row = conn.execute(text("SELECT status, content, model, tier, attempts, lease_owner FROM jobs")).one()
    assert tuple(row) == ("succeeded", "In transit.", "sim-nano", "hot", 1, None)


def test_a_dead_workers_job_of_a_cancelled_batch_is_cancelled_by_the_next_delivery(
        clean: Stack, ctx: WorkerContext) -> None:
    message = uuid.uuid4()
    job = insert_job(clean, "", status="queued", tier="hot", handoff=message)
    vault = TextVault(redis.Redis.from_url(clean.settings.redis_url))
    vault.put_prompts({job: [{"role": "user", "content": "Where is my parcel?"}]})
    with clean.engine.begin() as conn:  # a worker held it, the batch was cancelled, the worker died
        conn.execute(text("UPDATE batches SET store_text = false"))
        conn.execute(text("UPDATE jobs SET status = 'running', lease_owner = :o, "
                          "lease_until = now() - interval '1 second'"), {"o": uuid.uuid4()})
    cancel_batch(clean.engine, _batch_of(clean, job))
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs")).scalar_one() == "running"  # left to its worker
    summary = process_chunk(ctx, "hot", [job], message)  # the reconciler's copy of its message
    assert (summary.claimed, summary.requeued) == (0, False)
    with clean.engine.connect() as conn:
        status, error, owner = conn.execute(text("SELECT status, error, lease_owner FROM jobs")).one()
    assert (status, error, owner) == ("cancelled", lifecycle.CANCEL_REASON, None)
    assert clean.sim_stats()["requests"] == 0
    assert vault.prompts([job]) == {}  # final: its --no-store-text prompt left Redis


def test_a_live_lease_of_a_cancelled_batch_is_left_to_its_worker(clean: Stack, ctx: WorkerContext) -> None:
    message = uuid.uuid4()
    job = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=message)
    with clean.engine.begin() as conn:  # its worker is alive, its call in flight
        conn.execute(text("UPDATE jobs SET status = 'running', lease_owner = :o, "
                          "lease_until = now() + interval '20 seconds'"), {"o": uuid.uuid4()})
    cancel_batch(clean.engine, _batch_of(clean, job))
    assert process_chunk(ctx, "hot", [job], message).claimed == 0
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs")).scalar_one() == "running"


def test_followers_of_a_job_that_kept_its_answer_at_a_cancel_get_that_answer_without_a_call(
        clean: Stack, ctx: WorkerContext) -> None:
    reference = ctx.config.reference_tier
    leader = insert_job(clean, "Where is my parcel?", status="queued", tier=reference, handoff=uuid.uuid4())
    follower = insert_job(clean, "Where is my parcel?", status="waiting", tier=None, handoff=uuid.uuid4())
    with clean.engine.begin() as conn:  # the follower is another batch's, which goes on
        conn.execute(text("UPDATE jobs SET candidate = 'In transit.', candidate_model = 'sim-nano', "
                          "candidate_tier = 'hot', candidate_source = 'answer', audited = true, attempts = 1 "
                          "WHERE id = :l"), {"l": leader})
        conn.execute(text("UPDATE jobs SET follows = :l WHERE id = :f"), {"l": leader, "f": follower})
    cancel_batch(clean.engine, _batch_of(clean, leader))
    assert check_followers(ctx, [follower], 0).answered == 1
    with clean.engine.connect() as conn:
        row = conn.execute(text("SELECT status, content FROM jobs WHERE id = :f"), {"f": follower}).one()
    assert tuple(row) == ("succeeded", "In transit.") and clean.sim_stats()["requests"] == 0
