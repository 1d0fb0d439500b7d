"""The bill: what a batch (or everything, or everything since a date) cost, where, and against what baseline.

Definitions (docs/producer.md explains them for users):
- `calls` are real model calls; a cache hit is a cost row with outcome `cache_hit`, counted apart.
- The baseline is what the same jobs would have cost on the top tier's first model: each job's kept
  call (the answer, or for a job without one its last call that reported tokens) priced from its own
  prompt, cached and completion tokens at that model's current prices. A kept call with no tokens (a
  cache hit that does not record them) is counted in `baseline_unpriced_jobs` instead.
- Escalations per tier pair follow each job's path from its start tier to the tier it is at now.
- Compression (workers/compress.py): each billed call of a compressed job read fewer prompt tokens,
  estimated as the job's tokens before minus after; `gross_saved_usd` prices them at that call's model's
  input price, `net_saved_usd` subtracts what the summary calls cost. A compressed job's baseline is
  priced from its original conversation (the kept call's prompt plus the removed tokens).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from producer.bill.quality import Quality, read_quality
from producer.bill.queries import (
    BASELINE,
    BATCH_API,
    BUDGET_FAILED,
    COMPRESSION_JOBS,
    COMPRESSION_SAVED,
    COMPRESSION_SUMMARIES,
    JOBS,
    LATENCY,
    MODEL_JOBS,
    OUTCOMES,
    PATHS,
    SPEND,
    Scope,
)
from producer.bill.report import TierLine, tier_summary
from tierq.config import Config
from tierq.money import ZERO, Usage, usd

HUNDRED = Decimal(100)


@dataclass(slots=True)
class Spend:
    """Calls, tokens and cost of one group (a model, a tier, a task type, a tenant, or everything)."""

    jobs: int = 0
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = ZERO
    saved_usd: Decimal = ZERO

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, row: Any) -> None:
        """Add one aggregate row of the SPEND query."""
        self.calls += row.calls
        self.cache_hits += row.hits
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cached_tokens += row.cached_tokens
        self.cost_usd += row.cost
        self.saved_usd += row.saved

    def as_dict(self) -> dict[str, Any]:
        """JSON form, money as decimal strings."""
        return {
            "jobs": self.jobs, "calls": self.calls, "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens, "tokens": self.tokens,
            "cost_usd": usd(self.cost_usd), "saved_usd": usd(self.saved_usd),
        }


@dataclass(slots=True)
class CompressionSavings:
    """What compressing long conversations saved, net of the summary calls."""

    jobs: int = 0
    summary_calls: int = 0
    summaries_reused: int = 0
    summary_cost_usd: Decimal = ZERO
    tokens_removed: int = 0
    billed_calls: int = 0
    prompt_tokens_saved: int = 0
    gross_saved_usd: Decimal = ZERO

    @property
    def net_saved_usd(self) -> Decimal:
        """Input cost not paid, minus the summaries' cost (negative when summaries cost more)."""
        return self.gross_saved_usd - self.summary_cost_usd

    def as_dict(self) -> dict[str, Any]:
        """JSON form, money as decimal strings; token counts are estimates (characters / 4)."""
        return {"jobs": self.jobs, "summary_calls": self.summary_calls, "summaries_reused": self.summaries_reused,
                "summary_cost_usd": usd(self.summary_cost_usd), "tokens_removed": self.tokens_removed,
                "billed_calls": self.billed_calls, "prompt_tokens_saved": self.prompt_tokens_saved,
                "gross_saved_usd": usd(self.gross_saved_usd), "net_saved_usd": usd(self.net_saved_usd)}


@dataclass(slots=True)
class BatchApiSpend:
    """Calls answered through providers' batch APIs, what they cost, and what they would have cost at
    the list prices (interactive calls)."""

    calls: int = 0
    cost_usd: Decimal = ZERO
    list_cost_usd: Decimal = ZERO

    @property
    def saved_usd(self) -> Decimal:
        """What the batch prices saved against the list prices."""
        return self.list_cost_usd - self.cost_usd

    def as_dict(self) -> dict[str, Any]:
        """JSON form, money as decimal strings."""
        return {"calls": self.calls, "cost_usd": usd(self.cost_usd), "list_cost_usd": usd(self.list_cost_usd),
                "saved_usd": usd(self.saved_usd)}


