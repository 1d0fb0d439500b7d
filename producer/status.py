"""A batch's progress: jobs by state and by tier, escalations and cost so far."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from models.enums import JobStatus
from models.query import Connection, rows
from tierq.errors import NotFound
from tierq.money import ZERO, usd

if TYPE_CHECKING:  # measured only once a batch is done (producer.api)
    from producer.bill.quality import Quality

RATE_WINDOW_S = 60
_FINAL = frozenset(s.value for s in JobStatus.final())


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
    by_tier_status: dict[str, dict[str, int]] = field(default_factory=dict)
    cache_hits: int = 0
    elapsed_s: float = 0.0
    rate_per_s: float | None = None
    eta_s: float | None = None
    stuck: int = 0  # jobs no message will move (see models.stale.lost); the reconciler handles them
    failed_reason: str | None = None  # the reason most failed jobs were given
    # Running jobs whose worker stopped renewing their lease (it died, or hangs), and since when (seconds);
    # `resent` of them had their message published again since (by `tierq recover` or the reconciler).
    orphaned: int = 0
    orphaned_s: float | None = None
    resent: int = 0
    unserved: dict[str, int] = field(default_factory=dict)  # queue no live worker consumes -> jobs waiting there
    # The maxmemory policy by which the Redis of TIERQ_REDIS_URL evicts keys (allkeys-lru, ...), None if it does
    # not: it drops queued messages and the workers' records, so `unserved` may name queues a worker serves.
    redis_evicts: str | None = None
    redis_url: str = ""  # that Redis, as shown (no password)
    # Unserved queue -> worker that refused to start for it (tierq.presence) -> (why, seconds ago).
    not_started: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict)
    # Queue -> live worker -> why it gives the queue's messages back (its TOML cannot run them; tierq.presence).
    refused: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # models whose calls fail often
    # Jobs a worker put back to wait out a provider outage, a rate limit or the budget, and the longest wait.
    held: int = 0
    held_s: float | None = None
    held_reason: str | None = None  # the reason most of them were given (a rejected key, an outage, ...)
    held_until: datetime | None = None  # when the last of them is tried again (None: each one is due)
    held_left_s: float | None = None  # seconds from now until then
    held_due: int = 0  # of them, those due already: their messages wait for a worker to take them
    # The held jobs by the queue they wait in (a tier, or classify): (queue, jobs, longest wait in s, the reason
    # most of them there were given), most jobs first: one tier may wait out a 429 while another's provider is down.
    held_queues: list[tuple[str, int, float | None, str | None]] = field(default_factory=list)
    # Waiting jobs by what they wait for: the same question's leader job, by (its batch, status, tier) -> jobs.
    following: list[tuple[uuid.UUID, str, str | None, int]] = field(default_factory=list)
    # Provider batches (batch-mode tiers) still open: batches, requests, and the provider's completed and failed.
    provider_batches: dict[str, Any] = field(default_factory=dict)
    quality: Quality | None = None  # measured from the batch's audits, once it is done

    def count(self, status: JobStatus) -> int:
        """Jobs in `status`."""
        return self.by_status.get(status.value, 0)

    def count_final(self) -> int:
        """Jobs in a final state."""
        return sum(self.count(s) for s in JobStatus.final())

    @property
    def pending(self) -> int:
        """Jobs not yet in a final state."""
        return sum(n for state, n in self.by_status.items() if state not in _FINAL)

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
            "by_tier_status": self.by_tier_status,
            "escalations": self.escalations,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "cost_usd": usd(self.cost_usd),
            "cancelled_batch": self.cancelled,
            "elapsed_s": round(self.elapsed_s, 1),
            "rate_per_s": None if self.rate_per_s is None else round(self.rate_per_s, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "stuck": self.stuck,
            "lease_expired": self.orphaned,
            "lease_expired_resent": self.resent,
            "failed_reason": self.failed_reason,
            "unserved_queues": self.unserved,
            "redis_evicts": self.redis_evicts,
            "workers_not_started": {q: {w: {"reason": why, "ago_s": round(ago, 1)} for w, (why, ago) in ws.items()}
                                    for q, ws in self.not_started.items()},
            "refused_queues": self.refused,
            "provider_batches": self.provider_batches,
            "warnings": self.warnings,
            "held": self.held,
            "held_longest_s": None if self.held_s is None else round(self.held_s, 1),
            "held_reason": self.held_reason,
            "held_until": None if self.held_until is None else self.held_until.isoformat(),
            "held_due": self.held_due,
            "held_by_queue": [{"queue": q, "jobs": n, "longest_s": None if s is None else round(s, 1), "reason": why}
                              for q, n, s, why in self.held_queues],
            "waiting_for": [{"batch_id": str(b), "status": st, "tier": t, "jobs": n} for b, st, t, n in self.following],
            "quality": self.quality.as_dict() if self.quality is not None else None,
        }

    def waiting_by_queue(self) -> dict[str, int]:
        """Jobs that wait for a worker of each queue: routing (pending, following) and each tier's."""
        waiting = {"classify": self.count(JobStatus.PENDING) + self.count(JobStatus.WAITING)}
        for tier, counts in self.by_tier_status.items():
            waiting[tier] = counts.get(JobStatus.QUEUED.value, 0) + counts.get(JobStatus.RUNNING.value, 0)
        return {queue: n for queue, n in waiting.items() if n}


