"""Jobs that no message will move, and how they get moving again (the reconciler's and `tierq recover`'s
half of the state machine in `models.lifecycle`).

A job is stale when it has not changed for a while and only a message can move it: pending or queued
under a message that may be lost, or running under a lease that ran out (its worker died). Publishing
the owning message again (same id) is safe: ownership guards make a copy still on its way a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.ending import ending
from models.enums import FAILED, PENDING, QUEUED, RUNNING, WAITING, JobStatus
from models.query import Connection, rows

if TYPE_CHECKING:  # `tierq status` counts stale jobs without loading the state machine (nor SQLAlchemy)
    from models.lifecycle import Outbox
    from tierq.contract import Message
    from tierq.live import LiveMessages


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
        from tierq.contract import classify_message, tier_message  # only when some are stale

        if self.status is PENDING:
            return classify_message(self.ids, self.batch_id, self.message)
        return tier_message(self.tier or "", self.ids, self.batch_id, self.message)


def stale(conn: Connection, age_s: float, batch_id: uuid.UUID | None = None, limit: int = 10_000) -> list[Stale]:
    """Jobs unchanged for `age_s` that only a message can move: pending or queued ones, and running ones
    whose lease ran out `age_s` ago (their worker died), grouped by the message that owns them."""
    found = rows(
        conn,
        "SELECT status, tier, handoff, min(batch_id::text), array_agg(id ORDER BY id), max(recoveries) "
        "FROM (SELECT * FROM jobs WHERE finished_at IS NULL AND handoff IS NOT NULL "
        "AND updated_at < now() - make_interval(secs => :age) "
        "AND (CAST(:batch AS uuid) IS NULL OR batch_id = CAST(:batch AS uuid)) "
        f"AND (status IN ('{PENDING}', '{QUEUED}') OR (status = '{RUNNING}' "
        "AND lease_until < now() - make_interval(secs => :age))) "
        f"AND status IN ('{PENDING}', '{QUEUED}', '{RUNNING}') ORDER BY updated_at LIMIT :limit) AS s "
        "GROUP BY status, tier, handoff",
        {"age": age_s, "batch": batch_id, "limit": limit},
    )
    return [Stale(JobStatus(r[0]), r[1], r[2], uuid.UUID(r[3]), list(r[4]), int(r[5])) for r in found]


def recovered(conn: Connection, outbox: Outbox, group: Stale, age_s: float) -> int:
    """Publish a stale group's message again (same id: a copy still on its way changes nothing twice),
    counting the recovery; jobs that moved since they were read are left alone."""
    ids = [row[0] for row in rows(
        conn,
        "UPDATE jobs SET recoveries = recoveries + 1, updated_at = now() WHERE id = ANY(:ids) "
        "AND handoff = :me AND status = :status AND updated_at < now() - make_interval(secs => :age) "
        "RETURNING id",
        {"ids": group.ids, "me": group.message, "status": group.status.value, "age": age_s},
    )]
    if ids:
        outbox.add(Stale(group.status, group.tier, group.message, group.batch_id, sorted(ids), 0).to_message())
    return len(ids)


def give_up(conn: Connection, group: Stale, reason: str) -> tuple[list[int], list[int]]:
    """pending, queued, running (lease expired) -> failed: the message was lost too often (one that holds an
    answer under audit -> succeeded with it, as when the reference cannot answer). (failed, kept)."""
    ended = rows(
        conn,
        f"UPDATE jobs AS j SET {ending(FAILED, 'CAST(:reason AS text)')} WHERE j.id = ANY(:ids) AND j.handoff = :me "
        f"AND j.status = :status AND (j.status <> '{RUNNING}' OR j.lease_until < now()) RETURNING j.id, j.status",
        {"ids": group.ids, "me": group.message, "status": group.status.value, "reason": reason},
    )
    return [job for job, status in ended if status == FAILED], [job for job, status in ended if status != FAILED]


def stale_followers(conn: Connection, age_s: float) -> list[int]:
    """Leaders whose waiting followers no follow check has looked at for `age_s` (the check was lost)."""
    return [row[0] for row in rows(
        conn,
        f"SELECT DISTINCT follows FROM jobs WHERE finished_at IS NULL AND status = '{WAITING}' "
        "AND updated_at < now() - make_interval(secs => :age) LIMIT 10000",
        {"age": age_s},
    )]


def lost(conn: Connection, live: LiveMessages, age_s: float, batch_id: uuid.UUID | None = None,
         lengths: Callable[[Sequence[str]], Mapping[str, int]] | None = None) -> list[Stale]:
    """Stale jobs that no message will move: pending or queued ones whose message is not live, or live but
    overdue (the broker lost it; `lengths` gives the queues' depths, see `LiveMessages.overdue`), and running
    ones whose lease ran out (their worker died; publishing again is harmless if the broker also does)."""
    groups = stale(conn, age_s, batch_id)
    waiting = [g for g in groups if g.status is not RUNNING]
    alive = live.live([g.message for g in waiting])
    alive -= live.overdue([(g.message, g.to_message().queue) for g in waiting if g.message in alive], age_s, lengths)
    return [g for g in groups if g.status is RUNNING or g.message not in alive]
