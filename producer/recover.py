"""`tierq recover`: publish again the messages of jobs that wait with no message to carry them.

Each waiting job names the message that owns it (`jobs.handoff`). If that message was lost (the
producer died between its commit and its publish, a broker lost its queue, a task gave up after its
retries), the job would wait forever. Publishing a message under the same id is harmless when the
original still exists: only one of them can change the job, so recovery may be run at any time; a
threshold on the job's last change keeps it from duplicating messages still in a healthy queue.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from celery import Celery
from sqlalchemy import Engine, text

from tierq.queues import CLASSIFY_QUEUE, CLASSIFY_TASK, TIER_TASK

_STUCK = text(
    """
    SELECT status, tier, handoff, min(batch_id::text), array_agg(id ORDER BY id)
    FROM jobs
    WHERE status IN ('pending', 'queued') AND handoff IS NOT NULL AND updated_at < :before
      AND (CAST(:batch AS uuid) IS NULL OR batch_id = CAST(:batch AS uuid))
    GROUP BY status, tier, handoff
    """
)


@dataclass(frozen=True, slots=True)
class Recovered:
    """Messages published again, and the jobs they carry."""

    messages: int
    jobs: int


def recover(engine: Engine, app: Celery, batch_id: uuid.UUID | None, before: datetime) -> Recovered:
    """Publish again the message of every job pending or queued, unchanged since `before`."""
    with engine.connect() as conn:
        groups = conn.execute(_STUCK, {"before": before, "batch": batch_id}).all()
    jobs = 0
    with app.producer_or_acquire() as producer:
        for status, tier, handoff, batch, ids in groups:
            if status == "pending":
                app.send_task(CLASSIFY_TASK, args=[list(ids)], kwargs={"batch": batch}, task_id=str(handoff),
                              queue=CLASSIFY_QUEUE, producer=producer)
            else:
                app.send_task(TIER_TASK, args=[tier, list(ids)], kwargs={"batch": batch}, task_id=str(handoff),
                              queue=tier, producer=producer)
            jobs += len(ids)
    return Recovered(len(groups), jobs)
