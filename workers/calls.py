"""Answering one job at one tier: the tier's models in order, each with bounded retries.

Before each call the gates (workers/gates.py) may hold the job: a rate limit with no free slot soon,
budget held by calls in flight, or a provider whose breaker is open. A held job makes no call now and
goes back to its queue. A provider that cannot be reached is treated like a provider error (the
tier's next model is tried); when no model of the tier can be reached the job is held, whether or not
the breaker has opened yet: a failed connection is never a reason to escalate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from models.enums import CallOutcome
from tierq.config import Config, ModelConfig, TierConfig
from tierq.messages import estimated_prompt_tokens
from workers.gates import Gates, Hold, HoldKind, Stop
from workers.learned import SecondLook
from workers.llm import CallRecord, ModelClient
from workers.validators import AnswerCheck, batch_schema, validate


@dataclass(slots=True)
class JobWork:
    """What a tier worker needs to answer a job."""

    job_id: int
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    batch_id: uuid.UUID | None = None
    budgeted: bool = False
    check: AnswerCheck | None = None  # the job's validator (WorkerContext.checks)
    second_look: SecondLook | None = None  # the learned router's verdict on a valid answer (workers/learned.py)
    cancelled: Callable[[], bool] | None = None  # whether its batch has been cancelled since it was claimed


@dataclass(slots=True)
class TierResult:
    """Every call made for a job at this tier, and the answer if one was good."""

    job_id: int
    records: list[CallRecord] = field(default_factory=list)
    answer: CallRecord | None = None
    reason: str | None = None
    final: bool = False  # the job must not escalate (its batch's budget is spent)
    hold: Hold | None = None  # the job goes back to this tier's queue, to be tried again later
    failure: Exception | None = None  # an error that stopped the work; the calls made before it are kept
    rejected_by: str | None = None  # a provider that called the request itself invalid (HTTP 400, 422)
    jump_to: str | None = None  # a learned router sends the job on to this tier, not to the next one
    locked_out: set[str] = field(default_factory=set)  # providers that refused tierq's key (workers/gates.py)
    cancelled: bool = False  # its batch was cancelled: no more calls were made for it
    again: bool = False  # tried again at this tier under a new message (a provider batch's line that may pass)


log = logging.getLogger(__name__)
BAD_REQUEST = (400, 422)  # the provider says the request itself is wrong: no retry, no other model of it


class _Next(Enum):
    MODEL = "next model"
    DONE = "done"


def backoff_s(tier: TierConfig, retry: int, retry_after: float | None) -> float:
    """Seconds before retry number `retry`: Retry-After when given, else exponential with full jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), tier.retry_max_s)
    return random.uniform(0, min(tier.retry_max_s, tier.retry_base_s * 2**retry))


async def answer_at_tier(
    client: ModelClient, config: Config, tier: TierConfig, work: JobWork, gates: Gates
) -> TierResult:
    """Try the tier's models in order; the next model only after a provider error outlived its retries.
    Never raises: an error is kept in `failure`, beside the calls already made (they are paid for)."""
    result = TierResult(work.job_id)
    try:
        await _answer(client, config, tier, work, gates, result)
    except Exception as exc:
        result.failure = exc
    return result


async def _answer(client: ModelClient, config: Config, tier: TierConfig, work: JobWork, gates: Gates,
                  result: TierResult) -> None:
    needed = estimated_prompt_tokens(work.messages)
    for name in tier.models:
        model = config.models[name]
        if model.provider == result.rejected_by or model.provider in result.locked_out:
            continue  # the same request to the same provider gets the same answer
        if model.context_window < needed:
            result.reason = f"context: about {needed} prompt tokens exceed {name}'s window of {model.context_window}"
            continue
        if await _try_model(client, config, tier, work, gates, name, result) is _Next.DONE:
            return


