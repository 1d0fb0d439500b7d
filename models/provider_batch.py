"""Provider batches: a batch-mode tier sends a batch's jobs to the provider's batch API (the provider-batch
half of the state machine in `models.lifecycle`).

A row is one provider file, keyed by the tier message that carries its jobs. "collecting": the tier's
messages of one batch move their jobs into it (`collect`; they wait `queued` under its message id) until it
holds `batch_max_requests` requests or `batch_max_bytes` of request lines, or its timer message comes due
(`batch_max_wait_s`); then it is closed ("creating") and its message published with every job. From then
on, one provider batch per row, ever: the provider's file and batch ids are written as soon as they are
known ("open"), and "sending" is written before a batch is created, so a killed worker, a redelivered
message or a restart finds the batch again instead of sending its requests twice. While the provider
works, the jobs stay `queued` under the message, which the workers publish again every `batch_poll_s`
(the same id) to look at the batch; when it ends they are claimed like any tier message's jobs and
answered from its output file ("ended").
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from models.enums import JobStatus

COLLECTING, CREATING, OPEN, ENDED = "collecting", "creating", "open", "ended"
SENDING = "sending"  # provider_status written before batches.create: after a crash, look the batch up first
_COLUMNS = ("message_id, batch_id, tier, model, provider, requests, state, input_file_id, provider_batch_id, "
            "provider_status, request_counts, output_file_id, error_file_id, created_at, updated_at")


@dataclass(frozen=True, slots=True)
class ProviderBatch:
    """One row of `provider_batches`."""

    message_id: uuid.UUID
    batch_id: uuid.UUID | None
    tier: str
    model: str
    provider: str
    requests: dict[str, int]  # custom_id (the call's id) -> job id
    state: str
    input_file_id: str | None
    provider_batch_id: str | None
    provider_status: str | None
    request_counts: dict[str, int] | None
    output_file_id: str | None
    error_file_id: str | None
    created_at: datetime
    updated_at: datetime


def find(conn: Connection, message: uuid.UUID) -> ProviderBatch | None:
    """The provider batch of a tier message, if it has one."""
    row = conn.execute(text(f"SELECT {_COLUMNS} FROM provider_batches WHERE message_id = :m"), {"m": message}).first()
    return ProviderBatch(*row) if row is not None else None


def reserve(conn: Connection, message: uuid.UUID, batch_id: uuid.UUID | None, tier: str, model: str, provider: str,
            requests: Mapping[str, int], state: str = CREATING) -> bool:
    """Write the row before any provider call; False when the message (or, for a collecting row, the batch
    and tier) already has one (another delivery)."""
    return conn.execute(
        text("INSERT INTO provider_batches (message_id, batch_id, tier, model, provider, requests, state) "
             "VALUES (:m, :b, :tier, :model, :provider, CAST(:requests AS jsonb), :state) "
             "ON CONFLICT DO NOTHING RETURNING message_id"),
        {"m": message, "b": batch_id, "tier": tier, "model": model, "provider": provider,
         "requests": json.dumps(dict(requests)), "state": state},
    ).first() is not None


def record(conn: Connection, message: uuid.UUID, **fields: Any) -> None:
    """Write what the provider said (file ids, batch id, status, request counts) as soon as it said it."""
    allowed = {"state", "input_file_id", "provider_batch_id", "provider_status", "request_counts", "output_file_id",
               "error_file_id", "last_error"}
    unknown = set(fields) - allowed
    assert not unknown, unknown
    sets = ", ".join(f"{name} = CAST(:{name} AS jsonb)" if name == "request_counts" else f"{name} = :{name}"
                     for name in fields)
    values = {name: json.dumps(value) if name == "request_counts" and value is not None else value
              for name, value in fields.items()}
    ended = ", ended_at = now()" if fields.get("state") == ENDED else ""
    conn.execute(text(f"UPDATE provider_batches SET {sets}, updated_at = now(){ended} WHERE message_id = :m"),
                 {**values, "m": message})


def note_error(conn: Connection, message: uuid.UUID, error: str) -> None:
    """Keep what the provider last answered when it did not accept, refused or could not be asked about the
    batch (`tierq status` quotes it). `updated_at` stays: it says since when a batch waits to be accepted."""
    conn.execute(text("UPDATE provider_batches SET last_error = :e WHERE message_id = :m"),
                 {"e": error[:500], "m": message})


def _live_batches(conn: Connection, ids: Sequence[int]) -> None:
    """Lock the jobs' batch rows against `tierq cancel` until the transaction ends: a cancel that came first
    is seen (the caller's guard skips its jobs), one that comes later finds the jobs queued and cancels them."""
    conn.execute(text("SELECT 1 FROM batches WHERE id IN (SELECT batch_id FROM jobs WHERE id = ANY(:ids)) "
                      "FOR SHARE"), {"ids": list(ids)})


_NOT_CANCELLED = "NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = jobs.batch_id AND b.cancelled)"


def park(conn: Connection, message: uuid.UUID, owner: uuid.UUID, ids: Sequence[int]) -> list[int]:
    """running -> queued, under the same message: the jobs wait in the provider batch, not in a worker.
    Jobs of a cancelled batch stay with the caller (to cancel)."""
    _live_batches(conn, ids)
    return list(conn.execute(
        text(f"UPDATE jobs SET status = '{JobStatus.QUEUED}', lease_owner = NULL, lease_until = NULL, "
             f"updated_at = now() WHERE id = ANY(:ids) AND handoff = :m AND lease_owner = :owner "
             f"AND status = '{JobStatus.RUNNING}' AND {_NOT_CANCELLED} RETURNING id"),
        {"ids": list(ids), "m": message, "owner": owner},
    ).scalars())


def waiting(conn: Connection, message: uuid.UUID, ids: Sequence[int]) -> list[int]:
    """Of `ids` (the jobs of the message's provider batch), those still queued under it (not cancelled, not
    moved on). Looked up by id: no index leads from a message to its jobs."""
    return list(conn.execute(
        text(f"SELECT id FROM jobs WHERE id = ANY(:ids) AND handoff = :m AND status = '{JobStatus.QUEUED}' "
             f"AND {_NOT_CANCELLED} ORDER BY id"),
        {"ids": list(ids), "m": message},
    ).scalars())


def in_provider_batches(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    """Of these jobs, those waiting in a provider batch (or a file still filling): job id -> tier."""
    return {int(job_id): str(tier) for job_id, tier in conn.execute(
        text(f"SELECT j.id, p.tier FROM jobs j JOIN provider_batches p ON p.message_id = j.handoff "
             f"WHERE j.id = ANY(:ids) AND j.status = '{JobStatus.QUEUED}' AND p.state <> '{ENDED}'"),
        {"ids": list(ids)}).all()}


def end_collecting(conn: Connection, batch_id: uuid.UUID) -> int:
    """A cancelled batch's provider files not sent yet end there (their jobs are cancelled)."""
    return conn.execute(text(f"UPDATE provider_batches SET state = '{ENDED}', provider_status = 'not sent', "
                             f"updated_at = now(), ended_at = now() WHERE batch_id = :b AND state = '{COLLECTING}'"),
                        {"b": batch_id}).rowcount


def waited_s(conn: Connection, message: uuid.UUID) -> float:
    """Seconds since the row was written (how long a collecting file has waited)."""
    return float(conn.execute(text("SELECT EXTRACT(EPOCH FROM now() - created_at) FROM provider_batches "
                                   "WHERE message_id = :m"), {"m": message}).scalar_one())


def mark_sending(conn: Connection, message: uuid.UUID) -> bool:
    """Record that a provider batch is about to be created; False when a delivery already did (it may have
    created one: look it up first)."""
    return conn.execute(text("UPDATE provider_batches SET provider_status = :s, updated_at = now() "
                             "WHERE message_id = :m AND provider_status IS NULL AND provider_batch_id IS NULL "
                             "RETURNING 1"), {"s": SENDING, "m": message}).first() is not None


@dataclass(frozen=True, slots=True)
class Limits:
    """When a collecting provider file is closed: this many requests, or this many bytes of request lines."""

    requests: int
    bytes: int


@dataclass(slots=True)
class Collected:
    """What `collect` did: rows it closed (message id -> every job id, to be sent now), rows it opened
    (their timer messages are due in batch_max_wait_s), and the jobs it moved."""

    closed: dict[uuid.UUID, list[int]]
    opened: list[uuid.UUID]
    moved: int = 0


def collect(conn: Connection, message: uuid.UUID, owner: uuid.UUID, batch_id: uuid.UUID, tier: str, model: str,
            provider: str, jobs: Sequence[tuple[int, int]], limits: Limits,
            call_id: Callable[[uuid.UUID, int], uuid.UUID]) -> Collected:
    """Move the message's claimed jobs ((job id, request line bytes), in order) into the batch's collecting
    row at `tier`, closing it whenever the next job would not fit and opening the next one; the rows are
    locked for the transaction, so deliveries of the same batch and tier fill them one at a time. Jobs of
    a cancelled batch are not moved (`Collected.moved` counts those that were). The moved jobs' hand-off
    is recorded (`handoff_from`), so a redelivered message sends them on again (`lifecycle.resend`)."""
    done = Collected({}, [])
    ids = [job_id for job_id, _ in jobs]
    _live_batches(conn, ids)
    movable = set(conn.execute(
        text(f"SELECT id FROM jobs WHERE id = ANY(:ids) AND handoff = :m AND lease_owner = :owner "
             f"AND status = '{JobStatus.RUNNING}' AND {_NOT_CANCELLED}"),
        {"ids": ids, "m": message, "owner": owner}).scalars())
    jobs = [(job_id, size) for job_id, size in jobs if job_id in movable]
    if not jobs:
        return done
    # One delivery at a time fills the batch's files at this tier: without the lock, two could each find
    # the collecting row closed under them, and each other's new one not yet committed, again and again.
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(batch_id, tier)})
    current = _collecting(conn, batch_id, tier, model, provider, done)
    plan: dict[uuid.UUID, list[tuple[int, int]]] = {}
    count, size = _fill(conn, current)
    for job_id, line_bytes in jobs:
        if count and (count + 1 > limits.requests or size + line_bytes > limits.bytes):
            done.closed[current] = []
            current = _collecting(conn, batch_id, tier, model, provider, done, close=current)
            count, size = 0, 0
        plan.setdefault(current, []).append((job_id, line_bytes))
        count, size = count + 1, size + line_bytes
    for row, planned in plan.items():
        moved = set(conn.execute(
            text(f"UPDATE jobs SET handoff = :row, handoff_from = :m, status = '{JobStatus.QUEUED}', "
                 "lease_owner = NULL, lease_until = NULL, updated_at = now() WHERE id = ANY(:ids) AND handoff = :m "
                 f"AND lease_owner = :owner AND status = '{JobStatus.RUNNING}' RETURNING id"),
            {"row": row, "ids": [job_id for job_id, _ in planned], "m": message, "owner": owner},
        ).scalars())
        added = {str(call_id(row, job_id)): job_id for job_id, _ in planned if job_id in moved}
        conn.execute(text("UPDATE provider_batches SET requests = requests || CAST(:added AS jsonb), "
                          "request_bytes = request_bytes + :size, updated_at = now() WHERE message_id = :row"),
                     {"added": json.dumps(added), "size": sum(b for j, b in planned if j in moved), "row": row})
        done.moved += len(moved)
    if count >= limits.requests or size >= limits.bytes:
        done.closed[current] = []
        _close(conn, current)
    for row in done.closed:
        done.closed[row] = sorted(find(conn, row).requests.values())  # type: ignore[union-attr]
    return done


