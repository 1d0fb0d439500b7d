"""Prompt compression: the older turns of a long conversation become one summary by the cheapest model.

At the classify step, before routing, a pending job whose conversation has more turns (messages after
the leading system prompts) than `max_turns`, or more estimated prompt tokens than `max_tokens`, keeps
its system prompts and its last `keep_last` turns verbatim; the turns between become one user message
holding their summary. The summary comes from the cheapest tier's first model through the same client
(rate limits, retries, budget), is a cost row of its own (tier COMPRESSION_TIER, attempt 0, outcome
`ok`) and is cached in Redis, so the same turns are summarised once. The job's stored messages are
replaced by the compressed ones, and its params record the estimated tokens before and after
(NOTE_KEY), which `tierq report` prices. A job that has that note is never compressed again, so a
redelivered classify message changes nothing twice.

On for a task type when the TOML's [compression] says so (off by default); a batch's --compress or
--no-compress (params[RESERVED_PARAMS]["compress"]) overrides it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import text

from models import lifecycle
from models.costs import CostRow, record_calls
from models.enums import CallOutcome
from tierq.config import RESERVED_PARAMS, Config
from tierq.messages import content_text
from tierq.money import estimate_tokens
from tierq.vault import redacted
from workers.calls import backoff_s
from workers.gates import Hold, Stop
from workers.llm import CallRecord
from workers.store import PendingJob

if TYPE_CHECKING:
    from workers.context import WorkerContext

COMPRESSION_TIER = "compression"  # the cost rows' tier: summaries are not answers of any tier
NOTE_KEY = "_tierq_compression"
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
INSTRUCTIONS = (
    "You compress conversations. Summarise the conversation below in at most {words} words of plain prose. "
    "Keep every fact, number, name, date, identifier, decision and open question that later turns may "
    "need; drop greetings and repetition. Do not answer the conversation; only summarise it."
)
VERSION = 1  # part of the cache key: a new instruction text must not reuse old summaries
MESSAGE_OVERHEAD = 4  # tokens a provider adds per message (the simulator's figure; OpenAI's is 3-4)


@dataclass(frozen=True, slots=True)
class Plan:
    """How one job's conversation splits: kept head, turns to summarise, kept tail."""

    job: PendingJob
    head: list[dict[str, Any]]
    older: list[dict[str, Any]]
    tail: list[dict[str, Any]]
    tokens_before: int
    key: str


@dataclass(slots=True)
class Summary:
    """The outcome of summarising one set of turns: the calls made and the text, if one was usable."""

    records: list[CallRecord] = field(default_factory=list)
    text: str | None = None
    from_cache: bool = False
    hold: Hold | None = None


def estimated_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """Prompt tokens as providers count them, estimated: characters / 4 plus each message's framing."""
    # The framing counts here (unlike routing's estimate): removing turns removes their framing too.
    return sum(MESSAGE_OVERHEAD + estimate_tokens(content_text(m.get("content"))) for m in messages)


def wanted(config: Config, job: PendingJob) -> bool:
    """Whether the job's batch (--compress) or, failing that, its task type asks for compression."""
    if NOTE_KEY in job.params:
        return False
    options = job.params.get(RESERVED_PARAMS)
    chosen = options.get("compress") if isinstance(options, dict) else None
    return bool(chosen) if chosen is not None else config.compression.enabled_for(job.task_type)


def plan(config: Config, job: PendingJob) -> Plan | None:
    """The split of a conversation over the limits; None when it is within them or too short to gain."""
    rules = config.compression
    messages = job.messages
    start = 0
    while start < len(messages) and messages[start].get("role") in ("system", "developer"):
        start += 1
    turns = messages[start:]
    before = estimated_tokens(messages)
    if len(turns) <= rules.max_turns and before <= rules.max_tokens:
        return None
    cut = len(turns) - rules.keep_last
    while cut > 0 and turns[cut].get("role") == "tool":  # a tool result stays with the call that asked for it
        cut -= 1
    older, tail = turns[:cut], turns[cut:]
    if len(older) < 2:  # one turn (or an earlier summary) replaced by a summary saves nothing
        return None
    model = config.tiers[0].models[0]
    raw = json.dumps([VERSION, job.tenant, model, rules.summary_max_tokens, older], sort_keys=True, default=str)
    key = hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()
    return Plan(job, messages[:start], older, tail, before, key)


