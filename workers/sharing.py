"""Sharing one answer between jobs in Postgres: cache hits, leaders and the followers that wait on them.

A leader is a job whose question is being answered; followers (status `waiting`, `follows` = leader)
get its answer when it succeeds, or are routed again when it fails, so one of them takes over.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from models.enums import CallOutcome
from workers.store import record_calls


@dataclass(frozen=True, slots=True)
class SharedAnswer:
    """An answer given to jobs that did not call a model for it, and what that call cost."""

    content: str
    model: str
    tier: str
    saved_usd: Decimal
    # Tokens of the call that produced the answer, so reports can price the reuse (its cost is zero).
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


def hit_row(job_id: int, batch_id: uuid.UUID, answer: SharedAnswer) -> dict[str, Any]:
    """The cost row of a cache hit: zero cost, the saved cost of the call it replaced."""
    return {
        "id": uuid.uuid4(), "job_id": job_id, "batch_id": batch_id, "attempt": 1, "tier": answer.tier,
        "model": answer.model, "provider": "cache", "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens, "cached_tokens": answer.cached_tokens, "usage_estimated": False, "cost_usd": Decimal(0), "saved_usd": answer.saved_usd,
        "latency_ms": 0, "outcome": CallOutcome.CACHE_HIT.value, "error": None,
    }


def answer_from_cache(conn: Connection, hits: dict[int, SharedAnswer], message_id: uuid.UUID) -> int:
    """Finish pending jobs this classify message owns with cached answers, each with its cost row."""
    answered = 0
    for job_id, answer in hits.items():
        row = conn.execute(
            text("UPDATE jobs SET status = 'succeeded', content = :c, model = :m, tier = :t, "
                 "start_tier = COALESCE(start_tier, :t), attempts = attempts + 1, finished_at = now(), "
                 "updated_at = now() WHERE id = :id AND status = 'pending' AND handoff = :me RETURNING batch_id"),
            {"c": answer.content, "m": answer.model, "t": answer.tier, "id": job_id, "me": message_id},
        ).first()
        if row is not None:
            record_calls(conn, [hit_row(job_id, row[0], answer)])
            answered += 1
    return answered


def follow(conn: Connection, followers: dict[int, tuple[int, int]], message_id: uuid.UUID) -> list[int]:
    """Park jobs (job -> (leader job, entry)) until their leader answers; returns those parked."""
    if not followers:
        return []
    items = sorted(followers.items())
    return list(conn.execute(
        text("UPDATE jobs AS j SET status = 'waiting', follows = v.leader, cache_entry = v.entry, updated_at = now() "
             "FROM unnest(CAST(:ids AS bigint[]), CAST(:leaders AS bigint[]), CAST(:entries AS bigint[])) "
             "AS v(id, leader, entry) WHERE j.id = v.id AND j.status = 'pending' AND j.handoff = :me RETURNING j.id"),
        {"ids": [i for i, _ in items], "leaders": [f[0] for _, f in items], "entries": [f[1] for _, f in items],
         "me": message_id},
    ).scalars())


def lead(conn: Connection, leaders: dict[int, int], message_id: uuid.UUID) -> None:
    """Remember the cache entry each leader must fill when it is answered."""
    if leaders:
        items = sorted(leaders.items())
        conn.execute(
            text("UPDATE jobs AS j SET cache_entry = v.entry FROM unnest(CAST(:ids AS bigint[]), "
                 "CAST(:entries AS bigint[])) AS v(id, entry) WHERE j.id = v.id AND j.handoff = :me"),
            {"ids": [i for i, _ in items], "entries": [e for _, e in items], "me": message_id},
        )


def answer_followers(conn: Connection, leader: int, answer: SharedAnswer) -> int:
    """Give a succeeded leader's answer to every job waiting on it, each with a cache-hit cost row."""
    rows = conn.execute(
        text("UPDATE jobs SET status = 'succeeded', content = :c, model = :m, tier = :t, follows = NULL, "
             "start_tier = COALESCE(start_tier, :t), attempts = attempts + 1, finished_at = now(), updated_at = now() "
             "WHERE follows = :leader AND status = 'waiting' RETURNING id, batch_id"),
        {"c": answer.content, "m": answer.model, "t": answer.tier, "leader": leader},
    ).all()
    record_calls(conn, [hit_row(job_id, batch_id, answer) for job_id, batch_id in rows])
    return len(rows)


def release_followers(conn: Connection, leader: int, message_id: uuid.UUID) -> list[tuple[int, uuid.UUID]]:
    """Send a failed (or vanished) leader's followers back to routing under `message_id`; one will lead."""
    rows = conn.execute(
        text("UPDATE jobs SET status = 'pending', follows = NULL, cache_entry = NULL, handoff = :me, "
             "handoff_from = NULL, updated_at = now() WHERE follows = :leader AND status = 'waiting' "
             "RETURNING id, batch_id"),
        {"leader": leader, "me": message_id},
    ).all()
    return [(job_id, batch_id) for job_id, batch_id in rows]


def leader_state(conn: Connection, leaders: Sequence[int]) -> dict[int, tuple[str, str | None, str | None, str | None]]:
    """Status, content, model and tier of leader jobs."""
    rows = conn.execute(
        text("SELECT id, status, content, model, tier FROM jobs WHERE id = ANY(:ids)"), {"ids": list(leaders)}
    ).all()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def shared_answer(conn: Connection, job_id: int, content: str, model: str, tier: str) -> SharedAnswer:
    """A succeeded job's answer with the cost and tokens of the call that produced it."""
    row = conn.execute(
        text("SELECT cost_usd, prompt_tokens, completion_tokens, cached_tokens FROM calls "
             "WHERE job_id = :id AND outcome = 'ok' ORDER BY created_at DESC LIMIT 1"),
        {"id": job_id},
    ).first()
    if row is None:
        return SharedAnswer(content, model, tier, Decimal(0))
    return SharedAnswer(content, model, tier, Decimal(row[0]), row[1], row[2], row[3])