async def _try_model(
    client: ModelClient, config: Config, tier: TierConfig, work: JobWork, gates: Gates, name: str, result: TierResult
) -> _Next:
    model = config.models[name]
    timeout = tier.timeout_s or config.providers[model.provider].timeout_s
    params = params_for(work.params, tier, model)
    messages = messages_for(work.messages, params)
    for retry in range(tier.max_retries + 1):
        if work.cancelled is not None and work.cancelled():
            # Cancelled since it was claimed (waiting for an open-call slot, or between calls): a call in
            # flight keeps its answer, but no call, retry or other model is paid for a job nobody wants now.
            result.cancelled, result.hold = True, None
            result.reason = f"cancelled: its batch was cancelled; no call after {len(result.records)}"
            return _Next.DONE
        gate = await gates.before(tier, name, messages, params, work.batch_id, work.budgeted)
        if isinstance(gate, Stop):
            result.final, result.reason, result.hold = True, gate.reason, None
            return _Next.DONE
        if isinstance(gate, Hold):
            result.hold = gate
            return _Next.MODEL if gate.kind is HoldKind.OUTAGE else _Next.DONE
        record = await client.call(name, messages, params, timeout, config.answers)
        take(record, work, tier.name, result)
        unreachable = await gates.after(gate, record)
        if result.answer is not None:
            return _Next.DONE
        result.hold = unreachable
        result.reason = f"{name}: {record.error}"
        if unreachable is not None:
            if unreachable.refused_key:
                # Every model of the provider refuses the same key: the job waits, as for an outage (unless a
                # model of another provider answers it), and is neither escalated nor failed.
                result.locked_out.add(model.provider)
            return _Next.MODEL
        if record.status in BAD_REQUEST:
            result.rejected_by = config.models[name].provider
            return _Next.MODEL
        if not record.retryable:
            return _Next.DONE if record.outcome.escalates else _Next.MODEL
        if record.outcome is CallOutcome.RATE_LIMITED and (record.retry_after or 0) > tier.retry_max_s:
            # The provider asks for a longer wait than a task spends between tries: the job waits for it on
            # its queue (no thread or open call held) and comes back to this tier, unless the tier's next
            # model answers it first. Asking sooner would be refused again, and escalating would pay a
            # dearer tier for a wait.
            wait = record.retry_after or 0.0
            result.hold = Hold(HoldKind.PROVIDER_LIMIT, wait,
                               f"rate limit: {name} asked to wait {wait:g} s (HTTP 429)")
            return _Next.MODEL
        if retry < tier.max_retries:
            await asyncio.sleep(backoff_s(tier, retry, record.retry_after))
    if result.records and result.records[-1].outcome is CallOutcome.CONNECTION:
        # Not reached, even if not (yet) often enough to open the breaker: this says nothing about the
        # model's answer, so the job waits for the provider (unless the tier's next model answers).
        result.hold = Hold(HoldKind.OUTAGE, config.worker.breaker_open_s, result.reason or "connection")
    return _Next.MODEL


def take(record: CallRecord, work: JobWork, tier: str, result: TierResult) -> None:
    """Add a call to the job's result: recorded first (whatever fails next, it is paid for), then judged by
    the job's validator and the learned router; a good answer becomes the result's answer."""
    result.records.append(record)
    validate(record, work.check, tier, work.messages)
    if record.outcome is CallOutcome.OK and work.second_look is not None:
        _second_look(work.second_look, record, result, work.job_id)
    if record.outcome is CallOutcome.OK:
        result.answer, result.hold = record, None


def _second_look(look: SecondLook, record: CallRecord, result: TierResult, job_id: int) -> None:
    """The learned router's verdict on a valid answer; a router that fails keeps the answer (it is paid for)."""
    try:
        doubt = look(record.content or "", record.logprobs)
    except Exception:  # the router only saves money: its failure must not cost an answer
        log.exception("the learned router could not judge job %d's answer; it is kept", job_id)
        return
    if doubt is not None:
        record.outcome, record.error = CallOutcome.INVALID, doubt.reason
        result.jump_to = doubt.tier


def messages_for(messages: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's messages, with the batch's JSON schema said in words first when the call asks for JSON mode
    (`json_object`): such a model is not given the schema otherwise, and OpenAI's JSON mode refuses a
    request whose messages never say "JSON"."""
    schema = batch_schema(params)
    fmt = params.get("response_format")
    if schema is None or not isinstance(fmt, dict) or fmt.get("type") != "json_object":
        return messages
    note = "Answer with one JSON object that matches this JSON schema: " + json.dumps(schema, ensure_ascii=False)
    return [{"role": "system", "content": note}, *messages]


def params_for(params: dict[str, Any], tier: TierConfig, model: ModelConfig) -> dict[str, Any]:
    """The job's parameters for a call at `tier`: with the tier's (or model's) output cap unless it set one,
    and, for a batch submitted with --json-schema, the response_format the model takes for it (unless the
    job set its own)."""
    chosen = dict(params)
    if "max_tokens" not in chosen and "max_completion_tokens" not in chosen:
        limit = tier.max_tokens or model.max_output_tokens
        if limit is not None:
            chosen["max_tokens"] = limit
    schema = batch_schema(params)
    if schema is not None and "response_format" not in chosen and model.structured_output != "none":
        chosen["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
            if model.structured_output == "json_schema" else {"type": "json_object"})
    return chosen
