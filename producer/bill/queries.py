"""The SQL behind the bill, with the scope (a batch, a start date) every query shares."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Scope:
    """Which rows a report covers: one batch or all, and with `since` the jobs submitted and calls made from then."""

    batch_id: uuid.UUID | None = None
    since: datetime | None = None

    def _where(self, alias: str) -> str:
        parts = []
        if self.batch_id is not None:
            parts.append(f"{alias}.batch_id = :batch")
        if self.since is not None:
            parts.append(f"{alias}.created_at >= :since")
        return " AND ".join(parts) or "TRUE"

    def calls(self) -> str:
        """The condition on `calls c`."""
        return self._where("c")

    def jobs(self) -> str:
        """The condition on `jobs j`."""
        return self._where("j")

    def params(self) -> dict[str, Any]:
        """Bind parameters of the conditions."""
        return {"batch": self.batch_id, "since": self.since}

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"batch_id": str(self.batch_id) if self.batch_id else None,
                "since": self.since.isoformat() if self.since else None}


# Estimated prompt tokens compression removed from a job's conversation (0 for other jobs).
REMOVED = ("COALESCE((j.params -> '_tierq_compression' ->> 'tokens_before')::bigint "
           "- (j.params -> '_tierq_compression' ->> 'tokens_after')::bigint, 0)")

JOBS = "SELECT j.task_type, j.tenant, j.status, count(*) FROM jobs j WHERE {j} GROUP BY 1, 2, 3"

# Cache hits are rows too (zero cost, with the cost they saved), but neither calls nor tokens spent.
SPEND = """
SELECT c.model, c.tier, j.task_type, j.tenant,
       count(*) FILTER (WHERE c.outcome <> 'cache_hit') AS calls,
       count(*) FILTER (WHERE c.outcome = 'cache_hit') AS hits,
       COALESCE(sum(c.prompt_tokens) FILTER (WHERE c.outcome <> 'cache_hit'), 0) AS prompt_tokens,
       COALESCE(sum(c.completion_tokens) FILTER (WHERE c.outcome <> 'cache_hit'), 0) AS completion_tokens,
       COALESCE(sum(c.cached_tokens) FILTER (WHERE c.outcome <> 'cache_hit'), 0) AS cached_tokens,
       COALESCE(sum(c.cost_usd), 0) AS cost,
       COALESCE(sum(c.saved_usd), 0) AS saved
FROM calls c JOIN jobs j ON j.id = c.job_id
WHERE {c}
GROUP BY 1, 2, 3, 4
"""

# Calls by what they came to, per model (cache hits too), and the jobs each model worked on.
OUTCOMES = "SELECT c.model, c.outcome, count(*) FROM calls c WHERE {c} GROUP BY 1, 2"
MODEL_JOBS = "SELECT c.model, count(DISTINCT c.job_id) FROM calls c WHERE {c} GROUP BY 1"
# Jobs that ended without a call because their batch's budget could not cover one.
# Jobs the budget stopped, those of them with calls before it did (an answer that escalated, a 429...), and their cost.
BUDGET_FAILED = """
SELECT count(*), count(*) FILTER (WHERE paid.cost IS NOT NULL), COALESCE(sum(paid.cost), 0)
FROM jobs j LEFT JOIN LATERAL (SELECT sum(c.cost_usd) AS cost FROM calls c WHERE c.job_id = j.id
                               AND c.outcome <> 'cache_hit' HAVING count(*) > 0) paid ON true
WHERE {j} AND j.status = 'failed' AND j.error LIKE 'budget:%'
"""

LATENCY = """
SELECT c.model, percentile_disc(0.5) WITHIN GROUP (ORDER BY c.latency_ms),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY c.latency_ms)
FROM calls c WHERE {c} AND c.outcome <> 'cache_hit' AND NOT c.via_batch GROUP BY c.model
"""

# Each job's kept call: its answer, else its last call that reported tokens. Cached prompt tokens are
# summed apart because the baseline model prices them at its cached-input rate. A kept call without
# tokens (a cache hit that does not record the tokens of the call it replaced) cannot be priced: counted.
# A compressed job's baseline is priced from its original conversation: the kept call's prompt tokens
# plus the tokens compression removed. Summary calls (tier 'compression') are never a kept call.
BASELINE = """
SELECT COALESCE(sum(k.prompt_tokens - least(k.cached_tokens, k.prompt_tokens)), 0),
       COALESCE(sum(least(k.cached_tokens, k.prompt_tokens)), 0),
       COALESCE(sum(k.completion_tokens), 0),
       count(*) FILTER (WHERE k.prompt_tokens = 0 AND k.completion_tokens = 0) AS unpriced,
       COALESCE(sum(k.removed) FILTER (WHERE k.prompt_tokens > 0 OR k.completion_tokens > 0), 0) AS removed
FROM (
    SELECT DISTINCT ON (c.job_id) c.prompt_tokens, c.cached_tokens, c.completion_tokens, """ + REMOVED + """ AS removed
    FROM calls c JOIN jobs j ON j.id = c.job_id
    WHERE {c} AND c.tier <> 'compression'
      AND (c.outcome IN ('ok', 'cache_hit') OR c.prompt_tokens > 0 OR c.completion_tokens > 0)
    ORDER BY c.job_id, c.outcome IN ('ok', 'cache_hit') DESC, c.attempt DESC, c.created_at DESC
) k
"""

# Compression (workers/compress.py): summary calls, and the prompt tokens each billed call of a
# compressed job did not read, by the model that would have read them.
COMPRESSION_SUMMARIES = """
SELECT count(*), COALESCE(sum(c.cost_usd), 0) FROM calls c WHERE {c} AND c.tier = 'compression'
"""

COMPRESSION_JOBS = """
SELECT count(*), COALESCE(sum(""" + REMOVED + """), 0),
       count(*) FILTER (WHERE j.params -> '_tierq_compression' ->> 'summary' = 'cache')
FROM jobs j WHERE {j} AND j.params -> '_tierq_compression' IS NOT NULL
"""

COMPRESSION_SAVED = """
SELECT c.model, count(*), COALESCE(sum(""" + REMOVED + """), 0)
FROM calls c JOIN jobs j ON j.id = c.job_id
WHERE {c} AND j.params -> '_tierq_compression' IS NOT NULL AND c.tier <> 'compression'
  AND c.outcome <> 'cache_hit' AND c.prompt_tokens > 0
GROUP BY c.model
"""

# Calls answered through a provider's batch API (a tier in mode "batch"), with their tokens, so the bill can
# price them at the list price too.
BATCH_API = """
SELECT c.model, count(*), COALESCE(sum(c.cost_usd), 0), COALESCE(sum(c.prompt_tokens), 0),
       COALESCE(sum(c.cached_tokens), 0), COALESCE(sum(c.completion_tokens), 0)
FROM calls c WHERE {c} AND c.via_batch GROUP BY c.model
"""

# The tier a job's own attempts reached: an audit that replaced its answer moved it to the reference tier
# without an escalation (the answer audited came from `candidate_tier`, or from the cache: no move at all).
REACHED = ("CASE WHEN j.replaced AND j.candidate_source = 'answer' THEN j.candidate_tier "
           "WHEN j.replaced THEN j.start_tier ELSE j.tier END")
PATHS = f"""
SELECT j.start_tier, {REACHED}, count(*) FROM jobs j
WHERE {{j}} AND j.start_tier IS NOT NULL AND {REACHED} IS NOT NULL AND j.start_tier <> {REACHED}
GROUP BY 1, 2
"""
