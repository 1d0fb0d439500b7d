"""Job state changes in Postgres, each guarded so that a redelivered task changes nothing twice.

A job is owned by one task message at a time (`jobs.handoff`); every UPDATE here names that message in
its WHERE clause, and cost rows carry ids made before the call, so replays are no-ops.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from workers.llm import CallRecord


@dataclass(frozen=True, slots=True)
class Handoff:
    """Jobs moved to a queue under one new message id."""

    tier: str
    message_id: uuid.UUID
    job_ids: list[int]
    batch_id: uuid.UUID | None = None


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


def unsent_handoffs(conn: Connection, ids: Sequence[int], message_id: uuid.UUID) -> list[Handoff]:
    """Hand-offs this message committed but may not have sent (its worker died in between)."""
    rows = conn.execute(
        text(
            "SELECT tier, handoff, array_agg(id ORDER BY id), min(batch_id::text) FROM jobs "
            "WHERE id = ANY(:ids) AND handoff_from = :me AND status = 'queued' GROUP BY tier, handoff"
        ),
        {"ids": list(ids), "me": message_id},
    ).all()
    return [Handoff(tier, handoff, list(job_ids), uuid.UUID(batch)) for tier, handoff, job_ids, batch in rows]


def pending_jobs(conn: Connection, ids: Sequence[int], message_id: uuid.UUID) -> list[PendingJob]:
    """Jobs this classify message owns and has not routed yet."""
    rows = conn.execute(
        text(
            "SELECT j.id, j.batch_id, j.task_type, j.messages, j.params, b.force_tier, b.min_tier, b.max_tier, "
            "b.params, j.tenant, b.system_prompt, b.use_cache, j.cache_entry, NOT b.store_text "
            "FROM jobs j JOIN batches b ON b.id = j.batch_id "
            "WHERE j.id = ANY(:ids) AND j.status = 'pending' AND j.handoff = :me ORDER BY j.id"
        ),
        {"ids": list(ids), "me": message_id},
    ).all()
    return [PendingJob(r[0], r[1], r[2], r[3], {**r[8], **r[4]}, r[5], r[6], r[7], r[9], r[10], r[11], r[12], r[13])
            for r in rows]


def hand_off(
    conn: Connection, routes: dict[int, str], message_id: uuid.UUID, chunk: int, *,
    batch_id: uuid.UUID | None, from_status: str, escalation: bool,
) -> list[Handoff]:
    """Queue jobs on their tiers under new message ids (`chunk` jobs per message) owned by this message."""
    by_tier: dict[str, list[int]] = defaultdict(list)
    for job_id, tier in sorted(routes.items()):
        by_tier[tier].append(job_id)
    planned = [
        Handoff(tier, uuid.uuid4(), ids[start : start + chunk], batch_id)
        for tier, ids in by_tier.items()
        for start in range(0, len(ids), chunk)
    ]
    flat = [(job_id, h.tier, h.message_id) for h in planned for job_id in h.job_ids]
    if not flat:
        return []
    moved = conn.execute(
        text(
            "UPDATE jobs AS j SET status = 'queued', tier = v.tier, handoff = v.handoff, handoff_from = :me, "
            "start_tier = COALESCE(j.start_tier, v.tier), escalations = j.escalations + :esc, updated_at = now() "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:tiers AS text[]), CAST(:handoffs AS uuid[])) "
            "AS v(id, tier, handoff) "
            "WHERE j.id = v.id AND j.status = :from_status AND j.handoff = :me "
            "AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = j.batch_id AND b.cancelled) RETURNING j.id"
        ),
        {
            "ids": [f[0] for f in flat], "tiers": [f[1] for f in flat], "handoffs": [f[2] for f in flat],
            "me": message_id, "from_status": from_status, "esc": 1 if escalation else 0,
        },
    ).scalars()
    kept = set(moved)
    return [Handoff(h.tier, h.message_id, [i for i in h.job_ids if i in kept], batch_id) for h in planned
            if any(i in kept for i in h.job_ids)]


def claim(conn: Connection, ids: Sequence[int], tier: str, message_id: uuid.UUID) -> list[ClaimedJob]:
    """Mark this message's jobs at `tier` running (again, if the message is redelivered) and read them."""
    rows = conn.execute(
        text(
            "UPDATE jobs AS j SET status = 'running', updated_at = now() FROM batches b "
            "WHERE b.id = j.batch_id AND NOT b.cancelled AND j.id = ANY(:ids) AND j.tier = :tier AND j.handoff = :me "
            "AND j.status IN ('queued', 'running') "
            "RETURNING j.id, j.batch_id, j.messages, j.params, b.params, b.system_prompt, j.attempts, j.cache_entry, "
            "b.budget_usd IS NOT NULL, NOT b.store_text"
        ),
        {"ids": list(ids), "tier": tier, "me": message_id},
    ).all()
    return [ClaimedJob(r[0], r[1], r[2] if r[9] else with_system(r[2], r[5]), {**r[4], **r[3]}, r[6], r[7], r[8], r[9],
                       r[5]) for r in rows]


