"""A label: what an audit found, whether an answer given below the reference tier (or served from the
cache) agreed with the reference tier's answer to the same job. Quality estimates and the router learn
from them; they hold lengths and digests, and the candidate's text only for a batch that stores texts."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Label(Base):
    """One audited job (at most one label per job)."""

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_batch_id", "batch_id"),
                      Index("ix_labels_task_type_created_at", "task_type", "created_at"))

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(200))
    task_type: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # "answer", or "cache" for a semantic cache hit
    candidate_tier: Mapped[str] = mapped_column(String(100))
    candidate_model: Mapped[str] = mapped_column(String(200))
    reference_tier: Mapped[str] = mapped_column(String(100))
    reference_model: Mapped[str] = mapped_column(String(200))
    comparator: Mapped[str] = mapped_column(String(32))
    agree: Mapped[bool]
    prompt_chars: Mapped[int]
    candidate_chars: Mapped[int]
    reference_chars: Mapped[int]
    namespace: Mapped[str | None] = mapped_column(String(64))  # the cache namespace of an audited cache hit
    # SHA-256 of the prompt (its messages as JSON) and of the two answers: for de-duplicating training data.
    prompt_sha256: Mapped[str] = mapped_column(String(64))
    candidate_sha256: Mapped[str] = mapped_column(String(64))
    reference_sha256: Mapped[str] = mapped_column(String(64))
    # What the router learns from (docs/routing.md): the candidate's text (NULL for a private batch) and
    # the mean and least of its token log-probabilities, when its provider returned them.
    candidate: Mapped[str | None]
    candidate_logprob_mean: Mapped[float | None]
    candidate_logprob_min: Mapped[float | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
