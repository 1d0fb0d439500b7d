"""The message contract between producers and workers: task names, the routing queue, and the messages
themselves. Kept apart from the Celery settings (tierq/queues.py) so that what builds messages does not
load kombu.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

CLASSIFY_QUEUE = "classify"
CLASSIFY_TASK = "tierq.classify"
TIER_TASK = "tierq.tier"
FOLLOW_TASK = "tierq.follow"


@dataclass(frozen=True, slots=True)
class Message:
    """One task message: its task, queue and arguments, its id (the handoff its jobs name) and a delay."""

    task: str
    queue: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    countdown: float | None = None


def _batch(batch_id: uuid.UUID | str | None) -> str | None:
    return str(batch_id) if batch_id else None


def classify_message(job_ids: Sequence[int], batch_id: uuid.UUID | str | None, message_id: uuid.UUID,
                     countdown: float | None = None) -> Message:
    """Route the jobs that were set pending under `message_id`."""
    return Message(CLASSIFY_TASK, CLASSIFY_QUEUE, (list(job_ids),), {"batch": _batch(batch_id)}, message_id, countdown)


def tier_message(tier: str, job_ids: Sequence[int], batch_id: uuid.UUID | str | None, message_id: uuid.UUID,
                 countdown: float | None = None) -> Message:
    """Answer the jobs queued at `tier` under `message_id`."""
    return Message(TIER_TASK, tier, (tier, list(job_ids)), {"batch": _batch(batch_id)}, message_id, countdown)


def follow_message(job_ids: Sequence[int], checks: int, countdown: float) -> Message:
    """Check on jobs that wait for another job's answer, after `countdown` seconds."""
    return Message(FOLLOW_TASK, CLASSIFY_QUEUE, (list(job_ids),), {"checks": checks}, uuid.uuid4(), countdown)