def with_system(messages: list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    """The messages with the batch's system prompt first, unless they bring their own."""
    if system and not any(m.get("role") in ("system", "developer") for m in messages):
        return [{"role": "system", "content": system}, *messages]
    return messages


_CALL_COLUMNS = {
    "id": "uuid", "job_id": "bigint", "batch_id": "uuid", "attempt": "int", "tier": "text", "model": "text",
    "provider": "text", "prompt_tokens": "int", "completion_tokens": "int", "cached_tokens": "int",
    "usage_estimated": "bool", "cost_usd": "numeric", "saved_usd": "numeric", "latency_ms": "int",
    "outcome": "text", "error": "text",
}
_CALL_DEFAULTS: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
                                  "usage_estimated": False, "saved_usd": Decimal(0), "latency_ms": 0, "error": None}
# One statement per chunk, its columns as arrays: an executemany would send one INSERT per row.
_INSERT_CALLS = text(
    f"INSERT INTO calls ({', '.join(_CALL_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _CALL_COLUMNS.items())
    + ") ON CONFLICT (id) DO NOTHING"
)


def record_calls(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """Insert cost rows; a row whose id is already there (a replayed write) is skipped."""
    values = list(rows)
    if values:
        conn.execute(_INSERT_CALLS, {name: [row.get(name, _CALL_DEFAULTS.get(name)) for row in values]
                                     for name in _CALL_COLUMNS})


def call_row(record: CallRecord, *, job_id: int, batch_id: uuid.UUID, attempt: int, tier: str) -> dict[str, Any]:
    """The cost-table row of one call."""
    return {
        "id": record.id, "job_id": job_id, "batch_id": batch_id, "attempt": attempt, "tier": tier,
        "model": record.model, "provider": record.provider,
        "prompt_tokens": record.usage.prompt_tokens, "completion_tokens": record.usage.completion_tokens,
        "cached_tokens": record.usage.cached_tokens, "usage_estimated": record.usage.estimated,
        "cost_usd": record.cost_usd, "latency_ms": record.latency_ms, "outcome": record.outcome.value,
        "error": record.error,
    }


def succeed(
    conn: Connection, answers: list[tuple[int, str | None, str, int]], message_id: uuid.UUID,
    digests: dict[int, str] | None = None,
) -> int:
    """Store answers (job id, content, model, calls made) and, for private jobs, the content's digest
    (their content is None here); only jobs this message still runs change."""
    if not answers:
        return 0
    result = conn.execute(
        text(
            "UPDATE jobs AS j SET status = 'succeeded', content = v.content, model = v.model, error = NULL, "
            "content_sha256 = v.digest, attempts = j.attempts + v.calls, finished_at = now(), updated_at = now() "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:contents AS text[]), CAST(:models AS text[]), "
            "CAST(:calls AS int[]), CAST(:digests AS text[])) AS v(id, content, model, calls, digest) "
            "WHERE j.id = v.id AND j.status = 'running' AND j.handoff = :me"
        ),
        {"ids": [a[0] for a in answers], "contents": [a[1] for a in answers], "models": [a[2] for a in answers],
         "calls": [a[3] for a in answers], "digests": [(digests or {}).get(a[0]) for a in answers],
         "me": message_id},
    )
    return result.rowcount


def note_attempts(conn: Connection, failures: list[tuple[int, str, int]], message_id: uuid.UUID, *, final: bool) -> int:
    """Record why jobs failed here (job id, reason, calls made); `final` ends them as failed."""
    if not failures:
        return 0
    status_sql = "'failed'" if final else "j.status"
    result = conn.execute(
        text(
            f"UPDATE jobs AS j SET status = {status_sql}, error = v.reason, attempts = j.attempts + v.calls, "
            "finished_at = CASE WHEN :final THEN now() ELSE j.finished_at END, updated_at = now() "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:reasons AS text[]), CAST(:calls AS int[])) "
            "AS v(id, reason, calls) WHERE j.id = v.id AND j.status IN ('running', 'pending') AND j.handoff = :me"
        ),
        {"ids": [f[0] for f in failures], "reasons": [f[1] for f in failures], "calls": [f[2] for f in failures],
         "me": message_id, "final": final},
    )
    return result.rowcount


def cancel_leftovers(conn: Connection, ids: Sequence[int], message_id: uuid.UUID) -> int:
    """Jobs this message still runs after finishing belong to a cancelled batch: end them cancelled."""
    return conn.execute(
        text("UPDATE jobs SET status = 'cancelled', error = COALESCE(error, 'cancelled: tierq cancel'), "
             "finished_at = now(), updated_at = now() WHERE id = ANY(:ids) AND status = 'running' AND handoff = :me"),
        {"ids": list(ids), "me": message_id},
    ).rowcount
