"""leases and holds: a claim has an owner and an expiry; held, recovered and submitted jobs are counted;
call outcomes name connection failures and HTTP errors

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTCOMES = ("ok", "refusal", "empty", "truncated", "invalid", "error", "rate_limited", "timeout", "cache_hit")
NEW_OUTCOMES = (*OUTCOMES, "connection", "http_4xx", "http_5xx")
ACTIVE = "status IN ('pending', 'queued', 'running', 'waiting')"


def _outcome_check(values: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_calls_outcome"), "calls", type_="check")
    op.create_check_constraint("outcome", "calls", sa.column("outcome").in_(values))


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lease_owner", sa.Uuid(), nullable=True))
    op.add_column("jobs", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("held_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("holds", sa.Integer(), server_default="0", nullable=False))
    op.add_column("jobs", sa.Column("recoveries", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_jobs_active_updated_at", "jobs", ["updated_at"], postgresql_where=sa.text(ACTIVE))
    op.add_column("batches", sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("batches", sa.Column("submit_error", sa.String(), nullable=True))
    # Batches submitted before this revision were complete.
    op.execute("UPDATE batches SET submitted_at = created_at")
    _outcome_check(NEW_OUTCOMES)


def downgrade() -> None:
    op.execute("UPDATE calls SET outcome = 'error' WHERE outcome IN ('connection', 'http_4xx', 'http_5xx')")
    _outcome_check(OUTCOMES)
    op.drop_column("batches", "submit_error")
    op.drop_column("batches", "submitted_at")
    op.drop_index("ix_jobs_active_updated_at", table_name="jobs")
    for column in ("recoveries", "holds", "held_since", "lease_until", "lease_owner"):
        op.drop_column("jobs", column)
