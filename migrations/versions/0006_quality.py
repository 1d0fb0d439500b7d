"""quality: audits of cheap answers against the reference tier, and their labels

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTCOMES = ("ok", "refusal", "empty", "truncated", "invalid", "error", "rate_limited", "timeout", "cache_hit",
            "connection", "http_4xx", "http_5xx")
NEW_OUTCOMES = (*OUTCOMES, "audit", "judge")


def _outcome_check(values: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_calls_outcome"), "calls", type_="check")
    op.create_check_constraint("outcome", "calls", sa.column("outcome").in_(values))


def upgrade() -> None:
    # A job under audit keeps its candidate answer here until the reference tier has answered too.
    op.add_column("jobs", sa.Column("candidate", sa.String(), nullable=True))
    op.add_column("jobs", sa.Column("candidate_model", sa.String(200), nullable=True))
    op.add_column("jobs", sa.Column("candidate_tier", sa.String(100), nullable=True))
    op.add_column("jobs", sa.Column("candidate_source", sa.String(16), nullable=True))
    op.add_column("jobs", sa.Column("candidate_namespace", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("audited", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("jobs", sa.Column("replaced", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "labels",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("task_type", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("candidate_tier", sa.String(100), nullable=False),
        sa.Column("candidate_model", sa.String(200), nullable=False),
        sa.Column("reference_tier", sa.String(100), nullable=False),
        sa.Column("reference_model", sa.String(200), nullable=False),
        sa.Column("comparator", sa.String(32), nullable=False),
        sa.Column("agree", sa.Boolean(), nullable=False),
        sa.Column("prompt_chars", sa.Integer(), nullable=False),
        sa.Column("candidate_chars", sa.Integer(), nullable=False),
        sa.Column("reference_chars", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(64), nullable=True),
        sa.Column("prompt_sha256", sa.String(64), nullable=False),
        sa.Column("candidate_sha256", sa.String(64), nullable=False),
        sa.Column("reference_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_labels_job_id_jobs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], name=op.f("fk_labels_batch_id_batches"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
        sa.UniqueConstraint("job_id", name=op.f("uq_labels_job_id")),
    )
    op.create_index("ix_labels_batch_id", "labels", ["batch_id"])
    op.create_index("ix_labels_task_type_created_at", "labels", ["task_type", "created_at"])
    _outcome_check(NEW_OUTCOMES)


def downgrade() -> None:
    op.execute("UPDATE calls SET outcome = 'ok' WHERE outcome IN ('audit', 'judge')")
    _outcome_check(OUTCOMES)
    op.drop_index("ix_labels_task_type_created_at", table_name="labels")
    op.drop_index("ix_labels_batch_id", table_name="labels")
    op.drop_table("labels")
    for column in (
        "replaced",
        "audited",
        "candidate_namespace",
        "candidate_source",
        "candidate_tier",
        "candidate_model",
        "candidate",
    ):
        op.drop_column("jobs", column)
