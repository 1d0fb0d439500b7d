"""Provider batches: a batch-mode tier sends a tier message's jobs to the provider's batch API (the
provider-batch half of the state machine in `models.lifecycle`).

One provider batch per tier message, ever: the message id is the row's key, written before the first
provider call ("creating"), with the provider's file and batch ids written as soon as they are known
("open"), so a killed worker, a redelivered message or a restart finds the batch again instead of sending
its requests twice. While the provider works, the jobs stay `queued` under the message, which the workers
publish again every `batch_poll_s` (the same id) to look at the batch; when it ends they are claimed like
any tier message's jobs and answered from its output file ("ended").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from models.enums import JobStatus

CREATING, OPEN, ENDED = "creating", "open", "ended"
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
            requests: Mapping[str, int]) -> bool:
    """Write the row before any provider call; False when the message already has one (another delivery)."""
    return conn.execute(
        text("INSERT INTO provider_batches (message_id, batch_id, tier, model, provider, requests, state) "
             f"VALUES (:m, :b, :tier, :model, :provider, CAST(:requests AS jsonb), '{CREATING}') "
             "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"),
        {"m": message, "b": batch_id, "tier": tier, "model": model, "provider": provider,
         "requests": json.dumps(dict(requests))},
    ).first() is not None


def record(conn: Connection, message: uuid.UUID, **fields: Any) -> None:
    """Write what the provider said (file ids, batch id, status, request counts) as soon as it said it."""
    allowed = {"state", "input_file_id", "provider_batch_id", "provider_status", "request_counts", "output_file_id",
               "error_file_id"}
    unknown = set(fields) - allowed
    assert not unknown, unknown
    sets = ", ".join(f"{name} = CAST(:{name} AS jsonb)" if name == "request_counts" else f"{name} = :{name}"
                     for name in fields)
    values = {name: json.dumps(value) if name == "request_counts" and value is not None else value
              for name, value in fields.items()}
    ended = ", ended_at = now()" if fields.get("state") == ENDED else ""
    conn.execute(text(f"UPDATE provider_batches SET {sets}, updated_at = now(){ended} WHERE message_id = :m"),
                 {**values, "m": message})


def park(conn: Connection, message: uuid.UUID, owner: uuid.UUID, ids: Sequence[int]) -> list[int]:
    """running -> queued, under the same message: the jobs wait in the provider batch, not in a worker."""
    return list(conn.execute(
        text(f"UPDATE jobs SET status = '{JobStatus.QUEUED}', lease_owner = NULL, lease_until = NULL, "
             f"updated_at = now() WHERE id = ANY(:ids) AND handoff = :m AND lease_owner = :owner "
             f"AND status = '{JobStatus.RUNNING}' RETURNING id"),
        {"ids": list(ids), "m": message, "owner": owner},
    ).scalars())


def waiting(conn: Connection, message: uuid.UUID) -> list[int]:
    """The message's jobs still queued (not cancelled, not moved on)."""
    return list(conn.execute(
        text(f"SELECT id FROM jobs WHERE handoff = :m AND status = '{JobStatus.QUEUED}' ORDER BY id"),
        {"m": message},
    ).scalars())
