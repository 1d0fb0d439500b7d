"""shared cache: waiting jobs that follow a leader, cache entries, per-batch cache switch

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = ("pending", "queued", "running", "succeeded", "failed", "cancelled")
NEW = ("pending", "queued", "running", "waiting", "succeeded", "failed", "cancelled")


def _status_check(values: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_jobs_status"), "jobs", type_="check")
    op.create_check_constraint("status", "jobs", sa.column("status").in_(values))


def upgrade() -> None:
    op.add_column("jobs", sa.Column("cache_entry", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("follows", sa.BigInteger(), nullable=True))
    op.create_index("ix_jobs_follows", "jobs", ["follows"], postgresql_where=sa.text("follows IS NOT NULL"))
    op.add_column("batches", sa.Column("use_cache", sa.Boolean(), server_default=sa.true(), nullable=False))
    _status_check(NEW)


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'queued' WHERE status = 'waiting'")
    _status_check(OLD)
    op.drop_column("batches", "use_cache")
    op.drop_index("ix_jobs_follows", table_name="jobs")
    op.drop_column("jobs", "follows")
    op.drop_column("jobs", "cache_entry")