def parse_batch_id(value: str) -> uuid.UUID:
    """A batch id from the command line, with a clear error when it is not one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(
            f"{value!r} is not a batch id; batch ids look like 0b6f1c8e-...; see `tierq submit` output"
        ) from None


def batch_status(conn: Connection, batch_id: uuid.UUID) -> BatchStatus:
    """Read the counts of one batch (aggregate queries, no per-job rows)."""
    params = {"id": batch_id}
    batch = rows(conn, "SELECT total, rejected, cancelled FROM batches WHERE id = :id", params)
    if not batch:
        raise NotFound(f"no batch {batch_id}; check the id printed by `tierq submit`")
    total, rejected, cancelled = batch[0]
    status = BatchStatus(batch_id, total, rejected, {}, {}, 0, ZERO, 0, cancelled)
    for state, tier, count, esc in rows(conn, _BY_STATE, params):
        status.by_status[state] = status.by_status.get(state, 0) + count
        if tier is not None:
            status.by_tier[tier] = status.by_tier.get(tier, 0) + count
            status.by_tier_status.setdefault(tier, {})[state] = count
        status.escalations += int(esc or 0)
    status.calls, status.cache_hits, status.cost_usd = rows(conn, _CALLS, params)[0]
    _pace(status, rows(conn, _PACE, {**params, "window": RATE_WINDOW_S})[0])
    status.warnings = model_warnings(rows(conn, _OUTCOMES, params)) + refused_warnings(rows(conn, _REFUSED, params)[0])
    status.held, held_s, status.held_reason, status.held_until, held_left_s, status.held_due = rows(conn, _HELD,
                                                                                                   params)[0]
    status.held_left_s = None if held_left_s is None else float(held_left_s)
    if status.held:
        status.held_queues = [(q, int(n), None if s is None else float(s), why)
                              for q, n, s, why in rows(conn, _HELD_QUEUES, params)]
    if status.count(JobStatus.FAILED):
        status.failed_reason = rows(conn, _FAILED_REASON, params)[0][0]
    if status.count(JobStatus.RUNNING):
        status.orphaned, orphaned_s, status.resent = rows(conn, _ORPHANED, params)[0]
        status.orphaned_s = None if orphaned_s is None else float(orphaned_s)
    if status.count(JobStatus.WAITING):
        status.following = [(b, st, t, int(n)) for b, st, t, n in rows(conn, _FOLLOWING, params)]
    status.held_s = None if held_s is None else float(held_s)
    return status


_FAILED_REASON = (f"SELECT mode() WITHIN GROUP (ORDER BY error) FROM jobs WHERE batch_id = :id "
                  f"AND status = '{JobStatus.FAILED.value}'")
# A running job's row changes only when it is claimed (with a new lease) or published again (models.stale):
# one last changed after its lease ran out has a message on its way, and needs no `tierq recover`.
_ORPHANED = ("SELECT count(*) FILTER (WHERE updated_at <= lease_until), "
             "EXTRACT(EPOCH FROM now() - min(lease_until) FILTER (WHERE updated_at <= lease_until)), "
             "count(*) FILTER (WHERE updated_at > lease_until) FROM jobs WHERE batch_id = :id "
             f"AND status = '{JobStatus.RUNNING.value}' AND lease_until < now()")
_FOLLOWING = (f"SELECT l.batch_id, l.status, l.tier, count(*) FROM jobs f JOIN jobs l ON l.id = f.follows "
              f"WHERE f.batch_id = :id AND f.status = '{JobStatus.WAITING.value}' GROUP BY 1, 2, 3 ORDER BY 4 DESC")
_BY_STATE = "SELECT status, tier, count(*), sum(escalations) FROM jobs WHERE batch_id = :id GROUP BY status, tier"
_CALLS = ("SELECT count(*) FILTER (WHERE outcome <> 'cache_hit'), count(*) FILTER (WHERE outcome = 'cache_hit'), "
          "COALESCE(sum(cost_usd), 0) FROM calls WHERE batch_id = :id")
_OUTCOMES = ("SELECT model, outcome, count(*) FROM calls WHERE batch_id = :id AND outcome <> 'cache_hit' "
             "GROUP BY 1, 2")
_HELD = (f"SELECT count(*), EXTRACT(EPOCH FROM now() - min(held_since)), mode() WITHIN GROUP (ORDER BY error), "
         "max(held_until) FILTER (WHERE held_until > now()), "
         "EXTRACT(EPOCH FROM max(held_until) FILTER (WHERE held_until > now()) - now()), "
         "count(*) FILTER (WHERE held_until <= now()) FROM jobs WHERE batch_id = :id "
         f"AND status IN ('{JobStatus.QUEUED.value}', '{JobStatus.PENDING.value}') AND held_since IS NOT NULL")
_HELD_QUEUES = (f"SELECT CASE WHEN status = '{JobStatus.PENDING.value}' THEN 'classify' ELSE tier END, count(*), "
                "EXTRACT(EPOCH FROM now() - min(held_since)), mode() WITHIN GROUP (ORDER BY error) FROM jobs "
                f"WHERE batch_id = :id AND status IN ('{JobStatus.QUEUED.value}', '{JobStatus.PENDING.value}') "
                "AND held_since IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1")
FAILED_OUTCOMES = ("timeout", "connection", "http_4xx", "http_5xx", "error", "rate_limited")
WARN_MIN_CALLS = 20
WARN_SHARE = 0.1
WARN_ALL_FAILED = 3  # this many calls, every one failed: a model that does not work at all, however few


# Provider batches of this batch that the provider refused (the file or the batch): their requests went to
# the tier's batch_fallback, at list price.
_REFUSED = ("SELECT count(*), coalesce(sum((SELECT count(*) FROM jsonb_object_keys(requests))), 0), "
            "min(coalesce(last_error, provider_status)) FROM provider_batches WHERE batch_id = :id "
            "AND state = 'ended' AND provider_status LIKE 'refused:%'")


def refused_warnings(row: Sequence[Any]) -> list[str]:
    """A line when the provider refused provider batches of the batch, from (batches, requests, the reason)."""
    batches, requests, why = row
    if not batches:
        return []
    what = "a provider batch" if batches == 1 else f"{batches:,} provider batches"
    return [f"the provider refused {what} ({str(why).removeprefix('refused: ')}): its {int(requests):,} requests "
            "went to the tier's batch_fallback (called directly at list price, or the next tier)"]


def model_warnings(counts: Sequence[Any]) -> list[str]:
    """A line for each model with at least WARN_MIN_CALLS calls of which WARN_SHARE or more failed, or at
    least WARN_ALL_FAILED calls that all failed, from (model, outcome, calls) rows."""
    by_model: dict[str, dict[str, int]] = {}
    for model, outcome, count in counts:
        by_model.setdefault(model, {})[outcome] = count
    lines = []
    for model, outcomes in sorted(by_model.items()):
        calls = sum(outcomes.values())
        failed = {o: n for o, n in outcomes.items() if o in FAILED_OUTCOMES}
        failing = sum(failed.values())
        often = calls >= WARN_MIN_CALLS and failing >= WARN_SHARE * calls
        if often or (calls >= WARN_ALL_FAILED and failing == calls):
            kinds = ", ".join(f"{o} {n:,}" for o, n in sorted(failed.items(), key=lambda kv: -kv[1]))
            lines.append(f"{model}: {failing:,} of {calls:,} calls failed ({kinds})")
    return lines


# Jobs answered or failed (cancelled ones are not work done), overall and within the recent window; and the
# last job's end, a cancelled one's too (a batch cancelled whole, or with no job at all, stops its clock).
_WORK = "j.status IN ('succeeded', 'failed')"
_PACE = (
    f"SELECT count(*) FILTER (WHERE {_WORK} AND j.finished_at >= now() - make_interval(secs => :window)), "
    f"count(*) FILTER (WHERE {_WORK}), EXTRACT(EPOCH FROM now() - b.created_at), "
    "EXTRACT(EPOCH FROM max(j.finished_at) - b.created_at) "
    "FROM batches b LEFT JOIN jobs j ON j.batch_id = b.id AND j.status IN ('succeeded', 'failed', 'cancelled') "
    "WHERE b.id = :id GROUP BY b.created_at"
)


def _pace(status: BatchStatus, row: Any) -> None:
    """Rate over the last RATE_WINDOW_S seconds while running (over the whole run once done), and ETA."""
    recent, finished, elapsed, last = row
    status.elapsed_s = float(elapsed)
    if status.done:
        span = float(last) if last is not None else 0.0
        status.elapsed_s = span  # the clock stops at the last job's end (none: nothing ran)
        status.rate_per_s = finished / span if span > 0 else None
        status.eta_s = 0.0
        return
    window = min(float(RATE_WINDOW_S), status.elapsed_s)
    status.rate_per_s = recent / window if window > 0 else None
    if status.rate_per_s:
        status.eta_s = status.pending / status.rate_per_s


# A provider batch a worker began to send (its upload or creation) a minute ago or more, which the provider
# has not accepted since: a worker tries again every batch_poll_s, and its log says what the provider answers.
UNSENT_AFTER_S = 60
UNSENT = (f"state = 'creating' AND provider_batch_id IS NULL AND provider_status = 'sending' "
          f"AND updated_at < now() - interval '{UNSENT_AFTER_S} seconds'")

# Open provider batches of a batch, with the provider's request counts as last polled (models.provider_batch).
PROVIDER_BATCHES = f"""
SELECT count(*), coalesce(sum((SELECT count(*) FROM jsonb_object_keys(requests))), 0),
       coalesce(sum((request_counts ->> 'completed')::int), 0), coalesce(sum((request_counts ->> 'failed')::int), 0),
       count(*) FILTER (WHERE state = 'collecting'),
       count(*) FILTER (WHERE {UNSENT}),
       coalesce(EXTRACT(EPOCH FROM now() - min(updated_at) FILTER (WHERE {UNSENT})), 0),
       (array_agg(last_error ORDER BY updated_at) FILTER (WHERE {UNSENT} AND last_error IS NOT NULL))[1],
       EXTRACT(EPOCH FROM now() - min(updated_at) FILTER (WHERE state = 'open')),
       (array_agg(last_error ORDER BY updated_at) FILTER (WHERE state = 'open' AND last_error IS NOT NULL))[1]
FROM provider_batches WHERE batch_id = :b AND state <> 'ended'
"""


def open_provider_batches(conn: Connection, batch_id: uuid.UUID) -> dict[str, Any]:
    """The batch's provider batches still open (`filling`: of them, files not sent yet), and their requests
    ({} when there is none); `polled_s`: how long ago the least recently polled one sent to the provider was
    looked at (a poll message lost with a killed worker stops the looks until the reconciler sends it again);
    `look_error`: what the provider answered when the last look at one of them failed."""
    (batches, requests, completed, failed, filling, unsent, unsent_s, unsent_error,
     polled_s, look_error) = rows(conn, PROVIDER_BATCHES, {"b": batch_id})[0]
    if not batches:
        return {}
    found = {"batches": int(batches), "requests": int(requests), "completed": int(completed), "failed": int(failed),
             "filling": int(filling), "unsent": int(unsent), "unsent_s": int(unsent_s), "unsent_error": unsent_error}
    if polled_s is not None:
        found["polled_s"] = int(polled_s)
    if look_error is not None:  # the last look at an open one failed (a successful look clears it)
        found["look_error"] = str(look_error)
    return found
