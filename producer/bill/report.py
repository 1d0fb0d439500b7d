"""The bill of a batch (or of everything): per tier, jobs started, answered, escalated and failed, calls and cost."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text

from producer.bill.queries import REACHED, Scope
from tierq.config import Config
from tierq.money import ZERO, usd


@dataclass(slots=True)
class TierLine:
    """One tier's share of a batch."""

    tier: str
    started: int = 0
    answered: int = 0
    escalated: int = 0
    failed: int = 0
    replaced: int = 0  # of those answered here, answers an audit replaced with the reference tier's
    calls: int = 0
    cost_usd: Decimal = ZERO

    def as_dict(self) -> dict[str, Any]:
        """JSON form, money as a decimal string."""
        return {
            "tier": self.tier, "started": self.started, "answered": self.answered, "escalated": self.escalated,
            "failed": self.failed, "replaced": self.replaced, "calls": self.calls, "cost_usd": usd(self.cost_usd),
        }


def tier_summary(
    engine: Engine, config: Config, batch_id: uuid.UUID | None = None, since: datetime | None = None
) -> list[TierLine]:
    """Per tier: jobs that started there, were answered there, escalated from it or failed there."""
    lines = {name: TierLine(name) for name in config.tier_names}
    scope = Scope(batch_id, since)
    with engine.connect() as conn:
        paths = conn.execute(
            text(f"SELECT j.start_tier, j.tier, {REACHED}, j.status, j.replaced, count(*) FROM jobs j "
                 f"WHERE {scope.jobs()} GROUP BY 1, 2, 3, 4, 5"),
            scope.params(),
        ).all()
        costs = conn.execute(
            text(f"SELECT tier, count(*) FILTER (WHERE outcome <> 'cache_hit'), COALESCE(sum(cost_usd), 0) "
                 f"FROM calls c WHERE {scope.calls()} GROUP BY tier"),
            scope.params(),
        ).all()
    for start, tier, reached, status, replaced, count in paths:
        if start in lines:
            lines[start].started += count
        if reached in lines and status == "succeeded":  # where its own answer came from, as it escalated
            lines[reached].answered += count
            lines[reached].replaced += count if replaced else 0
        if tier in lines and status == "failed":
            lines[tier].failed += count
        if start in lines and reached in lines:  # an audit's replacement is not an escalation
            for index in range(config.tier_index(start), config.tier_index(reached)):
                lines[config.tier_names[index]].escalated += count
    for tier, calls, cost in costs:
        line = lines.setdefault(tier, TierLine(tier))
        line.calls, line.cost_usd = calls, cost
    return list(lines.values())
