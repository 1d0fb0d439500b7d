"""Streaming a batch's results as JSONL, one line per finished job, with every attempt and its cost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text

from tierq.money import ZERO, usd

_QUERY = text(
    """
    SELECT j.custom_id, j.status, j.content, j.tier, j.model, j.error, a.attempts
    FROM jobs j
    LEFT JOIN LATERAL (
        SELECT json_agg(json_build_object(
                   'tier', c.tier, 'model', c.model, 'outcome', c.outcome, 'cost_usd', c.cost_usd::text)
               ORDER BY c.attempt, c.created_at) AS attempts
        FROM calls c WHERE c.job_id = j.id
    ) a ON true
    WHERE j.batch_id = :id AND j.status IN ('succeeded', 'failed', 'cancelled')
    ORDER BY j.seq
    """
)


def iter_results(engine: Engine, batch_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    """Yield one result per finished job, in input order, streaming from a server-side cursor."""
    with engine.connect() as conn:
        rows = conn.execution_options(stream_results=True, yield_per=1000).execute(_QUERY, {"id": batch_id})
        for custom_id, status, content, tier, model, error, attempts in rows:
            attempts = [_attempt(a) for a in attempts or []]
            total = sum((Decimal(a["cost_usd"]) for a in attempts), ZERO)
            yield {
                "id": custom_id,
                "status": status,
                "content": content,
                "tier": tier,
                "model": model,
                "cached": any(a["outcome"] == "cache_hit" for a in attempts),
                "cost_usd": usd(total),
                "attempts": attempts,
                "error": error if status != "succeeded" else None,
            }


def _attempt(raw: dict[str, Any]) -> dict[str, Any]:
    return {**raw, "cost_usd": usd(Decimal(raw["cost_usd"]))}
