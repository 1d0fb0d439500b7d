"""A batch: one submitted file, with the options that apply to all of its jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, String, func, true
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Batch(Base):
    """A bulk submission; its options (tier bounds, system prompt, parameters) apply to every job."""

    __tablename__ = "batches"
    __table_args__ = (CheckConstraint("budget_usd IS NULL OR spent_usd <= budget_usd", name="budget_held"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    source: Mapped[str | None] = mapped_column(String(500))
    tenant: Mapped[str] = mapped_column(String(200), default="default")
    task_type: Mapped[str] = mapped_column(String(200), default="default")
    system_prompt: Mapped[str | None]
    force_tier: Mapped[str | None] = mapped_column(String(100))
    min_tier: Mapped[str | None] = mapped_column(String(100))
    max_tier: Mapped[str | None] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    total: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    cancelled: Mapped[bool] = mapped_column(default=False)
    use_cache: Mapped[bool] = mapped_column(default=True, server_default=true())
    # A cap on what the batch may spend; calls reserve their worst case before they are made.
    budget_usd: Mapped[Decimal | None]
    spent_usd: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    reserved_usd: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    # False: Postgres keeps digests only; texts live in Redis until used (tierq.vault).
    store_text: Mapped[bool] = mapped_column(default=True, server_default=true())
    # Set when the submission read its whole input; a submission that stopped half-way says why.
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submit_error: Mapped[str | None]
