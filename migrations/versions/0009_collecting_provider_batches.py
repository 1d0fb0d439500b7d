"""provider_batches: "collecting" rows gather a batch's jobs at a batch-mode tier until a provider file is
full (batch_max_requests, batch_max_bytes) or old enough (batch_max_wait_s)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_provider_batches_state"), "provider_batches", type_="check")
    op.create_check_constraint(op.f("ck_provider_batches_state"), "provider_batches",
                               "state IN ('collecting', 'creating', 'open', 'ended')")
    # The size of the request lines gathered so far (what batch_max_bytes limits).
    op.add_column("provider_batches", sa.Column("request_bytes", sa.BigInteger(), server_default="0", nullable=False))
    # At most one provider file is being filled per batch and tier at a time.
    op.create_index("ux_provider_batches_collecting", "provider_batches", ["batch_id", "tier"], unique=True,
                    postgresql_where=sa.text("state = 'collecting'"))


def downgrade() -> None:
    op.execute("UPDATE provider_batches SET state = 'creating' WHERE state = 'collecting'")
    op.drop_index("ux_provider_batches_collecting", table_name="provider_batches")
    op.drop_column("provider_batches", "request_bytes")
    op.drop_constraint(op.f("ck_provider_batches_state"), "provider_batches", type_="check")
    op.create_check_constraint(op.f("ck_provider_batches_state"), "provider_batches",
                               "state IN ('creating', 'open', 'ended')")
