"""The job state machine: every change of a job's status is one guarded UPDATE in this module, or in its
waiting half (`models.following`) or its recovery half (`models.stale`).

    pending ──route──> queued ──claim──> running ──succeed──> succeeded
       │                 ^                 │ ├──escalate──> queued (next tier)
       │                 └───hold, retry───┘ ├──fail──────> failed
       │                                     └──cancel────> cancelled (its batch was cancelled; one under
       │                                                    audit -> succeeded with the answer it holds)
       ├──cache hit────────────────────────────────────────> succeeded
       ├──park──> waiting ──answer──> succeeded
       │             └──release──> pending
       └──fail (no tier fits, text expired)────────────────> failed
    pending, queued, waiting ──cancel_batch──> cancelled (queued under audit: succeeded);  failed ──requeue──> pending

Three rules hold every transition together:
- Ownership. A job names the task message that owns it (`handoff`); every UPDATE names that message
  and the status it leaves, so a redelivered or duplicated message changes nothing twice.
- Leases. A claim sets an owner (one delivery of the message) and an expiry, renewed while its calls
  are in flight; a second delivery makes no call while the lease is alive, and only the owner may
  finish the job. A dead worker's jobs are taken over once its lease runs out.
- Commit, then publish. A transition that hands jobs to a new message adds that message to an
  `Outbox`; the caller publishes the outbox only after the transaction commits, so a worker never
  receives ids it cannot see yet. A redelivered message re-sends what it handed off (`resend`).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from models.ending import HOLDS_ANSWER, ending
from models.enums import CANCELLED, FAILED, PENDING, QUEUED, RUNNING, SUCCEEDED, WAITING
from tierq.contract import Message, classify_message, tier_message

CANCEL_REASON = "cancelled: tierq cancel"
_FINAL_SQL = f"'{SUCCEEDED}', '{FAILED}', '{CANCELLED}'"


@dataclass(slots=True)
class Outbox:
    """Messages to publish once the transaction that assigned their jobs has committed."""

    messages: list[Message] = field(default_factory=list)

    def add(self, message: Message) -> None:
        """Publish `message` after the commit."""
        self.messages.append(message)

    def clear(self) -> None:
        """Forget everything (the transaction is about to be tried again)."""
        self.messages.clear()


@dataclass(frozen=True, slots=True)
class Lease:
    """One delivery of a task message: the message that owns the jobs and the delivery that runs them."""

    message: uuid.UUID
    owner: uuid.UUID = field(default_factory=uuid.uuid4)


# Jobs per message: one size for every tier, or per tier (a batch-mode tier sends bigger provider batches).
Chunks = int | Mapping[str, int]


def _groups(routes: Mapping[int, str], chunk: Chunks) -> list[tuple[str, list[int]]]:
    by_tier: dict[str, list[int]] = defaultdict(list)
    for job_id, tier in sorted(routes.items()):
        by_tier[tier].append(job_id)
    sizes = {tier: chunk if isinstance(chunk, int) else chunk[tier] for tier in by_tier}
    return [(tier, ids[i : i + sizes[tier]]) for tier, ids in by_tier.items() for i in range(0, len(ids), sizes[tier])]


def _queue(
    conn: Connection, outbox: Outbox, routes: Mapping[int, str], chunk: Chunks, guard: str, params: dict[str, Any],
    *, batch_id: uuid.UUID | None, sets: str = "", countdown: float | None = None,
) -> int:
    """Queue jobs on their tiers under new messages (`chunk` jobs each); `guard` says which jobs may move."""
    # One statement per new message, its jobs by id: the planner reads them by primary key. A join with the
    # list of (job, tier, message) was planned from the guard's estimate (one row, for a message's jobs), and
    # ran the list again for each row it found: 250,000 comparisons for a classify chunk of 500.
    statement = text(
        f"UPDATE jobs AS j SET status = '{QUEUED}', tier = :tier, handoff = :handoff, handoff_from = :me, "
        f"start_tier = COALESCE(j.start_tier, :tier), lease_owner = NULL, lease_until = NULL, updated_at = now(){sets} "
        f"WHERE j.id = ANY(:ids) AND {guard} "
        "AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = j.batch_id AND b.cancelled) RETURNING j.id")
    moved = 0
    for tier, ids in _groups(routes, chunk):
        message = uuid.uuid4()
        kept = sorted(conn.execute(statement, {"ids": ids, "tier": tier, "handoff": message, **params}).scalars())
        if kept:
            outbox.add(tier_message(tier, kept, batch_id, message, countdown))
        moved += len(kept)
    return moved


# A job that leaves its tier (escalated, sent to be audited) starts its waits afresh at the next one.
_NOT_HELD = ", held_since = NULL, held_until = NULL"
_LEFT_TIER = f"{_NOT_HELD}, hold_clocks = NULL"


def route(conn: Connection, outbox: Outbox, routes: Mapping[int, str], message: uuid.UUID, chunk: Chunks,
          batch_id: uuid.UUID | None) -> int:
    """pending -> queued: the classify step's choice of starting tier (job -> tier). A job held while pending
    (`hold_pending`) is not held any more."""
    return _queue(conn, outbox, routes, chunk, f"j.status = '{PENDING}' AND j.handoff = :me", {"me": message},
                  batch_id=batch_id, sets=_NOT_HELD)


def escalate(conn: Connection, outbox: Outbox, lease: Lease, ids: Sequence[int], tier: str, chunk: Chunks,
             batch_id: uuid.UUID | None) -> int:
    """running -> queued at the next tier: the cascade."""
    return _queue(conn, outbox, dict.fromkeys(ids, tier), chunk, _OWNED, {"me": lease.message, "owner": lease.owner},
                  batch_id=batch_id, sets=f", escalations = j.escalations + 1{_LEFT_TIER}")


def retry(conn: Connection, outbox: Outbox, lease: Lease, ids: Sequence[int], tier: str, chunk: Chunks,
          batch_id: uuid.UUID | None) -> int:
    """running -> queued at the same tier under a new message, at once: a provider batch failed the job's
    request for a reason that may pass (workers/batch_retry.py), and the tier tries it again, at once: not
    held (its hold clocks stay, and count again only if it is held again)."""
    return _queue(conn, outbox, dict.fromkeys(ids, tier), chunk, _OWNED, {"me": lease.message, "owner": lease.owner},
                  batch_id=batch_id, sets=_NOT_HELD)


# What holds a job (workers.gates.HoldKind): tierq's own rate schedule (no limit: it only delays), and the
# kinds whose waits are limited, each measured on a clock of its own in `hold_clocks`.
SCHEDULE = "rate_limit"
CLOCKED = ("outage", "budget", "provider_limit")


def _clocks(kind: str) -> str:
    """`hold_clocks` after a hold of `kind`: its clock starts unless it runs already; the outage clock stops
    when the job got past the provider's breaker (any other hold), so a long wait in the rate schedule never
    counts as outage, and a 429 clock keeps running through the schedule's pauses between 429s."""
    assert kind == SCHEDULE or kind in CLOCKED, kind
    # Clocks count only while `held_since` does: whatever clears that (leaving the tier, a retry; also in
    # a tierq from before the clocks, during a rolling upgrade) stops them all.
    running = "(CASE WHEN j.held_since IS NULL THEN '{}'::jsonb ELSE COALESCE(j.hold_clocks, '{}'::jsonb) END)"
    clocks = running if kind == "outage" else f"({running} - 'outage')"
    if kind == SCHEDULE:
        return clocks
    return (f"{clocks} || jsonb_build_object('{kind}', "
            f"COALESCE({running} -> '{kind}', to_jsonb(EXTRACT(EPOCH FROM now()))))")


