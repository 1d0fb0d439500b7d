"""`tierq recover`: publish again, now, the messages of jobs that wait with no message to carry them.

The workers' reconciler (workers/reconcile.py) does this on its own for jobs whose message is not live;
`recover` is for an operator who knows better (a broker that lost its queues while the registry of live
messages survived, say): it publishes the message of every job pending or queued and unchanged for
`older_than`, and of running jobs whose lease ran out. Publishing a message under the same id is
harmless when the original still exists: only one of them can change the job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Engine

from models import stale
from models.lifecycle import Outbox
from tierq.publish import Publisher


@dataclass(frozen=True, slots=True)
class Recovered:
    """Messages published again, and the jobs they carry."""

    messages: int
    jobs: int


def recover(engine: Engine, publisher: Publisher, batch_id: uuid.UUID | None, older_than_s: float) -> Recovered:
    """Publish again the message of every job stuck for `older_than_s` seconds (of one batch, or all)."""
    outbox = Outbox()
    jobs = 0
    with engine.begin() as conn:
        for group in stale.stale(conn, older_than_s, batch_id):
            jobs += stale.recovered(conn, outbox, group, older_than_s)
    publisher.publish(outbox.messages)
    return Recovered(len(outbox.messages), jobs)
