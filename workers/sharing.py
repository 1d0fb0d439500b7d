"""Sharing one answer between jobs in Postgres: cache hits, leaders and the followers that wait on them.

A leader is a job whose question is being answered; followers (status `waiting`, `follows` = leader)
get its answer when it succeeds, or are routed again when it fails, so one of them takes over.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, text

from models import following, lifecycle
from models.costs import CostRow, record_calls
from models.enums import CallOutcome
from models.lifecycle import Candidate, Chunks, Outbox


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

    def cost_row(self, job_id: int, batch_id: uuid.UUID) -> CostRow:
        """The cost row of a job given this answer: a cache hit at zero cost, saving the call it replaced."""
        return CostRow(id=uuid.uuid4(), job_id=job_id, batch_id=batch_id, attempt=1, tier=self.tier, model=self.model,
                       provider="cache", prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                       cached_tokens=self.cached_tokens, cost_usd=Decimal(0), saved_usd=self.saved_usd,
                       outcome=CallOutcome.CACHE_HIT)


def answer_from_cache(conn: Connection, hits: dict[int, SharedAnswer], message_id: uuid.UUID) -> int:
    """Finish pending jobs this classify message owns with cached answers, each with its cost row."""
    rows = []
    for job_id, answer in hits.items():
        batch = lifecycle.answer_from_cache(conn, message_id, job_id, answer.content, answer.model, answer.tier)
        if batch is not None:
            rows.append(answer.cost_row(job_id, batch))
    record_calls(conn, rows)
    return len(rows)


def audit_hits(conn: Connection, outbox: Outbox, hits: dict[int, SharedAnswer], namespaces: Mapping[int, str],
               message_id: uuid.UUID, reference: str, chunk: Chunks, batch_id: uuid.UUID | None) -> int:
    """Semantic cache hits picked for an audit: each keeps its cost row, and goes to the reference tier with
    the cached answer as its candidate (and the cache namespace it was served from, for the label)."""
    if not hits:
        return 0
    rows = conn.execute(text("SELECT id, batch_id FROM jobs WHERE id = ANY(:ids) AND status = 'pending' "
                             "AND handoff = :me"), {"ids": list(hits), "me": message_id}).all()
    record_calls(conn, [hits[job_id].cost_row(job_id, batch) for job_id, batch in rows])
    picks = [Candidate(job_id, hits[job_id].content, hits[job_id].model, hits[job_id].tier, 1, namespaces.get(job_id))
             for job_id, _ in rows]
    return lifecycle.audit_cached(conn, outbox, message_id, picks, reference, chunk, batch_id)


def answer_followers(conn: Connection, leader: int, answer: SharedAnswer) -> int:
    """Give a succeeded leader's answer to every job waiting on it, each with a cache-hit cost row."""
    rows = following.answer_followers(conn, leader, answer.content, answer.model, answer.tier)
    record_calls(conn, [answer.cost_row(job_id, batch_id) for job_id, batch_id in rows])
    return len(rows)


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
