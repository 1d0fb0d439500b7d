"""private batches: only digests of prompts and answers in Postgres

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("store_text", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.add_column("jobs", sa.Column("content_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "content_sha256")
    op.drop_column("batches", "store_text")
