"""The classify step: pick each job's starting tier and put it on that tier's queue."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from workers.context import WorkerContext
from workers.routing import Bounds
from workers.store import hand_off, note_attempts, pending_jobs, unsent_handoffs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClassifySummary:
    """How many jobs went to each tier, and how many no tier could take."""

    routed: dict[str, int]
    failed: int


def classify_chunk(ctx: WorkerContext, job_ids: Sequence[int], message_id: uuid.UUID) -> ClassifySummary:
    """Route the jobs this message owns; safe to run again for the same message."""
    config = ctx.config
    with ctx.engine.begin() as conn:
        resend = unsent_handoffs(conn, job_ids, message_id)
        jobs = pending_jobs(conn, job_ids, message_id)
        routes: dict[int, str] = {}
        unroutable: list[tuple[int, str, int]] = []
        for job in jobs:
            reserve = int(job.params.get("max_tokens") or job.params.get("max_completion_tokens") or 0)
            route = ctx.router.route(job.messages, job.task_type, Bounds(job.force_tier, job.min_tier, job.max_tier), reserve)
            if route.tier is None:
                unroutable.append((job.id, route.reason, 0))
            else:
                routes[job.id] = route.tier
        batch = jobs[0].batch_id if jobs else None
        handoffs = hand_off(
            conn, routes, message_id, config.worker.tier_chunk, batch_id=batch, from_status="pending", escalation=False
        )
        note_attempts(conn, unroutable, message_id, final=True)
    if resend:
        log.warning("re-sending %d hand-offs of redelivered classify message %s", len(resend), message_id)
    ctx.send([*resend, *handoffs])
    routed: dict[str, int] = {}
    for handoff in handoffs:
        routed[handoff.tier] = routed.get(handoff.tier, 0) + len(handoff.job_ids)
    return ClassifySummary(routed, len(unroutable))
