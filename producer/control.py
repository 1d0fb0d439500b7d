"""Stopping a batch and sending its failed jobs round again.

Cancel marks the batch and moves its jobs that wait (pending or queued) to `cancelled` in one guarded
UPDATE; workers only claim jobs that are queued for their own message, so these get no model call.
Jobs already running finish the call in flight, and their results and cost rows stay.

Retry moves failed jobs back to `pending` under new classify messages, exactly as a submission does:
commit first, then send, so the worker sees the jobs it is sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import Connection, Engine, text

from tierq.config import Config
from tierq.errors import InputError, NotFound
from tierq.queues import CLASSIFY_QUEUE, CLASSIFY_TASK


@dataclass(frozen=True, slots=True)
class CancelResult:
    """Jobs moved to cancelled, and jobs still running their last call."""

    batch_id: uuid.UUID
    cancelled: int
    running: int

    def as_dict(self) -> dict[str, object]:
        """The `--json` form."""
        return {"batch_id": str(self.batch_id), "cancelled": self.cancelled, "running": self.running}


def _is_cancelled(conn: Connection, batch_id: uuid.UUID, lock: str) -> bool:
    """The batch's cancelled flag, with the batch row locked so cancel and retry never interleave."""
    cancelled = conn.execute(text(f"SELECT cancelled FROM batches WHERE id = :id {lock}"), {"id": batch_id}).first()
    if cancelled is None:
        raise NotFound(f"no batch {batch_id}; check the id printed by `tierq submit`")
    return bool(cancelled[0])


def cancel_batch(engine: Engine, batch_id: uuid.UUID) -> CancelResult:
    """Cancel the batch's waiting jobs; safe to repeat."""
    with engine.begin() as conn:
        _is_cancelled(conn, batch_id, "FOR UPDATE")
        conn.execute(text("UPDATE batches SET cancelled = true WHERE id = :id"), {"id": batch_id})
        moved = conn.execute(
            text(
                "UPDATE jobs SET status = 'cancelled', error = 'cancelled: tierq cancel', finished_at = now(), "
                "updated_at = now() WHERE batch_id = :id AND status IN ('pending', 'queued', 'waiting')"
            ),
            {"id": batch_id},
        ).rowcount
        running = conn.execute(
            text("SELECT count(*) FROM jobs WHERE batch_id = :id AND status = 'running'"), {"id": batch_id}
        ).scalar_one()
    return CancelResult(batch_id, moved, running)


def retry_failed(engine: Engine, app: Celery, config: Config, batch_id: uuid.UUID) -> int:
    """Send the batch's failed jobs to the classify step again; returns how many were re-queued."""
    chunk = config.worker.classify_chunk
    after, requeued = 0, 0
    while True:
        handoff = uuid.uuid4()
        with engine.begin() as conn:
            if _is_cancelled(conn, batch_id, "FOR SHARE"):
                raise InputError(f"batch {batch_id} is cancelled, so its jobs do not run again; submit the failed "
                                 "records as a new batch (`tierq results` lists them)")
            ids = list(conn.execute(_REQUEUE, {"batch": batch_id, "after": after, "n": chunk, "me": handoff}).scalars())
        if not ids:
            return requeued
        ids.sort()
        app.send_task(CLASSIFY_TASK, args=[ids], kwargs={"batch": str(batch_id)}, task_id=str(handoff),
                      queue=CLASSIFY_QUEUE)
        requeued += len(ids)
        after = ids[-1]


# One chunk of failed jobs, in id order, back to pending under a new message. The job's route and
# outcome are cleared so the classify step routes it afresh; attempts and escalations keep counting,
# and its cost rows stay, since those calls were made and paid for.
_REQUEUE = text(
    """
    UPDATE jobs SET status = 'pending', handoff = :me, handoff_from = NULL, tier = NULL, start_tier = NULL,
           error = NULL, content = NULL, model = NULL, finished_at = NULL, updated_at = now()
    WHERE id IN (SELECT id FROM jobs WHERE batch_id = :batch AND status = 'failed' AND id > :after
                 ORDER BY id LIMIT :n FOR UPDATE)
      AND status = 'failed'
    RETURNING id
    """
)