def hold(conn: Connection, outbox: Outbox, lease: Lease, kinds: Mapping[int, str], tier: str, chunk: Chunks,
         batch_id: uuid.UUID | None, countdown: float) -> int:
    """running -> queued at the same tier, due after `countdown` s: a rate limit, budget or outage holds it
    (job -> what holds it). `held_until` says when it is due: the message's delay, the wait it asked for
    with jitter, or shorter where capped (tierq.queues.longest_countdown_s): then it is held again."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for job_id, kind in kinds.items():
        by_kind[kind].append(job_id)
    owned = {"me": lease.message, "owner": lease.owner, "due": countdown}
    return sum(_queue(conn, outbox, dict.fromkeys(ids, tier), chunk, _OWNED, owned, batch_id=batch_id,
                      countdown=countdown, sets=f", holds = j.holds + 1, held_since = COALESCE(j.held_since, now()), "
                                                "held_until = now() + make_interval(secs => :due), "
                                                f"hold_clocks = {_clocks(kind)}")
               for kind, ids in sorted(by_kind.items()))


_OWNED = f"j.status = '{RUNNING}' AND j.handoff = :me AND j.lease_owner = :owner"


@dataclass(frozen=True, slots=True)
class Candidate:
    """An answer under audit: the job, its text (None for a private batch: it is in the vault), who gave it,
    and the calls the job made for it."""

    job_id: int
    content: str | None
    model: str
    tier: str
    calls: int = 0
    namespace: str | None = None  # the cache namespace a cache hit under audit was served from
    logprobs: tuple[float, float] | None = None  # mean and least token log-probability, when the provider gave them


def _keep_candidates(conn: Connection, picks: Sequence[Candidate], source: str, guard: str,
                     params: dict[str, Any]) -> None:
    conn.execute(
        text("UPDATE jobs AS j SET candidate = v.content, candidate_model = v.model, candidate_tier = v.tier, "
             "candidate_source = :source, candidate_namespace = v.namespace, audited = true, "
             "candidate_logprob_mean = v.lp_mean, candidate_logprob_min = v.lp_min, "
             "attempts = j.attempts + v.calls FROM unnest(CAST(:ids AS bigint[]), CAST(:contents AS text[]), "
             "CAST(:models AS text[]), CAST(:tiers AS text[]), CAST(:calls AS int[]), CAST(:namespaces AS text[]), "
             "CAST(:lp_mean AS float8[]), CAST(:lp_min AS float8[])) "
             "AS v(id, content, model, tier, calls, namespace, lp_mean, lp_min) "
             f"WHERE j.id = v.id AND {guard}"),
        {"ids": [p.job_id for p in picks], "contents": [p.content for p in picks], "models": [p.model for p in picks],
         "tiers": [p.tier for p in picks], "calls": [p.calls for p in picks],
         "namespaces": [p.namespace for p in picks], "source": source,
         "lp_mean": [p.logprobs[0] if p.logprobs else None for p in picks],
         "lp_min": [p.logprobs[1] if p.logprobs else None for p in picks], **params},
    )


def audit(conn: Connection, outbox: Outbox, lease: Lease, picks: Sequence[Candidate], reference: str, chunk: Chunks,
          batch_id: uuid.UUID | None) -> int:
    """running -> queued at the reference tier, the answer kept as the candidate: an audit."""
    if not picks:
        return 0
    params = {"me": lease.message, "owner": lease.owner}
    _keep_candidates(conn, picks, "answer", _OWNED, params)
    return _queue(conn, outbox, {p.job_id: reference for p in picks}, chunk, _OWNED, params, batch_id=batch_id,
                  sets=_LEFT_TIER)


def audit_cached(conn: Connection, outbox: Outbox, message: uuid.UUID, picks: Sequence[Candidate], reference: str,
                 chunk: Chunks, batch_id: uuid.UUID | None) -> int:
    """pending -> queued at the reference tier, a semantic cache hit kept as the candidate: an audit."""
    if not picks:
        return 0
    guard = f"j.status = '{PENDING}' AND j.handoff = :me"
    _keep_candidates(conn, picks, "cache", guard, {"me": message})
    return _queue(conn, outbox, {p.job_id: reference for p in picks}, chunk, guard, {"me": message},
                  batch_id=batch_id, sets=_LEFT_TIER)


def settle_audits(conn: Connection, lease: Lease, settled: Sequence[tuple[Candidate, bool]],
                  digests: Mapping[int, str] | None = None) -> int:
    """running -> succeeded for audited jobs: (the answer kept, whether it replaced the candidate)."""
    if not settled:
        return 0
    return conn.execute(
        text(f"UPDATE jobs AS j SET status = '{SUCCEEDED}', content = v.content, model = v.model, tier = v.tier, "
             "replaced = v.replaced, candidate = NULL, error = NULL, content_sha256 = v.digest, "
             "attempts = j.attempts + v.calls, lease_owner = NULL, lease_until = NULL, finished_at = now(), "
             "updated_at = now() FROM unnest(CAST(:ids AS bigint[]), CAST(:contents AS text[]), "
             "CAST(:models AS text[]), CAST(:tiers AS text[]), CAST(:replaced AS bool[]), CAST(:calls AS int[]), "
             "CAST(:digests AS text[])) AS v(id, content, model, tier, replaced, calls, digest) "
             f"WHERE j.id = v.id AND {_OWNED}"),
        {"ids": [c.job_id for c, _ in settled], "contents": [c.content for c, _ in settled],
         "models": [c.model for c, _ in settled], "tiers": [c.tier for c, _ in settled],
         "replaced": [r for _, r in settled], "calls": [c.calls for c, _ in settled],
         "digests": [(digests or {}).get(c.job_id) for c, _ in settled], "me": lease.message, "owner": lease.owner},
    ).rowcount


def hold_pending(conn: Connection, outbox: Outbox, ids: Sequence[int], message: uuid.UUID,
                 batch_id: uuid.UUID | None, countdown: float) -> int:
    """pending -> pending under a new classify message due after `countdown` s (a summary call must wait)."""
    later = uuid.uuid4()
    moved = list(conn.execute(
        text(f"UPDATE jobs SET handoff = :later, handoff_from = NULL, holds = holds + 1, "
             f"held_since = COALESCE(held_since, now()), held_until = now() + make_interval(secs => :due), "
             f"updated_at = now() WHERE id = ANY(:ids) AND status = '{PENDING}' AND handoff = :me RETURNING id"),
        {"ids": list(ids), "me": message, "later": later, "due": countdown},
    ).scalars())
    if moved:
        outbox.add(classify_message(sorted(moved), batch_id, later, countdown))
    return len(moved)


def resend(conn: Connection, outbox: Outbox, ids: Sequence[int], message: uuid.UUID) -> int:
    """Hand-offs `message` committed but may not have sent (its worker died in between): send them again."""
    rows = conn.execute(
        text("SELECT tier, handoff, array_agg(id ORDER BY id), min(batch_id::text) FROM jobs "
             f"WHERE id = ANY(:ids) AND handoff_from = :me AND status = '{QUEUED}' GROUP BY tier, handoff"),
        {"ids": list(ids), "me": message},
    ).all()
    for tier, handoff, job_ids, batch in rows:
        outbox.add(tier_message(tier, list(job_ids), batch, handoff))
    return sum(len(r[2]) for r in rows)


def claim(conn: Connection, ids: Sequence[int], tier: str, lease: Lease, lease_s: float) -> list[Any]:
    """queued -> running under `lease` (or a running job whose lease ran out: its worker died).

    Returns the claimed rows: id, batch_id, messages, job params, batch params, system prompt, attempts,
    cache entry, budgeted, private, task type, held since, tenant, an audited answer's candidate, its
    model, tier, source, cache namespace and log-probability summary (mean, least), and the hold clocks.
    A job of a cancelled batch is never claimed (one whose worker died running it: `cancel_abandoned`)."""
    return list(conn.execute(
        text(f"UPDATE jobs AS j SET status = '{RUNNING}', lease_owner = :owner, "
             "lease_until = now() + make_interval(secs => :lease), updated_at = now() FROM batches b "
             "WHERE b.id = j.batch_id AND NOT b.cancelled AND j.id = ANY(:ids) AND j.tier = :tier AND j.handoff = :me "
             f"AND (j.status = '{QUEUED}' OR (j.status = '{RUNNING}' AND j.lease_until < now())) "
             "RETURNING j.id, j.batch_id, j.messages, j.params, b.params, b.system_prompt, j.attempts, j.cache_entry, "
             "b.budget_usd IS NOT NULL, NOT b.store_text, j.task_type, j.held_since, j.tenant, j.candidate, "
             "j.candidate_model, j.candidate_tier, j.candidate_source, j.candidate_namespace, "
             "j.candidate_logprob_mean, j.candidate_logprob_min, j.hold_clocks"),
        {"ids": list(ids), "tier": tier, "me": lease.message, "owner": lease.owner, "lease": lease_s},
    ).all())


def leased_elsewhere(conn: Connection, ids: Sequence[int], lease: Lease) -> float | None:
    """Seconds until the last live lease of another delivery of this message runs out; None when none is."""
    left = conn.execute(
        text("SELECT EXTRACT(EPOCH FROM max(lease_until) - now()) FROM jobs WHERE id = ANY(:ids) AND handoff = :me "
             f"AND status = '{RUNNING}' AND lease_owner <> :owner AND lease_until >= now()"),
        {"ids": list(ids), "me": lease.message, "owner": lease.owner},
    ).scalar()
    return None if left is None else float(left)


def renew(conn: Connection, leases: Mapping[uuid.UUID, Sequence[int]], lease_s: float) -> int:
    """Push out the expiry of the leases still held (owner -> job ids)."""
    pairs = [(owner, job_id) for owner, ids in leases.items() for job_id in ids]
    if not pairs:
        return 0
    return conn.execute(
        text("UPDATE jobs AS j SET lease_until = now() + make_interval(secs => :lease) "
             "FROM unnest(CAST(:ids AS bigint[]), CAST(:owners AS uuid[])) AS v(id, owner) "
             f"WHERE j.id = v.id AND j.lease_owner = v.owner AND j.status = '{RUNNING}'"),
        {"ids": [p[1] for p in pairs], "owners": [p[0] for p in pairs], "lease": lease_s},
    ).rowcount


def succeed(conn: Connection, lease: Lease, answers: Sequence[tuple[int, str | None, str, int]],
            digests: Mapping[int, str] | None = None) -> int:
    """running -> succeeded: answers (job, content, model, calls made); private jobs store a digest instead."""
    if not answers:
        return 0
    return conn.execute(
        text(f"UPDATE jobs AS j SET status = '{SUCCEEDED}', content = v.content, model = v.model, error = NULL, "
             "content_sha256 = v.digest, attempts = j.attempts + v.calls, lease_owner = NULL, lease_until = NULL, "
             "finished_at = now(), updated_at = now() "
             "FROM unnest(CAST(:ids AS bigint[]), CAST(:contents AS text[]), CAST(:models AS text[]), "
             "CAST(:calls AS int[]), CAST(:digests AS text[])) AS v(id, content, model, calls, digest) "
             f"WHERE j.id = v.id AND {_OWNED}"),
        {"ids": [a[0] for a in answers], "contents": [a[1] for a in answers], "models": [a[2] for a in answers],
         "calls": [a[3] for a in answers], "digests": [(digests or {}).get(a[0]) for a in answers],
         "me": lease.message, "owner": lease.owner},
    ).rowcount


def fail(conn: Connection, message: uuid.UUID, failures: Sequence[tuple[int, str, int]], *, final: bool,
         owner: uuid.UUID | None = None) -> list[int]:
    """Record why jobs failed here (job, reason, calls made); `final` ends them failed. Pending jobs are
    guarded by their message, running ones by their lease `owner` too. Returns the jobs changed."""
    if not failures:
        return []
    status = f"'{FAILED}'" if final else "j.status"
    return list(conn.execute(
        text(f"UPDATE jobs AS j SET status = {status}, error = v.reason, attempts = j.attempts + v.calls, "
             "lease_owner = CASE WHEN :final THEN NULL ELSE j.lease_owner END, "
             "finished_at = CASE WHEN :final THEN now() ELSE j.finished_at END, updated_at = now() "
             "FROM unnest(CAST(:ids AS bigint[]), CAST(:reasons AS text[]), CAST(:calls AS int[])) "
             "AS v(id, reason, calls) WHERE j.id = v.id AND j.handoff = :me "
             f"AND (j.status = '{PENDING}' OR (j.status = '{RUNNING}' AND j.lease_owner = CAST(:owner AS uuid))) "
             "RETURNING j.id"),
        {"ids": [f[0] for f in failures], "reasons": [f[1] for f in failures], "calls": [f[2] for f in failures],
         "me": message, "final": final, "owner": owner},
    ).scalars())


def cancelled_batches(conn: Connection, batches: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """The batches among `batches` that have been cancelled."""
    return set(conn.execute(text("SELECT id FROM batches WHERE cancelled AND id = ANY(:ids)"),
                            {"ids": list(batches)}).scalars())


_END_CANCELLED = ending(CANCELLED, f"COALESCE(j.error, '{CANCEL_REASON}')")


def _ended(found: Sequence[Any]) -> tuple[list[int], list[int]]:
    """(cancelled, kept with their answer) from `RETURNING j.id, j.status` (the new row's status)."""
    kept = [job for job, status in found if status == SUCCEEDED]
    return [job for job, status in found if status != SUCCEEDED], kept


def cancel_leftovers(conn: Connection, lease: Lease, ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """running -> cancelled: jobs this delivery still runs after its calls belong to a cancelled batch (one
    that holds an answer under audit -> succeeded with it). Returns (the jobs cancelled, those kept)."""
    return _ended(conn.execute(
        text(f"UPDATE jobs AS j SET {_END_CANCELLED} WHERE j.id = ANY(:ids) AND {_OWNED} RETURNING j.id, j.status"),
        {"ids": list(ids), "me": lease.message, "owner": lease.owner},
    ).all())


def cancel_abandoned(conn: Connection, ids: Sequence[int], tier: str,
                     message: uuid.UUID) -> tuple[list[int], list[int]]:
    """running (its lease ran out: its worker died) -> cancelled, for this message's jobs whose batch was
    cancelled meanwhile (one under audit keeps its answer). `claim` takes no job of a cancelled batch, and
    `cancel_batch` leaves running jobs to their worker: without this they stayed running until the
    reconciler failed them as stuck. For a delivery that claimed fewer jobs than its message names. Returns
    (the jobs cancelled, those kept)."""
    return _ended(conn.execute(
        text(f"UPDATE jobs AS j SET {_END_CANCELLED} WHERE j.id = ANY(:ids) AND j.tier = :tier AND j.handoff = :me "
             f"AND j.status = '{RUNNING}' AND j.lease_until < now() "
             "AND EXISTS (SELECT 1 FROM batches b WHERE b.id = j.batch_id AND b.cancelled) RETURNING j.id, j.status"),
        {"ids": list(ids), "tier": tier, "me": message},
    ).all())


def answer_from_cache(conn: Connection, message: uuid.UUID, job_id: int, content: str, model: str,
                      tier: str) -> uuid.UUID | None:
    """pending -> succeeded with a cached answer; the job's batch when it changed."""
    row = conn.execute(
        text(f"UPDATE jobs SET status = '{SUCCEEDED}', content = :c, model = :m, tier = :t, "
             "start_tier = COALESCE(start_tier, :t), attempts = attempts + 1, finished_at = now(), updated_at = now() "
             f"WHERE id = :id AND status = '{PENDING}' AND handoff = :me RETURNING batch_id"),
        {"c": content, "m": model, "t": tier, "id": job_id, "me": message},
    ).first()
    return None if row is None else row[0]


def rewrite_messages(conn: Connection, message: uuid.UUID, updates: Iterable[tuple[int, str, str]]) -> set[int]:
    """Replace the messages (JSON) and merge a params note (JSON) of pending jobs this message owns."""
    rows = list(updates)
    if not rows:
        return set()
    return set(conn.execute(
        text("UPDATE jobs AS j SET messages = CAST(v.messages AS jsonb), params = j.params || CAST(v.note AS jsonb), "
             "updated_at = now() FROM unnest(CAST(:ids AS bigint[]), CAST(:messages AS text[]), "
             "CAST(:notes AS text[])) AS v(id, messages, note) "
             f"WHERE j.id = v.id AND j.status = '{PENDING}' AND j.handoff = :me RETURNING j.id"),
        {"ids": [r[0] for r in rows], "messages": [r[1] for r in rows], "notes": [r[2] for r in rows],
         "me": message},
    ).scalars())


def cancel_batch(conn: Connection, batch_id: uuid.UUID) -> tuple[list[int], list[int]] | None:
    """pending, queued, waiting -> cancelled for a whole batch (flagged cancelled, so running jobs stop
    after their call), but a job queued to be audited -> succeeded with its answer; (the jobs cancelled,
    those that kept their answer). None, and nothing changed, when the batch has finished: submitted in
    full and every job final (its failed jobs can still be retried)."""
    flagged = conn.execute(
        text(f"UPDATE batches SET cancelled = true WHERE id = :id AND (cancelled OR submitted_at IS NULL OR EXISTS "
             f"(SELECT 1 FROM jobs WHERE batch_id = :id AND status NOT IN ({_FINAL_SQL}))) RETURNING id"),
        {"id": batch_id}).first()
    if flagged is None:
        return None
    # A job queued to be audited holds an answer already paid for: it keeps it (not counted as cancelled).
    kept = list(conn.execute(text(f"UPDATE jobs AS j SET {_END_CANCELLED} WHERE j.batch_id = :id "
                                  f"AND j.status = '{QUEUED}' AND {HOLDS_ANSWER} RETURNING j.id"),
                             {"id": batch_id}).scalars())
    return list(conn.execute(
        text(f"UPDATE jobs SET status = '{CANCELLED}', error = '{CANCEL_REASON}', finished_at = now(), "
             f"updated_at = now() WHERE batch_id = :id AND status IN ('{PENDING}', '{QUEUED}', '{WAITING}') "
             "RETURNING id"),
        {"id": batch_id},
    ).scalars()), kept


# The start of the reason of a job the batch's budget could not cover (workers/gates.py). Not a job that
# waited too long for budget that calls in flight held ("budget: calls in flight hold ..."): it may run now.
BUDGET_SPENT = "budget: what is left of the batch's budget"


def requeue_failed(conn: Connection, outbox: Outbox, batch_id: uuid.UUID, after: int, chunk: Chunks) -> list[int]:
    """failed -> pending, one chunk in id order after `after`, routed afresh (not as an audit): attempts and
    cost rows stay.
    Jobs the batch's budget could not cover stay failed: the budget they would meet again is the same."""
    message = uuid.uuid4()
    ids = sorted(conn.execute(
        text(f"UPDATE jobs SET status = '{PENDING}', handoff = :me, handoff_from = NULL, tier = NULL, "
             "start_tier = NULL, error = NULL, content = NULL, model = NULL, finished_at = NULL, held_since = NULL, "
             "held_until = NULL, hold_clocks = NULL, candidate = NULL, candidate_model = NULL, candidate_tier = NULL, "
             "candidate_source = NULL, candidate_namespace = NULL, candidate_logprob_mean = NULL, "
             "candidate_logprob_min = NULL, "
             f"updated_at = now() WHERE id IN (SELECT id FROM jobs WHERE batch_id = :batch AND status = '{FAILED}' "
             "AND id > :after AND (error IS NULL OR error NOT LIKE :spent) ORDER BY id LIMIT :n "
             f"FOR UPDATE) AND status = '{FAILED}' RETURNING id"),
        {"batch": batch_id, "after": after, "n": chunk, "me": message, "spent": f"{BUDGET_SPENT}%"},
    ).scalars())
    if ids:
        outbox.add(classify_message(ids, batch_id, message))
    return ids


def failed_for_budget(conn: Connection, batch_id: uuid.UUID) -> int:
    """The batch's jobs its budget stopped (`requeue_failed` leaves them failed)."""
    return int(conn.execute(text(f"SELECT count(*) FROM jobs WHERE batch_id = :b AND status = '{FAILED}' "
                                 "AND error LIKE :spent"), {"b": batch_id, "spent": f"{BUDGET_SPENT}%"}).scalar_one())