def _lock_key(batch_id: uuid.UUID, tier: str) -> int:
    """A 64-bit advisory lock key for the batch's files at `tier`."""
    digest = hashlib.blake2b(f"tierq-collect:{batch_id}:{tier}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _collecting(conn: Connection, batch_id: uuid.UUID, tier: str, model: str, provider: str, done: Collected,
                close: uuid.UUID | None = None) -> uuid.UUID:
    """The batch's collecting row at `tier`, locked; opened when there is none (after closing `close`)."""
    if close is not None:
        _close(conn, close)
    for _ in range(3):
        found = conn.execute(text(f"SELECT message_id FROM provider_batches WHERE batch_id = :b AND tier = :tier "
                                  f"AND state = '{COLLECTING}' FOR UPDATE"), {"b": batch_id, "tier": tier}).scalar()
        if found is not None:
            return uuid.UUID(str(found))
        opened = uuid.uuid4()
        if reserve(conn, opened, batch_id, tier, model, provider, {}, state=COLLECTING):
            done.opened.append(opened)
            return opened
        # A file opened outside the lock (none are, today): take that one, its insert has committed by now.
    raise RuntimeError(f"no collecting provider batch for batch {batch_id} at tier {tier!r} after three tries")


def _fill(conn: Connection, row: uuid.UUID) -> tuple[int, int]:
    """(requests, bytes) a collecting row holds."""
    count, size = conn.execute(text("SELECT (SELECT count(*) FROM jsonb_object_keys(requests)), request_bytes "
                                    "FROM provider_batches WHERE message_id = :row"), {"row": row}).one()
    return int(count), int(size)


