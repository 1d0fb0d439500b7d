"""provider_batches: the provider batch (Batch API) that holds a batch-mode tier message's jobs; calls.via_batch

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_batches",
        # The tier message whose jobs the provider batch answers: one provider batch per message, ever.
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("tier", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(200), nullable=False),
        # custom_id (the call's id) -> job id, for every request line sent.
        sa.Column("requests", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("input_file_id", sa.String(200), nullable=True),
        sa.Column("provider_batch_id", sa.String(200), nullable=True),
        sa.Column("provider_status", sa.String(40), nullable=True),
        sa.Column("request_counts", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("output_file_id", sa.String(200), nullable=True),
        sa.Column("error_file_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('creating', 'open', 'ended')", name=op.f("ck_provider_batches_state")),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_provider_batches")),
    )
    op.create_index("ix_provider_batches_open", "provider_batches", ["batch_id"],
                    postgresql_where=sa.text("state <> 'ended'"))
    # A call answered through a provider's batch API (billed at batch prices).
    op.add_column("calls", sa.Column("via_batch", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_column("calls", "via_batch")
    op.drop_index("ix_provider_batches_open", table_name="provider_batches")
    op.drop_table("provider_batches")
