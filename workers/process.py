"""The tier step: answer a chunk of jobs concurrently, record every call, then finish or escalate each."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tierq.config import TierConfig
from workers.calls import JobWork, TierResult, answer_at_tier
from workers.context import WorkerContext
from workers.store import (
    ClaimedJob,
    call_row,
    claim,
    hand_off,
    note_attempts,
    record_calls,
    succeed,
    unsent_handoffs,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TierSummary:
    """What became of a chunk's jobs at one tier."""

    claimed: int
    succeeded: int
    escalated: int
    failed: int
    calls: int


def process_chunk(ctx: WorkerContext, tier_name: str, job_ids: Sequence[int], message_id: uuid.UUID) -> TierSummary:
    """Answer the jobs this message owns at `tier_name`; safe to run again for the same message."""
    tier = ctx.config.tier(tier_name)
    with ctx.engine.begin() as conn:
        resend = unsent_handoffs(conn, job_ids, message_id)
        jobs = claim(conn, job_ids, tier.name, message_id)
    if resend:
        log.warning("re-sending %d hand-offs of redelivered %s message %s", len(resend), tier.name, message_id)
        ctx.send(resend)
    if not jobs:
        return TierSummary(0, 0, 0, 0, 0)
    results = ctx.loop.run(_answer_all(ctx, tier, jobs))
    return _finish(ctx, tier, jobs, results, message_id)


async def _answer_all(ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob]) -> list[TierResult]:
    work = [JobWork(job.id, job.messages, job.params) for job in jobs]
    return list(await asyncio.gather(*(answer_at_tier(ctx.client, ctx.config, tier, w) for w in work)))


def _finish(
    ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob], results: list[TierResult], message_id: uuid.UUID
) -> TierSummary:
    next_tier = ctx.config.next_tier(tier.name)
    rows: list[dict[str, Any]] = []
    answers: list[tuple[int, str, str, int]] = []
    misses: list[tuple[int, str, int]] = []
    for job, result in zip(jobs, results, strict=True):
        rows.extend(
            call_row(r, job_id=job.id, batch_id=job.batch_id, attempt=job.attempts + n, tier=tier.name)
            for n, r in enumerate(result.records, start=1)
        )
        if result.answer is not None:
            answers.append((job.id, result.answer.content or "", result.answer.model, len(result.records)))
        else:
            misses.append((job.id, f"{tier.name}: {result.reason or 'no usable answer'}", len(result.records)))
    with ctx.engine.begin() as conn:
        record_calls(conn, rows)
        done = succeed(conn, answers, message_id)
        note_attempts(conn, misses, message_id, final=next_tier is None)
        handoffs = []
        if next_tier is not None and misses:
            routes = {job_id: next_tier for job_id, _, _ in misses}
            handoffs = hand_off(
                conn, routes, message_id, ctx.config.worker.tier_chunk,
                batch_id=jobs[0].batch_id, from_status="running", escalation=True,
            )
    ctx.send(handoffs)
    escalated = sum(len(h.job_ids) for h in handoffs)
    failed = len(misses) if next_tier is None else 0
    return TierSummary(len(jobs), done, escalated, failed, len(rows))
