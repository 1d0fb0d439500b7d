"""The job state machine: every change of a job's status is one guarded UPDATE in this module.

    pending ──route──> queued ──claim──> running ──succeed──> succeeded
       │                 ^                 │ ├──escalate──> queued (next tier)
       │                 └──────hold───────┘ ├──fail──────> failed
       │                                     └──cancel────> cancelled (its batch was cancelled)
       ├──cache hit────────────────────────────────────────> succeeded
       ├──park──> waiting ──answer──> succeeded
       │             └──release──> pending
       └──fail (no tier fits, text expired)────────────────> failed
    pending, queued, waiting ──cancel_batch──> cancelled;  failed ──requeue──> pending

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from models.enums import JobStatus
from tierq.contract import Message, classify_message, tier_message
from tierq.live import LiveMessages

PENDING, QUEUED, RUNNING, WAITING = JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.WAITING
SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED
CANCEL_REASON = "cancelled: tierq cancel"


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


def _groups(routes: Mapping[int, str], chunk: int) -> list[tuple[str, list[int]]]:
    by_tier: dict[str, list[int]] = defaultdict(list)
    for job_id, tier in sorted(routes.items()):
        by_tier[tier].append(job_id)
    return [(tier, ids[i : i + chunk]) for tier, ids in by_tier.items() for i in range(0, len(ids), chunk)]


def _queue(
    conn: Connection, outbox: Outbox, routes: Mapping[int, str], chunk: int, guard: str, params: dict[str, Any],
    *, batch_id: uuid.UUID | None, sets: str = "", countdown: float | None = None,
) -> int:
    """Queue jobs on their tiers under new messages (`chunk` jobs each); `guard` says which jobs may move."""
    planned = [(tier, uuid.uuid4(), ids) for tier, ids in _groups(routes, chunk)]
    flat = [(job_id, tier, message) for tier, message, ids in planned for job_id in ids]
    if not flat:
        return 0
    moved = set(conn.execute(
        text(f"UPDATE jobs AS j SET status = '{QUEUED}', tier = v.tier, handoff = v.handoff, handoff_from = :me, "
             f"start_tier = COALESCE(j.start_tier, v.tier), lease_owner = NULL, lease_until = NULL, "
             f"updated_at = now(){sets} "
             "FROM unnest(CAST(:ids AS bigint[]), CAST(:tiers AS text[]), CAST(:handoffs AS uuid[])) "
             f"AS v(id, tier, handoff) WHERE j.id = v.id AND {guard} "
             "AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = j.batch_id AND b.cancelled) RETURNING j.id"),
        {"ids": [f[0] for f in flat], "tiers": [f[1] for f in flat], "handoffs": [f[2] for f in flat], **params},
    ).scalars())
    for tier, message, ids in planned:
        kept = [i for i in ids if i in moved]
        if kept:
            outbox.add(tier_message(tier, kept, batch_id, message, countdown))
    return len(moved)


def route(conn: Connection, outbox: Outbox, routes: Mapping[int, str], message: uuid.UUID, chunk: int,
          batch_id: uuid.UUID | None) -> int:
    """pending -> queued: the classify step's choice of starting tier (job -> tier)."""
    return _queue(conn, outbox, routes, chunk, f"j.status = '{PENDING}' AND j.handoff = :me", {"me": message},
                  batch_id=batch_id)


def escalate(conn: Connection, outbox: Outbox, lease: Lease, ids: Sequence[int], tier: str, chunk: int,
             batch_id: uuid.UUID | None) -> int:
    """running -> queued at the next tier: the cascade."""
    return _queue(conn, outbox, dict.fromkeys(ids, tier), chunk, _OWNED, {"me": lease.message, "owner": lease.owner},
                  batch_id=batch_id, sets=", escalations = j.escalations + 1, held_since = NULL")