@dataclass(slots=True)
class Bill:
    """Everything `tierq report` shows."""

    scope: Scope
    baseline_model: str
    baseline_tier: str
    totals: Spend = field(default_factory=Spend)
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    baseline_cost_usd: Decimal = ZERO
    baseline_unpriced_jobs: int = 0
    by_model: dict[str, Spend] = field(default_factory=dict)
    by_task: dict[str, Spend] = field(default_factory=dict)
    by_tenant: dict[str, Spend] = field(default_factory=dict)
    by_tier: list[TierLine] = field(default_factory=list)
    tier_spend: dict[str, Spend] = field(default_factory=dict)
    by_tier_model: dict[tuple[str, str], Spend] = field(default_factory=dict)
    latency_ms: dict[str, tuple[int, int]] = field(default_factory=dict)
    escalations: dict[tuple[str, str], int] = field(default_factory=dict)
    compression: CompressionSavings = field(default_factory=CompressionSavings)
    batch_api: BatchApiSpend = field(default_factory=BatchApiSpend)
    stuck: int = 0  # jobs that no message will move (the workers' reconciler publishes them again)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> outcome -> calls
    budget_failed: int = 0
    budget_failed_paid: int = 0  # of them, jobs with calls before the budget stopped them
    budget_failed_paid_usd: Decimal = ZERO  # what those calls cost
    quality: Quality | None = None

    def outcome_totals(self) -> dict[str, int]:
        """Calls by outcome over every model."""
        totals: dict[str, int] = {}
        for by_outcome in self.outcomes.values():
            for outcome, count in by_outcome.items():
                totals[outcome] = totals.get(outcome, 0) + count
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    @property
    def savings_usd(self) -> Decimal:
        """Baseline minus what was paid (negative when escalations cost more than the baseline)."""
        return self.baseline_cost_usd - self.totals.cost_usd

    @property
    def savings_pct(self) -> Decimal | None:
        """Savings as a percentage of the baseline, to two places; None without a baseline."""
        if not self.baseline_cost_usd:
            return None
        return (self.savings_usd / self.baseline_cost_usd * HUNDRED).quantize(Decimal("0.01"))

    def as_dict(self) -> dict[str, Any]:
        """The `--json` form; money as decimal strings, so no cent is lost to floats."""
        pct = self.savings_pct
        totals = {
            **self.totals.as_dict(),
            "jobs_by_status": self.jobs_by_status,
            "escalations": sum(self.escalations.values()),
            "baseline_cost_usd": usd(self.baseline_cost_usd),
            "baseline_unpriced_jobs": self.baseline_unpriced_jobs,
            "savings_usd": usd(self.savings_usd),
            "savings_pct": None if pct is None else float(pct),
            "stuck_jobs": self.stuck,
            "outcomes": self.outcome_totals(),
            "budget_failed_jobs": self.budget_failed,
            "budget_failed_paid_jobs": self.budget_failed_paid,
            "budget_failed_paid_usd": usd(self.budget_failed_paid_usd),
        }
        return {
            "scope": self.scope.as_dict(),
            "baseline": {"tier": self.baseline_tier, "model": self.baseline_model},
            "totals": totals,
            "by_model": [
                {
                    "model": name,
                    **spend.as_dict(),
                    "latency_ms_p50": self.latency_ms.get(name, (None, None))[0],
                    "latency_ms_p95": self.latency_ms.get(name, (None, None))[1],
                    "outcomes": self.outcomes.get(name, {}),
                }
                for name, spend in self.by_model.items()
            ],
            "by_tier": [
                {**line.as_dict(), **_spend_fields(self.tier_spend.get(line.tier, Spend()))} for line in self.by_tier
            ],
            "by_task": [{"task_type": name, **spend.as_dict()} for name, spend in self.by_task.items()],
            "by_tenant": [{"tenant": name, **spend.as_dict()} for name, spend in self.by_tenant.items()],
            "escalations": [{"from": a, "to": b, "jobs": n} for (a, b), n in self.escalations.items()],
            "cache": {"hits": self.totals.cache_hits, "saved_usd": usd(self.totals.saved_usd)},
            "compression": self.compression.as_dict(),
            "batch_api": {**self.batch_api.as_dict(),
                          "interactive_cost_usd": usd(self.totals.cost_usd - self.batch_api.cost_usd)},
            "quality": self.quality.as_dict() if self.quality is not None else None,
        }


def _spend_fields(spend: Spend) -> dict[str, Any]:
    d = spend.as_dict()
    return {
        k: d[k] for k in ("cache_hits", "prompt_tokens", "completion_tokens", "cached_tokens", "tokens", "saved_usd")
    }


def build_bill(
    engine: Engine, config: Config, batch_id: uuid.UUID | None = None, since: datetime | None = None
) -> Bill:
    """Read the bill for one batch, or every batch, optionally only from `since` on."""
    scope = Scope(batch_id, since)
    top = config.tiers[-1]
    bill = Bill(scope, top.models[0], top.name)
    params = scope.params()
    with engine.connect() as conn:
        _read_jobs(conn, scope, params, bill)
        _read_spend(conn, scope, params, bill)
        bill.latency_ms = {m: (p50, p95) for m, p50, p95 in conn.execute(text(LATENCY.format(c=scope.calls())), params)}
        bill.baseline_cost_usd, bill.baseline_unpriced_jobs = _baseline(
            conn, scope, params, config, bill.baseline_model
        )
        for start, tier, count in conn.execute(text(PATHS.format(j=scope.jobs())), params):
            _add_path(config, bill.escalations, start, tier, count)
        bill.compression = _compression(conn, scope, params, config)
        bill.batch_api = _batch_api(conn, scope, params, config)
        _read_outcomes(conn, scope, params, bill)
        bill.quality = read_quality(conn, scope, config.outline)
    bill.by_tier = tier_summary(engine, config, batch_id, since)
    return bill


