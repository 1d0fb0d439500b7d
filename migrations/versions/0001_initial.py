"""batches, jobs and cost rows

Revision ID: 0001
Revises: 
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('source', sa.String(length=500), nullable=True),
    sa.Column('tenant', sa.String(length=200), nullable=False),
    sa.Column('task_type', sa.String(length=200), nullable=False),
    sa.Column('system_prompt', sa.String(), nullable=True),
    sa.Column('force_tier', sa.String(length=100), nullable=True),
    sa.Column('min_tier', sa.String(length=100), nullable=True),
    sa.Column('max_tier', sa.String(length=100), nullable=True),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.Integer(), nullable=False),
    sa.Column('cancelled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batches'))
    )
    op.execute(sa.schema.CreateSequence(sa.Sequence('jobs_id_seq')))
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger(), server_default=sa.text("nextval('jobs_id_seq')"), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("task_type", sa.String(length=200), nullable=False),
        sa.Column("messages", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("prompt_chars", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("tier", sa.String(length=100), nullable=True),
        sa.Column("start_tier", sa.String(length=100), nullable=True),
        sa.Column("handoff", sa.Uuid(), nullable=True),
        sa.Column("handoff_from", sa.Uuid(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("escalations", sa.Integer(), nullable=False),
        sa.Column("content", sa.String(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_jobs_batch_id_batches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("batch_id", "custom_id", name=op.f("uq_jobs_batch_id_custom_id")),
    )
    op.create_index('ix_jobs_batch_id_status', 'jobs', ['batch_id', 'status'], unique=False)
    op.create_table(
        "calls",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("usage_estimated", sa.Boolean(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(precision=24, scale=12), nullable=False),
        sa.Column("saved_usd", sa.Numeric(precision=24, scale=12), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "ok",
                "refusal",
                "empty",
                "truncated",
                "invalid",
                "error",
                "rate_limited",
                "timeout",
                "cache_hit",
                name="outcome",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_calls_batch_id_batches"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_calls_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    op.create_index('ix_calls_batch_id_created_at', 'calls', ['batch_id', 'created_at'], unique=False)
    op.create_index(op.f('ix_calls_job_id'), 'calls', ['job_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_calls_job_id'), table_name='calls')
    op.drop_index('ix_calls_batch_id_created_at', table_name='calls')
    op.drop_table('calls')
    op.drop_index('ix_jobs_batch_id_status', table_name='jobs')
    op.drop_table('jobs')
    op.execute(sa.schema.DropSequence(sa.Sequence('jobs_id_seq')))
    op.drop_table('batches')
