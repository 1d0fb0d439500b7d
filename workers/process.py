"""The tier step: answer a chunk of jobs concurrently, record every call, then finish or escalate each."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from tierq.config import TierConfig
from workers.calls import JobWork, TierResult, answer_at_tier
from workers.context import WorkerContext
from workers.dbretry import with_db_retry
from workers.private import EXPIRED, reveal_claimed, seal_answers
from workers.sharing import SharedAnswer, answer_followers, release_followers
from workers.store import (
    ClaimedJob,
    call_row,
    cancel_leftovers,
    claim,
    hand_off,
    note_attempts,
    record_calls,
    succeed,
    unsent_handoffs,
)
from workers.validators import attach_checks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TierSummary:
    """What became of a chunk's jobs at one tier."""

    claimed: int
    succeeded: int
    escalated: int
    failed: int
    calls: int
    shared: int = 0


@dataclass(slots=True)
class _Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, str | None, str, int]] = field(default_factory=list)
    misses: list[tuple[int, str, int]] = field(default_factory=list)
    stopped: list[tuple[int, str, int]] = field(default_factory=list)  # failed here for good (budget)
    fills: list[tuple[ClaimedJob, SharedAnswer]] = field(default_factory=list)


def process_chunk(ctx: WorkerContext, tier_name: str, job_ids: Sequence[int], message_id: uuid.UUID) -> TierSummary:
    """Answer the jobs this message owns at `tier_name`; safe to run again for the same message."""
    tier = ctx.config.tier(tier_name)
    with ctx.engine.begin() as conn:
        resend = unsent_handoffs(conn, job_ids, message_id)
        jobs = claim(conn, job_ids, tier.name, message_id)
    if resend:
        log.warning("re-sending %d hand-offs of redelivered %s message %s", len(resend), tier.name, message_id)
        ctx.send(resend)
    if any(job.private for job in jobs):
        jobs, expired = reveal_claimed(ctx.vault, jobs)
        if expired:
            with ctx.engine.begin() as conn:
                note_attempts(conn, [(job_id, EXPIRED, 0) for job_id in expired], message_id, final=True)
    if not jobs:
        return TierSummary(0, 0, 0, 0, 0)
    leaders = [job.id for job in jobs if job.cache_entry is not None]
    if leaders:
        ctx.cache.renew_leases(leaders)
    results = ctx.loop.run(_answer_all(ctx, tier, jobs, leaders))
    return _finish(ctx, tier, jobs, results, message_id)


async def _answer_all(ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob], leaders: list[int]) -> list[TierResult]:
    work = [JobWork(job.id, job.messages, job.params, job.batch_id, job.budgeted) for job in jobs]
    await attach_checks(ctx, work)
    heartbeat = asyncio.create_task(_keep_leases(ctx, leaders)) if leaders else None
    try:
        return list(await asyncio.gather(*(answer_at_tier(ctx.client, ctx.config, tier, w, ctx.budget) for w in work)))
    finally:
        if heartbeat is not None:
            heartbeat.cancel()


async def _keep_leases(ctx: WorkerContext, leaders: list[int]) -> None:
    """Renew the leaders' leases so their followers keep waiting while the calls run."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(ctx.config.cache.lease_s / 3)
        await loop.run_in_executor(None, ctx.cache.renew_leases, leaders)


def _sort(tier: TierConfig, jobs: list[ClaimedJob], results: list[TierResult]) -> _Outcome:
    out = _Outcome()
    for job, result in zip(jobs, results, strict=True):
        out.rows.extend(
            call_row(r, job_id=job.id, batch_id=job.batch_id, attempt=job.attempts + n, tier=tier.name)
            for n, r in enumerate(result.records, start=1)
        )
        answer = result.answer
        if answer is not None:
            out.answers.append((job.id, answer.content or "", answer.model, len(result.records)))
            if job.cache_entry is not None:
                usage = answer.usage
                out.fills.append((job, SharedAnswer(answer.content or "", answer.model, tier.name, answer.cost_usd,
                                                    usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)))
        elif result.final:
            out.stopped.append((job.id, result.reason or "stopped", len(result.records)))
        else:
            out.misses.append((job.id, f"{tier.name}: {result.reason or 'no usable answer'}", len(result.records)))
    return out


def _finish(
    ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob], results: list[TierResult], message_id: uuid.UUID
) -> TierSummary:
    next_tier = ctx.config.next_tier(tier.name)
    out = _sort(tier, jobs, results)
    answers, digests = seal_answers(ctx.vault, jobs, out.answers) if any(j.private for j in jobs) else (out.answers, {})
    final_ids = {m[0] for m in out.stopped} | ({m[0] for m in out.misses} if next_tier is None else set())
    failed_leaders = [job for job in jobs if job.cache_entry is not None and job.id in final_ids]

    def record() -> tuple[int, int, dict[uuid.UUID, tuple[list[int], uuid.UUID]]]:
        with ctx.engine.begin() as conn:
            record_calls(conn, out.rows)
            done = succeed(conn, answers, message_id, digests)
            shared = sum(answer_followers(conn, job.id, share) for job, share in out.fills)
            note_attempts(conn, out.misses, message_id, final=next_tier is None)
            note_attempts(conn, out.stopped, message_id, final=True)
            if next_tier is not None and out.misses:
                hand_off(conn, {job_id: next_tier for job_id, _, _ in out.misses}, message_id,
                         ctx.config.worker.tier_chunk, batch_id=jobs[0].batch_id, from_status="running",
                         escalation=True)
            cancel_leftovers(conn, [job.id for job in jobs], message_id)
            return done, shared, _release(ctx, conn, failed_leaders)

    # The calls are paid for: keep their rows through a database outage instead of failing the task.
    done, shared, released = with_db_retry(record, what=f"recording {len(out.rows)} calls")
    handoffs = []
    if next_tier is not None and out.misses:
        # Read back what this message handed off, so a commit whose acknowledgement was lost still sends.
        with ctx.engine.connect() as conn:
            handoffs = unsent_handoffs(conn, [job.id for job in jobs], message_id)
    ctx.send(handoffs)
    for job, share in out.fills:
        assert job.cache_entry is not None
        ctx.cache.fill(job.cache_entry, job.id, share.content, share.model, share.tier, share.saved_usd,
                       (share.prompt_tokens, share.completion_tokens, share.cached_tokens))
    for job in failed_leaders:
        assert job.cache_entry is not None
        ctx.cache.drop(job.cache_entry, job.id)
    for message, (ids, batch) in released.items():
        ctx.send_classify(ids, batch, message)
    ended = final_ids | {a[0] for a in out.answers}
    private_ended = [job.id for job in jobs if job.private and job.id in ended]
    if private_ended:
        ctx.vault.forget_prompts(private_ended)
    escalated = sum(len(h.job_ids) for h in handoffs)
    failed = (len(out.misses) if next_tier is None else 0) + len(out.stopped)
    return TierSummary(len(jobs), done, escalated, failed, len(out.rows), shared)


def _release(ctx: WorkerContext, conn: Connection, leaders: list[ClaimedJob]) -> dict[uuid.UUID, tuple[list[int], uuid.UUID]]:
    """Followers of leaders that failed for good go back to routing, one message per leader."""
    released: dict[uuid.UUID, tuple[list[int], uuid.UUID]] = {}
    for job in leaders:
        message_id = uuid.uuid4()
        jobs = release_followers(conn, job.id, message_id)
        if jobs:
            released[message_id] = ([j for j, _ in jobs], job.batch_id)
    return released