def _read_jobs(conn: Connection, scope: Scope, params: dict[str, Any], bill: Bill) -> None:
    for task, tenant, status, count in conn.execute(text(JOBS.format(j=scope.jobs())), params):
        bill.totals.jobs += count
        bill.jobs_by_status[status] = bill.jobs_by_status.get(status, 0) + count
        bill.by_task.setdefault(task, Spend()).jobs += count
        bill.by_tenant.setdefault(tenant, Spend()).jobs += count


def _read_spend(conn: Connection, scope: Scope, params: dict[str, Any], bill: Bill) -> None:
    for row in conn.execute(text(SPEND.format(c=scope.calls())), params):
        bill.totals.add(row)
        bill.by_model.setdefault(row.model, Spend()).add(row)
        bill.tier_spend.setdefault(row.tier, Spend()).add(row)
        bill.by_tier_model.setdefault((row.tier, row.model), Spend()).add(row)
        bill.by_task.setdefault(row.task_type, Spend()).add(row)
        bill.by_tenant.setdefault(row.tenant, Spend()).add(row)
    bill.by_model = dict(sorted(bill.by_model.items(), key=lambda kv: kv[1].cost_usd, reverse=True))


def _read_outcomes(conn: Connection, scope: Scope, params: dict[str, Any], bill: Bill) -> None:
    for model, outcome, count in conn.execute(text(OUTCOMES.format(c=scope.calls())), params):
        bill.outcomes.setdefault(model, {})[outcome] = count
    bill.outcomes = {m: dict(sorted(o.items(), key=lambda kv: -kv[1])) for m, o in bill.outcomes.items()}
    for model, jobs in conn.execute(text(MODEL_JOBS.format(c=scope.calls())), params):
        if model in bill.by_model:
            bill.by_model[model].jobs = jobs
    bill.budget_failed, bill.budget_failed_paid, bill.budget_failed_paid_usd = conn.execute(
        text(BUDGET_FAILED.format(j=scope.jobs())), params).one()


def _baseline(
    conn: Connection, scope: Scope, params: dict[str, Any], config: Config, model: str
) -> tuple[Decimal, int]:
    uncached, cached, completion, unpriced, removed = conn.execute(text(BASELINE.format(c=scope.calls())), params).one()
    # Price.cost is linear in the tokens, so pricing the sums equals summing each job's price exactly.
    prompt = int(uncached) + int(cached) + int(removed)
    return config.price(model).cost(Usage(prompt, int(completion), int(cached))), unpriced


def _compression(conn: Connection, scope: Scope, params: dict[str, Any], config: Config) -> CompressionSavings:
    saved = CompressionSavings()
    saved.summary_calls, saved.summary_cost_usd = conn.execute(
        text(COMPRESSION_SUMMARIES.format(c=scope.calls())), params).one()
    jobs, removed, reused = conn.execute(text(COMPRESSION_JOBS.format(j=scope.jobs())), params).one()
    saved.jobs, saved.tokens_removed, saved.summaries_reused = int(jobs), int(removed), int(reused)
    for model, calls, tokens in conn.execute(text(COMPRESSION_SAVED.format(c=scope.calls())), params):
        saved.billed_calls += calls
        saved.prompt_tokens_saved += int(tokens)
        if model in config.models:  # a model since removed from the TOML has no price to apply
            saved.gross_saved_usd += config.price(model).cost(Usage(int(tokens), 0))
    return saved


def _batch_api(conn: Connection, scope: Scope, params: dict[str, Any], config: Config) -> BatchApiSpend:
    spend = BatchApiSpend()
    for model, calls, cost, prompt, cached, completion in conn.execute(
            text(BATCH_API.format(c=scope.calls())), params):
        spend.calls += calls
        spend.cost_usd += cost
        # A model since removed from the TOML has no list price: its calls count at what they cost.
        listed = config.price(model).cost(Usage(int(prompt), int(completion), int(cached))) \
            if model in config.models else cost
        spend.list_cost_usd += listed
    return spend


def _add_path(config: Config, pairs: dict[tuple[str, str], int], start: str, tier: str, count: int) -> None:
    names = config.tier_names
    if start not in names or tier not in names:
        return
    for index in range(names.index(start), names.index(tier)):
        key = (names[index], names[index + 1])
        pairs[key] = pairs.get(key, 0) + count
