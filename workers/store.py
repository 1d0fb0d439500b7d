"""What the workers read of jobs (the state changes: models/lifecycle.py; the cost rows: models/costs.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from models.lifecycle import Candidate


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A job waiting for the classify step, with its batch's routing options."""

    id: int
    batch_id: uuid.UUID
    task_type: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    force_tier: str | None
    min_tier: str | None
    max_tier: str | None
    tenant: str
    system_prompt: str | None
    use_cache: bool
    cache_entry: int | None
    private: bool = False
    budgeted: bool = False


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a tier worker is now answering."""

    id: int
    batch_id: uuid.UUID
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    attempts: int
    cache_entry: int | None = None
    budgeted: bool = False
    private: bool = False
    system_prompt: str | None = None
    task_type: str = "default"
    held_since: datetime | None = None
    tenant: str = "default"
    candidate: Candidate | None = None  # the answer under audit, when the job came to be audited
    candidate_source: str | None = None  # "answer" or "cache"
    hold_clocks: dict[str, float] | None = None  # when its current wait of each limited kind began (unix s)

    @property
    def audit(self) -> bool:
        """True when the job is here to be audited: answered below, asked again at the reference tier."""
        return self.candidate_source is not None


def pending_jobs(conn: Connection, ids: Sequence[int], message_id: uuid.UUID) -> list[PendingJob]:
    """Jobs this classify message owns and has not routed yet."""
    rows = conn.execute(
        text(
            "SELECT j.id, j.batch_id, j.task_type, j.messages, j.params, b.force_tier, b.min_tier, b.max_tier, "
            "b.params, j.tenant, b.system_prompt, b.use_cache, j.cache_entry, NOT b.store_text, "
            "b.budget_usd IS NOT NULL "
            "FROM jobs j JOIN batches b ON b.id = j.batch_id "
            "WHERE j.id = ANY(:ids) AND j.status = 'pending' AND j.handoff = :me ORDER BY j.id"
        ),
        {"ids": list(ids), "me": message_id},
    ).all()
    return [PendingJob(r[0], r[1], r[2], r[3], {**r[8], **r[4]}, r[5], r[6], r[7], r[9], r[10], r[11], r[12], r[13],
                       r[14]) for r in rows]


def claimed_jobs(rows: list[Any]) -> list[ClaimedJob]:
    """Jobs from the rows `models.lifecycle.claim` returned."""
    return [ClaimedJob(r[0], r[1], r[2] if r[9] else with_system(r[2], r[5]), {**r[4], **r[3]}, r[6], r[7], r[8], r[9],
                       r[5], r[10], r[11], r[12],
                       Candidate(r[0], r[13], r[14], r[15], namespace=r[17],
                                 logprobs=(r[18], r[19]) if r[18] is not None else None) if r[16] is not None else None,
                       r[16], r[20]) for r in rows]


def with_system(messages: list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    """The messages with the batch's system prompt first, unless they bring their own."""
    if system and not any(m.get("role") in ("system", "developer") for m in messages):
        return [{"role": "system", "content": system}, *messages]
    return messages
