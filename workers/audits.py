"""Audits: a sample of the answers given below the reference tier (and of semantic cache hits) is asked
again at the reference tier; a comparator says whether the two agree, and a label records it.

Which jobs: a job is audited when a number drawn from its id alone is below its task type's
`audit_rate` (so the same job is always chosen or not, whichever worker answers it), and the first
`min_per_stratum` answers of each (tier, task type) of a batch are audited whatever their draw, so
small strata are measured too. An audit is a call like any other (rate limits, budget, retries); one the
budget cannot cover is skipped and the candidate kept. A reference that disagrees replaces the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, text

from models.enums import CallOutcome
from models.lifecycle import Candidate
from tierq.config import TierConfig
from tierq.messages import content_text
from tierq.vault import digest
from workers.calls import TierResult
from workers.comparators import Verdict, comparator
from workers.dbretry import REDIS_OUTAGE, redis_trouble
from workers.gates import Hold, Stop
from workers.llm import CallRecord

if TYPE_CHECKING:
    from workers.context import WorkerContext
    from workers.store import ClaimedJob

log = logging.getLogger(__name__)
STRATUM_TTL_S = 7 * 24 * 3600
JUDGE_SYSTEM = "You check answers for a reviewer. Reply with exactly one word: yes or no."
JUDGE_USER = (
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{candidate}\n\n"
    "Does the candidate answer agree with the reference answer on everything the question asks? "
    "Reply yes or no."
)


def draw(job_id: int) -> float:
    """The job's own number in [0, 1): whether it is audited depends on nothing else."""
    digest = hashlib.blake2b(f"tierq-audit:{job_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def pick(ctx: WorkerContext, tier: str, answered: Sequence[ClaimedJob]) -> set[int]:
    """The jobs among those `answered` at `tier` (below the reference tier) to audit."""
    quality = ctx.config.quality
    if ctx.config.tier_index(tier) >= ctx.config.tier_index(ctx.config.reference_tier):
        return set()
    chosen = {job.id for job in answered if draw(job.id) < quality.rate_for(job.task_type)}
    by_stratum: dict[tuple[str, str], list[ClaimedJob]] = defaultdict(list)
    for job in answered:
        if quality.rate_for(job.task_type) > 0 and quality.min_per_stratum > 0:
            by_stratum[(str(job.batch_id), job.task_type)].append(job)
    if not by_stratum:
        return chosen
    keys = [f"{ctx.config.cache.prefix}:audit:{batch}:{tier}:{task}" for batch, task in by_stratum]
    pipe = ctx.vault.r.pipeline(transaction=False)
    for key, jobs in zip(keys, by_stratum.values(), strict=True):
        pipe.incrby(key, len(jobs))
        pipe.expire(key, STRATUM_TTL_S)
    try:
        totals = pipe.execute()[::2]
    except REDIS_OUTAGE as exc:
        # The chunk's calls are paid for and wait on this choice to be recorded: an outage costs the
        # stratum's top-up, not the answers (a task that failed here would pay for them all again).
        log.warning("audits at %s: %s; chosen by draw alone for %d answers", tier, redis_trouble(exc),
                    len(answered))
        return chosen
    for total, jobs in zip(totals, by_stratum.values(), strict=True):
        first = int(total) - len(jobs)  # answers of this stratum counted before this chunk
        chosen.update(job.id for n, job in enumerate(jobs, start=first + 1) if n <= quality.min_per_stratum)
    return chosen


@dataclass(slots=True)
class Finding:
    """What an audit found: the comparison (None: it could not tell), the judge's calls if any, and the
    lengths and SHA-256 digests of the two answers."""

    agree: Verdict
    comparator: str
    judge_calls: list[CallRecord]
    candidate_chars: int = 0
    reference_chars: int = 0
    candidate_sha256: str = ""
    reference_sha256: str = ""


async def judge(ctx: WorkerContext, tier: TierConfig, job: ClaimedJob, candidate: str, reference: str) -> Finding:
    """Ask the reference tier's first model whether `candidate` agrees with `reference` (one call)."""
    name = tier.models[0]
    question = "\n\n".join(content_text(m.get("content")) for m in job.messages if m.get("role") == "user")
    messages = [{"role": "system", "content": JUDGE_SYSTEM},
                {"role": "user", "content": JUDGE_USER.format(question=question, reference=reference,
                                                                candidate=candidate)}]
    params: dict[str, Any] = {"max_tokens": 5, "temperature": 0}
    gate = await ctx.gates.before(tier, name, messages, params, job.batch_id, job.budgeted)
    if isinstance(gate, (Hold, Stop)):
        return Finding(None, "judge", [])
    timeout = tier.timeout_s or ctx.config.providers[ctx.config.models[name].provider].timeout_s
    record = await ctx.client.call(name, messages, params, timeout, ctx.config.answers)
    await ctx.gates.after(gate, record)
    reply = (record.content or "").strip().strip(".!").casefold() if record.outcome is CallOutcome.OK else ""
    if record.outcome is CallOutcome.OK:
        record.outcome = CallOutcome.JUDGE
    return Finding({"yes": True, "no": False}.get(reply), "judge", [record])


async def examine(ctx: WorkerContext, tier: TierConfig, job: ClaimedJob, result: TierResult) -> Finding | None:
    """Compare an audited job's candidate with the reference answer it just got; None without one."""
    answer = result.answer
    if answer is None or job.candidate is None:
        return None
    answer.outcome = CallOutcome.AUDIT  # the reference's call, paid as an audit
    candidate = job.candidate.content
    if candidate is None:  # a private batch keeps it in the vault
        candidate = await asyncio.get_running_loop().run_in_executor(None, ctx.vault.answer, job.id) or ""
    reference = answer.content or ""
    config = ctx.config.quality.comparator_for(job.task_type)
    if config.kind == "judge":
        finding = await judge(ctx, tier, job, candidate, reference)
    elif config.kind == "similarity":
        vectors = await asyncio.get_running_loop().run_in_executor(None, ctx.embedder.embed, [candidate, reference])
        threshold = config.threshold or ctx.cache.threshold
        finding = Finding(float(np.dot(vectors[0], vectors[1])) >= threshold, "similarity", [])
    else:
        finding = Finding(comparator(config)(candidate, reference, job.messages), config.kind, [])
    finding.candidate_chars, finding.reference_chars = len(candidate), len(reference)
    finding.candidate_sha256, finding.reference_sha256 = digest(candidate), digest(reference)
    return finding


def write_labels(conn: Connection, reference: str,
                 rows: Sequence[tuple[ClaimedJob, Candidate, CallRecord, Finding]]) -> None:
    """One label per audited job the comparator could decide: (job, candidate, reference call, finding)."""
    labelled = [r for r in rows if r[3].agree is not None]
    if not labelled:
        return
    conn.execute(
        text(
            "INSERT INTO labels (job_id, batch_id, tenant, task_type, source, candidate_tier, candidate_model, "
            "reference_tier, reference_model, comparator, agree, prompt_chars, candidate_chars, reference_chars, "
            "namespace, prompt_sha256, candidate_sha256, reference_sha256, candidate, candidate_logprob_mean, "
            "candidate_logprob_min) "
            "SELECT * FROM unnest(CAST(:job AS bigint[]), CAST(:batch AS uuid[]), CAST(:tenant AS text[]), "
            "CAST(:task AS text[]), CAST(:source AS text[]), CAST(:ctier AS text[]), CAST(:cmodel AS text[]), "
            "CAST(:rtier AS text[]), CAST(:rmodel AS text[]), CAST(:comparator AS text[]), CAST(:agree AS bool[]), "
            "CAST(:pchars AS int[]), CAST(:cchars AS int[]), CAST(:rchars AS int[]), CAST(:namespace AS text[]), "
            "CAST(:psha AS text[]), CAST(:csha AS text[]), CAST(:rsha AS text[]), CAST(:ctext AS text[]), "
            "CAST(:lp_mean AS float8[]), CAST(:lp_min AS float8[])) "
            "ON CONFLICT (job_id) DO NOTHING"
        ),
        {
            "job": [j.id for j, _, _, _ in labelled],
            "batch": [j.batch_id for j, _, _, _ in labelled],
            "tenant": [j.tenant for j, _, _, _ in labelled],
            "task": [j.task_type for j, _, _, _ in labelled],
            "source": [j.candidate_source or "answer" for j, _, _, _ in labelled],
            "ctier": [c.tier for _, c, _, _ in labelled],
            "cmodel": [c.model for _, c, _, _ in labelled],
            "rtier": [reference] * len(labelled),
            "rmodel": [r.model for _, _, r, _ in labelled],
            "comparator": [f.comparator for _, _, _, f in labelled],
            "agree": [bool(f.agree) for _, _, _, f in labelled],
            "pchars": [sum(len(content_text(m.get("content"))) for m in j.messages) for j, _, _, _ in labelled],
            "cchars": [f.candidate_chars for _, _, _, f in labelled],
            "rchars": [f.reference_chars for _, _, _, f in labelled],
            "namespace": [c.namespace for _, c, _, _ in labelled],
            "psha": [digest(json.dumps(j.messages, ensure_ascii=False, sort_keys=True)) for j, _, _, _ in labelled],
            "csha": [f.candidate_sha256 for _, _, _, f in labelled],
            "rsha": [f.reference_sha256 for _, _, _, f in labelled],
            # A private batch's candidate is None here (it lives in the vault): its label keeps no text.
            "ctext": [c.content for _, c, _, _ in labelled],
            "lp_mean": [c.logprobs[0] if c.logprobs else None for _, c, _, _ in labelled],
            "lp_min": [c.logprobs[1] if c.logprobs else None for _, c, _, _ in labelled],
        },
    )
