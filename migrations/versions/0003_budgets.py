"""batch budgets: a cap, what was spent and what is reserved for calls in flight

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(24, 12)


def upgrade() -> None:
    op.add_column("batches", sa.Column("budget_usd", MONEY, nullable=True))
    op.add_column("batches", sa.Column("spent_usd", MONEY, server_default="0", nullable=False))
    op.add_column("batches", sa.Column("reserved_usd", MONEY, server_default="0", nullable=False))
    op.create_check_constraint("budget_held", "batches", "budget_usd IS NULL OR spent_usd <= budget_usd")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_batches_budget_held"), "batches", type_="check")
    op.drop_column("batches", "reserved_usd")
    op.drop_column("batches", "spent_usd")
    op.drop_column("batches", "budget_usd")
