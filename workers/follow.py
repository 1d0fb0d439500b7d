"""Followers: give them their leader's answer, keep them waiting, or let one take over.

A follow message checks its jobs every `lease_s`. A leader that succeeded shares its answer; one that
failed, was cancelled, or whose worker stopped renewing its lease is replaced: its followers go back
to routing, where one of them becomes the new leader. No follower waits forever.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from workers.context import WorkerContext
from workers.sharing import answer_followers, leader_state, release_followers, shared_answer

MAX_CHECKS = 120  # then a follower stops waiting even for a leader that looks alive


@dataclass(frozen=True, slots=True)
class FollowSummary:
    """What became of the followers checked."""

    answered: int
    released: int
    waiting: int


def check_followers(ctx: WorkerContext, job_ids: Sequence[int], checks: int) -> FollowSummary:
    """Resolve, keep or release the waiting jobs among `job_ids`."""
    answered = released = 0
    still: list[int] = []
    with ctx.engine.begin() as conn:
        rows = conn.execute(
            text("SELECT id, follows, cache_entry FROM jobs WHERE id = ANY(:ids) AND status = 'waiting'"),
            {"ids": list(job_ids)},
        ).all()
        by_leader: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
        for job_id, leader, entry in rows:
            by_leader[leader].append((job_id, entry))
        states = leader_state(conn, list(by_leader))
        for leader, followers in by_leader.items():
            status, content, model, tier = states.get(leader, ("missing", None, None, None))
            if status == "succeeded" and content is not None:
                answered += answer_followers(conn, leader, shared_answer(conn, leader, content, model or "", tier or ""))
            elif _gone(ctx, status, leader) or checks >= MAX_CHECKS:
                released += _take_over(ctx, conn, leader, followers)
            else:
                still.extend(job_id for job_id, _ in followers)
    if still:
        ctx.send_follow(still, None, checks + 1)
    return FollowSummary(answered, released, len(still))


def _gone(ctx: WorkerContext, status: str, leader: int) -> bool:
    if status in ("failed", "cancelled", "missing", "succeeded"):
        return True
    return status == "running" and not ctx.cache.alive(leader)


def _take_over(ctx: WorkerContext, conn: Connection, leader: int, followers: list[tuple[int, int | None]]) -> int:
    for entry in {e for _, e in followers if e is not None}:
        ctx.cache.drop(entry, leader)
    message_id = uuid.uuid4()
    jobs = release_followers(conn, leader, message_id)
    if jobs:
        ctx.send_classify([job_id for job_id, _ in jobs], jobs[0][1], message_id)
    return len(jobs)
