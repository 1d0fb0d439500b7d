"""`tierq recover` publishes again the message of a job whose message was lost, and nothing else."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta

from conftest import Stack
from sqlalchemy import text

from producer.recover import recover


def lost_job(stack: Stack, status: str, tier: str | None) -> int:
    batch = uuid.uuid4()
    with stack.engine.begin() as conn:
        conn.execute(text("INSERT INTO batches (id, tenant, task_type, params, total, rejected, cancelled) "
                          "VALUES (:id, 't', 'default', '{}', 1, 0, false)"), {"id": batch})
        return int(conn.execute(
            text("INSERT INTO jobs (batch_id, seq, custom_id, tenant, task_type, messages, params, prompt_chars, "
                 "status, tier, start_tier, handoff, attempts, escalations, updated_at) VALUES (:b, 1, 'j', 't', "
                 "'default', CAST(:m AS jsonb), '{}', 10, :status, :tier, :tier, :h, 0, 0, now() - interval '1 hour') "
                 "RETURNING id"),
            {"b": batch, "m": json.dumps([{"role": "user", "content": "Where is my parcel?"}]), "status": status,
             "tier": tier, "h": uuid.uuid4()},
        ).scalar_one())


def test_recover_requeues_lost_messages_once_they_are_old_enough(clean: Stack) -> None:
    pending, queued = lost_job(clean, "pending", None), lost_job(clean, "queued", "warm")
    with clean.client() as tq:
        assert recover(tq.engine, tq.sender, None, datetime.now().astimezone() - timedelta(hours=2)).jobs == 0
        done = recover(tq.engine, tq.sender, None, datetime.now().astimezone())
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
