"""calls: outcome cache_verify, the check of a near cache entry by the cheapest model

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTCOMES = ("ok", "refusal", "empty", "truncated", "invalid", "error", "rate_limited", "timeout", "cache_hit",
            "connection", "http_4xx", "http_5xx", "audit", "judge")


def _outcome_check(values: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_calls_outcome"), "calls", type_="check")
    op.create_check_constraint("outcome", "calls", sa.column("outcome").in_(values))


def upgrade() -> None:
    _outcome_check((*OUTCOMES, "cache_verify"))


def downgrade() -> None:
    # The checks' cost rows stay, as calls whose answer was not used (a verifier's "same" or "different").
    op.execute("UPDATE calls SET outcome = 'judge' WHERE outcome = 'cache_verify'")
    _outcome_check(OUTCOMES)
