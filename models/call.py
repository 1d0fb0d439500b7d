"""A cost row: one real model call (failed ones too), or a cache hit at zero cost."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, Enum, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.enums import CallOutcome


class Call(Base):
    """One model call; `id` is made by the worker before the call, so a retried write cannot double it."""

    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_batch_id_created_at", "batch_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    tier: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    cached_tokens: Mapped[int] = mapped_column(default=0)
    usage_estimated: Mapped[bool] = mapped_column(default=False)
    cost_usd: Mapped[Decimal]
    saved_usd: Mapped[Decimal] = mapped_column(default=Decimal(0))
    latency_ms: Mapped[int] = mapped_column(default=0)
    outcome: Mapped[CallOutcome] = mapped_column(
        Enum(CallOutcome, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e],
             create_constraint=True, name="outcome"),
    )
    error: Mapped[str | None]
    via_batch: Mapped[bool] = mapped_column(default=False)  # the migration gives old rows false
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
