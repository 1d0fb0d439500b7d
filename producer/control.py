"""Stopping a batch and sending its failed jobs round again.

Cancel marks the batch and moves its jobs that wait (pending, queued or following another job) to
`cancelled`; workers only claim jobs that are queued for their own message, so these get no model call.
A job already answered and queued to be audited ends `succeeded` with that answer instead. Jobs
already running finish the call in flight, and their results and cost rows stay; they make no further
call (retry or other model) once their worker has seen the cancel (within 2 s: `workers/leases.py`). A
`--no-store-text` batch's prompts leave Redis with the cancel.

Retry moves failed jobs back to `pending` under new classify messages, exactly as a submission does:
commit first, then send, so the worker sees the jobs it is sent.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

from psycopg.errors import DeadlockDetected
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from models import JobStatus, lifecycle, provider_batch
from models.lifecycle import Outbox
from tierq.config import Config
from tierq.errors import InputError, NotFound
from tierq.publish import Publisher
from tierq.vault import TextVault


@dataclass(frozen=True, slots=True)
class CancelResult:
    """Jobs moved to cancelled, and jobs still running their last call."""

    batch_id: uuid.UUID
    cancelled: int
    running: int
    finished: bool = False  # the batch had finished: nothing was cancelled, and it is not marked cancelled
    already: bool = False  # an earlier cancel had marked it cancelled
    kept: int = 0  # jobs waiting to be audited, which ended succeeded with the answer they had

    def as_dict(self) -> dict[str, object]:
        """The `--json` form."""
        return {"batch_id": str(self.batch_id), "cancelled": self.cancelled, "running": self.running,
                "finished": self.finished, "already_cancelled": self.already, "kept_answers": self.kept}


def _is_cancelled(conn: Connection, batch_id: uuid.UUID, lock: str) -> bool:
    """The batch's cancelled flag, with the batch row locked so cancel and retry never interleave."""
    cancelled = conn.execute(text(f"SELECT cancelled FROM batches WHERE id = :id {lock}"), {"id": batch_id}).first()
    if cancelled is None:
        raise NotFound(f"no batch {batch_id}; check the id printed by `tierq submit`")
    return bool(cancelled[0])


def _keeps_no_text(conn: Connection, batch_id: uuid.UUID) -> bool:
    """Whether the batch is private (its texts in the vault, deleted as each job ends) and has failed jobs."""
    return bool(conn.execute(text("SELECT NOT b.store_text AND EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id "
                                  "AND j.status = 'failed') FROM batches b WHERE b.id = :id"),
                             {"id": batch_id}).scalar())


# A cancel takes the batch row first and then its jobs, while a classify step that updates a job twice in one
# transaction takes the job and then (the foreign key's check of the second update) the batch row: when the
# two meet, Postgres ends one of them as a deadlock. The cancel is safe to run again, so it is.
DEADLOCK_TRIES = 5


def cancel_batch(engine: Engine, batch_id: uuid.UUID, vault: TextVault | None = None) -> CancelResult:
    """Cancel the batch's waiting jobs; safe to repeat. A private batch's prompts leave Redis at once."""
    for tries_left in range(DEADLOCK_TRIES - 1, -1, -1):
        try:
            return _cancel_once(engine, batch_id, vault)
        except OperationalError as exc:
            if tries_left == 0 or not isinstance(exc.orig, DeadlockDetected):
                raise
            time.sleep(random.uniform(0.05, 0.2))  # the other transaction ends meanwhile
    raise AssertionError("unreachable")


def _cancel_once(engine: Engine, batch_id: uuid.UUID, vault: TextVault | None) -> CancelResult:
    with engine.begin() as conn:
        # FOR UPDATE, not NO KEY UPDATE: it must wait for a submit still copying jobs in (their foreign key
        # holds KEY SHARE on the batch row), or those jobs would commit pending in a cancelled batch.
        already = _is_cancelled(conn, batch_id, "FOR UPDATE")
        ended = lifecycle.cancel_batch(conn, batch_id)
        if ended is None:  # it had finished: cancelling it would only keep `retry --failed` from running it
            return CancelResult(batch_id, 0, 0, finished=True)
        moved, kept = ended
        provider_batch.end_collecting(conn, batch_id)  # provider files not sent yet; sent ones end on their next look
        running = conn.execute(
            text(f"SELECT count(*) FROM jobs WHERE batch_id = :id AND status = '{JobStatus.RUNNING}'"), {"id": batch_id}
        ).scalar_one()
        private = not conn.execute(text("SELECT store_text FROM batches WHERE id = :id"), {"id": batch_id}).scalar_one()
    if private and (moved or kept) and vault is not None:
        vault.forget_prompts(moved + kept)
    return CancelResult(batch_id, len(moved), running, already=already, kept=len(kept))


def _cancelled_problem(conn: Connection, batch_id: uuid.UUID) -> str:
    """Why a cancelled batch's jobs do not run again, and what does: its records submitted afresh. `results`
    names the jobs (their ids and states) but holds no prompts, so the records come from the user's input."""
    counts: dict[str, int] = dict(conn.execute(text(
        f"SELECT status, count(*) FROM jobs WHERE batch_id = :id AND status IN ('{JobStatus.CANCELLED}', "
        f"'{JobStatus.FAILED}', '{JobStatus.RUNNING}') GROUP BY status"), {"id": batch_id}).all())
    cancelled, failed = counts.get(JobStatus.CANCELLED.value, 0), counts.get(JobStatus.FAILED.value, 0)
    running = counts.get(JobStatus.RUNNING.value, 0)  # a call was out when it was cancelled: it ends after it
    if not cancelled and not failed and not running:
        return f"batch {batch_id} is cancelled and none of its jobs failed or was cancelled: there is nothing to retry"
    what = ", ".join(f"{n:,} {state}" for n, state in ((cancelled, "cancelled"), (failed, "failed"),
                                                        (running, "still running, ending after its call")) if n)
    return (f"batch {batch_id} is cancelled, so its jobs do not run again ({what}); to run them, submit their "
            f"records from your input file as a new batch (`tierq results {batch_id}` gives each job's id and "
            "status)")


def retry_failed(engine: Engine, publisher: Publisher, config: Config, batch_id: uuid.UUID) -> int:
    """Send the batch's failed jobs to the classify step again; returns how many were re-queued."""
    chunk = config.worker.classify_chunk
    after, requeued = 0, 0
    while True:
        outbox = Outbox()
        with engine.begin() as conn:
            if _is_cancelled(conn, batch_id, "FOR SHARE"):
                raise InputError(_cancelled_problem(conn, batch_id))
            if after == 0 and _keeps_no_text(conn, batch_id):
                raise InputError(f"batch {batch_id} was submitted with --no-store-text, so each job's prompt left "
                                 "Redis when the job ended and its failed jobs cannot run again; submit the failed "
                                 "records again (`tierq results` lists their ids)")
            ids = lifecycle.requeue_failed(conn, outbox, batch_id, after, chunk)
        if not ids:
            return requeued
        publisher.publish(outbox.messages)
        requeued += len(ids)
        after = ids[-1]
