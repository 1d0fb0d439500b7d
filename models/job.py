"""A job: one prompt of a batch, moving from tier to tier until it is answered or fails."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Sequence,
    String,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.enums import JobStatus

JOB_ID_SEQ = Sequence("jobs_id_seq")
# The states a job can still leave (JobStatus.final are the others), as SQL.
ACTIVE = "status IN (" + ", ".join(f"'{s.value}'" for s in JobStatus if s not in JobStatus.final()) + ")"


class Job(Base):
    """One prompt.

    `handoff` is the id of the task message that owns the job now: only that message may claim it, so
    duplicates of other messages are harmless. `handoff_from` is the message that handed it over, which
    re-sends the hand-off if it is redelivered after its worker died between commit and send.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("batch_id", "custom_id"),
        # Status only included: as an index condition, a state the statistics have not seen yet looked rare
        # to the planner, which then read the whole index for a chunk's jobs (migration 0014).
        Index("ix_jobs_batch_id", "batch_id", postgresql_include=["status"]),
        Index("ix_jobs_follows", "follows", postgresql_where=text("follows IS NOT NULL")),
        # The reconciler looks only at jobs that are not final. The predicate names finished_at, which no
        # statement on a worker's own jobs does: one on status would be implied by theirs, and the planner
        # read this index whole for them when its statistics were older than the active jobs.
        Index("ix_jobs_unfinished_updated_at", "updated_at", postgresql_where=text("finished_at IS NULL")),
        CheckConstraint(f"(finished_at IS NULL) = ({ACTIVE})", name="finished_when_final"),
    )

    id: Mapped[int] = mapped_column(BigInteger, JOB_ID_SEQ, primary_key=True, server_default=JOB_ID_SEQ.next_value())
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    seq: Mapped[int]
    custom_id: Mapped[str] = mapped_column(String(512))
    tenant: Mapped[str] = mapped_column(String(200))
    task_type: Mapped[str] = mapped_column(String(200))
    messages: Mapped[list[Any]]
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    prompt_chars: Mapped[int]
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e],
             create_constraint=True, name="status"),
        default=JobStatus.PENDING,
    )
    tier: Mapped[str | None] = mapped_column(String(100))
    start_tier: Mapped[str | None] = mapped_column(String(100))
    handoff: Mapped[uuid.UUID | None]
    handoff_from: Mapped[uuid.UUID | None]
    cache_entry: Mapped[int | None] = mapped_column(BigInteger)
    follows: Mapped[int | None] = mapped_column(BigInteger)
    # A claim is a lease: the task delivery that runs the job, and until when (renewed while it works).
    lease_owner: Mapped[uuid.UUID | None]
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Given back to its queue while a rate limit, a budget or a provider outage holds it: since when, how often.
    held_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When it is tried again (its message's delay: a Retry-After, a model's pause...): what `tierq status` shows.
    held_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When its current wait of each limited kind began ({"outage": unix s, ...}): what the limits measure.
    hold_clocks: Mapped[dict[str, Any] | None]
    holds: Mapped[int] = mapped_column(default=0, server_default="0")
    recoveries: Mapped[int] = mapped_column(default=0, server_default="0")  # messages re-published by the reconciler
    attempts: Mapped[int] = mapped_column(default=0)
    escalations: Mapped[int] = mapped_column(default=0)
    # An answer under audit (given below the reference tier, or served from the cache) waits here while
    # the reference tier answers the same job; `replaced` when the reference disagreed and won.
    candidate: Mapped[str | None]
    candidate_model: Mapped[str | None] = mapped_column(String(200))
    candidate_tier: Mapped[str | None] = mapped_column(String(100))
    candidate_source: Mapped[str | None] = mapped_column(String(16))
    candidate_namespace: Mapped[str | None] = mapped_column(String(64))
    candidate_logprob_mean: Mapped[float | None]
    candidate_logprob_min: Mapped[float | None]
    audited: Mapped[bool] = mapped_column(default=False, server_default=false())
    replaced: Mapped[bool] = mapped_column(default=False, server_default=false())
    content: Mapped[str | None]
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
