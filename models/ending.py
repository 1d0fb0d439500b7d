"""How a job ends when it is cut short: as the caller says, unless it holds an answer under audit.

An answer under audit (the job's candidate) was paid for below the reference tier. A job that ends without
its audit (its batch cancelled, its message lost too often) keeps that answer and succeeds, as when the
reference cannot answer. Here, apart from `models.lifecycle`, so that `models.stale` needs no SQLAlchemy.
"""

from __future__ import annotations

from models.enums import SUCCEEDED

HOLDS_ANSWER = "(j.candidate_source IS NOT NULL AND j.candidate_model IS NOT NULL)"


def ending(status: str, error: str) -> str:
    """The SET list that ends a job (alias `j`) as `status` with `error` (SQL), or, when it holds an answer
    under audit, as succeeded with that answer."""
    keeps = HOLDS_ANSWER
    return (f"status = CASE WHEN {keeps} THEN '{SUCCEEDED}' ELSE '{status}' END, "
            f"content = CASE WHEN {keeps} THEN j.candidate ELSE j.content END, "
            f"model = CASE WHEN {keeps} THEN j.candidate_model ELSE j.model END, "
            f"tier = CASE WHEN {keeps} THEN j.candidate_tier ELSE j.tier END, "
            f"replaced = CASE WHEN {keeps} THEN false ELSE j.replaced END, "
            f"candidate = CASE WHEN {keeps} THEN NULL ELSE j.candidate END, "
            f"error = CASE WHEN {keeps} THEN NULL ELSE {error} END, "
            "lease_owner = NULL, lease_until = NULL, finished_at = now(), updated_at = now()")
