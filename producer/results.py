"""Streaming a batch's results, one per finished job in input order, with every attempt and its cost."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from models.query import rows, stream
from tierq.money import ZERO, usd

RESULT_FORMATS = ("jsonl", "openai")
ANSWERS = ("ok", "cache_hit", "audit")

# Each row is one JSON array: one value to read per row, not eleven (models.pq reads values one call
# at a time), decoded by the json module in C.
_QUERY = """
    SELECT json_build_array(j.id, j.custom_id, j.status, j.content, j.tier, j.model, j.error,
                            EXTRACT(EPOCH FROM j.finished_at)::bigint, a.calls, j.audited, j.replaced)
    FROM jobs j
    LEFT JOIN LATERAL (
        SELECT json_agg(json_build_object(
                   'tier', c.tier, 'model', c.model, 'outcome', c.outcome, 'cost_usd', c.cost_usd::text,
                   'id', c.id, 'created', EXTRACT(EPOCH FROM c.created_at)::bigint,
                   'prompt_tokens', c.prompt_tokens, 'completion_tokens', c.completion_tokens,
                   'cached_tokens', c.cached_tokens)
               ORDER BY c.attempt, c.created_at) AS calls
        FROM calls c WHERE c.job_id = j.id
    ) a ON true
    WHERE j.batch_id = :id AND j.status IN ('succeeded', 'failed', 'cancelled')
    ORDER BY j.seq
"""


if TYPE_CHECKING:
    from models.query import ReadConnection
    from tierq.vault import TextVault


@dataclass(frozen=True, slots=True)
class ResultRow:
    """A finished job with its calls (oldest first), as read from the database."""

    job_id: int
    custom_id: str
    status: str
    content: str | None
    tier: str | None
    model: str | None
    error: str | None
    finished: int | None
    calls: list[dict[str, Any]]
    audited: bool = False
    replaced: bool = False

    @property
    def answer(self) -> dict[str, Any] | None:
        """The call whose answer the job kept (the last good one of the model that gave it), if it succeeded."""
        if self.status != "succeeded":
            return None
        good = [c for c in self.calls if c["outcome"] in ANSWERS]
        return next((c for c in reversed(good) if c["model"] == self.model), good[-1] if good else None)

    @property
    def cost(self) -> Decimal:
        """What the job's calls cost together."""
        return sum((Decimal(c["cost_usd"]) for c in self.calls), ZERO)


def is_private(conn: ReadConnection, batch_id: uuid.UUID) -> bool:
    """Whether the batch was submitted with --no-store-text (its answers are in the vault, to be read once)."""
    return any(row[0] for row in rows(conn, "SELECT NOT store_text FROM batches WHERE id = :id", {"id": batch_id}))


def iter_rows(conn: ReadConnection, batch_id: uuid.UUID,
              vault: Callable[[], TextVault] | None = None) -> Generator[ResultRow, None, None]:
    """Finished jobs in input order, streamed from a server-side cursor.

    A private batch's answers come from the vault (`vault()`, asked for only then) and are removed as
    they are read: returned once. A row counts as handed over when the next one is asked for: if the
    reader stops before that (`close()`, a pipe that closed under `tierq results | head`), its answer goes
    back to the vault for the next read.
    """
    texts = vault() if vault is not None and is_private(conn, batch_id) else None
    for (job_id, custom_id, status, content, tier, model, error, finished, calls, audited, replaced), in stream(
        conn, _QUERY, {"id": batch_id}, "tierq_results"
    ):
        taken = texts.take_answer(job_id) if texts is not None and status == "succeeded" else None
        try:
            yield ResultRow(job_id, custom_id, status, taken if texts is not None else content, tier, model, error,
                            finished, calls or [], audited, replaced)
        except GeneratorExit:
            if texts is not None and taken is not None:
                texts.put_answers({job_id: taken})
            raise


def as_result(row: ResultRow) -> dict[str, Any]:
    """tierq's own result line."""
    attempts = [
        {"tier": c["tier"], "model": c["model"], "outcome": c["outcome"], "cost_usd": usd(Decimal(c["cost_usd"]))}
        for c in row.calls
    ]
    return {
        "id": row.custom_id,
        "status": row.status,
        "content": row.content,
        "tier": row.tier,
        "model": row.model,
        "cached": any(c["outcome"] == "cache_hit" for c in row.calls),
        "cost_usd": usd(row.cost),
        "audited": row.audited,
        "replaced_by_reference": row.replaced,
        "attempts": attempts,
        "error": row.error if row.status != "succeeded" else None,
    }
