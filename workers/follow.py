"""Followers: give them their leader's answer, keep them waiting, or let one take over.

A follow message checks its jobs every `lease_s`. A leader that succeeded shares its answer; one that
failed, was cancelled, or whose worker stopped renewing its lease is replaced: its followers go back
to routing, where one of them becomes the new leader. No follower waits forever, and one whose batch
would not wait for a provider's batch API does not wait for a leader answered there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from models import JobStatus, following, provider_batch
from models.lifecycle import Outbox
from tierq.config import batch_deadline
from tierq.contract import follow_message
from workers.context import WorkerContext
from workers.sharing import answer_followers, leader_state, shared_answer

MAX_CHECKS = 120  # then a follower stops waiting even for a leader that looks alive


@dataclass(frozen=True, slots=True)
class FollowSummary:
    """What became of the followers checked."""

    answered: int
    released: int
    waiting: int


def check_followers(ctx: WorkerContext, job_ids: Sequence[int], checks: int) -> FollowSummary:
    """Resolve, keep or release the waiting jobs among `job_ids`."""
    answered = 0
    still: list[int] = []
    outbox = Outbox()
    with ctx.engine.begin() as conn:
        rows = conn.execute(
            text("SELECT j.id, j.follows, j.cache_entry, b.params FROM jobs j JOIN batches b ON b.id = j.batch_id "
                 f"WHERE j.id = ANY(:ids) AND j.status = '{JobStatus.WAITING}'"),
            {"ids": list(job_ids)},
        ).all()
        by_leader: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
        deadlines: dict[int, float | None] = {}
        for job_id, leader, entry, params in rows:
            by_leader[leader].append((job_id, entry))
            deadlines[job_id] = batch_deadline(params)
        states = leader_state(conn, list(by_leader))
        gone: list[int] = []
        for leader, followers in by_leader.items():
            status, content, model, tier = states.get(leader, ("missing", None, None, None))
            if status == JobStatus.SUCCEEDED and content is not None:
                answered += answer_followers(
                    conn, leader, shared_answer(conn, leader, content, model or "", tier or "")
                )
            elif _gone(ctx, status, leader) or checks >= MAX_CHECKS:
                _drop_entries(ctx, leader, followers)
                gone.append(leader)
            else:
                still.extend(job_id for job_id, _ in followers)
        released = following.release_followers(conn, outbox, gone, ctx.config.worker.classify_chunk)
        impatient = _impatient(ctx, conn, by_leader, still, deadlines)
        for leader in {leader for leader, fs in by_leader.items() if any(f in impatient for f, _ in fs)}:
            # Routed again, they must not find this leader's entry and follow it once more.
            _drop_entries(ctx, leader, [(f, e) for f, e in by_leader[leader] if f in impatient])
        released += following.release_jobs(conn, outbox, sorted(impatient), ctx.config.worker.classify_chunk)
        still = [job_id for job_id in still if job_id not in impatient]
        following.touch_waiting(conn, still)
        if still:
            outbox.add(follow_message(still, checks + 1, ctx.config.cache.lease_s))
    ctx.publish(outbox)
    return FollowSummary(answered, released, len(still))


def _impatient(ctx: WorkerContext, conn: Connection, by_leader: dict[int, list[tuple[int, int | None]]],
               still: list[int], deadlines: dict[int, float | None]) -> set[int]:
    """Followers still waiting whose leader waits in a provider batch that their own batch would not use
    (no deadline, or too short a one: `TierConfig.uses_batch_api`)."""
    waiting = set(still)
    parked = provider_batch.in_provider_batches(conn, [leader for leader, fs in by_leader.items()
                                                       if any(f in waiting for f, _ in fs)])
    return {job_id for leader, tier in parked.items() for job_id, _ in by_leader[leader]
            if job_id in waiting and not ctx.config.tier(tier).uses_batch_api(deadlines[job_id])}


def _gone(ctx: WorkerContext, status: str, leader: int) -> bool:
    if status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SUCCEEDED, "missing"):
        return True
    return status == JobStatus.RUNNING and not ctx.cache.alive(leader)


def _drop_entries(ctx: WorkerContext, leader: int, followers: list[tuple[int, int | None]]) -> None:
    for entry in {e for _, e in followers if e is not None}:
        ctx.cache.drop(entry, leader)
