"""Answering one job at one tier: the tier's models in order, each with bounded retries."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from models.enums import CallOutcome
from tierq.config import Config, TierConfig
from tierq.messages import estimated_prompt_tokens
from tierq.money import usd
from workers.budget import BudgetGate, output_cap, worst_case
from workers.llm import CallRecord, ModelClient
from workers.validators import AnswerCheck, validate


@dataclass(slots=True)
class JobWork:
    """What a tier worker needs to answer a job."""

    job_id: int
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    batch_id: uuid.UUID | None = None
    budgeted: bool = False
    check: AnswerCheck | None = None  # the job's validator (workers.validators.attach_checks)


@dataclass(slots=True)
class TierResult:
    """Every call made for a job at this tier, and the answer if one was good."""

    job_id: int
    records: list[CallRecord] = field(default_factory=list)
    answer: CallRecord | None = None
    reason: str | None = None
    final: bool = False  # the job must not escalate (its batch's budget is spent)


def backoff_s(tier: TierConfig, retry: int, retry_after: float | None) -> float:
    """Seconds before retry number `retry`: Retry-After when given, else exponential with full jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), tier.retry_max_s)
    return random.uniform(0, min(tier.retry_max_s, tier.retry_base_s * 2**retry))


async def answer_at_tier(
    client: ModelClient, config: Config, tier: TierConfig, work: JobWork, budget: BudgetGate | None = None
) -> TierResult:
    """Try the tier's models in order; the next model only after a provider error outlived its retries."""
    result = TierResult(work.job_id)
    gate = budget if work.budgeted else None
    needed = estimated_prompt_tokens(work.messages)
    for name in tier.models:
        model = config.models[name]
        if model.context_window < needed:
            result.reason = f"context: about {needed} prompt tokens exceed {name}'s window of {model.context_window}"
            continue
        timeout = tier.timeout_s or config.providers[model.provider].timeout_s
        params = _params_for(work.params, tier, model.max_output_tokens)
        for retry in range(tier.max_retries + 1):
            held = Decimal(0)
            if gate is not None and work.batch_id is not None:
                params.setdefault("max_tokens", output_cap(params, tier, model))
                held = worst_case(work.messages, int(params["max_tokens"]), model)
                if not await gate.reserve(work.batch_id, held):
                    result.final = True
                    result.reason = (f"budget: what is left of the batch's budget cannot cover a call to {name} "
                                     f"(worst case ${usd(held)})")
                    return result
            record = await client.call(name, work.messages, params, timeout, config.answers)
            validate(record, work.check, tier.name, work.messages)
            if gate is not None and work.batch_id is not None:
                await gate.settle(work.batch_id, held, record.cost_usd)
            result.records.append(record)
            if record.outcome is CallOutcome.OK:
                result.answer = record
                return result
            result.reason = f"{name}: {record.error}"
            if not record.retryable:
                if record.outcome.escalates:
                    return result
                break
            if retry < tier.max_retries:
                await asyncio.sleep(backoff_s(tier, retry, record.retry_after))
    return result


def _params_for(params: dict[str, Any], tier: TierConfig, model_cap: int | None) -> dict[str, Any]:
    chosen = dict(params)
    if "max_tokens" not in chosen and "max_completion_tokens" not in chosen:
        limit = tier.max_tokens or model_cap
        if limit is not None:
            chosen["max_tokens"] = limit
    return chosen
