"""routers: learned router versions per task type; what the router learns from an audited answer

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "routers",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("task_type", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("cheap_tier", sa.String(100), nullable=False),
        sa.Column("strong_tier", sa.String(100), nullable=False),
        # Feature layout, thresholds, label counts, held-out figures, sources: JSON.
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("policy", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("prompt_scorer", sa.LargeBinary(), nullable=False),
        sa.Column("answer_scorer", sa.LargeBinary(), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routers")),
        sa.UniqueConstraint("task_type", "version", name=op.f("uq_routers_task_type_version")),
    )
    op.create_index("ix_routers_one_active", "routers", ["task_type"], unique=True,
                    postgresql_where=sa.text("active"))
    # An audited answer's text (NULL for a private batch, whose texts live in the vault) and the summary of its
    # token log-probabilities, kept on the job while it is audited and on its label after.
    op.add_column("labels", sa.Column("candidate", sa.String(), nullable=True))
    for table in ("labels", "jobs"):
        op.add_column(table, sa.Column("candidate_logprob_mean", sa.Float(), nullable=True))
        op.add_column(table, sa.Column("candidate_logprob_min", sa.Float(), nullable=True))


def downgrade() -> None:
    for table in ("labels", "jobs"):
        op.drop_column(table, "candidate_logprob_min")
        op.drop_column(table, "candidate_logprob_mean")
    op.drop_column("labels", "candidate")
    op.drop_index("ix_routers_one_active", table_name="routers")
    op.drop_table("routers")
