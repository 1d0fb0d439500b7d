"""Measured quality: how often answers given below the reference tier agree with it, from the audits'
labels, with 95% intervals; and for a batch, the estimated share of its answers that agree.

Per (task type, tier): the audited answers `n`, those that agreed `k`, k/n and its Wilson interval.
A batch's answers: those the reference tier gave (or replaced after an audit) count as agreeing, audited
answers that agreed count as agreeing, and each stratum's unaudited answers agree at its measured rate;
the interval of that stratified estimate uses each stratum's Agresti-Coull variance (docs/quality.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from models.query import Connection, rows
from producer.bill.queries import Scope
from tierq.money import ZERO, dollars, usd

if TYPE_CHECKING:
    from tierq.outline import Outline

Z = 1.959964  # two-sided 95%


def wilson(agree: int, audited: int) -> tuple[float, float]:
    """The Wilson score 95% interval of agree/audited; (0, 1) with nothing audited."""
    if audited == 0:
        return 0.0, 1.0
    p = agree / audited
    centre = (p + Z * Z / (2 * audited)) / (1 + Z * Z / audited)
    half = Z * math.sqrt(p * (1 - p) / audited + Z * Z / (4 * audited * audited)) / (1 + Z * Z / audited)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Stratum:
    """The audits of one (task type, tier, source): answers given there, or served from the cache."""

    task_type: str
    tier: str
    source: str
    audited: int
    agree: int

    @property
    def rate(self) -> float | None:
        """The share of audited answers that agreed."""
        return self.agree / self.audited if self.audited else None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        low, high = wilson(self.agree, self.audited)
        rate = self.rate
        return {"task_type": self.task_type, "tier": self.tier, "source": self.source, "audited": self.audited,
                "agree": self.agree, "agreement": None if rate is None else round(rate, 4),
                "interval": [round(low, 4), round(high, 4)]}


@dataclass(slots=True)
class Quality:
    """Quality of a scope (a batch, or everything): its strata, the estimated share of agreeing answers."""

    reference_tier: str
    strata: list[Stratum] = field(default_factory=list)
    answered: int = 0
    share: float | None = None
    interval: tuple[float, float] = (0.0, 1.0)
    audit_calls: int = 0
    audit_cost_usd: Decimal = ZERO
    replaced: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The `quality` object of `tierq report --json`."""
        return {"reference_tier": self.reference_tier, "answered": self.answered,
                "estimated_agreement": None if self.share is None else round(self.share, 4),
                "interval": [round(self.interval[0], 4), round(self.interval[1], 4)],
                "audit_calls": self.audit_calls, "audit_cost_usd": usd(self.audit_cost_usd),
                "replaced_by_reference": self.replaced, "strata": [s.as_dict() for s in self.strata]}

    def line(self) -> str:
        """One line for people: the estimate, its interval and what the audits cost."""
        if self.share is None:
            return "quality: not measured (no audited answers; [quality] audit_rate sets how many)"
        low, high = self.interval
        return (
            f"quality: {self.share:.1%} of answers agree with the {self.reference_tier} tier "
            f"(95% interval {low:.1%}-{high:.1%}); {_count(sum(s.audited for s in self.strata), 'audit')}, "
            f"{dollars(self.audit_cost_usd)}, {_count(self.replaced, 'answer')} replaced"
        )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


_STRATA = """
SELECT l.task_type, l.candidate_tier, l.source, count(*), count(*) FILTER (WHERE l.agree)
FROM labels l JOIN jobs j ON j.id = l.job_id WHERE {j} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
# Succeeded jobs by where their answer came from: tier (the cache when a cache hit), and whether an audit
# judged them (a label): an audit whose reference never answered leaves the job flagged but unjudged.
_ANSWERED = """
SELECT j.task_type, CASE WHEN j.candidate_source = 'cache' OR EXISTS (SELECT 1 FROM calls c WHERE c.job_id = j.id
           AND c.outcome = 'cache_hit') THEN 'cache' ELSE 'answer' END AS source,
       j.tier, j.audited AND EXISTS (SELECT 1 FROM labels l WHERE l.job_id = j.id), j.replaced, count(*)