def _close(conn: Connection, row: uuid.UUID) -> None:
    conn.execute(text(f"UPDATE provider_batches SET state = '{CREATING}', updated_at = now() "
                      f"WHERE message_id = :row AND state = '{COLLECTING}'"), {"row": row})


def close(conn: Connection, row: uuid.UUID) -> list[int] | None:
    """Close a collecting row (its timer came due, or a delivery found it still collecting): the job ids it
    holds, or None when it was not collecting any more."""
    closed = conn.execute(text(f"UPDATE provider_batches SET state = '{CREATING}', updated_at = now() "
                               f"WHERE message_id = :row AND state = '{COLLECTING}' RETURNING requests"),
                          {"row": row}).scalar()
    return None if closed is None else sorted(int(job_id) for job_id in closed.values())


def times_sent(conn: Connection, ids: Sequence[int], tier: str) -> dict[int, int]:
    """How many provider batches at `tier` each of these jobs' requests went out in (batches the provider
    accepted: each is a try of the job there)."""
    return {int(job_id): int(count) for job_id, count in conn.execute(
        text("SELECT CAST(r.value AS bigint), count(*) FROM provider_batches p "
             "CROSS JOIN LATERAL jsonb_each_text(p.requests) AS r "
             "WHERE p.tier = :tier AND p.provider_batch_id IS NOT NULL "
             "AND p.batch_id IN (SELECT batch_id FROM jobs WHERE id = ANY(:ids)) "
             "AND CAST(r.value AS bigint) = ANY(:ids) GROUP BY 1"),
        {"ids": list(ids), "tier": tier}).all()}
