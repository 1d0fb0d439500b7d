"""The classify step: answer from the cache, coalesce duplicates, pick each job's starting tier."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from workers.compress import compress_pending
from workers.context import WorkerContext
from workers.dedup import Dedup, deduplicate
from workers.private import EXPIRED, reveal_pending
from workers.routing import Bounds
from workers.sharing import answer_from_cache, follow, lead
from workers.store import PendingJob, hand_off, note_attempts, pending_jobs, unsent_handoffs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClassifySummary:
    """How many jobs went to each tier, came from the cache, follow another job, or fit no tier."""

    routed: dict[str, int]
    cached: int
    following: int
    failed: int


def _routes(ctx: WorkerContext, jobs: list[PendingJob]) -> tuple[dict[int, str], list[tuple[int, str, int]]]:
    routes: dict[int, str] = {}
    unroutable: list[tuple[int, str, int]] = []
    for job in jobs:
        reserve = int(job.params.get("max_tokens") or job.params.get("max_completion_tokens") or 0)
        route = ctx.router.route(job.messages, job.task_type, Bounds(job.force_tier, job.min_tier, job.max_tier), reserve)
        if route.tier is None:
            unroutable.append((job.id, route.reason, 0))
        else:
            routes[job.id] = route.tier
    return routes, unroutable


def classify_chunk(ctx: WorkerContext, job_ids: Sequence[int], message_id: uuid.UUID) -> ClassifySummary:
    """Route the jobs this message owns; safe to run again for the same message."""
    with ctx.engine.connect() as conn:
        resend = unsent_handoffs(conn, job_ids, message_id)
        jobs = pending_jobs(conn, job_ids, message_id)
    expired: list[int] = []
    if any(job.private for job in jobs):
        jobs, expired = reveal_pending(ctx.vault, jobs)
    jobs = compress_pending(ctx, jobs, message_id)
    routes, unroutable = _routes(ctx, jobs)
    unroutable += [(job_id, EXPIRED, 0) for job_id in expired]
    dedup = Dedup()
    if ctx.config.cache.enabled:
        dedup = deduplicate(ctx, [job for job in jobs if job.use_cache and job.id in routes])
    batch = jobs[0].batch_id if jobs else None
    with ctx.engine.begin() as conn:
        cached = answer_from_cache(conn, dedup.hits, message_id)
        parked = follow(conn, dedup.followers, message_id)
        lead(conn, dedup.leaders, message_id)
        to_queue = {j: t for j, t in routes.items() if j not in dedup.hits and j not in dedup.followers}
        handoffs = hand_off(conn, to_queue, message_id, ctx.config.worker.tier_chunk,
                            batch_id=batch, from_status="pending", escalation=False)
        note_attempts(conn, unroutable, message_id, final=True)
    if resend:
        log.warning("re-sending %d hand-offs of redelivered classify message %s", len(resend), message_id)
    ctx.send([*resend, *handoffs])
    if parked:
        ctx.send_follow(parked, batch)
    routed: dict[str, int] = {}
    for handoff in handoffs:
        routed[handoff.tier] = routed.get(handoff.tier, 0) + len(handoff.job_ids)
    return ClassifySummary(routed, cached, len(parked), len(unroutable))