def summary_request(plan: Plan, max_tokens: int) -> list[dict[str, Any]]:
    """The messages of the summary call: the instructions and a transcript of the older turns."""
    transcript = "\n\n".join(f"{m.get('role', 'user')}: {content_text(m.get('content'))}" for m in plan.older)
    words = max(16, max_tokens * 3 // 4)
    return [{"role": "system", "content": INSTRUCTIONS.format(words=words)}, {"role": "user", "content": transcript}]


def compressed(plan: Plan, summary: str) -> list[dict[str, Any]]:
    """The conversation with its older turns replaced by their summary."""
    return [*plan.head, {"role": "user", "content": SUMMARY_PREFIX + summary.strip()}, *plan.tail]


async def summarise(ctx: WorkerContext, plan: Plan, budgeted: bool) -> Summary:
    """Call the cheapest tier's first model with bounded retries; a failed call leaves the job as it was,
    a held one (rate limit, outage) keeps it pending for a while."""
    config = ctx.config
    tier, name = config.tiers[0], config.tiers[0].models[0]
    model = config.models[name]
    rules = config.compression
    messages = summary_request(plan, rules.summary_max_tokens)
    params: dict[str, Any] = {"max_tokens": rules.summary_max_tokens, "temperature": 0}
    timeout = tier.timeout_s or config.providers[model.provider].timeout_s
    result = Summary()
    for retry in range(tier.max_retries + 1):
        gate = await ctx.gates.before(tier, name, messages, params, plan.job.batch_id, budgeted)
        if isinstance(gate, Stop):
            return result
        if isinstance(gate, Hold):
            # A summary is a saving, not a need: when the provider refuses the key, the job goes on uncompressed.
            result.hold = None if gate.refused_key else gate
            return result
        record = await ctx.client.call(name, messages, params, timeout, config.answers)
        held = await ctx.gates.after(gate, record)
        result.hold = None if held is not None and held.refused_key else held
        result.records.append(record)
        if record.outcome is CallOutcome.OK:
            result.text = record.content
            return result
        if result.hold is not None or not record.retryable or retry == tier.max_retries:
            return result
        await asyncio.sleep(backoff_s(tier, retry, record.retry_after))
    return result


def _cache_key(ctx: WorkerContext, plan: Plan) -> str:
    return f"{ctx.config.cache.prefix}:sum:{plan.key}"


def _from_cache(ctx: WorkerContext, plans: list[Plan]) -> dict[str, str]:
    usable = [p for p in plans if p.job.use_cache and ctx.config.cache.enabled]
    if not usable:
        return {}
    values = cast(list[bytes | None], ctx.cache.r.mget([_cache_key(ctx, p) for p in usable]))
    return {p.key: v.decode() for p, v in zip(usable, values, strict=True) if v is not None}


def _budgeted(ctx: WorkerContext, plans: list[Plan]) -> set[uuid.UUID]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(text("SELECT id FROM batches WHERE id = ANY(:ids) AND budget_usd IS NOT NULL"),
                            {"ids": list({p.job.batch_id for p in plans})})
        return {row[0] for row in rows}


async def _summarise_all(ctx: WorkerContext, plans: list[Plan], budgeted: set[uuid.UUID]) -> list[Summary]:
    return list(await asyncio.gather(*(summarise(ctx, p, p.job.batch_id in budgeted) for p in plans)))


def compress_pending(
    ctx: WorkerContext, jobs: list[PendingJob], message_id: uuid.UUID
) -> tuple[list[PendingJob], dict[int, float]]:
    """Compress the jobs that need it (their rows too): the jobs as routing must now see them, and the
    jobs whose summary must wait (job -> seconds), which stay pending for later."""
    plans = [p for job in jobs if wanted(ctx.config, job) and (p := plan(ctx.config, job)) is not None]
    if not plans:
        return jobs, {}
    summaries = {key: Summary(text=value, from_cache=True) for key, value in _from_cache(ctx, plans).items()}
    # Jobs of this chunk with the same older turns share one call: the first pays, the others reuse it.
    fresh = list({p.key: p for p in reversed(plans) if p.key not in summaries}.values())[::-1]
    made = ctx.loop.run(_summarise_all(ctx, fresh, _budgeted(ctx, fresh) if fresh else set()))
    summaries.update(zip((p.key for p in fresh), made, strict=True))
    _fill_cache(ctx, [p for p in fresh if p.job.use_cache], summaries)
    payer = {p.key: p.job.id for p in fresh}
    changed = _store(ctx, plans, summaries, payer, message_id)
    waiting = {p.job.id: hold.after_s for p in plans if (hold := summaries[p.key].hold) is not None}
    return [changed.get(job.id, job) for job in jobs if job.id not in waiting], waiting


def _fill_cache(ctx: WorkerContext, plans: list[Plan], summaries: dict[str, Summary]) -> None:
    if not ctx.config.cache.enabled:
        return
    pipe = ctx.cache.r.pipeline(transaction=False)
    for p in plans:
        summary = summaries[p.key].text
        if summary:
            pipe.set(_cache_key(ctx, p), summary, ex=ctx.config.cache.ttl_s)
    pipe.execute()


def _store(
    ctx: WorkerContext, plans: list[Plan], summaries: dict[str, Summary], payer: dict[str, int],
    message_id: uuid.UUID,
) -> dict[int, PendingJob]:
    """Write the summary calls' cost rows and the compressed conversations; the jobs that changed."""
    rows: list[CostRow] = []
    changed: dict[int, PendingJob] = {}
    private: dict[int, list[dict[str, Any]]] = {}
    updates: list[tuple[int, list[dict[str, Any]], dict[str, Any]]] = []
    for p in plans:
        summary = summaries[p.key]
        paid = payer.get(p.key) == p.job.id
        if paid:
            rows.extend(r.cost_row(job_id=p.job.id, batch_id=p.job.batch_id, attempt=0, tier=COMPRESSION_TIER)
                        for r in summary.records)
        if not summary.text:
            continue
        messages = compressed(p, summary.text)
        note = {"tokens_before": p.tokens_before, "tokens_after": estimated_tokens(messages),
                "turns": len(p.older), "summary": "call" if paid else "cache"}
        updates.append((p.job.id, redacted(messages) if p.job.private else messages, {NOTE_KEY: note}))
        if p.job.private:
            private[p.job.id] = messages
        changed[p.job.id] = replace(p.job, messages=messages, params={**p.job.params, NOTE_KEY: note})
    if private:
        ctx.vault.put_prompts(private)
    with ctx.engine.begin() as conn:
        record_calls(conn, rows)
        stored = lifecycle.rewrite_messages(
            conn, message_id, [(u[0], json.dumps(u[1], ensure_ascii=False), json.dumps(u[2])) for u in updates])
    return {job_id: job for job_id, job in changed.items() if job_id in stored}
