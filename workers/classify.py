"""The classify step: answer from the cache, coalesce duplicates, pick each job's starting tier.

One bad job fails alone with its reason; the rest of its chunk goes on. Every hand-off is committed
before its message is published.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from models import following, lifecycle
from models.lifecycle import Outbox
from tierq.config import batch_deadline
from tierq.contract import follow_message
from tierq.errors import ConfigError
from workers.audits import draw
from workers.compress import compress_pending
from workers.context import WorkerContext
from workers.dbretry import is_transient
from workers.dedup import Dedup, deduplicate
from workers.private import EXPIRED, reveal_pending
from workers.routing import Bounds
from workers.sharing import answer_from_cache, audit_hits
from workers.store import PendingJob, pending_jobs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClassifySummary:
    """How many jobs went to each tier, came from the cache, follow another job, fit no tier or wait."""

    routed: dict[str, int]
    cached: int
    following: int
    failed: int
    held: int = 0


def job_error(exc: Exception) -> str:
    """A job's failure reason for an error that is not an outage (an outage is re-raised), nor this worker's
    configuration: a batch's tier that its TOML does not define says nothing of the job (the producer checked
    it against its own), so the message goes back for a worker that can route it (workers/tasks.py)."""
    if is_transient(exc) or isinstance(exc, ConfigError):
        raise exc
    log.exception("job failed with an unexpected error", exc_info=exc)
    return f"error: {type(exc).__name__}: {str(exc)[:200]}"


def _routes(ctx: WorkerContext, jobs: list[PendingJob]) -> tuple[dict[int, str], list[tuple[int, str, int]]]:
    routes: dict[int, str] = {}
    unroutable: list[tuple[int, str, int]] = []
    for job in jobs:
        try:
            reserve = int(job.params.get("max_tokens") or job.params.get("max_completion_tokens") or 0)
            route = ctx.router.route(job.messages, job.task_type, Bounds(job.force_tier, job.min_tier, job.max_tier),
                                     reserve)
        except Exception as exc:
            unroutable.append((job.id, job_error(exc), 0))
            continue
        if route.tier is None:
            unroutable.append((job.id, route.reason, 0))
            continue
        routes[job.id] = route.tier
        try:
            learned = ctx.learned.start_tier(job.task_type, job.messages, route.tier, job.force_tier is not None,
                                             job.max_tier)
        except Exception as exc:  # a router that cannot score a prompt leaves its rule-chosen tier
            if is_transient(exc):
                raise
            log.exception("the learned router could not score job %d; it keeps tier %s", job.id, route.tier)
            continue
        if learned is not None:
            routes[job.id] = learned[0]
    return routes, unroutable


def classify_chunk(ctx: WorkerContext, job_ids: Sequence[int], message_id: uuid.UUID) -> ClassifySummary:
    """Route the jobs this message owns; safe to run again for the same message."""
    outbox = Outbox()
    with ctx.engine.begin() as conn:
        if lifecycle.resend(conn, outbox, job_ids, message_id):
            log.warning("re-sending the hand-offs of redelivered classify message %s", message_id)
        jobs = pending_jobs(conn, job_ids, message_id)
    ctx.publish(outbox)
    expired: list[int] = []
    if any(job.private for job in jobs):
        jobs, expired = reveal_pending(ctx.vault, jobs)
    jobs, waiting = compress_pending(ctx, jobs, message_id)
    routes, failed = _routes(ctx, jobs)
    failed += [(job_id, EXPIRED, 0) for job_id in expired]
    dedup = _dedup(ctx, [job for job in jobs if job.use_cache and job.id in routes])
    batch = jobs[0].batch_id if jobs else None
    chunks = ctx.config.tier_chunks_for(batch_deadline(jobs[0].params) if jobs else None)  # one batch per message
    outbox = Outbox()
    tasks = {job.id: job.task_type for job in jobs}
    audited = {j: a for j, a in dedup.hits.items()
               if j in dedup.semantic and draw(j) < ctx.config.quality.rate_for(tasks[j])}
    with ctx.engine.begin() as conn:
        cached = answer_from_cache(conn, {j: a for j, a in dedup.hits.items() if j not in audited}, message_id)
        audit_hits(conn, outbox, audited, dedup.semantic, message_id, ctx.config.reference_tier,
                   chunks, batch)
        parked = following.park(conn, message_id, dedup.followers)
        following.mark_leaders(conn, message_id, dedup.leaders)
        to_queue = {j: t for j, t in routes.items() if j not in dedup.hits and j not in dedup.followers}
        lifecycle.route(conn, outbox, to_queue, message_id, chunks, batch)
        lifecycle.fail(conn, message_id, failed, final=True)
        if waiting:
            countdown = min(ctx.longest_countdown_s, max(0.5, max(waiting.values())))
            lifecycle.hold_pending(conn, outbox, list(waiting), message_id, batch, countdown)
        if parked:
            outbox.add(follow_message(parked, 0, ctx.config.cache.lease_s))
    ctx.publish(outbox)
    private = {job.id for job in jobs if job.private} | set(expired)
    if any(job_id in private for job_id, _, _ in failed):
        ctx.vault.forget_prompts(job_id for job_id, _, _ in failed if job_id in private)
    routed: dict[str, int] = {}
    for message in outbox.messages:
        if message.queue in routes.values():
            routed[message.queue] = routed.get(message.queue, 0) + len(message.args[-1])
    return ClassifySummary(routed, cached, len(parked), len(failed), len(waiting))


def _dedup(ctx: WorkerContext, jobs: list[PendingJob]) -> Dedup:
    """The cache's decisions; the cache only saves money, so a chunk it cannot handle goes on without it."""
    if not ctx.config.cache.enabled or not jobs:
        return Dedup()
    try:
        return deduplicate(ctx, jobs)
    except Exception as exc:
        if is_transient(exc):
            raise
        log.exception("the cache could not handle a chunk of %d jobs; they go on without it", len(jobs))
        return Dedup()
