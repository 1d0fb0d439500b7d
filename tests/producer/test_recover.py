"""`tierq recover` publishes again the message of a job whose message was lost, and nothing else."""

from __future__ import annotations

import time
import uuid

from conftest import Stack, insert_job
from sqlalchemy import text

from producer.recover import recover


def lost_job(stack: Stack, status: str, tier: str | None) -> int:
    return insert_job(stack, "Where is my parcel?", status=status, tier=tier, handoff=uuid.uuid4(), age_s=3600)


def test_recover_requeues_lost_messages_once_they_are_old_enough(clean: Stack) -> None:
    pending, queued = lost_job(clean, "pending", None), lost_job(clean, "queued", "warm")
    with clean.client() as tq:
        assert recover(tq.engine, tq.publisher, None, 2 * 3600).jobs == 0
        done = recover(tq.engine, tq.publisher, None, 0)
        assert (done.messages, done.jobs) == (2, 2)
        for _ in range(100):
            with clean.engine.connect() as conn:
                states = dict(conn.execute(text("SELECT id, status FROM jobs")).all())
            if set(states.values()) == {"succeeded"}:
                break
            time.sleep(0.2)
    assert states == {pending: "succeeded", queued: "succeeded"}
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == 2
