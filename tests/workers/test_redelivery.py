"""A redelivered task changes nothing twice, and re-sends a hand-off its dead worker may not have sent.

The tasks' plain functions run in this process against the real database and simulator; their messages
go to a real Redis broker database that no worker reads, so the test can look at what was published.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from conftest import Stack, insert_job, published
from sqlalchemy import text

from models import lifecycle
from models.lifecycle import Lease
from workers.context import WorkerContext
from workers.process import process_chunk


@pytest.fixture()
def ctx(worker_ctx: Callable[..., WorkerContext]) -> WorkerContext:
    return worker_ctx()


def queued_job(stack: Stack, prompt: str, tier: str, handoff: uuid.UUID) -> int:
    return insert_job(stack, prompt, status="queued", tier=tier, handoff=handoff)


def ids(ctx: WorkerContext, queue: str) -> list[str]:
    return [m["headers"]["id"] for m in published(ctx, queue)]


def test_a_redelivered_tier_task_makes_no_second_call_or_row(clean: Stack, ctx: WorkerContext) -> None:
    message = uuid.uuid4()
    job = queued_job(clean, "Where is my parcel?", "hot", message)
    first = process_chunk(ctx, "hot", [job], message)
    again = process_chunk(ctx, "hot", [job], message)
    assert (first.succeeded, again.claimed) == (1, 0)
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == 1
        assert conn.execute(text("SELECT status, attempts FROM jobs")).one() == ("succeeded", 1)
    assert clean.sim_stats()["requests"] == 1


def test_a_message_that_does_not_own_the_job_leaves_it_alone(clean: Stack, ctx: WorkerContext) -> None:
    job = queued_job(clean, "Where is my parcel?", "hot", uuid.uuid4())
    assert process_chunk(ctx, "hot", [job], uuid.uuid4()).claimed == 0
    assert process_chunk(ctx, "warm", [job], uuid.uuid4()).claimed == 0
    assert clean.sim_stats()["requests"] == 0


def test_a_redelivered_task_resends_its_escalation(clean: Stack, ctx: WorkerContext) -> None:
    message = uuid.uuid4()
    job = queued_job(clean, "Where is my parcel? [[sim:refuse@sim-nano]]", "hot", message)
    assert process_chunk(ctx, "hot", [job], message).escalated == 1
    with clean.engine.connect() as conn:
        status, tier, handoff = conn.execute(text("SELECT status, tier, handoff FROM jobs")).one()
    assert (status, tier) == ("queued", "warm")
    assert ids(ctx, "warm") == [str(handoff)]
    assert ids(ctx, "hot") == ids(ctx, "cold") == ids(ctx, "classify") == []  # each queue gets its own
    # Redelivered (its worker died after the commit): the same hand-off goes out again, no new call.
    assert process_chunk(ctx, "hot", [job], message).claimed == 0
    assert ids(ctx, "warm") == [str(handoff), str(handoff)]
    assert clean.sim_stats()["requests"] == 1
    # The warm message answers it once, however often it arrives.
    assert process_chunk(ctx, "warm", [job], handoff).succeeded == 1
    assert process_chunk(ctx, "warm", [job], handoff).claimed == 0
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT outcome FROM calls ORDER BY attempt")).scalars().all() == ["refusal", "ok"]


def test_a_second_delivery_while_the_lease_is_alive_makes_no_call(clean: Stack, ctx: WorkerContext) -> None:
    message = uuid.uuid4()
    job = queued_job(clean, "Where is my parcel?", "hot", message)
    with clean.engine.begin() as conn:  # another delivery of the same message holds it, alive
        conn.execute(text("UPDATE jobs SET status = 'running', lease_owner = :o, "
                          "lease_until = now() + interval '20 seconds'"), {"o": uuid.uuid4()})
    second = process_chunk(ctx, "hot", [job], message)
    assert (second.claimed, second.requeued) == (0, True)
    assert clean.sim_stats()["requests"] == 0
    # A copy of the message comes back about when that lease would run out, in case its holder died.
    copies = published(ctx, "hot")
    assert [c["headers"]["id"] for c in copies] == [str(message)] and copies[0]["headers"]["eta"]
    with clean.engine.begin() as conn:  # the holder died: its lease ran out
        conn.execute(text("UPDATE jobs SET lease_until = now() - interval '1 second'"))
    assert process_chunk(ctx, "hot", [job], message).succeeded == 1
    assert clean.sim_stats()["requests"] == 1


def test_only_the_lease_owner_finishes_a_job(clean: Stack, ctx: WorkerContext) -> None:
    message = uuid.uuid4()
    job = queued_job(clean, "Where is my parcel?", "hot", message)
    mine, theirs = Lease(message), Lease(message)
    with clean.engine.begin() as conn:
        assert [r[0] for r in lifecycle.claim(conn, [job], "hot", mine, 30)] == [job]
        assert lifecycle.claim(conn, [job], "hot", theirs, 30) == []  # the lease is alive
        assert lifecycle.succeed(conn, theirs, [(job, "theirs", "sim-nano", 1)]) == 0
        assert lifecycle.succeed(conn, mine, [(job, "mine", "sim-nano", 1)]) == 1
        assert conn.execute(text("SELECT status, content, lease_owner FROM jobs")).one() == ("succeeded", "mine", None)
