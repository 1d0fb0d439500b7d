"""Gray-zone verification of the semantic cache (`[cache] verify`, off by default).

A job whose nearest ready entry is at least `verify_from` similar but under the serving threshold is not
a hit; it may still ask what that entry answered. The cheapest model (or `verify_model`) is shown both
requests with a fixed prompt and asked whether one answer serves both. "same" serves the entry (a
semantic hit, audited like any other); anything else, or no answer, leaves the job to its tier. The
check is paid for (a cost row with outcome `cache_verify`) and made only where the call the hit would
save cost more than the check can: the entry's own cost against the check's worst case. The texts are
read from Postgres: an entry whose leader belongs to a private batch (texts in the vault, and the vault
forgets them) is not verified, nor is a job whose batch may not use the verifier's tier (`--max-tier`
below it: its text must not reach that provider). Each check's cost row has the pseudo-tier
`cache_verify` (it is no tier's answer) and the outcome `cache_verify` whatever happened (a failure's
reason is its error), so no bill, label or router reads it as a tier's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from models.costs import CostRow, record_calls
from models.enums import CallOutcome
from tierq.cache import CacheEntry
from tierq.config import Config, TierConfig
from tierq.messages import content_text, estimated_prompt_tokens
from tierq.sections import AnswerConfig
from workers.budget import worst_case
from workers.gates import Hold, Stop
from workers.llm import CallRecord
from workers.store import PendingJob

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)

VERIFY_SYSTEM = "You decide whether a saved answer may be reused. Reply with exactly one word: same or different."
VERIFY_USER = (
    "Request A:\n{a}\n\nRequest B:\n{b}\n\n"
    "Would the correct answer to request A answer request B exactly as well, with nothing changed? "
    "Reply same or different."
)
MAX_TOKENS = 5
VERIFY_TIER = "cache_verify"  # the cost rows' tier
# The reply is one word: judged by its own rules, not the batch's (a `min_chars` of 10 would fail "same").
REPLY_RULES = AnswerConfig(min_chars=1, refusal_phrases=())


@dataclass(frozen=True, slots=True)
class Gray:
    """A job and the entry just under the threshold that might answer it."""

    job: PendingJob
    entry: CacheEntry


def request_text(messages: list[dict[str, Any]]) -> str:
    """A request as the verifier reads it: its text, each turn after the first named by its role."""
    turns = [(m.get("role", "user"), content_text(m.get("content"))) for m in messages if m.get("role") != "system"]
    if len(turns) == 1:
        return turns[0][1]
    return "\n".join(f"{role}: {words}" for role, words in turns)


def verify(ctx: WorkerContext, grays: Sequence[Gray]) -> set[int]:
    """The jobs among `grays` whose entry the model confirmed; every check made is recorded, even when
    another check of the chunk raised (then the error goes on, after the rows are written)."""
    if not grays:
        return set()
    config = ctx.config
    name = config.verifier_model
    tier = _tier_of(config, name)
    model = config.models[name]
    leaders = _leader_texts(ctx, [gray.entry.leader_job for gray in grays])
    asks: list[tuple[Gray, list[dict[str, Any]]]] = []
    for gray in grays:
        theirs = leaders.get(gray.entry.leader_job)
        if theirs is None or not may_use(config, gray.job, tier):
            continue
        ours = request_text(gray.job.messages)
        messages = [{"role": "system", "content": VERIFY_SYSTEM},
                    {"role": "user", "content": VERIFY_USER.format(a=theirs, b=ours)}]
        fits = estimated_prompt_tokens(messages) + MAX_TOKENS <= model.context_window
        if fits and gray.entry.cost_usd > worst_case(messages, MAX_TOKENS, model):
            asks.append((gray, messages))
    if not asks:
        return set()
    outcomes = ctx.loop.run(_ask_all(ctx, tier, name, asks))
    rows: list[CostRow] = []
    same: set[int] = set()
    raised: BaseException | None = None
    for (gray, _), outcome in zip(asks, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            raised = raised or outcome
            continue
        record, verdict = outcome
        if record is not None:
            rows.append(record.cost_row(job_id=gray.job.id, batch_id=gray.job.batch_id, attempt=1, tier=VERIFY_TIER))
        if verdict:
            same.add(gray.job.id)
    with ctx.engine.begin() as conn:
        record_calls(conn, rows)
    if raised is not None:
        raise raised
    ctx.cache.count("verify_calls", len(rows))
    ctx.cache.count("verified", len(same))
    return same


async def _ask_all(ctx: WorkerContext, tier: TierConfig, name: str, asks: list[tuple[Gray, list[dict[str, Any]]]],
                   ) -> list[tuple[CallRecord | None, bool] | BaseException]:
    return list(await asyncio.gather(*(_ask(ctx, tier, name, gray, messages) for gray, messages in asks),
                                     return_exceptions=True))


async def _ask(ctx: WorkerContext, tier: TierConfig, name: str, gray: Gray,
               messages: list[dict[str, Any]]) -> tuple[CallRecord | None, bool]:
    """One check through the same gates as any call: a provider that is down, rate-limited or a budget that
    cannot cover it means no check, and the job goes to its tier."""
    params: dict[str, Any] = {"max_tokens": MAX_TOKENS, "temperature": 0}
    gate = await ctx.gates.before(tier, name, messages, params, gray.job.batch_id, gray.job.budgeted)
    if isinstance(gate, (Hold, Stop)):
        log.info("cache: job %d not verified (%s)", gray.job.id, gate.reason)
        return None, False
    config = ctx.config
    timeout = tier.timeout_s or config.providers[config.models[name].provider].timeout_s
    record = await ctx.client.call(name, messages, params, timeout, REPLY_RULES)
    await ctx.gates.after(gate, record)
    reply = (record.content or "").strip().strip(".!\"'").casefold() if record.outcome is CallOutcome.OK else ""
    if record.outcome is not CallOutcome.OK:
        record.error = f"{record.outcome.value}: {record.error or 'no usable reply'}"
    record.outcome = CallOutcome.CACHE_VERIFY
    return record, reply == "same"


def may_use(config: Config, job: PendingJob, tier: TierConfig) -> bool:
    """Whether the job's batch lets its text reach the verifier's tier (not above its --max-tier)."""
    return job.max_tier is None or config.tier_index(tier.name) <= config.tier_index(job.max_tier)


def _tier_of(config: Config, name: str) -> TierConfig:
    """The first tier that uses the model (its timeout and output cap apply), else the first tier."""
    return next((tier for tier in config.tiers if name in tier.models), config.tiers[0])


def _leader_texts(ctx: WorkerContext, leaders: Sequence[int]) -> dict[int, str]:
    """The request text of each leader job whose batch keeps its texts in Postgres."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(text("SELECT j.id, j.messages FROM jobs j JOIN batches b ON b.id = j.batch_id "
                                 "WHERE j.id = ANY(:ids) AND b.store_text"), {"ids": list(set(leaders))}).all()
    return {row[0]: request_text(row[1]) for row in rows if row[1]}

