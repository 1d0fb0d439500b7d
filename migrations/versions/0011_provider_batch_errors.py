"""provider_batches: last_error, what the provider last answered when it did not accept, refused or
could not be asked about a provider batch (status quotes it; the workers' log has every one)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("provider_batches", sa.Column("last_error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("provider_batches", "last_error")
