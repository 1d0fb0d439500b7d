"""A redelivered task changes nothing twice, and re-sends a hand-off its dead worker may not have sent.

The tasks' plain functions run in this process against the real database and simulator; their messages
go to a real Redis broker database that no worker reads, so the test can look at what was published.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from conftest import Stack, insert_job
from sqlalchemy import text

from tierq.queues import celery_config
from workers.context import WorkerContext
from workers.process import process_chunk


@pytest.fixture()
def ctx(clean: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerContext]:
    monkeypatch.setenv("TIERQ_SIM_URL", clean.sim.base_url)
    broker = clean.dbs.url(1)
    redis.Redis.from_url(broker).flushdb()
    app = Celery("redelivery-test")
    app.conf.update(celery_config(clean.config, broker))
    context = WorkerContext(clean.settings, clean.config, app)
    yield context
    context.loop.run(context.client.close())
    context.engine.dispose()
    app.close()


def queued_job(stack: Stack, prompt: str, tier: str, handoff: uuid.UUID) -> int:
    return insert_job(stack, prompt, status="queued", tier=tier, handoff=handoff)


def published(ctx: WorkerContext, queue: str) -> list[str]:
    client = redis.Redis.from_url(ctx.app.conf.broker_url)
    return [json.loads(m)["headers"]["id"] for m in client.lrange(queue, 0, -1)]


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
    assert published(ctx, "warm") == [str(handoff)]
    assert published(ctx, "hot") == published(ctx, "cold") == published(ctx, "classify") == []  # each queue gets its own
    # Redelivered (its worker died after the commit): the same hand-off goes out again, no new call.
    assert process_chunk(ctx, "hot", [job], message).claimed == 0
    assert published(ctx, "warm") == [str(handoff), str(handoff)]
    assert clean.sim_stats()["requests"] == 1
    # The warm message answers it once, however often it arrives.
    assert process_chunk(ctx, "warm", [job], handoff).succeeded == 1
    assert process_chunk(ctx, "warm", [job], handoff).claimed == 0
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT outcome FROM calls ORDER BY attempt")).scalars().all() == ["refusal", "ok"]
