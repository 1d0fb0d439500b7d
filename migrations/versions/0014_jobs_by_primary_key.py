"""jobs: no index on jobs may serve a worker's statements on its own jobs but the primary key; a check keeps
finished_at set exactly on final jobs

A worker's statements on its chunk's jobs say `id = ANY(...) AND status = 'queued'` (or 'running', ...).
Two indexes could answer the status half: the reconciler's, over `status IN ('pending', 'queued',
'running', 'waiting')` (a predicate those statements imply), and (batch_id, status), scanned whole for its
second column. Whenever the statistics had not seen jobs in that state (a large batch landing on a table
whose last ANALYZE saw none active; the jobs of a batch moving on from pending, which the last ANALYZE
saw, to queued and running) the planner took that index for a few rows and read every active job instead
of the chunk's 50: 25-55 ms a statement at 100,000 active jobs against 0.2 ms by the primary key, for each
claim, answer and hand-off.

- The reconciler's index now covers `finished_at IS NULL`, which no worker statement names, so none can
  imply it; the check makes it the same set of jobs.
- (batch_id, status) becomes (batch_id) INCLUDE (status): a batch's counts by state are still read from the
  index alone, and status is no index condition any more.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status IN ('pending', 'queued', 'running', 'waiting')"
FINISHED_WHEN_FINAL = f"(finished_at IS NULL) = ({ACTIVE})"


def upgrade() -> None:
    # Every tierq sets and clears finished_at with the status; rows that disagree (written by hand) are mended
    # so that the check holds: a final job without a time takes its last change's.
    op.execute(f"UPDATE jobs SET finished_at = updated_at WHERE finished_at IS NULL AND NOT ({ACTIVE})")
    op.execute(f"UPDATE jobs SET finished_at = NULL WHERE finished_at IS NOT NULL AND {ACTIVE}")
    op.create_check_constraint("finished_when_final", "jobs", sa.text(FINISHED_WHEN_FINAL))
    op.drop_index("ix_jobs_active_updated_at", table_name="jobs")
    op.create_index("ix_jobs_unfinished_updated_at", "jobs", ["updated_at"],
                    postgresql_where=sa.text("finished_at IS NULL"))
    op.drop_index("ix_jobs_batch_id_status", table_name="jobs")
    op.create_index("ix_jobs_batch_id", "jobs", ["batch_id"], postgresql_include=["status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_batch_id", table_name="jobs")
    op.create_index("ix_jobs_batch_id_status", "jobs", ["batch_id", "status"])
    op.drop_index("ix_jobs_unfinished_updated_at", table_name="jobs")
    op.create_index("ix_jobs_active_updated_at", "jobs", ["updated_at"], postgresql_where=sa.text(ACTIVE))
    op.drop_constraint(op.f("ck_jobs_finished_when_final"), "jobs", type_="check")