FROM jobs j WHERE {j} AND j.status = 'succeeded' GROUP BY 1, 2, 3, 4, 5
"""
_AUDIT_COST = """
SELECT count(*), COALESCE(sum(c.cost_usd), 0) FROM calls c WHERE {c} AND c.outcome IN ('audit', 'judge')
"""


def read_quality(conn: Connection, scope: Scope, outline: Outline) -> Quality:
    """The quality of `scope` from its labels, answered jobs and audit calls."""
    params = scope.params()
    quality = Quality(outline.reference_tier)
    quality.strata = [Stratum(*row) for row in rows(conn, _STRATA.format(j=scope.jobs()), params)]
    quality.audit_calls, quality.audit_cost_usd = rows(conn, _AUDIT_COST.format(c=scope.calls()), params)[0]
    rates = {(s.task_type, s.tier if s.source == "answer" else "cache"): s for s in quality.strata}
    reference = outline.tier_index(outline.reference_tier) if outline.reference_tier in outline.tier_names else 0
    agreeing = variance = 0.0
    measured = False
    for task, source, tier, audited, replaced, count in rows(conn, _ANSWERED.format(j=scope.jobs()), params):
        quality.answered += count
        quality.replaced += count if replaced else 0
        at_reference = tier in outline.tier_names and outline.tier_index(tier) >= reference and source == "answer"
        if at_reference or replaced or audited:
            agreeing += count  # the reference's answer, or one an audit found agreeing
            measured = measured or bool(audited)
            continue
        stratum = rates.get((task, "cache" if source == "cache" else tier))
        if stratum is None or not stratum.audited:
            agreeing += count * 0.5  # nothing measured there: the middle, with the widest spread
            variance += count * count * 0.25
            continue
        measured = True
        p_tilde = (stratum.agree + 2) / (stratum.audited + 4)
        agreeing += count * (stratum.agree / stratum.audited)
        variance += count * count * p_tilde * (1 - p_tilde) / (stratum.audited + 4)
    if quality.answered and measured:
        quality.share = agreeing / quality.answered
        half = Z * math.sqrt(variance) / quality.answered
        quality.interval = (max(0.0, quality.share - half), min(1.0, quality.share + half))
    return quality


@dataclass(frozen=True, slots=True)
class CacheNamespace:
    """The audits of the semantic cache's hits in one namespace (tenant, task type, system prompt...)."""

    namespace: str
    tenant: str
    task_type: str
    audited: int
    agree: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        low, high = wilson(self.agree, self.audited)
        return {"namespace": self.namespace, "tenant": self.tenant, "task_type": self.task_type,
                "audited": self.audited, "agree": self.agree, "precision": round(self.agree / self.audited, 4),
                "interval": [round(low, 4), round(high, 4)]}


def cache_precision(conn: Connection, task_type: str | None = None, since: datetime | None = None,
                    limit: int = 100) -> list[CacheNamespace]:
    """How often audited semantic cache hits agreed with a fresh reference answer, per cache namespace
    (the most audited first)."""
    found = rows(
        conn,
        "SELECT namespace, min(tenant), min(task_type), count(*), count(*) FILTER (WHERE agree) FROM labels "
        "WHERE source = 'cache' AND namespace IS NOT NULL "
        "AND (CAST(:task AS text) IS NULL OR task_type = CAST(:task AS text)) "
        "AND (CAST(:since AS timestamptz) IS NULL OR created_at >= CAST(:since AS timestamptz)) "
        "GROUP BY 1 ORDER BY 4 DESC, 1 LIMIT :limit",
        {"task": task_type, "since": since, "limit": limit},
    )
    return [CacheNamespace(*row) for row in found]


def across_batches(conn: Connection, task_type: str | None = None, since: datetime | None = None) -> list[Stratum]:
    """Every stratum's audits across batches (of one task type, from `since` on)."""
    found = rows(
        conn,
        "SELECT task_type, candidate_tier, source, count(*), count(*) FILTER (WHERE agree) FROM labels "
        "WHERE (CAST(:task AS text) IS NULL OR task_type = CAST(:task AS text)) "
        "AND (CAST(:since AS timestamptz) IS NULL OR created_at >= CAST(:since AS timestamptz)) "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        {"task": task_type, "since": since},
    )
    return [Stratum(*row) for row in found]