def hold(conn: Connection, outbox: Outbox, lease: Lease, ids: Sequence[int], tier: str, chunk: int,
         batch_id: uuid.UUID | None, countdown: float) -> int:
    """running -> queued at the same tier, due after `countdown` s: a rate limit, budget or outage holds it."""
    return _queue(conn, outbox, dict.fromkeys(ids, tier), chunk, _OWNED, {"me": lease.message, "owner": lease.owner},
                  batch_id=batch_id, countdown=countdown,
                  sets=", holds = j.holds + 1, held_since = COALESCE(j.held_since, now())")


_OWNED = f"j.status = '{RUNNING}' AND j.handoff = :me AND j.lease_owner = :owner"


def hold_pending(conn: Connection, outbox: Outbox, ids: Sequence[int], message: uuid.UUID,
                 batch_id: uuid.UUID | None, countdown: float) -> int:
    """pending -> pending under a new classify message due after `countdown` s (a summary call must wait)."""
    later = uuid.uuid4()
    moved = list(conn.execute(
        text(f"UPDATE jobs SET handoff = :later, handoff_from = NULL, holds = holds + 1, "
             f"held_since = COALESCE(held_since, now()), updated_at = now() "
             f"WHERE id = ANY(:ids) AND status = '{PENDING}' AND handoff = :me RETURNING id"),
        {"ids": list(ids), "me": message, "later": later},
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
    cache entry, budgeted, private, task type, held since."""
    return list(conn.execute(
        text(f"UPDATE jobs AS j SET status = '{RUNNING}', lease_owner = :owner, "
             "lease_until = now() + make_interval(secs => :lease), updated_at = now() FROM batches b "
             "WHERE b.id = j.batch_id AND NOT b.cancelled AND j.id = ANY(:ids) AND j.tier = :tier AND j.handoff = :me "
             f"AND (j.status = '{QUEUED}' OR (j.status = '{RUNNING}' AND j.lease_until < now())) "
             "RETURNING j.id, j.batch_id, j.messages, j.params, b.params, b.system_prompt, j.attempts, j.cache_entry, "
             "b.budget_usd IS NOT NULL, NOT b.store_text, j.task_type, j.held_since"),
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


def cancel_leftovers(conn: Connection, lease: Lease, ids: Sequence[int]) -> list[int]:
    """running -> cancelled: jobs this delivery still runs after its calls belong to a cancelled batch."""
    return list(conn.execute(
        text(f"UPDATE jobs AS j SET status = '{CANCELLED}', error = COALESCE(j.error, '{CANCEL_REASON}'), "
             "lease_owner = NULL, lease_until = NULL, finished_at = now(), updated_at = now() "
             f"WHERE j.id = ANY(:ids) AND {_OWNED} RETURNING j.id"),
        {"ids": list(ids), "me": lease.message, "owner": lease.owner},
    ).scalars())


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


def park(conn: Connection, message: uuid.UUID, followers: Mapping[int, tuple[int, int]]) -> list[int]:
    """pending -> waiting: jobs (job -> (leader job, cache entry)) wait for a leader's answer."""
    if not followers:
        return []
    items = sorted(followers.items())
    return list(conn.execute(
        text(f"UPDATE jobs AS j SET status = '{WAITING}', follows = v.leader, cache_entry = v.entry, updated_at = now() "
             "FROM unnest(CAST(:ids AS bigint[]), CAST(:leaders AS bigint[]), CAST(:entries AS bigint[])) "
             f"AS v(id, leader, entry) WHERE j.id = v.id AND j.status = '{PENDING}' AND j.handoff = :me RETURNING j.id"),
        {"ids": [i for i, _ in items], "leaders": [f[0] for _, f in items], "entries": [f[1] for _, f in items],
         "me": message},
    ).scalars())


def mark_leaders(conn: Connection, message: uuid.UUID, leaders: Mapping[int, int]) -> None:
    """Remember the cache entry each leading job must fill once answered (job -> entry)."""
    if leaders:
        items = sorted(leaders.items())
        conn.execute(
            text("UPDATE jobs AS j SET cache_entry = v.entry FROM unnest(CAST(:ids AS bigint[]), "
                 "CAST(:entries AS bigint[])) AS v(id, entry) WHERE j.id = v.id AND j.handoff = :me"),
            {"ids": [i for i, _ in items], "entries": [e for _, e in items], "me": message},
        )


def answer_followers(conn: Connection, leader: int, content: str, model: str, tier: str) -> list[tuple[int, uuid.UUID]]:
    """waiting -> succeeded: the jobs that waited on `leader` share its answer; (job, batch) of each."""
    rows = conn.execute(
        text(f"UPDATE jobs SET status = '{SUCCEEDED}', content = :c, model = :m, tier = :t, follows = NULL, "
             "start_tier = COALESCE(start_tier, :t), attempts = attempts + 1, finished_at = now(), updated_at = now() "
             f"WHERE follows = :leader AND status = '{WAITING}' RETURNING id, batch_id"),
        {"c": content, "m": model, "t": tier, "leader": leader},
    ).all()
    return [(r[0], r[1]) for r in rows]


def release_followers(conn: Connection, outbox: Outbox, leader: int) -> int:
    """waiting -> pending: a failed or vanished leader's followers are routed again; one of them will lead."""
    message = uuid.uuid4()
    rows = conn.execute(
        text(f"UPDATE jobs SET status = '{PENDING}', follows = NULL, cache_entry = NULL, handoff = :me, "
             f"handoff_from = NULL, updated_at = now() WHERE follows = :leader AND status = '{WAITING}' "
             "RETURNING id, batch_id"),
        {"leader": leader, "me": message},
    ).all()
    if rows:
        outbox.add(classify_message(sorted(r[0] for r in rows), rows[0][1], message))
    return len(rows)


def touch_waiting(conn: Connection, ids: Sequence[int]) -> None:
    """Note that a follow check looked at these waiting jobs (the reconciler's sign that one still will)."""
    if ids:
        conn.execute(text(f"UPDATE jobs SET updated_at = now() WHERE id = ANY(:ids) AND status = '{WAITING}'"),
                     {"ids": list(ids)})


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


def cancel_batch(conn: Connection, batch_id: uuid.UUID) -> list[int]:
    """pending, queued, waiting -> cancelled for a whole batch (flagged cancelled, so running jobs stop
    after their call); the jobs changed."""
    conn.execute(text("UPDATE batches SET cancelled = true WHERE id = :id"), {"id": batch_id})
    return list(conn.execute(
        text(f"UPDATE jobs SET status = '{CANCELLED}', error = '{CANCEL_REASON}', finished_at = now(), "
             f"updated_at = now() WHERE batch_id = :id AND status IN ('{PENDING}', '{QUEUED}', '{WAITING}') "
             "RETURNING id"),
        {"id": batch_id},
    ).scalars())


def requeue_failed(conn: Connection, outbox: Outbox, batch_id: uuid.UUID, after: int, chunk: int) -> list[int]:
    """failed -> pending, one chunk in id order after `after`, routed afresh: attempts and cost rows stay."""
    message = uuid.uuid4()
    ids = sorted(conn.execute(
        text(f"UPDATE jobs SET status = '{PENDING}', handoff = :me, handoff_from = NULL, tier = NULL, "
             "start_tier = NULL, error = NULL, content = NULL, model = NULL, finished_at = NULL, held_since = NULL, "
             f"updated_at = now() WHERE id IN (SELECT id FROM jobs WHERE batch_id = :batch AND status = '{FAILED}' "
             f"AND id > :after ORDER BY id LIMIT :n FOR UPDATE) AND status = '{FAILED}' RETURNING id"),
        {"batch": batch_id, "after": after, "n": chunk, "me": message},
    ).scalars())
    if ids:
        outbox.add(classify_message(ids, batch_id, message))
    return ids


@dataclass(frozen=True, slots=True)
class Stale:
    """Jobs of one message that have not changed for a while: pending or queued, or running with no lease."""

    status: JobStatus
    tier: str | None
    message: uuid.UUID
    batch_id: uuid.UUID
    ids: list[int]
    recoveries: int

    def to_message(self) -> Message:
        """The message that should be carrying these jobs."""
        if self.status is PENDING:
            return classify_message(self.ids, self.batch_id, self.message)
        return tier_message(self.tier or "", self.ids, self.batch_id, self.message)


def stale(conn: Connection, age_s: float, batch_id: uuid.UUID | None = None, limit: int = 10_000) -> list[Stale]:
    """Jobs unchanged for `age_s` that only a message can move: pending or queued ones, and running ones
    whose lease ran out `age_s` ago (their worker died), grouped by the message that owns them."""
    rows = conn.execute(
        text("SELECT status, tier, handoff, min(batch_id::text), array_agg(id ORDER BY id), max(recoveries) "
             "FROM (SELECT * FROM jobs WHERE handoff IS NOT NULL "
             "AND updated_at < now() - make_interval(secs => :age) "
             "AND (CAST(:batch AS uuid) IS NULL OR batch_id = CAST(:batch AS uuid)) "
             f"AND (status IN ('{PENDING}', '{QUEUED}') OR (status = '{RUNNING}' "
             "AND lease_until < now() - make_interval(secs => :age))) "
             f"AND status IN ('{PENDING}', '{QUEUED}', '{RUNNING}') ORDER BY updated_at LIMIT :limit) AS s "
             "GROUP BY status, tier, handoff"),
        {"age": age_s, "batch": batch_id, "limit": limit},
    ).all()
    return [Stale(JobStatus(r[0]), r[1], r[2], uuid.UUID(r[3]), list(r[4]), int(r[5])) for r in rows]


def recovered(conn: Connection, outbox: Outbox, group: Stale, age_s: float) -> int:
    """Publish a stale group's message again (same id: a copy still on its way changes nothing twice),
    counting the recovery; jobs that moved since they were read are left alone."""
    ids = list(conn.execute(
        text("UPDATE jobs SET recoveries = recoveries + 1, updated_at = now() WHERE id = ANY(:ids) "
             "AND handoff = :me AND status = :status AND updated_at < now() - make_interval(secs => :age) "
             "RETURNING id"),
        {"ids": group.ids, "me": group.message, "status": group.status.value, "age": age_s},
    ).scalars())
    if ids:
        outbox.add(Stale(group.status, group.tier, group.message, group.batch_id, sorted(ids), 0).to_message())
    return len(ids)


def give_up(conn: Connection, group: Stale, reason: str) -> list[int]:
    """pending, queued, running (lease expired) -> failed: the message was lost too often."""
    return list(conn.execute(
        text(f"UPDATE jobs SET status = '{FAILED}', error = :reason, lease_owner = NULL, lease_until = NULL, "
             "finished_at = now(), updated_at = now() WHERE id = ANY(:ids) AND handoff = :me AND status = :status "
             f"AND (status <> '{RUNNING}' OR lease_until < now()) RETURNING id"),
        {"ids": group.ids, "me": group.message, "status": group.status.value, "reason": reason},
    ).scalars())


def stale_followers(conn: Connection, age_s: float) -> list[int]:
    """Leaders whose waiting followers no follow check has looked at for `age_s` (the check was lost)."""
    return list(conn.execute(
        text(f"SELECT DISTINCT follows FROM jobs WHERE status = '{WAITING}' "
             "AND updated_at < now() - make_interval(secs => :age) LIMIT 10000"),
        {"age": age_s},
    ).scalars())


def lost(conn: Connection, live: LiveMessages, age_s: float, batch_id: uuid.UUID | None = None) -> list[Stale]:
    """Stale jobs that no message will move: pending or queued ones whose message is not live, and running
    ones whose lease ran out (their worker died; publishing again is harmless if the broker also does)."""
    groups = stale(conn, age_s, batch_id)
    alive = live.live([g.message for g in groups if g.status is not RUNNING])
    return [g for g in groups if g.status is RUNNING or g.message not in alive]
