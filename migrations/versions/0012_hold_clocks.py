"""jobs: hold_clocks, when a job's current wait of each limited kind began (outage, budget, a provider's
429s), so that a wait of one kind (tierq's own rate schedule, say) never counts against another's limit

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # {kind: unix seconds}; NULL until a job is first held for a kind with a limit.
    op.add_column("jobs", sa.Column("hold_clocks", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "hold_clocks")
