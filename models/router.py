"""A learned router version: one task type's fitted scorers and thresholds (tierq/router), at most one
active per task type. Workers load the active versions and look for a new one every `[router] poll_s`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, Index, LargeBinary, String, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class RouterVersion(Base):
    """One fit (`tierq route fit`), active or not."""

    __tablename__ = "routers"
    __table_args__ = (UniqueConstraint("task_type", "version"),
                      Index("ix_routers_one_active", "task_type", unique=True, postgresql_where=text("active")))

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_type: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    active: Mapped[bool] = mapped_column(default=False, server_default="false")
    cheap_tier: Mapped[str] = mapped_column(String(100))
    strong_tier: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]]
    policy: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    prompt_scorer: Mapped[bytes] = mapped_column(LargeBinary)
    answer_scorer: Mapped[bytes | None] = mapped_column(LargeBinary)
    note: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
