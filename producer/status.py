"""A batch's progress: jobs by state and by tier, escalations and cost so far."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text

from models import JobStatus
from tierq.errors import NotFound
from tierq.money import usd


@dataclass(slots=True)
class BatchStatus:
    """Counts of one batch's jobs; `done` once every job is in a final state."""

    batch_id: uuid.UUID
    total: int
    rejected: int
    by_status: dict[str, int]
    by_tier: dict[str, int]
    escalations: int
    cost_usd: Decimal
    calls: int
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, status: JobStatus) -> int:
        """Jobs in `status`."""
        return self.by_status.get(status.value, 0)

    def count_final(self) -> int:
        """Jobs in a final state."""
        return sum(self.count(s) for s in JobStatus.final())

    @property
    def pending(self) -> int:
        """Jobs not yet in a final state."""
        return sum(self.count(s) for s in (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING))

    @property
    def done(self) -> bool:
        """True when no job is waiting or running."""
        return self.pending == 0

    def as_dict(self) -> dict[str, Any]:
        """The `--json` form; money as a decimal string."""
        return {
            "batch_id": str(self.batch_id),
            "total": self.total,
            "rejected": self.rejected,
            "succeeded": self.count(JobStatus.SUCCEEDED),
            "failed": self.count(JobStatus.FAILED),
            "cancelled": self.count(JobStatus.CANCELLED),
            "pending": self.pending,
            "done": self.done,
            "by_status": self.by_status,
            "by_tier": self.by_tier,
            "escalations": self.escalations,
            "calls": self.calls,
            "cost_usd": usd(self.cost_usd),
        }


def parse_batch_id(value: str) -> uuid.UUID:
    """A batch id from the command line, with a clear error when it is not one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{value!r} is not a batch id; batch ids look like 0b6f1c8e-...; see `tierq submit` output") from None


def batch_status(engine: Engine, batch_id: uuid.UUID) -> BatchStatus:
    """Read the counts of one batch (three aggregate queries, no per-job rows)."""
    with engine.connect() as conn:
        batch = conn.execute(
            text("SELECT total, rejected, cancelled FROM batches WHERE id = :id"), {"id": batch_id}
        ).first()
        if batch is None:
            raise NotFound(f"no batch {batch_id}; check the id printed by `tierq submit`")
        by_status: dict[str, int] = {}
        by_tier: dict[str, int] = {}
        escalations = 0
        for status, tier, count, esc in conn.execute(
            text("SELECT status, tier, count(*), sum(escalations) FROM jobs WHERE batch_id = :id GROUP BY status, tier"),
            {"id": batch_id},
        ):
            by_status[status] = by_status.get(status, 0) + count
            if tier is not None:
                by_tier[tier] = by_tier.get(tier, 0) + count
            escalations += int(esc or 0)
        calls, cost = conn.execute(
            text("SELECT count(*), COALESCE(sum(cost_usd), 0) FROM calls WHERE batch_id = :id"), {"id": batch_id}
        ).one()
    return BatchStatus(batch_id, batch.total, batch.rejected, by_status, by_tier, escalations, cost, calls, batch.cancelled)
