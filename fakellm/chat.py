"""The chat completion logic, shared by interactive calls and the request lines of batches."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from fakellm.answers import make_answer, prompt_tokens
from fakellm.behaviour import Decision, ModelBehaviour, Outcome, decide, forced_outcome, request_key
from fakellm.errors import error_body
from fakellm.parsing import BadRequest, ChatRequest, parse_chat
from fakellm.replay import scripted, scripted_answer
from fakellm.state import SimState
from fakellm.stats import Ledger
from fakellm.structured import formatted

SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


@dataclass(frozen=True)
class Origin:
    """The batch line a chat request comes from."""

    batch_id: str
    custom_id: str


@dataclass(frozen=True)
class Reply:
    """An HTTP answer to one chat request: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def _ledger(state: SimState, origin: Origin | None) -> Ledger:
    """Where a request is counted; looked up after every wait, since a reset replaces the counters."""
    return state.stats.batch if origin is not None else state.stats


def _error(status: int, message: str, kind: str, code: str | None = None, **headers: str) -> Reply:
    return Reply(status, error_body(message, kind, code=code), headers)


async def answer_chat(state: SimState, body: dict[str, Any], origin: Origin | None = None) -> Reply:
    """Answer one chat completion request body as the provider would.

    Batch lines (`origin` set) are counted in the batch ledger and skip the per-model `rpm` window, which
    limits interactive calls only, as a provider's batch queue has limits of its own.
    """
    if origin is not None:
        state.stats.batch.saw(origin.batch_id, origin.custom_id)
    try:
        chat = parse_chat(body)
        text = scripted(chat.texts, chat.model, state.replay)
    except BadRequest as error:
        _ledger(state, origin).bad_requests += 1
        return Reply(400, error_body(error.message, "invalid_request_error", error.param))
    key = request_key(chat.model, chat.canonical_messages)
    occurrence = state.occurrences.get(key, 0)
    state.occurrences[key] = occurrence + 1
    config = state.config
    behaviour = config.behaviour(chat.model)
    decision = decide(config, chat.model, key, occurrence, forced_outcome(chat.texts, chat.model),
                      question=chat.canonical_messages.encode())
    _ledger(state, origin).model(chat.model).requests += 1
    wait = None if origin is not None else state.over_limit(chat.model, behaviour.rpm)
    if wait is not None:
        state.stats.model(chat.model).count_status(429)
        return _error(429, f"Rate limit reached for {chat.model} (rpm {behaviour.rpm:g})", "requests",
                      "rate_limit_exceeded", **{"Retry-After": f"{wait:.3f}"})
    if decision.outcome is Outcome.HANG:
        _ledger(state, origin).model(chat.model).outcomes["hang"] += 1
        await asyncio.sleep(behaviour.hang_s)
        _ledger(state, origin).model(chat.model).count_status(504)
        return _error(504, "The simulated provider timed out.", "timeout")
    if decision.latency_s > 0:
        await asyncio.sleep(decision.latency_s)
    if decision.outcome is Outcome.ERROR_429:
        _ledger(state, origin).model(chat.model).count_status(429)
        return _error(429, f"Rate limit reached for {chat.model}", "requests", "rate_limit_exceeded",
                      **{"Retry-After": _retry_after(behaviour)})
    if decision.outcome is Outcome.ERROR_500:
        _ledger(state, origin).model(chat.model).count_status(500)
        return _error(500, SERVER_ERROR_MESSAGE, "server_error")
    return Reply(200, _billed_completion(state, chat, key, decision, behaviour, text, origin))


def _retry_after(behaviour: ModelBehaviour) -> str:
    """Seconds, or the HTTP date that many seconds from now (rounded up: a date has whole seconds)."""
    if behaviour.retry_after_date:
        return formatdate(math.ceil(time.time() + behaviour.retry_after_s), usegmt=True)
    return str(behaviour.retry_after_s)


def token_logprobs(content: str, decision: Decision) -> dict[str, Any]:
    """Log-probabilities of the answer's tokens (4 characters each), drawn from the request's hash. Each
    answer has a level of confidence, lower for a wrong answer (mean log-probability -0.45 to -1.35)
    than for a right one (-0.15 to -0.75), so the two overlap; tokens vary around it."""

    def uniform(*parts: int) -> float:
        data = b"".join(p.to_bytes(8, "little") for p in parts)
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") / 2**64

    level = uniform(decision.answer_hash, 1 << 62)
    mean = -(0.45 + 0.9 * level) if decision.wrong else -(0.15 + 0.6 * level)
    pieces = [content[i : i + 4] for i in range(0, len(content), 4)]
    tokens = []
    for index, piece in enumerate(pieces):
        value = min(0.0, mean + 0.6 * (uniform(decision.answer_hash, index) - 0.5))
        tokens.append({"token": piece, "logprob": round(value, 4), "bytes": list(piece.encode()), "top_logprobs": []})
    return {"content": tokens, "refusal": None}


def _billed_completion(
    state: SimState,
    chat: ChatRequest,
    key: bytes,
    decision: Decision,
    behaviour: ModelBehaviour,
    text: str | None,
    origin: Origin | None,
) -> dict[str, Any]:
    """Build, bill and record an HTTP 200 chat completion body (from `text` when a marker or replay sets it)."""
    if text is not None:
        answer = scripted_answer(text, decision, behaviour, chat.max_tokens)
    else:
        answer = make_answer(decision, behaviour, chat.max_tokens)
        if chat.response_format is not None and answer.content and answer.finish_reason == "stop":
            answer = formatted(answer, chat.response_format, decision.prompt_hash, chat.max_tokens)
    prompt = prompt_tokens(chat.texts)
    cached = math.floor(prompt * behaviour.cached_fraction) if key in state.served else 0
    state.served.add(key)
    call_id = "chatcmpl-" + os.urandom(12).hex()
    usage = (prompt, answer.completion_tokens, cached)
    tags = None if origin is None else {"batch_id": origin.batch_id, "custom_id": origin.custom_id}
    _ledger(state, origin).record_billed(call_id, chat.model, decision.outcome.value, usage, tags)
    message = {"role": "assistant", "content": answer.content, "refusal": answer.refusal}
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": answer.finish_reason,
        "logprobs": token_logprobs(answer.content, decision) if chat.logprobs and answer.content else None,
    }
    return {
        "id": call_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": prompt + answer.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
